//! The wire contract shared by the server, the CLI and the runner: typed ids,
//! validated names, slugs, sizes and secret keys, and the JSON bodies of the REST API.
//!
//! Everything here is pure data with validation at construction; no IO. Values that
//! exist are valid, so code past the edge never re-checks them.

mod capabilities;
pub mod guest;
mod id;
mod job;
mod name;
mod pagination;
mod project;
pub mod protocol;
mod report;
mod results;
mod runner;
mod secret;
mod server;
mod size;
mod slug;
mod spec;
mod token;

pub use capabilities::{Capabilities, Unservable};
pub use id::{
    AlertUuid, BenchmarkUuid, BoundaryUuid, BranchUuid, JobUuid, MeasureUuid, MetricUuid,
    ModelUuid, ProjectUuid, ReportUuid, ResourceId, RunnerUuid, SpecUuid, TestbedUuid,
    ThresholdUuid, TokenUuid,
};
pub use job::{
    Adapter, DEFAULT_BRANCH, DEFAULT_ITERATIONS, DEFAULT_JOB_TIMEOUT, DEFAULT_TESTBED, Fold,
    GitHash, Iterations, IterationsError, JobQuery, JobStatus, JobTimeout, JobTimeoutError,
    JsonJob, JsonNewJob, JsonNewRun, MAX_ITERATIONS, MAX_JOB_TIMEOUT, REDACTED, UnknownAdapter,
    UnknownFold,
};
pub use name::{NameError, ResourceName};
pub use pagination::{DEFAULT_PER_PAGE, Direction, MAX_PER_PAGE, Pagination, SortBy};
pub use project::{JsonNewProject, JsonProject, ProjectQuery};
pub use report::{
    AlertQuery, AlertSide, AlertStatus, JsonAlert, JsonAlertSummary, JsonBenchmark, JsonBoundary,
    JsonMeasure, JsonMetric, JsonModel, JsonNamed, JsonNewThreshold, JsonPerf, JsonPerfPoint,
    JsonPerfSeries, JsonReport, JsonReportBenchmark, JsonReportMeasure, JsonRunThreshold,
    JsonThreshold, JsonUpdateAlert, JsonUpdateThreshold, JsonVersion, MAX_PERF_POINTS,
    MAX_PERF_SERIES, MAX_RUN_THRESHOLDS, PerfQuery, ReportQuery, ThresholdQuery, ThresholdTest,
    UnknownThresholdTest,
};
pub use results::{
    JsonLocalBuildTime, JsonLocalFileSize, JsonNewResults, JsonResultsReport, MAX_RESULTS,
};
pub use runner::{
    JsonNewRunner, JsonNewRunnerSpec, JsonRunner, JsonRunnerKey, JsonUpdateRunner, RunnerQuery,
    RunnerState,
};
pub use secret::{ApiToken, KeyError, RunnerKey, SECRET_LEN};
pub use server::{JsonError, JsonHealth, JsonServerVersion};
pub use size::{ByteSize, SizeError};
pub use slug::{Slug, SlugError};
pub use spec::{
    Architecture, Cpu, CpuError, JsonNewSpec, JsonSpec, JsonUpdateSpec, Os, Sandbox, SpecQuery,
};
pub use token::{JsonCreatedToken, JsonNewToken, JsonToken};

/// Header carrying the total number of items of a paginated list.
pub const TOTAL_COUNT_HEADER: &str = "X-Total-Count";
