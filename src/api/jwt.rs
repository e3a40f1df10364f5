//! OIDC bearer JWTs (contract section 9, `[oidc]`): a token that is a JWS
//! signed with an asymmetric key from the issuer's JWKS (RS*, PS*, ES256,
//! ES384, EdDSA; never `none` or HMAC), whose `iss` is the issuer, whose
//! `aud` names Vigil and that has not expired, grants the roles listed in
//! its roles claim. Keys come from discovery
//! (`<issuer>/.well-known/openid-configuration`, `jwks_uri`), are fetched
//! again every [`REFRESH`] and soon after a token names an unknown `kid`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};
use serde_json::Value as J;
use tokio::sync::Notify;

use super::auth::Role;
use crate::event::signature::b64url_decode;
use crate::respond::http::HttpClient;
use crate::shutdown::Stop;

/// How often the issuer's keys are fetched again.
pub const REFRESH: Duration = Duration::from_secs(300);
/// Shortest time between two fetches (unknown `kid`s ask for one).
const MIN_REFRESH: Duration = Duration::from_secs(10);

/// `[oidc]`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer, exactly as its discovery document says it.
    pub issuer: String,
    /// The audience Vigil's tokens carry.
    pub audience: String,
    /// The claim listing roles (an array of strings, or a space-separated string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 30).
    #[serde(default = "default_leeway_s")]
    pub leeway_s: i64,
}

fn default_roles_claim() -> String {
    "vigil_roles".into()
}

fn default_leeway_s() -> i64 {
    30
}

/// Why a JWT grants nothing (logged; the caller gets 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not three base64url parts of JSON.
    #[error("not a JWT: {0}")]
    Malformed(&'static str),
    /// `none`, HMAC or an algorithm the key cannot do.
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(String),
    /// No key with this `kid` (yet).
    #[error("no key {0:?} in the issuer's JWKS")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("the signature does not verify")]
    Signature,
    /// `iss`, `aud`, `exp` or `nbf` is wrong.
    #[error("{0}")]
    Claim(String),
}

/// A verified token's subject and roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub` (or `client_id`).
    pub subject: String,
    /// The roles its claim grants (unknown names ignored).
    pub roles: Vec<Role>,
}

enum Key {
    Rsa(PKey<Public>),
    Ec(PKey<Public>, Nid),
    Ed(ed25519_dalek::VerifyingKey),
}

/// The issuer's keys and the settings tokens are checked against.
pub struct Oidc {
    config: OidcConfig,
    http: HttpClient,
    keys: RwLock<HashMap<String, Arc<Key>>>,
    wanted: Notify,
}

/// Why the provider's keys could not be fetched (the keys held stay).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The request failed.
    #[error("{url}: {source}")]
    Http {
        /// The URL asked.
        url: String,
        /// The failure.
        source: crate::respond::http::HttpError,
    },
    /// Another status than 200.
    #[error("{url}: status {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status.
        status: u16,
    },
    /// The discovery document names another issuer.
    #[error(
        "{url}: its issuer {found} is not the configured {configured:?}; \
         set [oidc] issuer to exactly the provider's issuer"
    )]
    Issuer {
        /// The discovery URL.
        url: String,
        /// The issuer it names (JSON).
        found: String,
        /// The configured one.
        configured: String,
    },
    /// The discovery document has no `jwks_uri` (its URL).
    #[error("{0}: no jwks_uri")]
    NoJwksUri(String),
}

impl Oidc {
    /// A verifier with no keys yet: run [`keep_keys_fresh`] to fetch them.
    pub fn new(config: OidcConfig, http: HttpClient) -> Oidc {
        Oidc {
            config,
            http,
            keys: RwLock::new(HashMap::new()),
            wanted: Notify::new(),
        }
    }

    /// Fetches the issuer's keys; returns how many it holds.
    pub async fn fetch_keys(&self) -> Result<usize, DiscoveryError> {
        let issuer = self.config.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let doc = self.get(&url).await?;
        if doc["issuer"].as_str() != Some(self.config.issuer.as_str()) {
            return Err(DiscoveryError::Issuer {
                url,
                found: doc["issuer"].to_string(),
                configured: self.config.issuer.clone(),
            });
        }
        let jwks_uri = doc["jwks_uri"]
            .as_str()
            .ok_or(DiscoveryError::NoJwksUri(url.clone()))?;
        let jwks = self.get(jwks_uri).await?;
        let mut keys = HashMap::new();
        for jwk in jwks["keys"].as_array().into_iter().flatten() {
            let usable = jwk["use"].as_str().is_none_or(|u| u == "sig");
            if let (true, Some(kid), Some(key)) = (usable, jwk["kid"].as_str(), parse_jwk(jwk)) {
                keys.insert(kid.to_string(), Arc::new(key));
            }
        }
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(n)
    }

    async fn get(&self, url: &str) -> Result<J, DiscoveryError> {
        let reply = self
            .http
            .send("GET", url, &[], Vec::new())
            .await
            .map_err(|source| DiscoveryError::Http {
                url: url.to_string(),
                source,
            })?;
        if reply.status != 200 {
            return Err(DiscoveryError::Status {
                url: url.to_string(),
                status: reply.status,
            });
        }
        Ok(reply.json())
    }

    /// Verifies a token at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, Refused> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::Malformed("it has not three parts"));
        };
        let json = |part: &str| {
            b64url_decode(part)
                .and_then(|b| serde_json::from_slice::<J>(&b).ok())
                .filter(J::is_object)
        };
        let header = json(h).ok_or(Refused::Malformed("its header is not base64url JSON"))?;
        let claims = json(p).ok_or(Refused::Malformed("its payload is not base64url JSON"))?;
        let sig = b64url_decode(s).ok_or(Refused::Malformed("its signature is not base64url"))?;
        let alg = header["alg"].as_str().unwrap_or_default();
        let kid = header["kid"].as_str().unwrap_or_default();
        let key = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
            .cloned();
        let Some(key) = key else {
            self.wanted.notify_one();
            return Err(Refused::UnknownKey(kid.to_string()));
        };
        let signed = &token[..h.len() + 1 + p.len()];
        if !verify_signature(&key, alg, signed.as_bytes(), &sig)? {
            return Err(Refused::Signature);
        }
        self.check_claims(&claims, now)
    }

    fn check_claims(&self, c: &J, now: i64) -> Result<Claims, Refused> {
        let bad = |why: String| Err(Refused::Claim(why));
        if c["iss"].as_str() != Some(self.config.issuer.as_str()) {
            return bad(format!("its iss {} is not the configured issuer", c["iss"]));
        }
        let aud = &self.config.audience;
        let audience_ok = match &c["aud"] {
            J::String(a) => a == aud,
            J::Array(list) => list.iter().any(|a| a.as_str() == Some(aud)),
            _ => false,
        };
        if !audience_ok {
            return bad(format!("its aud {} does not name {aud:?}", c["aud"]));
        }
        let Some(exp) = c["exp"].as_i64() else {
            return bad("it has no exp".into());
        };
        let leeway = self.config.leeway_s.max(0);
        if now >= exp + leeway {
            return bad(format!("it expired at {exp}"));
        }
        if c["nbf"].as_i64().is_some_and(|nbf| now + leeway < nbf) {
            return bad("it is not valid yet (nbf)".into());
        }
        let names: Vec<&str> = match &c[self.config.roles_claim.as_str()] {
            J::Array(list) => list.iter().filter_map(J::as_str).collect(),
            J::String(s) => s.split_whitespace().collect(),
            _ => Vec::new(),
        };
        let subject = c["sub"]
            .as_str()
            .or(c["client_id"].as_str())
            .unwrap_or("?")
            .to_string();
        Ok(Claims {
            subject,
            roles: names.into_iter().filter_map(Role::parse).collect(),
        })
    }
}

fn parse_jwk(jwk: &J) -> Option<Key> {
    let bytes = |name: &str| jwk[name].as_str().and_then(b64url_decode);
    match jwk["kty"].as_str()? {
        "RSA" => {
            let n = BigNum::from_slice(&bytes("n")?).ok()?;
            let e = BigNum::from_slice(&bytes("e")?).ok()?;
            let rsa = Rsa::from_public_components(n, e).ok()?;
            PKey::from_rsa(rsa).ok().map(Key::Rsa)
        }
        "EC" => {
            let nid = match jwk["crv"].as_str()? {
                "P-256" => Nid::X9_62_PRIME256V1,
                "P-384" => Nid::SECP384R1,
                _ => return None,
            };
            let group = EcGroup::from_curve_name(nid).ok()?;
            let x = BigNum::from_slice(&bytes("x")?).ok()?;
            let y = BigNum::from_slice(&bytes("y")?).ok()?;
            let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y).ok()?;
            PKey::from_ec_key(ec).ok().map(|k| Key::Ec(k, nid))
        }
        "OKP" if jwk["crv"] == "Ed25519" => crate::event::signature::parse_public_key(&bytes("x")?)
            .ok()
            .map(Key::Ed),
        _ => None,
    }
}

fn verify_signature(key: &Key, alg: &str, signed: &[u8], sig: &[u8]) -> Result<bool, Refused> {
    let refused = || Refused::Algorithm(alg.to_string());
    let digest = |bits: &str| match bits {
        "256" => Some(MessageDigest::sha256()),
        "384" => Some(MessageDigest::sha384()),
        "512" => Some(MessageDigest::sha512()),
        _ => None,
    };
    let verified = match (key, alg.split_at(alg.len().min(2))) {
        (Key::Rsa(k), ("RS", bits)) | (Key::Rsa(k), ("PS", bits)) => {
            let md = digest(bits).ok_or_else(refused)?;
            let mut v = Verifier::new(md, k).map_err(|_| refused())?;
            if alg.starts_with("PS") {
                v.set_rsa_padding(Padding::PKCS1_PSS)
                    .map_err(|_| refused())?;
                v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                    .map_err(|_| refused())?;
                v.set_rsa_mgf1_md(md).map_err(|_| refused())?;
            }
            v.verify_oneshot(sig, signed).unwrap_or(false)
        }
        (Key::Ec(k, nid), ("ES", bits)) => {
            let (md, len) = match (bits, *nid) {
                ("256", Nid::X9_62_PRIME256V1) => (MessageDigest::sha256(), 32),
                ("384", Nid::SECP384R1) => (MessageDigest::sha384(), 48),
                _ => return Err(refused()),
            };
            if sig.len() != 2 * len {
                return Ok(false);
            }
            let der = BigNum::from_slice(&sig[..len])
                .and_then(|r| BigNum::from_slice(&sig[len..]).map(|s| (r, s)))
                .and_then(|(r, s)| EcdsaSig::from_private_components(r, s))
                .and_then(|e| e.to_der())
                .map_err(|_| refused())?;
            let mut v = Verifier::new(md, k).map_err(|_| refused())?;
            v.verify_oneshot(&der, signed).unwrap_or(false)
        }
        (Key::Ed(k), ("Ed", "DSA")) => <[u8; 64]>::try_from(sig)
            .map(|s| crate::event::signature::verify(k, signed, &s))
            .unwrap_or(false),
        _ => return Err(refused()),
    };
    Ok(verified)
}

/// Fetches the issuer's keys now, every [`REFRESH`], and soon after a
/// token names an unknown key (at most every 10 s), until `stop`.
pub async fn keep_keys_fresh(oidc: Arc<Oidc>, mut stop: Stop) {
    // Keys loaded at start count as the first fetch.
    let loaded = !oidc
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty();
    let mut last: Option<Instant> = loaded.then(Instant::now);
    loop {
        if last.is_none_or(|t| t.elapsed() >= MIN_REFRESH) {
            last = Some(Instant::now());
            match oidc.fetch_keys().await {
                Ok(n) => {
                    tracing::info!(keys = n, issuer = %oidc.config.issuer, "Loaded the OIDC issuer's signing keys")
                }
                Err(e) => {
                    tracing::error!(error = %e, "Cannot load the OIDC issuer's keys; bearer JWTs are refused until they load (retried in 10 s)")
                }
            }
        }
        let wait = if oidc
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            MIN_REFRESH
        } else {
            REFRESH
        };
        tokio::select! {
            _ = stop.stopped() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = oidc.wanted.notified() => {
                tokio::select! {
                    _ = stop.stopped() => return,
                    _ = tokio::time::sleep(MIN_REFRESH.saturating_sub(last.map_or(MIN_REFRESH, |t| t.elapsed()))) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::sign::Signer;
    use serde_json::json;

    fn b64(b: &[u8]) -> String {
        crate::event::signature::b64url(b)
    }

    fn oidc_with(kid: &str, key: Key) -> Oidc {
        let o = Oidc::new(
            OidcConfig {
                issuer: "https://idp.test".into(),
                audience: "vigil".into(),
                roles_claim: "vigil_roles".into(),
                leeway_s: 0,
            },
            HttpClient::new(Duration::from_secs(1)).unwrap(),
        );
        o.keys.write().unwrap().insert(kid.into(), Arc::new(key));
        o
    }

    fn token(alg: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let h = b64(&serde_json::to_vec(&json!({"alg": alg, "kid": "k1"})).unwrap());
        let c = json!({"iss": "https://idp.test", "aud": ["vigil", "other"], "exp": 2_000,
                       "sub": "ana", "vigil_roles": "soc audit nonsense"});
        let p = b64(&serde_json::to_vec(&c).unwrap());
        let signed = format!("{h}.{p}");
        format!("{signed}.{}", b64(&sign(signed.as_bytes())))
    }

    #[test]
    fn each_asymmetric_algorithm_verifies_and_mismatches_are_refused() {
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let rsa_pub = PKey::public_key_from_der(&rsa.public_key_to_der().unwrap()).unwrap();
        let ps256 = token("PS256", |m| {
            let mut s = Signer::new(MessageDigest::sha256(), &rsa).unwrap();
            s.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
            s.sign_oneshot_to_vec(m).unwrap()
        });
        let o = oidc_with("k1", Key::Rsa(rsa_pub));
        let c = o.verify(&ps256, 1_000).unwrap();
        assert_eq!(c.roles, vec![Role::Soc, Role::Audit]);
        assert_eq!(c.subject, "ana");
        assert!(
            matches!(o.verify(&ps256, 2_000), Err(Refused::Claim(_))),
            "expired"
        );
        let hs = token("HS256", |_| vec![0; 32]);
        assert_eq!(
            o.verify(&hs, 1_000),
            Err(Refused::Algorithm("HS256".into()))
        );

        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = EcKey::generate(&group).unwrap();
        let ec_pub = EcKey::from_public_key(&group, ec.public_key()).unwrap();
        let es256 = token("ES256", |m| {
            let digest = openssl::sha::sha256(m);
            let sig = EcdsaSig::sign(&digest, &ec).unwrap();
            let mut raw = sig.r().to_vec_padded(32).unwrap();
            raw.extend(sig.s().to_vec_padded(32).unwrap());
            raw
        });
        let o = oidc_with(
            "k1",
            Key::Ec(PKey::from_ec_key(ec_pub).unwrap(), Nid::X9_62_PRIME256V1),
        );
        assert!(o.verify(&es256, 1_000).is_ok());
        assert_eq!(
            o.verify(&ps256, 1_000),
            Err(Refused::Algorithm("PS256".into()))
        );

        let ed = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let eddsa = token("EdDSA", |m| crate::event::signature::sign(&ed, m).to_vec());
        let o = oidc_with("k1", Key::Ed(ed.verifying_key()));
        assert!(o.verify(&eddsa, 1_000).is_ok());
        let mut bad = eddsa.clone();
        bad.replace_range(bad.len() - 3.., "AAA");
        assert_eq!(o.verify(&bad, 1_000), Err(Refused::Signature));
        assert_eq!(
            o.verify(&eddsa.replacen("eyJ", "eyK", 1), 1_000),
            Err(Refused::Malformed("its header is not base64url JSON"))
        );
    }
}
