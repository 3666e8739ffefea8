//! API tokens for users and admins, and their REST bodies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ApiToken, ResourceName, TokenUuid};

/// `POST /v0/tokens`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonNewToken {
    pub name: ResourceName,
    /// Whether the token may use admin endpoints.
    #[serde(default)]
    pub admin: bool,
    /// Lifetime in seconds; omitted: the token does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// A token's metadata. Never carries the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonToken {
    pub uuid: TokenUuid,
    pub name: ResourceName,
    pub admin: bool,
    pub created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
}

/// A new token with its secret, returned once by create.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonCreatedToken {
    #[serde(flatten)]
    pub meta: JsonToken,
    pub token: ApiToken,
}
