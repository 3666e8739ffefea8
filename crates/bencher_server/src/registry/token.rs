//! Registry tokens: short-lived bearer tokens for `/v2/`, scoped to repositories and to
//! `pull` and/or `push`, signed with HMAC-SHA256 and never stored. Issued by the Docker
//! token endpoint `/v0/auth/oci/token` to holders of an API token, and directly to
//! runners as per-job pull tokens.
//!
//! Format: `base64url(claims JSON) "." base64url(HMAC-SHA256(key, first part))`. Clients
//! treat it as opaque.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bencher_types::{JobUuid, ProjectUuid};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Lifetime of tokens from the token endpoint; clients fetch a new one on a 401.
pub const TOKEN_TTL: Duration = Duration::from_secs(600);

/// What a token allows in one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub project: ProjectUuid,
    pub pull: bool,
    pub push: bool,
}

/// The signed content of a registry token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who it was issued to: an API token's UUID, or `job:<uuid>`.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    #[serde(default)]
    pub access: Vec<Access>,
    /// May list every repository (`registry:catalog:*`, admins only).
    #[serde(default)]
    pub catalog: bool,
}

impl Claims {
    pub fn allows(&self, project: ProjectUuid, push: bool) -> bool {
        self.access
            .iter()
            .any(|a| a.project == project && if push { a.push } else { a.pull })
    }
}

/// Issues and verifies registry tokens with the database-wide key.
#[derive(Clone)]
pub struct RegistryTokens {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for RegistryTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryTokens(<key redacted>)")
    }
}

impl RegistryTokens {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key: key.into() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length")
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The claims of a genuine, unexpired token; `None` for anything else.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<Claims> {
        let (payload, signature) = token.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        // Constant-time comparison: the signature is the secret part.
        mac.verify_slice(&signature).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims.exp > now.timestamp()).then_some(claims)
    }

    /// A pull-only token for one job's project, valid for `ttl`: what a runner gets to
    /// fetch the job's image.
    pub fn job_pull_token(
        &self,
        job: JobUuid,
        project: ProjectUuid,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> String {
        self.issue(&Claims {
            sub: format!("job:{job}"),
            exp: expiry(now, ttl),
            access: vec![Access {
                project,
                pull: true,
                push: false,
            }],
            catalog: false,
        })
    }
}

pub fn expiry(now: DateTime<Utc>, ttl: Duration) -> i64 {
    now.timestamp()
        .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_scope_and_expiry() {
        let tokens = RegistryTokens::new(vec![7; 32]);
        let now = Utc::now();
        let project = ProjectUuid::new_v4();
        let token = tokens.job_pull_token(JobUuid::new_v4(), project, Duration::from_secs(60), now);
        let claims = tokens.verify(&token, now).expect("valid");
        assert!(claims.allows(project, false));
        assert!(!claims.allows(project, true), "job tokens are pull-only");
        assert!(
            !claims.allows(ProjectUuid::new_v4(), false),
            "scoped to one project"
        );
        assert!(
            tokens
                .verify(&token, now + chrono::TimeDelta::seconds(61))
                .is_none()
        );
    }

    #[test]
    fn forgeries_fail() {
        let tokens = RegistryTokens::new(vec![7; 32]);
        let other = RegistryTokens::new(vec![8; 32]);
        let now = Utc::now();
        let claims = Claims {
            sub: "x".into(),
            exp: now.timestamp() + 60,
            access: vec![],
            catalog: true,
        };
        let token = tokens.issue(&claims);
        assert!(other.verify(&token, now).is_none(), "another key");
        let (payload, signature) = token.split_once('.').unwrap();
        let mut forged = claims.clone();
        forged.sub = "admin".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert!(
            tokens
                .verify(&format!("{forged_payload}.{signature}"), now)
                .is_none()
        );
        assert!(tokens.verify(payload, now).is_none());
        assert!(tokens.verify("", now).is_none());
        assert!(tokens.verify("a.b.c", now).is_none());
    }
}
