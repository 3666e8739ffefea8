//! `POST /v0/projects/{project}/results`: benchmark output from a command run outside a
//! runner (`bencher run -- CMD`), turned into a report at once with the same adapters and
//! thresholds as a job's output.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::protocol::MAX_FILE_PATHS;
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
    /// `--build-time`: the command that ran, the benchmark its build time is recorded
    /// under, and each iteration's wall time in nanoseconds (one per result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_time: Option<JsonLocalBuildTime>,
    /// `--file-size`: the files measured, and each iteration's sizes in bytes of those
    /// that existed (one map per result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<JsonLocalFileSize>,
}

/// Build times of a local run (`bencher run --build-time -- CMD`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonLocalBuildTime {
    /// The command as it ran (program and arguments).
    pub command: Vec<String>,
    /// Per iteration, from just before the command started to its exit.
    pub iterations_ns: Vec<u64>,
}

/// File sizes of a local run (`bencher run --file-size --file PATH -- CMD`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonLocalFileSize {
    /// The files measured, as given.
    pub paths: Vec<String>,
    /// Per iteration: each path that existed, with its size.
    pub iterations: Vec<BTreeMap<String, u64>>,
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
        let iterations = self.results.len();
        if let Some(build_time) = &self.build_time {
            if build_time.iterations_ns.len() != iterations {
                return Err(format!(
                    "build_time has {} iterations for {iterations} results",
                    build_time.iterations_ns.len()
                ));
            }
            if build_time.command.is_empty() {
                return Err("build_time names no command".to_owned());
            }
        }
        if let Some(file_size) = &self.file_size {
            if file_size.iterations.len() != iterations {
                return Err(format!(
                    "file_size has {} iterations for {iterations} results",
                    file_size.iterations.len()
                ));
            }
            if file_size.paths.is_empty() || file_size.paths.len() > MAX_FILE_PATHS {
                return Err(format!(
                    "file_size measures 1 to {MAX_FILE_PATHS} files, got {}",
                    file_size.paths.len()
                ));
            }
            if let Some(stranger) = file_size
                .iterations
                .iter()
                .flat_map(BTreeMap::keys)
                .find(|path| !file_size.paths.contains(path))
            {
                return Err(format!(
                    "file_size has a size for `{stranger}`, which is not in its paths"
                ));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn results(n: usize) -> JsonNewResults {
        let now = Utc::now();
        JsonNewResults {
            branch: None,
            testbed: None,
            spec: None,
            hash: None,
            adapter: None,
            fold: None,
            thresholds: Vec::new(),
            start_time: now,
            end_time: now,
            results: vec![String::new(); n],
            build_time: None,
            file_size: None,
        }
    }

    #[test]
    fn measures_line_up_with_the_results() {
        assert_eq!(results(2).validate(), Ok(()));
        assert!(results(0).validate().unwrap_err().contains("1 to 255"));
        let mut timed = results(2);
        timed.build_time = Some(JsonLocalBuildTime {
            command: vec!["make".into()],
            iterations_ns: vec![1],
        });
        assert!(timed.validate().unwrap_err().contains("1 iterations for 2"));
        timed.build_time = Some(JsonLocalBuildTime {
            command: Vec::new(),
            iterations_ns: vec![1, 2],
        });
        assert!(timed.validate().unwrap_err().contains("no command"));

        let mut sized = results(1);
        sized.file_size = Some(JsonLocalFileSize {
            paths: vec!["app".into()],
            iterations: vec![BTreeMap::from([("other".into(), 1)])],
        });
        assert!(sized.validate().unwrap_err().contains("`other`"));
        sized.file_size = Some(JsonLocalFileSize {
            paths: Vec::new(),
            iterations: vec![BTreeMap::new()],
        });
        assert!(sized.validate().unwrap_err().contains("1 to 255 files"));
        sized.file_size = Some(JsonLocalFileSize {
            paths: vec!["app".into()],
            iterations: vec![BTreeMap::from([("app".into(), 3000)])],
        });
        assert_eq!(sized.validate(), Ok(()));
    }
}
