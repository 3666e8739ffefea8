//! Jobs: the body of `POST /v0/run` with its validated values (timeout, iterations,
//! adapter), a Job's status, and a Job as the job endpoints return it. Pure data with
//! validation at construction; no IO.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::protocol::{
    IterationResult, JobConfig, MAX_COMMAND_ITEMS, MAX_ENV_ITEMS, MAX_FILE_PATHS,
};
use crate::{
    JobUuid, JsonRunThreshold, JsonSpec, ProjectUuid, ReportUuid, ResourceId, ResourceName,
    RunnerUuid,
};

/// Seconds a job may take when the submission names no timeout.
pub const DEFAULT_JOB_TIMEOUT: u32 = 3600;
/// Longest job timeout, one day.
pub const MAX_JOB_TIMEOUT: u32 = 86_400;
/// Iterations when the submission names none.
pub const DEFAULT_ITERATIONS: u32 = 1;
pub const MAX_ITERATIONS: u32 = 255;
/// Branch and Testbed of a run that names none.
pub const DEFAULT_BRANCH: &str = "main";
pub const DEFAULT_TESTBED: &str = "localhost";
/// What the API shows instead of an environment variable's value.
pub const REDACTED: &str = "***";

/// Where a Job is in its lifecycle (see `protocol.md`). `processed` and `canceled` are
/// terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a Runner.
    Pending,
    /// A Runner took it and is setting up.
    Claimed,
    /// The benchmark is running.
    Running,
    /// The runner sent its results; not yet parsed into the report.
    Completed,
    /// The results are in the report.
    Processed,
    /// The benchmark or its setup failed, or the runner went silent.
    Failed,
    /// Canceled by a user, or by the server past the job's hard time limit.
    Canceled,
}

impl JobStatus {
    pub const ALL: &'static [Self] = &[
        Self::Pending,
        Self::Claimed,
        Self::Running,
        Self::Completed,
        Self::Processed,
        Self::Failed,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Claimed => "claimed",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Processed => "processed",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// No transition leaves this status.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Processed | Self::Canceled)
    }

    /// The runner is done with the job (or never got it): its output, if any, is final.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Processed | Self::Failed | Self::Canceled
        )
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown job status `{s}`; expected one of: {}",
                    all.join(", ")
                )
            })
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares a `u32` that is valid only within `1..=$max`, with its error.
macro_rules! bounded_u32 {
    ($(#[$meta:meta])* $name:ident, $error:ident, $what:literal, $max:expr, $default:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = u32))]
        #[serde(try_from = "u64", into = "u32")]
        pub struct $name(u32);

        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $error(pub u64);

        impl fmt::Display for $error {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($what, " must be between 1 and {}, got {}"), $max, self.0)
            }
        }

        impl std::error::Error for $error {}

        impl $name {
            pub fn new(value: u32) -> Result<Self, $error> {
                if (1..=$max).contains(&value) {
                    Ok(Self(value))
                } else {
                    Err($error(value.into()))
                }
            }

            pub fn get(self) -> u32 {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self($default)
            }
        }

        // From u64 so that values beyond u32 get the range message, not serde's.
        impl TryFrom<u64> for $name {
            type Error = $error;

            fn try_from(value: u64) -> Result<Self, Self::Error> {
                u32::try_from(value)
                    .map_err(|_| $error(value))
                    .and_then(Self::new)
            }
        }

        impl From<$name> for u32 {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let value: u64 = s.trim().parse().map_err(|_| {
                    format!(concat!($what, " must be a whole number between 1 and {}, got `{}`"), $max, s)
                })?;
                Self::try_from(value).map_err(|e| e.to_string())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

bounded_u32!(
    /// Seconds a whole job may take, every iteration included: 1 to one day.
    JobTimeout, JobTimeoutError, "job timeout (seconds)", MAX_JOB_TIMEOUT, DEFAULT_JOB_TIMEOUT
);
bounded_u32!(
    /// How many times the benchmark command runs: 1 to 255.
    Iterations, IterationsError, "iter", MAX_ITERATIONS, DEFAULT_ITERATIONS
);

/// The adapter that parses a benchmark's output into metrics; `bencher run --adapter`.
/// `magic` tries the others in turn (see the server's `adapter` module for the order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Adapter {
    /// The Bencher Metric Format, read as is.
    Json,
    /// libtest `#[bench]` (`cargo bench`) text output.
    RustBench,
    /// Criterion's text output.
    RustCriterion,
    /// `go test -bench` text output.
    GoBench,
    /// Google Benchmark's `--benchmark_format=json`.
    CppGoogle,
    /// pytest-benchmark's `--benchmark-json` file.
    PythonPytest,
    /// hyperfine's `--export-json` file.
    ShellHyperfine,
    /// JMH's `-rf json` result file.
    JavaJmh,
    /// Tries the other adapters in turn.
    Magic,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown adapter `{0}`: expected one of {names}", names = Adapter::names())]
pub struct UnknownAdapter(pub String);

impl Adapter {
    pub const ALL: &'static [Self] = &[
        Self::Json,
        Self::RustBench,
        Self::RustCriterion,
        Self::GoBench,
        Self::CppGoogle,
        Self::PythonPytest,
        Self::ShellHyperfine,
        Self::JavaJmh,
        Self::Magic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::RustBench => "rust_bench",
            Self::RustCriterion => "rust_criterion",
            Self::GoBench => "go_bench",
            Self::CppGoogle => "cpp_google",
            Self::PythonPytest => "python_pytest",
            Self::ShellHyperfine => "shell_hyperfine",
            Self::JavaJmh => "java_jmh",
            Self::Magic => "magic",
        }
    }

    fn names() -> String {
        Self::ALL
            .iter()
            .map(|adapter| adapter.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl FromStr for Adapter {
    type Err = UnknownAdapter;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|adapter| adapter.as_str() == s)
            .ok_or_else(|| UnknownAdapter(s.to_owned()))
    }
}

impl fmt::Display for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the iterations of one run fold into one value per benchmark and measure;
/// `bencher run --fold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Fold {
    Min,
    Max,
    Mean,
    Median,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fold `{0}`: expected one of min, max, mean, median")]
pub struct UnknownFold(pub String);

impl Fold {
    pub const ALL: &'static [Self] = &[Self::Min, Self::Max, Self::Mean, Self::Median];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Min => "min",
            Self::Max => "max",
            Self::Mean => "mean",
            Self::Median => "median",
        }
    }
}

impl FromStr for Fold {
    type Err = UnknownFold;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|fold| fold.as_str() == s)
            .ok_or_else(|| UnknownFold(s.to_owned()))
    }
}

impl fmt::Display for Fold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v0/run`: a report on `branch` and `testbed` (created by name when missing),
/// produced by `job`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonNewRun {
    /// UUID or slug of the project; the image must be in its registry repository.
    pub project: ResourceId,
    /// Name, slug or UUID of the branch [default: `main`]. A name or slug that does not
    /// exist yet creates the branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<ResourceName>,
    /// Name, slug or UUID of the testbed [default: `localhost`]. A name or slug that does
    /// not exist yet creates the testbed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub testbed: Option<ResourceName>,
    /// Adapter that will parse the output; recorded on the report [default: `magic`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<Adapter>,
    /// Git commit of the benchmarked code: a re-run of a commit already on the branch
    /// reuses its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<GitHash>,
    /// How several iterations become one result [default: every iteration is kept].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<Fold>,
    /// Thresholds for the branch and testbed, set before the report is compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<JsonRunThreshold>,
    pub job: JsonNewJob,
}

/// A git commit hash: 4 to 64 hexadecimal digits (SHA-1 or SHA-256, possibly
/// abbreviated), stored lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, example = "9f1c2e4"))]
#[serde(try_from = "String", into = "String")]
pub struct GitHash(String);

impl GitHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for GitHash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if (4..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(format!(
                "a git hash is 4 to 64 hexadecimal digits, got `{s}`"
            ))
        }
    }
}

impl TryFrom<String> for GitHash {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<GitHash> for String {
    fn from(hash: GitHash) -> Self {
        hash.0
    }
}

/// The `job` of a run: what to execute, and where.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonNewJob {
    /// Image reference in the project's repository of this server's registry:
    /// `HOST/<project>:<tag>`, `<project>:<tag>` or `…@sha256:…`. Resolved to a manifest
    /// digest at submission, so moving the tag later does not change the job.
    pub image: String,
    /// UUID or slug of the Spec [default: the testbed's Spec, else the fallback Spec].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ResourceId>,
    /// Overrides the image's entrypoint; at most 64 items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Overrides the image's command; at most 64 items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Environment variables; at most 255. Their values are never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Seconds for the whole job [default: 3600, at most 86400].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<JobTimeout>,
    /// Files the benchmark writes, collected as output; at most 255.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_time: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<bool>,
    /// Iterations [default: 1, at most 255].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iter: Option<Iterations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_failure: Option<bool>,
}

impl JsonNewJob {
    /// Checks what serde cannot: list limits of the protocol, and strings a process
    /// cannot receive (NUL bytes, `=` in variable names). The server checks the resolved
    /// `JobConfig` again with `JobConfig::validate`.
    pub fn validate(&self) -> Result<(), String> {
        if self.image.trim().is_empty() {
            return Err("job.image must not be empty".into());
        }
        for (field, items) in [("entrypoint", &self.entrypoint), ("cmd", &self.cmd)] {
            let items = items.as_deref().unwrap_or_default();
            if items.len() > MAX_COMMAND_ITEMS {
                return Err(format!(
                    "job.{field} has {} items; at most {MAX_COMMAND_ITEMS} are allowed",
                    items.len()
                ));
            }
            if items.iter().any(|item| item.contains('\0')) {
                return Err(format!("job.{field} must not contain NUL characters"));
            }
        }
        if let Some(env) = &self.env {
            if env.len() > MAX_ENV_ITEMS {
                return Err(format!(
                    "job.env has {} variables; at most {MAX_ENV_ITEMS} are allowed",
                    env.len()
                ));
            }
            for (name, value) in env {
                if name.is_empty() || name.contains(['=', '\0']) {
                    return Err(format!(
                        "job.env: `{}` is not a valid variable name (it must be non-empty, without `=` or NUL)",
                        name.escape_debug()
                    ));
                }
                if value.contains('\0') {
                    return Err(format!(
                        "job.env: the value of `{name}` must not contain NUL characters"
                    ));
                }
            }
        }
        if let Some(paths) = &self.file_paths {
            if paths.len() > MAX_FILE_PATHS {
                return Err(format!(
                    "job.file_paths has {} paths; at most {MAX_FILE_PATHS} are allowed",
                    paths.len()
                ));
            }
            if paths.iter().any(|p| p.is_empty() || p.contains('\0')) {
                return Err("job.file_paths must not contain empty paths or NUL characters".into());
            }
        }
        Ok(())
    }
}

/// A Job as the API returns it. The config's environment values are replaced with
/// `***`: they may be secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonJob {
    pub uuid: JobUuid,
    pub project: ProjectUuid,
    /// The report the job's results go into.
    pub report: ReportUuid,
    pub status: JobStatus,
    /// The Spec the job runs on.
    pub spec: JsonSpec,
    /// The runner that claimed the job, once claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerUuid>,
    /// Higher runs first; equal priorities run oldest first.
    pub priority: i64,
    /// What the runner is told to do: the image resolved to its digest, defaults filled
    /// in, environment values redacted.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: JobConfig,
    pub created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<DateTime<Utc>>,
    /// When the runner reported `running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
    /// When the job reached `completed`, `failed` or `canceled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<DateTime<Utc>>,
    /// The last sign of life from the runner during the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Why the job failed or was canceled by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Per-iteration exit code, stdout, stderr and output files (and, when the job asked,
    /// `build_time_ns` and `file_sizes`), once finished and stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Object>>))]
    pub output: Option<Vec<IterationResult>>,
    pub modified: DateTime<Utc>,
}

/// Filters of the job lists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct JobQuery {
    /// Only jobs in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), *status);
            assert_eq!(
                serde_json::to_string(status).unwrap(),
                format!("\"{status}\"")
            );
        }
        let err = "done".parse::<JobStatus>().unwrap_err();
        assert!(err.contains("pending, claimed, running"), "{err}");
        assert!(JobStatus::Processed.is_terminal() && JobStatus::Canceled.is_terminal());
        assert!(
            !JobStatus::Failed.is_terminal(),
            "failed → completed is allowed"
        );
    }

    #[test]
    fn bounded_values() {
        assert_eq!(JobTimeout::default().get(), 3600);
        assert_eq!(Iterations::default().get(), 1);
        assert!(JobTimeout::new(86_400).is_ok());
        assert_eq!(
            JobTimeout::new(86_401).unwrap_err().to_string(),
            "job timeout (seconds) must be between 1 and 86400, got 86401"
        );
        assert!(Iterations::new(0).is_err() && Iterations::new(256).is_err());
        let err = serde_json::from_str::<Iterations>("4294967296").unwrap_err();
        assert!(err.to_string().contains("between 1 and 255"), "{err}");
        assert!(serde_json::from_str::<JobTimeout>("-1").is_err());
    }

    #[test]
    fn adapters() {
        for adapter in Adapter::ALL {
            assert_eq!(adapter.as_str().parse::<Adapter>(), Ok(*adapter));
            let json = serde_json::to_string(adapter).unwrap();
            assert_eq!(json, format!("\"{adapter}\""));
            assert_eq!(serde_json::from_str::<Adapter>(&json).unwrap(), *adapter);
        }
        assert_eq!("rust_criterion".parse(), Ok(Adapter::RustCriterion));
        for bad in ["", "Json", "rust-bench", "criterion"] {
            let err = bad.parse::<Adapter>().unwrap_err();
            assert!(
                err.to_string().contains("expected one of json, rust_bench"),
                "{err}"
            );
        }
        assert!(serde_json::from_str::<Adapter>("\"nope\"").is_err());
    }

    #[test]
    fn folds() {
        for fold in Fold::ALL {
            assert_eq!(fold.as_str().parse::<Fold>(), Ok(*fold));
            assert_eq!(serde_json::to_string(fold).unwrap(), format!("\"{fold}\""));
        }
        assert!("average".parse::<Fold>().is_err());
    }

    #[test]
    fn new_run_bodies() {
        let run: JsonNewRun =
            serde_json::from_str(r#"{"project":"my-project","job":{"image":"my-project:v1"}}"#)
                .unwrap();
        assert!(run.branch.is_none() && run.job.timeout.is_none());
        assert!(run.job.validate().is_ok());
        for bad in [
            r#"{"project":"p","job":{"image":"x"},"extra":1}"#,
            r#"{"project":"p","job":{"image":"x","tiemout":5}}"#,
            r#"{"project":"p","job":{"image":"x","timeout":0}}"#,
            r#"{"project":"p","job":{"image":"x","iter":256}}"#,
            r#"{"project":"p","job":{}}"#,
            r#"{"project":"P Q","job":{"image":"x"}}"#,
        ] {
            assert!(serde_json::from_str::<JsonNewRun>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_job_limits() {
        let job = |f: &dyn Fn(&mut JsonNewJob)| {
            let mut job = JsonNewJob {
                image: "p:v1".into(),
                ..Default::default()
            };
            f(&mut job);
            job.validate()
        };
        assert!(job(&|j| j.cmd = Some(vec!["x".into(); 64])).is_ok());
        assert!(job(&|j| j.cmd = Some(vec!["x".into(); 65])).is_err());
        assert!(job(&|j| j.entrypoint = Some(vec!["a\0b".into()])).is_err());
        let env = |name: &str| Some(BTreeMap::from([(name.to_owned(), "v".to_owned())]));
        assert!(job(&|j| j.env = env("A_B")).is_ok());
        assert!(job(&|j| j.env = env("A=B")).is_err());
        assert!(job(&|j| j.env = env("")).is_err());
        let many: BTreeMap<String, String> =
            (0..256).map(|i| (format!("V{i}"), String::new())).collect();
        assert!(job(&|j| j.env = Some(many.clone())).is_err());
        assert!(job(&|j| j.file_paths = Some(vec![String::new()])).is_err());
        assert!(job(&|j| j.image = " ".into()).is_err());
    }
}
