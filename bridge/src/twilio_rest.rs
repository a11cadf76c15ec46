//! Twilio REST: updating a live call with new TwiML (transfer to staff, fallback, busy) or ending
//! it (`Status=completed`). Replacing a call's TwiML ends its `<Connect><Stream>`.

use std::time::Duration;

use pulsara_core::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("Twilio call update failed with HTTP {0}")]
    Status(u16),
    #[error("Twilio call update could not be sent: {0}")]
    Transport(String),
}

/// How [`TwilioRest::end_call`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnded {
    /// Twilio ended the call now.
    Now,
    /// Twilio no longer knows the call as live (404): the caller hung up first.
    Already,
}

/// A small Twilio REST client.
#[derive(Clone)]
pub struct TwilioRest {
    http: reqwest::Client,
    base: String,
    account_sid: String,
    auth_token: Secret,
}

impl TwilioRest {
    pub fn new(http: reqwest::Client, base: &str, account_sid: &str, auth_token: Secret) -> Self {
        TwilioRest {
            http,
            base: base.trim_end_matches('/').to_owned(),
            account_sid: account_sid.to_owned(),
            auth_token,
        }
    }

    /// `POST {base}/2010-04-01/Accounts/{sid}/Calls/{call_sid}.json` with `Twiml=…`.
    ///
    /// # Errors
    /// [`RestError`] with the HTTP status or transport problem (never the auth token).
    pub async fn update_call(
        &self,
        call_sid: &str,
        twiml: &str,
        timeout: Duration,
    ) -> Result<(), RestError> {
        let status = self.post_call(call_sid, &[("Twiml", twiml)], timeout).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(RestError::Status(status.as_u16()))
        }
    }

    /// Ends a live call: the same endpoint with `Status=completed`. A 404 means the call is no
    /// longer live (the caller hung up first), which is what was wanted: [`CallEnded::Already`].
    ///
    /// # Errors
    /// [`RestError`] for any other failure.
    pub async fn end_call(&self, call_sid: &str, timeout: Duration) -> Result<CallEnded, RestError> {
        let status = self.post_call(call_sid, &[("Status", "completed")], timeout).await?;
        match status.as_u16() {
            _ if status.is_success() => Ok(CallEnded::Now),
            404 => Ok(CallEnded::Already),
            other => Err(RestError::Status(other)),
        }
    }

    async fn post_call(
        &self,
        call_sid: &str,
        form: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<reqwest::StatusCode, RestError> {
        let sid: String = call_sid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Calls/{sid}.json",
            self.base, self.account_sid
        );
        let resp = self
            .http
            .post(url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .form(form)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| RestError::Transport(e.without_url().to_string()))?;
        Ok(resp.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsara_emulators::twilio_rest;

    #[tokio::test]
    async fn ending_a_call_twice_is_already_ended_not_a_failure() {
        let (fake, base) = twilio_rest::spawn_detached("AC1", "tok").await.unwrap();
        let rest = TwilioRest::new(reqwest::Client::new(), &base, "AC1", Secret::new("tok"));
        let t = Duration::from_secs(2);
        assert_eq!(rest.end_call("CA9", t).await.unwrap(), CallEnded::Now);
        assert_eq!(fake.updates_for("CA9")[0].status.as_deref(), Some("completed"));
        assert_eq!(rest.end_call("CA9", t).await.unwrap(), CallEnded::Already);
        assert!(matches!(rest.update_call("CA9", "<Response/>", t).await, Err(RestError::Status(404))));
        let wrong = TwilioRest::new(reqwest::Client::new(), &base, "AC1", Secret::new("nope"));
        assert!(matches!(wrong.end_call("CA8", t).await, Err(RestError::Status(401))));
    }
}
