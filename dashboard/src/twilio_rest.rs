//! The one Twilio REST client: form-encoded `POST`s under `{base}/2010-04-01/Accounts/{sid}/`
//! with Basic auth (account SID + auth token), a deadline per request, and errors that carry the
//! HTTP status or transport problem but never the token or the URL.
//!
//! Used for call updates by the bridge (new TwiML for a live call, or `Status=completed`; replacing
//! a call's TwiML ends its `<Connect><Stream>`) and for SMS by the outbox ([`crate::notify`]).

use std::time::Duration;

use pulsara_core::secret::Secret;

/// Longest part of an error answer's body kept in a [`RestError`] (characters).
const MAX_ERROR_BODY_CHARS: usize = 300;

/// Why a Twilio request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    /// Twilio answered with a non-success status; `body` is the start of its answer.
    #[error("Twilio {what} failed with HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        what: &'static str,
        status: u16,
        body: String,
    },
    /// The request could not be sent or no answer arrived in time.
    #[error("Twilio {what} could not be sent: {reason}")]
    Transport { what: &'static str, reason: String },
}

impl RestError {
    /// The HTTP status Twilio answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RestError::Status { status, .. } => Some(*status),
            RestError::Transport { .. } => None,
        }
    }

    /// Worth retrying: no answer, or HTTP 5xx/408/429 ([`crate::is_transient_status`]).
    pub fn is_transient(&self) -> bool {
        self.status().is_none_or(crate::is_transient_status)
    }
}

/// How [`TwilioRest::end_call`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnded {
    /// Twilio ended the call now.
    Now,
    /// Twilio no longer knows the call as live (404): the caller hung up first.
    Already,
}

/// A Twilio REST client for one account.
#[derive(Clone)]
pub struct TwilioRest {
    http: reqwest::Client,
    base: String,
    account_sid: String,
    auth_token: Secret,
}

impl std::fmt::Debug for TwilioRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioRest")
            .field("base", &self.base)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
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
        self.post_call(call_sid, &[("Twiml", twiml)], timeout).await
    }

    /// Ends a live call: the same endpoint with `Status=completed`. A 404 means the call is no
    /// longer live (the caller hung up first), which is what was wanted: [`CallEnded::Already`].
    ///
    /// # Errors
    /// [`RestError`] for any other failure.
    pub async fn end_call(
        &self,
        call_sid: &str,
        timeout: Duration,
    ) -> Result<CallEnded, RestError> {
        match self
            .post_call(call_sid, &[("Status", "completed")], timeout)
            .await
        {
            Ok(()) => Ok(CallEnded::Now),
            Err(e) if e.status() == Some(404) => Ok(CallEnded::Already),
            Err(e) => Err(e),
        }
    }

    /// `POST {base}/2010-04-01/Accounts/{sid}/Messages.json` with `To`, `From`, `Body`.
    ///
    /// # Errors
    /// [`RestError`]; [`RestError::is_transient`] tells whether a retry can help.
    pub async fn send_sms(
        &self,
        to: &str,
        from: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<(), RestError> {
        let form = [("To", to), ("From", from), ("Body", body)];
        self.post("message", "Messages.json", &form, timeout).await
    }

    async fn post_call(
        &self,
        call_sid: &str,
        form: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(), RestError> {
        let sid: String = call_sid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        self.post("call update", &format!("Calls/{sid}.json"), form, timeout)
            .await
    }

    /// Form `POST` to `resource` under the account; `what` names the request in errors.
    async fn post(
        &self,
        what: &'static str,
        resource: &str,
        form: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(), RestError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{resource}",
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
            .map_err(|e| RestError::Transport {
                what,
                reason: e.without_url().to_string(),
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(MAX_ERROR_BODY_CHARS)
            .collect();
        Err(RestError::Status {
            what,
            status: status.as_u16(),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsara_emulators::twilio_rest;

    const T: Duration = Duration::from_secs(2);
    const TOKEN: &str = "auth-token-7f3a9c";
    const WRONG: &str = "wrong-token-2b8e1d";

    #[tokio::test]
    async fn ending_a_call_twice_is_already_ended_not_a_failure() {
        let (fake, base) = twilio_rest::spawn_detached("AC1", TOKEN).await.unwrap();
        let rest = TwilioRest::new(reqwest::Client::new(), &base, "AC1", Secret::new(TOKEN));
        assert_eq!(rest.end_call("CA9", T).await.unwrap(), CallEnded::Now);
        assert_eq!(
            fake.updates_for("CA9")[0].status.as_deref(),
            Some("completed")
        );
        assert_eq!(rest.end_call("CA9", T).await.unwrap(), CallEnded::Already);
        let gone = rest.update_call("CA9", "<Response/>", T).await.unwrap_err();
        assert_eq!(gone.status(), Some(404));
        assert!(!gone.is_transient());
        let wrong = TwilioRest::new(reqwest::Client::new(), &base, "AC1", Secret::new(WRONG));
        let refused = wrong.end_call("CA8", T).await.unwrap_err();
        assert_eq!(refused.status(), Some(401));
        assert!(!refused.to_string().contains(WRONG), "{refused}");
    }

    #[tokio::test]
    async fn sms_reach_the_messages_api_and_failures_are_classified() {
        let (_fake, base) = twilio_rest::spawn_detached("AC1", TOKEN).await.unwrap();
        let rest = TwilioRest::new(reqwest::Client::new(), &base, "AC1", Secret::new(TOKEN));
        rest.send_sms("+15550001111", "+15550002222", "hi", T)
            .await
            .unwrap();
        let wrong = TwilioRest::new(reqwest::Client::new(), &base, "AC1", Secret::new(WRONG));
        let refused = wrong
            .send_sms("+15550001111", "+15550002222", "hi", T)
            .await
            .unwrap_err();
        assert_eq!(refused.status(), Some(401));
        assert!(!refused.is_transient());
        let down = TwilioRest::new(
            reqwest::Client::new(),
            "http://127.0.0.1:1",
            "AC1",
            Secret::new(TOKEN),
        );
        let unreachable = down
            .send_sms("+15550001111", "+15550002222", "hi", T)
            .await
            .unwrap_err();
        assert!(
            matches!(unreachable, RestError::Transport { .. }) && unreachable.is_transient(),
            "{unreachable}"
        );
        assert!(!unreachable.to_string().contains(TOKEN), "{unreachable}");
    }

    #[test]
    fn only_no_answer_and_retryable_statuses_are_transient() {
        let status = |status| RestError::Status {
            what: "message",
            status,
            body: String::new(),
        };
        assert!(
            status(503).is_transient() && status(429).is_transient() && status(408).is_transient()
        );
        assert!(!status(400).is_transient() && !status(404).is_transient());
        assert!(RestError::Transport {
            what: "message",
            reason: "refused".into()
        }
        .is_transient());
        assert_eq!(
            status(500).to_string(),
            "Twilio message failed with HTTP 500"
        );
    }
}
