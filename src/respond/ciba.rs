//! A CIBA client (OpenID Client-Initiated Backchannel Authentication
//! Core 1.0, poll mode): discovery, the backchannel authentication
//! request with RFC 9396 authorization details, polling the token
//! endpoint as the specification says (`interval`, `slow_down`,
//! `expires_in`), and RFC 7009 revocation of the tokens an approval gives
//! (Vigil needs the approval, not the tokens).

use std::time::Duration;

use base64::Engine;
use serde_json::Value as J;
use tokio::sync::OnceCell;

use super::fold::StepUpRequest;
use super::http::{form, urlencode, HttpClient, HttpError};

/// The grant type of a CIBA token request.
pub const GRANT_TYPE: &str = "urn:openid:params:grant-type:ciba";
/// Polling interval when the provider names none (CIBA Core 7.3).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// What `slow_down` adds to the interval (CIBA Core 11).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// `[ciba]`, resolved.
#[derive(Debug, Clone)]
pub struct CibaSettings {
    /// The issuer; discovery is at `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Vigil's client id.
    pub client_id: String,
    /// Its secret (client_secret_basic).
    pub client_secret: String,
    /// Scope requested (`openid` at least).
    pub scope: String,
    /// `requested_expiry` in seconds, if set.
    pub requested_expiry_s: Option<u64>,
    /// The RFC 9396 type of the details sent.
    pub details_type: String,
}

/// The provider's endpoints, from discovery.
#[derive(Debug, Clone)]
struct Endpoints {
    backchannel: String,
    token: String,
    revocation: Option<String>,
    details: bool,
}

/// Why a CIBA exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum CibaError {
    /// No answer.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Discovery gave something unusable.
    #[error("the provider's discovery document is unusable: {0}")]
    Discovery(String),
    /// The provider refused the request.
    #[error("the provider answered {status} {error}: {description}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The OAuth error code.
        error: String,
        /// Its description.
        description: String,
    },
}

/// A request the provider accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// The provider's id for it.
    pub auth_req_id: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// How long to wait between polls.
    pub interval: Duration,
}

/// One poll's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled {
    /// Not yet answered.
    Pending,
    /// Poll less often.
    SlowDown,
    /// Approved; the tokens were revoked at once where the provider can.
    Approved,
    /// The person said no.
    Denied(String),
    /// Nobody answered in time.
    Expired,
}

/// The client.
#[derive(Debug)]
pub struct Ciba {
    settings: CibaSettings,
    http: HttpClient,
    endpoints: OnceCell<Endpoints>,
}

impl Ciba {
    /// A client; discovery happens on first use (and again until it works).
    pub fn new(settings: CibaSettings, http: HttpClient) -> Ciba {
        Ciba {
            settings,
            http,
            endpoints: OnceCell::new(),
        }
    }

    /// The configured RFC 9396 type.
    pub fn details_type(&self) -> &str {
        &self.settings.details_type
    }

    async fn endpoints(&self) -> Result<&Endpoints, CibaError> {
        self.endpoints.get_or_try_init(|| self.discover()).await
    }

    async fn discover(&self) -> Result<Endpoints, CibaError> {
        let issuer = self.settings.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let reply = self.http.send("GET", &url, &[], Vec::new()).await?;
        let doc = reply.json();
        let bad = |what: String| CibaError::Discovery(format!("{url}: {what}"));
        if reply.status != 200 {
            return Err(bad(format!("status {}", reply.status)));
        }
        if doc["issuer"].as_str() != Some(self.settings.issuer.as_str()) {
            return Err(bad(format!(
                "its issuer {} is not the configured {:?}; set [ciba] issuer to exactly the provider's issuer",
                doc["issuer"], self.settings.issuer
            )));
        }
        let text = |k: &str| doc[k].as_str().map(str::to_string);
        let backchannel = text("backchannel_authentication_endpoint").ok_or_else(|| {
            bad("no backchannel_authentication_endpoint: the provider does not offer CIBA".into())
        })?;
        let token = text("token_endpoint").ok_or_else(|| bad("no token_endpoint".into()))?;
        let modes = doc["backchannel_token_delivery_modes_supported"].as_array();
        if modes.is_some_and(|m| !m.iter().any(|x| x == "poll")) {
            return Err(bad("it does not offer the poll delivery mode".into()));
        }
        let details = doc["authorization_details_types_supported"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == self.settings.details_type.as_str()));
        Ok(Endpoints {
            backchannel,
            token,
            revocation: text("revocation_endpoint"),
            details,
        })
    }

    /// `client_secret_basic` (RFC 6749 2.3.1: both parts form-encoded).
    fn basic(&self) -> String {
        let pair = format!(
            "{}:{}",
            urlencode(&self.settings.client_id),
            urlencode(&self.settings.client_secret)
        );
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    async fn post(
        &self,
        url: &str,
        pairs: &[(&str, &str)],
    ) -> Result<super::http::Reply, CibaError> {
        let auth = self.basic();
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ];
        Ok(self.http.send("POST", url, &headers, form(pairs)).await?)
    }

    /// Sends the backchannel authentication request.
    pub async fn request(&self, r: &StepUpRequest) -> Result<Started, CibaError> {
        let ep = self.endpoints().await?;
        let details = serde_json::to_string(&r.authorization_details).expect("serialises");
        let expiry = self.settings.requested_expiry_s.map(|s| s.to_string());
        let mut pairs = vec![
            ("scope", self.settings.scope.as_str()),
            ("login_hint", r.principal.as_str()),
            ("binding_message", r.binding_message.as_str()),
        ];
        if ep.details {
            pairs.push(("authorization_details", details.as_str()));
        }
        if let Some(e) = &expiry {
            pairs.push(("requested_expiry", e.as_str()));
        }
        let reply = self.post(&ep.backchannel, &pairs).await?;
        let j = reply.json();
        if reply.status != 200 {
            return Err(refused(reply.status, &j));
        }
        let auth_req_id = j["auth_req_id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CibaError::Discovery("the answer has no auth_req_id".into()))?;
        Ok(Started {
            auth_req_id: auth_req_id.to_string(),
            expires_in: j["expires_in"].as_u64().unwrap_or(120),
            interval: j["interval"]
                .as_u64()
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_INTERVAL),
        })
    }

    /// Polls the token endpoint once.
    pub async fn poll(&self, auth_req_id: &str) -> Result<Polled, CibaError> {
        let ep = self.endpoints().await?;
        let reply = self
            .post(
                &ep.token,
                &[("grant_type", GRANT_TYPE), ("auth_req_id", auth_req_id)],
            )
            .await?;
        let j = reply.json();
        if reply.status == 200 {
            self.revoke_tokens(ep, &j).await;
            return Ok(Polled::Approved);
        }
        let description = j["error_description"].as_str().unwrap_or("").to_string();
        match j["error"].as_str().unwrap_or("") {
            "authorization_pending" => Ok(Polled::Pending),
            "slow_down" => Ok(Polled::SlowDown),
            "access_denied" => Ok(Polled::Denied(description)),
            "expired_token" => Ok(Polled::Expired),
            _ => Err(refused(reply.status, &j)),
        }
    }

    /// Revokes the tokens an approval gave (RFC 7009), when the provider
    /// has a revocation endpoint; a failure is logged, not fatal.
    async fn revoke_tokens(&self, ep: &Endpoints, tokens: &J) {
        let Some(url) = &ep.revocation else { return };
        for (kind, hint) in [
            ("refresh_token", "refresh_token"),
            ("access_token", "access_token"),
        ] {
            let Some(t) = tokens[kind].as_str() else {
                continue;
            };
            let pairs = [("token", t), ("token_type_hint", hint)];
            match self.post(url, &pairs).await {
                Ok(r) if r.status == 200 => {}
                Ok(r) => tracing::warn!(
                    status = r.status,
                    "The provider did not revoke the step-up's {kind}"
                ),
                Err(e) => tracing::warn!("Cannot revoke the step-up's {kind}: {e}"),
            }
        }
    }
}

fn refused(status: u16, j: &J) -> CibaError {
    CibaError::Refused {
        status,
        error: j["error"].as_str().unwrap_or("(no error code)").to_string(),
        description: j["error_description"].as_str().unwrap_or("").to_string(),
    }
}
