//! `POST /v0/projects/{project}/results`: benchmark output from a command run outside a
//! runner (`bencher run -- CMD`), turned into a report at once with the same adapters and
//! thresholds as a job's output.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Adapter, Fold, GitHash, JsonRunThreshold, ReportUuid, ResourceId, ResourceName};

/// Most iterations one submission may carry.
pub const MAX_RESULTS: usize = 255;

/// Results of a local run: each iteration's benchmark output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonNewResults {
    /// Name, slug or UUID of the branch [default: `main`]; a new name creates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<ResourceName>,
    /// Name, slug or UUID of the testbed [default: `localhost`]; a new name creates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub testbed: Option<ResourceName>,
    /// UUID or slug of the Spec the results were measured on [default: the testbed's,
    /// else the fallback].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ResourceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<GitHash>,
    /// [default: `magic`]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<Adapter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<Fold>,
    /// Thresholds for the branch and testbed, set before the report is compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<JsonRunThreshold>,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    /// Each iteration's output (stdout, or the file the harness wrote), 1 to 255.
    pub results: Vec<String>,
}

impl JsonNewResults {
    pub fn validate(&self) -> Result<(), String> {
        if self.results.is_empty() || self.results.len() > MAX_RESULTS {
            return Err(format!(
                "results must hold 1 to {MAX_RESULTS} iterations, got {}",
                self.results.len()
            ));
        }
        if self.end_time < self.start_time {
            return Err("end_time is before start_time".to_owned());
        }
        JsonRunThreshold::validate_all(&self.thresholds)
    }
}

/// The report the results became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonResultsReport {
    pub report: ReportUuid,
    /// The adapter that read the results (the one `magic` chose).
    pub adapter: Adapter,
    pub iterations: u32,
    pub metrics: u64,
    /// Alerts raised by the report's thresholds.
    pub alerts: u64,
}
