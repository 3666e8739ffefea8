//! Reports and what hangs off them, as the query endpoints return them: reports with
//! their results per iteration, benchmark and measure (metric, boundary, alert); the
//! perf history; thresholds with their versioned models; alerts; measures and
//! benchmarks. Pure data; no IO.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::JobEnvironment;
use crate::{
    Adapter, AlertUuid, BenchmarkUuid, BoundaryUuid, Fold, JobUuid, MeasureUuid, MetricUuid,
    ModelUuid, ProjectUuid, ReportUuid, ResourceName, ThresholdUuid,
};

/// Most series (branches × testbeds × benchmarks × measures) one perf query may ask for.
pub const MAX_PERF_SERIES: usize = 64;
/// Most points (metrics) one perf query may return; narrow the time range for more.
pub const MAX_PERF_POINTS: u64 = 10_000;

/// A named resource of a project (branch, testbed, benchmark, measure, spec) as other
/// resources refer to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonNamed {
    pub uuid: Uuid,
    pub name: String,
    pub slug: String,
}

/// Where a report sits in its branch's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonVersion {
    /// 1 for the branch's first version, then counting up.
    pub number: u64,
    /// The git commit, when the run named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// One value of a benchmark and measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonMetric {
    pub uuid: MetricUuid,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_value: Option<f64>,
}

/// The statistical test of a threshold's model; wire names are the reference Bencher's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ThresholdTest {
    Static,
    Percentage,
    ZScore,
    TTest,
    LogNormal,
    Iqr,
    DeltaIqr,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown threshold test `{0}`: expected one of static, percentage, z_score, t_test, log_normal, iqr, delta_iqr"
)]
pub struct UnknownThresholdTest(pub String);

impl ThresholdTest {
    pub const ALL: &'static [Self] = &[
        Self::Static,
        Self::Percentage,
        Self::ZScore,
        Self::TTest,
        Self::LogNormal,
        Self::Iqr,
        Self::DeltaIqr,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Percentage => "percentage",
            Self::ZScore => "z_score",
            Self::TTest => "t_test",
            Self::LogNormal => "log_normal",
            Self::Iqr => "iqr",
            Self::DeltaIqr => "delta_iqr",
        }
    }
}

impl FromStr for ThresholdTest {
    type Err = UnknownThresholdTest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|test| test.as_str() == s)
            .ok_or_else(|| UnknownThresholdTest(s.to_owned()))
    }
}

impl fmt::Display for ThresholdTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One version of a threshold's model. Updating a threshold's model adds a version and
/// marks the old one `replaced`; boundaries keep pointing at the version they used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonModel {
    pub uuid: ModelUuid,
    pub test: ThresholdTest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sample_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sample_size: Option<u32>,
    /// Seconds back from the report's own time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_boundary: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_boundary: Option<f64>,
    pub created: DateTime<Utc>,
    /// When a newer model replaced this one; absent for the current model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<DateTime<Utc>>,
}

/// The limits a threshold's model held one metric to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonBoundary {
    pub uuid: BoundaryUuid,
    pub threshold: ThresholdUuid,
    pub model: JsonModel,
    /// The centre of the limits (mean, median, …); absent for `static` and when the test
    /// did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_limit: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_limit: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Active,
    Dismissed,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Dismissed => "dismissed",
        }
    }
}

impl FromStr for AlertStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "dismissed" => Ok(Self::Dismissed),
            other => Err(format!(
                "unknown alert status `{other}`: expected active or dismissed"
            )),
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which limit a metric crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlertSide {
    /// Below the lower limit.
    Lower,
    /// Above the upper limit.
    Upper,
}

impl AlertSide {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lower => "lower",
            Self::Upper => "upper",
        }
    }
}

impl FromStr for AlertSide {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lower" => Ok(Self::Lower),
            "upper" => Ok(Self::Upper),
            other => Err(format!("unknown alert side `{other}`")),
        }
    }
}

impl fmt::Display for AlertSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alert as a report's results and the perf points carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonAlertSummary {
    pub uuid: AlertUuid,
    pub side: AlertSide,
    pub status: AlertStatus,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

/// One measure of one benchmark in one iteration of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonReportMeasure {
    pub measure: JsonNamed,
    pub metric: JsonMetric,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary: Option<JsonBoundary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<JsonAlertSummary>,
}

/// One benchmark in one iteration of a report, with its measures by slug.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonReportBenchmark {
    pub benchmark: JsonNamed,
    pub measures: Vec<JsonReportMeasure>,
}

/// A report: where and on what it ran, and, in the single-report view, its results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonReport {
    pub uuid: ReportUuid,
    pub project: ProjectUuid,
    pub branch: JsonNamed,
    pub testbed: JsonNamed,
    /// The Spec the results were measured on.
    pub spec: JsonNamed,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<JsonVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<Adapter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<Fold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// The job that produced the results, for remote runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobUuid>,
    /// When the results were written; absent while the job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    /// Per iteration (index 0 is the first), each benchmark by name. Only in the
    /// single-report view; lists leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<Vec<JsonReportBenchmark>>>,
    /// What the job was measured on, as its runner reported it: the noise probe before
    /// the benchmark and the environment fingerprint. Only in the single-report view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<JobEnvironment>,
    /// Whether the fingerprint differs from the baseline's (the previous report with one
    /// on the same branch, testbed and Spec); absent when there is nothing to compare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_changed: Option<bool>,
    /// How many alerts the report raised.
    pub alerts: u64,
}

/// Filters of the report list. Times are RFC 3339; a report's time is when its
/// benchmark ended, else when it was submitted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ReportQuery {
    /// Branch name, slug or UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Testbed name, slug or UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub testbed: Option<String>,
    /// Only reports at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// Only reports at or before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
}

/// `GET /v0/projects/{project}/perf`: comma-separated names, slugs or UUIDs. One series
/// per branch × testbed × benchmark × measure (at most [`MAX_PERF_SERIES`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct PerfQuery {
    pub branches: String,
    pub testbeds: String,
    pub benchmarks: String,
    pub measures: String,
    /// Only reports measured on these Specs (names, slugs or UUIDs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specs: Option<String>,
    /// RFC 3339: only reports at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// RFC 3339: only reports at or before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
}

/// One point of a perf series: a metric of one report's iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonPerfPoint {
    pub report: ReportUuid,
    pub iteration: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<JsonVersion>,
    pub spec: JsonNamed,
    /// The report's time: when its benchmark ended, else when it was submitted.
    pub time: DateTime<Utc>,
    pub metric: JsonMetric,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary: Option<JsonBoundary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<JsonAlertSummary>,
}

/// The history of one branch, testbed, benchmark and measure, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonPerfSeries {
    pub branch: JsonNamed,
    pub testbed: JsonNamed,
    pub benchmark: JsonNamed,
    pub measure: JsonNamed,
    pub metrics: Vec<JsonPerfPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonPerf {
    pub project: ProjectUuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    /// Every requested combination, in the order of the request's lists.
    pub results: Vec<JsonPerfSeries>,
}

/// A threshold: a branch, testbed and measure whose metrics are checked against its
/// current model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonThreshold {
    pub uuid: ThresholdUuid,
    pub project: ProjectUuid,
    pub branch: JsonNamed,
    pub testbed: JsonNamed,
    pub measure: JsonNamed,
    pub model: JsonModel,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

/// Most thresholds one run may set (`bencher run --threshold-measure …`).
pub const MAX_RUN_THRESHOLDS: usize = 16;

/// A threshold set by a run (`--threshold-*` of `bencher run`) for the run's branch and
/// testbed, before its report is compared: created when the branch, testbed and measure
/// have none, else given this model as a new version when it differs from the current.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonRunThreshold {
    /// Measure name, slug or UUID; a new name creates a custom measure.
    pub measure: ResourceName,
    pub test: ThresholdTest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sample_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sample_size: Option<u32>,
    /// Seconds back from the report's own time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_boundary: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_boundary: Option<f64>,
}

impl JsonRunThreshold {
    /// At most [`MAX_RUN_THRESHOLDS`], one per measure. The models themselves are
    /// checked by the server, which knows each test's rules.
    pub fn validate_all(thresholds: &[JsonRunThreshold]) -> Result<(), String> {
        if thresholds.len() > MAX_RUN_THRESHOLDS {
            return Err(format!(
                "a run sets at most {MAX_RUN_THRESHOLDS} thresholds, got {}",
                thresholds.len()
            ));
        }
        for (index, threshold) in thresholds.iter().enumerate() {
            if thresholds[..index]
                .iter()
                .any(|other| other.measure.as_str() == threshold.measure.as_str())
            {
                return Err(format!(
                    "measure `{}` has more than one threshold in this run",
                    threshold.measure
                ));
            }
        }
        Ok(())
    }
}

/// `POST /v0/projects/{project}/thresholds`. The branch and testbed must exist; a
/// built-in measure (`latency`, `throughput`, `build-time`, `file-size`) is created on
/// first use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonNewThreshold {
    /// Branch name, slug or UUID.
    pub branch: ResourceName,
    /// Testbed name, slug or UUID.
    pub testbed: ResourceName,
    /// Measure name, slug or UUID.
    pub measure: ResourceName,
    pub test: ThresholdTest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sample_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sample_size: Option<u32>,
    /// Seconds back from the report's own time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_boundary: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_boundary: Option<f64>,
}

/// `PUT /v0/projects/{project}/thresholds/{threshold}`: the new model, whole. The old
/// model is kept (marked replaced) for the boundaries that used it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonUpdateThreshold {
    pub test: ThresholdTest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sample_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sample_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_boundary: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_boundary: Option<f64>,
}

/// Filters of the threshold list (names, slugs or UUIDs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ThresholdQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub testbed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure: Option<String>,
}

/// An alert with everything needed to read it without another request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonAlert {
    pub uuid: AlertUuid,
    pub project: ProjectUuid,
    pub status: AlertStatus,
    pub side: AlertSide,
    pub report: ReportUuid,
    pub iteration: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<JsonVersion>,
    pub branch: JsonNamed,
    pub testbed: JsonNamed,
    pub spec: JsonNamed,
    pub benchmark: JsonNamed,
    pub measure: JsonNamed,
    pub metric: JsonMetric,
    pub boundary: JsonBoundary,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

/// Filters of the alert list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct AlertQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AlertStatus>,
}

/// `PATCH /v0/projects/{project}/alerts/{alert}`: dismiss or re-activate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonUpdateAlert {
    pub status: AlertStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonMeasure {
    pub uuid: MeasureUuid,
    pub project: ProjectUuid,
    pub name: String,
    pub slug: String,
    pub units: String,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonBenchmark {
    pub uuid: BenchmarkUuid,
    pub project: ProjectUuid,
    pub name: String,
    pub slug: String,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for test in ThresholdTest::ALL {
            assert_eq!(test.as_str().parse::<ThresholdTest>().unwrap(), *test);
            assert_eq!(serde_json::to_string(test).unwrap(), format!("\"{test}\""));
        }
        assert!("t-test".parse::<ThresholdTest>().is_err());
        assert_eq!(
            "dismissed".parse::<AlertStatus>().unwrap(),
            AlertStatus::Dismissed
        );
    }

    #[test]
    fn new_threshold_denies_unknown_fields() {
        let body =
            r#"{"branch":"main","testbed":"x","measure":"latency","test":"t_test","upper":0.9}"#;
        assert!(serde_json::from_str::<JsonNewThreshold>(body).is_err());
    }
}
