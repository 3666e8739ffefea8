//! Bodies of the server's own endpoints (version, health) and of every error.

use serde::{Deserialize, Serialize};

/// `GET /v0/server/version`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonServerVersion {
    pub version: String,
}

/// `GET /v0/server/health`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonHealth {
    /// `ok`, or `degraded` when a dependency does not answer.
    pub status: String,
    /// `ok`, or the reason the database check failed.
    pub database: String,
}

/// Every error the REST API returns (the registry under `/v2/` uses the OCI envelope).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonError {
    /// HTTP status code.
    pub status: u16,
    /// Stable, machine-readable kind: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `payload_too_large`, `internal`, ...
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}
