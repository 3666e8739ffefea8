//! The Runner Protocol: the JSON messages a runner and the API server exchange over the
//! runner's one WebSocket (`GET /v0/runners/{runner}/channel`). Every message is a text
//! frame with an `event` field. This is a public contract: other runner implementations
//! speak it, so fields are only ever added as optional, and unknown events are ignored
//! by both sides (see `RunnerMessage::parse` and `ServerMessage::parse`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Capabilities, JobUuid, JsonSpec, ProjectUuid};

/// Limits from the protocol: entrypoint and cmd at most 64 items, env and file paths at
/// most 255.
pub const MAX_COMMAND_ITEMS: usize = 64;
pub const MAX_ENV_ITEMS: usize = 255;
pub const MAX_FILE_PATHS: usize = 255;
/// Bounds of `ready.poll_timeout`, in seconds; the server's default is 30.
pub const POLL_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 1..=900;

/// What the runner says about itself in `ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerMetadata {
    pub os: String,
    pub arch: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// SHA-256 hex of the runner binary (canary updates compare it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// One iteration's result: `{exit_code, stdout?, stderr?, output?: {path: contents},
/// build_time_ns?, file_sizes?: {path: bytes}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IterationResult {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The contents of the job's `file_paths`, when the job did not ask for `file_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<BTreeMap<String, String>>,
    /// When the job asked for `build_time` and the command exited: its wall time in
    /// nanoseconds, from just before its exec to its exit, measured inside the sandbox
    /// (image pull, container start or VM boot excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_time_ns: Option<u64>,
    /// When the job asked for `file_size` and the command exited: the size in bytes
    /// (from `stat`, whatever the output limits) of each of the job's `file_paths`
    /// that exists as a regular file, keyed by the path as the job gave it. A missing
    /// file is absent. With `file_size` the files are measured, not read: `output` is
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sizes: Option<BTreeMap<String, u64>>,
}

/// Most bytes a `completed.environment` may take as JSON; a larger one is dropped (and
/// logged) by the server, never failing the job.
pub const MAX_ENVIRONMENT_SIZE: usize = 64 * 1024;

/// What a job was measured on: the runner's noise probe just before the benchmark and
/// the fingerprint of its environment (CPU model, microcode, kernel, governor, SMT, the
/// runner's version, the sandbox, the verified tuning state). Both are JSON objects the
/// runner defines; the server stores them with the report and marks a report whose
/// fingerprint differs from its baseline's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobEnvironment {
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub noise: serde_json::Value,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub fingerprint: serde_json::Value,
}

/// Runner → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunnerMessage {
    /// Idle, asking for a job.
    Ready {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        poll_timeout: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner: Option<RunnerMetadata>,
        /// Protocol extensions the runner speaks (`upload`, `logs`, `capabilities`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        /// Extension `capabilities`: what the runner can run. The server then claims
        /// jobs only for Specs it serves ([`Capabilities::serves`]); without it, every
        /// Spec linked to the runner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capabilities: Option<Capabilities>,
    },
    /// Setup done, the benchmark is starting (or, after a reconnect, still running).
    Running {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job: Option<JobUuid>,
    },
    /// Liveness, about once a second during a job.
    Heartbeat,
    Completed {
        job: JobUuid,
        /// Empty when `output` references an uploaded document.
        #[serde(default)]
        results: Vec<IterationResult>,
        /// `upload` extension: the digest of the output document `{results, error?}`
        /// uploaded first to `PUT /v0/runners/{runner}/jobs/{job}/output`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
        /// What the job was measured on (always inline, also with `output`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment: Option<JobEnvironment>,
    },
    Failed {
        job: JobUuid,
        #[serde(default)]
        results: Vec<IterationResult>,
        error: String,
        /// `upload` extension, as for `completed`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
    },
    /// Acknowledges a server `cancel`.
    Canceled { job: JobUuid },
}

/// What a job asks the runner to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobConfig {
    /// Base URL of the registry holding the image.
    pub registry: String,
    pub project: ProjectUuid,
    /// `sha256:…` of the image manifest (or index) to run.
    pub digest: String,
    /// The reference the user gave, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Seconds for the whole job, every iteration included.
    pub timeout: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_time: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iter: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_failure: Option<bool>,
}

impl JobConfig {
    /// Checks the protocol's limits; a runner refuses a job that breaks them.
    pub fn validate(&self) -> Result<(), String> {
        let count = |items: &Option<Vec<String>>| items.as_ref().map_or(0, Vec::len);
        if count(&self.entrypoint) > MAX_COMMAND_ITEMS || count(&self.cmd) > MAX_COMMAND_ITEMS {
            return Err(format!(
                "entrypoint and cmd are limited to {MAX_COMMAND_ITEMS} items"
            ));
        }
        if self.env.as_ref().map_or(0, BTreeMap::len) > MAX_ENV_ITEMS {
            return Err(format!("env is limited to {MAX_ENV_ITEMS} variables"));
        }
        if count(&self.file_paths) > MAX_FILE_PATHS {
            return Err(format!("file_paths is limited to {MAX_FILE_PATHS} paths"));
        }
        if self.timeout == 0 {
            return Err("timeout must be at least 1 second".into());
        }
        Ok(())
    }
}

/// Server → runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "a message lives only between a socket and its handler; boxing buys nothing"
)]
pub enum ServerMessage {
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job: Option<JobUuid>,
    },
    /// A job claimed for this runner.
    Job {
        uuid: JobUuid,
        spec: JsonSpec,
        config: JobConfig,
        /// Pull-only registry token for the job's project; short-lived, never stored.
        oci_token: String,
        /// Seconds; the server's hard limit is this plus its grace period.
        timeout: u32,
        created: DateTime<Utc>,
    },
    /// The poll timeout passed with nothing to do.
    NoJob,
    /// Stop the current job.
    Cancel,
    /// Update the runner binary before the next job. Answers a `ready` that lists the
    /// `update` feature, instead of `job`/`no_job`; a runner that does not update sends
    /// `ready` again without that feature.
    Update {
        version: String,
        /// Where to download the artifact: absolute, or relative to the server's URL
        /// (then the download authenticates with the runner key).
        url: String,
        /// SHA-256 hex of the artifact.
        checksum: String,
        /// Base64 of the ed25519 signature over the artifact's bytes, checked against
        /// the public key configured on the runner. A runner refuses an unsigned update.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
}

/// A frame the peer sent that is not a message we know: unknown events are ignored
/// (logged), malformed known events are protocol errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown event `{0}`")]
    UnknownEvent(String),
    #[error("malformed message: {0}")]
    Malformed(String),
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, known: &[&str]) -> Result<T, ParseError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ParseError::Malformed(e.to_string()))?;
    let event = value
        .get("event")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| ParseError::Malformed("no `event` field".into()))?;
    if !known.contains(&event) {
        return Err(ParseError::UnknownEvent(event.to_owned()));
    }
    serde_json::from_value(value).map_err(|e| ParseError::Malformed(e.to_string()))
}

impl RunnerMessage {
    pub const EVENTS: &'static [&'static str] = &[
        "ready",
        "running",
        "heartbeat",
        "completed",
        "failed",
        "canceled",
    ];

    pub fn parse(text: &str) -> Result<Self, ParseError> {
        parse(text, Self::EVENTS)
    }
}

impl ServerMessage {
    pub const EVENTS: &'static [&'static str] = &["ack", "job", "no_job", "cancel", "update"];

    pub fn parse(text: &str) -> Result<Self, ParseError> {
        parse(text, Self::EVENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        let ready = RunnerMessage::parse(r#"{"event":"ready","poll_timeout":55}"#).unwrap();
        assert_eq!(
            ready,
            RunnerMessage::Ready {
                poll_timeout: Some(55),
                runner: None,
                features: vec![],
                capabilities: None,
            }
        );
        let ready = RunnerMessage::parse(
            r#"{"event":"ready","features":["capabilities"],"capabilities":{"os":"linux",
            "arch":"x86_64","no_sandbox":true,"sandboxes":["qemu"],"cpus":2,"memory":1024,
            "disk":2048}}"#,
        )
        .unwrap();
        let RunnerMessage::Ready {
            capabilities: Some(capabilities),
            ..
        } = ready
        else {
            panic!("capabilities not read: {ready:?}");
        };
        assert_eq!(capabilities.sandboxes, ["qemu"]);
        assert_eq!((capabilities.cpus, capabilities.disk), (2, 2048));
        assert_eq!(
            RunnerMessage::parse(r#"{"event":"heartbeat"}"#).unwrap(),
            RunnerMessage::Heartbeat
        );
        assert_eq!(
            RunnerMessage::parse(r#"{"event":"running"}"#).unwrap(),
            RunnerMessage::Running { job: None }
        );
        assert_eq!(
            serde_json::to_string(&ServerMessage::NoJob).unwrap(),
            r#"{"event":"no_job"}"#
        );
        assert_eq!(
            serde_json::to_string(&ServerMessage::Ack { job: None }).unwrap(),
            r#"{"event":"ack"}"#
        );
        let job = JobUuid::new_v4();
        let failed = RunnerMessage::Failed {
            job,
            results: vec![IterationResult {
                exit_code: 137,
                ..Default::default()
            }],
            error: "timeout".into(),
            output: None,
        };
        let text = serde_json::to_string(&failed).unwrap();
        assert!(!text.contains("output"), "{text}");
        // The measures are optional both ways: absent when not measured, read when sent.
        assert!(!text.contains("build_time_ns") && !text.contains("file_sizes"));
        let measured: IterationResult = serde_json::from_str(
            r#"{"exit_code":0,"build_time_ns":200000000,"file_sizes":{"/out/app":4096}}"#,
        )
        .unwrap();
        assert_eq!(measured.build_time_ns, Some(200_000_000));
        assert_eq!(
            measured.file_sizes,
            Some(BTreeMap::from([("/out/app".to_owned(), 4096)]))
        );
        assert_eq!(RunnerMessage::parse(&text).unwrap(), failed);
        // `upload` extension: a reference instead of results.
        let completed = RunnerMessage::parse(&format!(
            r#"{{"event":"completed","job":"{job}","output":"sha256:00"}}"#
        ))
        .unwrap();
        assert_eq!(
            completed,
            RunnerMessage::Completed {
                job,
                results: vec![],
                output: Some("sha256:00".into()),
                environment: None,
            }
        );
        // The environment travels as two JSON objects the server keeps as they are.
        let measured = RunnerMessage::parse(&format!(
            r#"{{"event":"completed","job":"{job}","environment":{{"noise":{{"cpu":{{"cv":0.01}}}},"fingerprint":{{"kernel":"6.1"}}}}}}"#
        ))
        .unwrap();
        let RunnerMessage::Completed {
            environment: Some(environment),
            ..
        } = measured
        else {
            panic!("no environment: {measured:?}");
        };
        assert_eq!(environment.fingerprint["kernel"], "6.1");
        assert_eq!(environment.noise["cpu"]["cv"], 0.01);
    }

    #[test]
    fn unknown_and_malformed() {
        assert_eq!(
            RunnerMessage::parse(r#"{"event":"dance","x":1}"#),
            Err(ParseError::UnknownEvent("dance".into()))
        );
        assert!(matches!(
            RunnerMessage::parse("not json"),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            RunnerMessage::parse(r#"{"no":"event"}"#),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            RunnerMessage::parse(r#"{"event":"completed"}"#),
            Err(ParseError::Malformed(_))
        ));
        // Extra fields from newer peers are fine.
        assert_eq!(
            RunnerMessage::parse(r#"{"event":"heartbeat","seq":3}"#).unwrap(),
            RunnerMessage::Heartbeat
        );
        assert_eq!(
            ServerMessage::parse(r#"{"event":"cancel","reason":"user"}"#).unwrap(),
            ServerMessage::Cancel
        );
    }

    #[test]
    fn config_limits() {
        let mut config = JobConfig {
            registry: "http://localhost:6610".into(),
            project: ProjectUuid::new_v4(),
            digest: format!("sha256:{}", "a".repeat(64)),
            image: None,
            entrypoint: None,
            cmd: Some(vec!["x".into(); 64]),
            env: None,
            timeout: 60,
            file_paths: None,
            build_time: None,
            file_size: None,
            iter: None,
            allow_failure: None,
        };
        assert!(config.validate().is_ok());
        config.cmd = Some(vec!["x".into(); 65]);
        assert!(config.validate().is_err());
    }
}
