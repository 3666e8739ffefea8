//! Runners: the machines that execute jobs, and their REST bodies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::JobUuid;
use crate::{JsonSpec, ResourceId, ResourceName, RunnerKey, RunnerUuid, Slug};

/// `POST /v0/runners`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonNewRunner {
    pub name: ResourceName,
    /// Derived from the name when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<Slug>,
}

/// A runner's secret key, returned once: by create and by rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonRunnerKey {
    pub uuid: RunnerUuid,
    pub slug: Slug,
    pub key: RunnerKey,
}

/// What a runner is doing, as far as the server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunnerState {
    /// Connected and waiting for a job.
    Idle,
    /// Connected and running `current_job`.
    Busy,
    /// Not connected.
    Offline,
}

/// A runner as the API returns it. Never carries the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonRunner {
    pub uuid: RunnerUuid,
    pub name: ResourceName,
    pub slug: Slug,
    /// The Specs this runner serves.
    pub specs: Vec<JsonSpec>,
    pub state: RunnerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_job: Option<JobUuid>,
    /// When the runner was archived; absent while active. An archived runner cannot
    /// authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

/// `PATCH /v0/runners/{runner}`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonUpdateRunner {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ResourceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<Slug>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
}

/// `POST /v0/runners/{runner}/specs`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonNewRunnerSpec {
    /// UUID or slug of the Spec.
    pub spec: ResourceId,
}

/// Filters of `GET /v0/runners`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct RunnerQuery {
    /// Exact name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Case-insensitive substring of the name or slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// `true`: only archived runners; default: only active ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
}
