//! Twilio REST: updating a live call with new TwiML (transfer to staff, fallback, busy, hang-up).
//! Replacing a call's TwiML ends its `<Connect><Stream>`.

use std::time::Duration;

use pulsara_core::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("Twilio call update failed with HTTP {0}")]
    Status(u16),
    #[error("Twilio call update could not be sent: {0}")]
    Transport(String),
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
            .form(&[("Twiml", twiml)])
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| RestError::Transport(e.without_url().to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(RestError::Status(resp.status().as_u16()))
        }
    }
}
