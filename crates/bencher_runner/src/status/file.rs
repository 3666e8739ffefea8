//! The agent's status file: what a running `runner up` publishes about itself (pid,
//! version, channel URL, connection, current job) for `runner status` to read. IO: one
//! file, `status` (JSON), in the spool directory; every call blocks (it is small).
//!
//! It lives in the spool directory because that directory belongs to exactly one
//! runner process (the spool's `flock`), so two runners on a host never share a status
//! file, and `runner status --spool-dir` finds the results and the agent together.
//! The file is replaced atomically (temporary file, rename), so a reader sees a whole
//! old or a whole new state; it is not fsynced: after a crash a stale file is harmless,
//! because a reader checks that its process is still alive (pid and start time).
//! It never holds the key: only the channel URL, without user info.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bencher_types::JobUuid;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::agent::core::{Effect, Exit, Note};
use crate::agent::link::LinkEvent;

/// The file's name in the spool directory. JSON, but not named `*.json`: in the spool
/// those are results, for the spool and for an operator listing it.
pub const STATUS_FILE: &str = "status";
/// Prefix of the temporary file renamed over it.
const TMP_PREFIX: &str = ".status-";
const FORMAT_VERSION: u32 = 1;

/// The connection to the server as the agent last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Connection {
    /// Started, no attempt finished yet.
    Connecting,
    Connected {
        since: DateTime<Utc>,
    },
    /// Lost or never made; the link retries with backoff. `attempts` counts failed
    /// attempts since the last connection.
    Disconnected {
        since: DateTime<Utc>,
        attempts: u32,
        last_error: String,
    },
    /// The server refused the key (401); the runner stops.
    Unauthorized {
        since: DateTime<Utc>,
    },
}

/// The job the agent holds (preparing, running or reporting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentJob {
    pub job: JobUuid,
    pub since: DateTime<Utc>,
}

/// The content of the status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: u32,
    pub pid: u32,
    /// The process's start time in clock ticks after boot (`/proc/PID/stat` field 22):
    /// with the pid, it tells this process from a later one that got the same pid.
    pub pid_start: Option<u64>,
    pub runner_version: String,
    /// The WebSocket URL: the server and the runner it operates as.
    pub channel: String,
    pub started: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub connection: Connection,
    pub job: Option<CurrentJob>,
    /// SIGTERM received: no new jobs, the current one finishes within the drain bound.
    pub draining: bool,
    /// Set when the agent exited normally, with how.
    pub stopped: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusFileError {
    #[error("cannot {action} the status file {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the status file {} is not a runner status", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The agent's side: keeps the current status and rewrites the file on every change.
#[derive(Debug)]
pub struct StatusFile {
    dir: PathBuf,
    status: AgentStatus,
}

impl StatusFile {
    /// The status of this process, starting to connect to `channel`; writes it. Call it
    /// with the spool open (locked): temporary files a crashed writer left are removed.
    pub fn start(dir: &Path, channel: &Url) -> Self {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let now = Utc::now();
        let pid = std::process::id();
        let file = Self {
            dir: dir.to_owned(),
            status: AgentStatus {
                version: FORMAT_VERSION,
                pid,
                pid_start: process_start(pid),
                runner_version: crate::update::VERSION.to_owned(),
                channel: redact(channel),
                started: now,
                updated: now,
                connection: Connection::Connecting,
                job: None,
                draining: false,
                stopped: None,
            },
        };
        file.publish();
        file
    }

    pub fn connected(&mut self) {
        self.update(|s, now| s.connection = Connection::Connected { since: now });
    }

    /// A connection ended (`reason`) or an attempt failed (`error`).
    pub fn disconnected(&mut self, error: &str, attempt_failed: bool) {
        self.update(|s, now| {
            s.connection = match &s.connection {
                Connection::Disconnected {
                    since, attempts, ..
                } => Connection::Disconnected {
                    since: *since,
                    attempts: attempts + u32::from(attempt_failed),
                    last_error: error.to_owned(),
                },
                _ => Connection::Disconnected {
                    since: now,
                    attempts: u32::from(attempt_failed),
                    last_error: error.to_owned(),
                },
            };
        });
    }

    pub fn unauthorized(&mut self) {
        self.update(|s, now| s.connection = Connection::Unauthorized { since: now });
    }

    pub fn job_started(&mut self, job: JobUuid) {
        self.update(|s, now| s.job = Some(CurrentJob { job, since: now }));
    }

    pub fn job_ended(&mut self, job: JobUuid) {
        if self.status.job.as_ref().is_some_and(|j| j.job == job) {
            self.update(|s, _| s.job = None);
        }
    }

    pub fn draining(&mut self) {
        self.update(|s, _| s.draining = true);
    }

    pub fn stopped(&mut self, how: &str) {
        self.update(|s, _| s.stopped = Some(how.to_owned()));
    }

    /// What the driver's link reports: the connection's changes.
    pub fn on_link(&mut self, event: &LinkEvent) {
        match event {
            LinkEvent::Connected { .. } => self.connected(),
            LinkEvent::Disconnected { reason, .. } => self.disconnected(reason, false),
            LinkEvent::ConnectFailed { error } => self.disconnected(error, true),
            LinkEvent::Unauthorized => self.unauthorized(),
            LinkEvent::Message(_) => {}
        }
    }

    /// What the core decided: a job taken on or let go, draining, the exit.
    pub fn on_effect(&mut self, effect: &Effect) {
        match effect {
            Effect::Prepare(assignment) => self.job_started(assignment.job),
            Effect::Release(job) => self.job_ended(*job),
            Effect::Note(Note::Draining { .. }) => self.draining(),
            Effect::Exit(Exit::Drained) => self.stopped("drained"),
            Effect::Exit(Exit::Unauthorized) => self.stopped("the server refused the key"),
            Effect::Exit(Exit::Updated) => self.stopped("restarting as the updated binary"),
            _ => {}
        }
    }

    pub fn status(&self) -> &AgentStatus {
        &self.status
    }

    fn update(&mut self, change: impl FnOnce(&mut AgentStatus, DateTime<Utc>)) {
        let now = Utc::now();
        change(&mut self.status, now);
        self.status.updated = now;
        self.publish();
    }

    /// Writes the file; a failure is logged, never fatal: the status is for operators,
    /// and a runner that cannot write it still runs jobs.
    fn publish(&self) {
        if let Err(error) = write(&self.dir, &self.status) {
            tracing::warn!(error = %crate::agent::error_chain(&error), "cannot write the status file");
        }
    }
}

/// Writes `status` into `dir` atomically (mode 0600, like the spool).
pub fn write(dir: &Path, status: &AgentStatus) -> Result<(), StatusFileError> {
    let path = dir.join(STATUS_FILE);
    let io = |action| {
        let path = path.clone();
        move |source| StatusFileError::Io {
            action,
            path,
            source,
        }
    };
    let bytes = serde_json::to_vec_pretty(status).map_err(|source| StatusFileError::Decode {
        path: path.clone(),
        source,
    })?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(io("create a temporary file for"))?;
    tmp.write_all(&bytes).map_err(io("write"))?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .map_err(io("rename into"))?;
    Ok(())
}

/// Reads the status file in `dir`; `None` when there is none (no runner ever ran with
/// this spool).
pub fn read(dir: &Path) -> Result<Option<AgentStatus>, StatusFileError> {
    let path = dir.join(STATUS_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StatusFileError::Io {
                action: "read",
                path,
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StatusFileError::Decode { path, source })
}

impl AgentStatus {
    /// Whether the process that wrote this is still running (not a later process that
    /// reused its pid) and has not said it stopped.
    pub fn alive(&self) -> bool {
        if self.stopped.is_some() {
            return false;
        }
        match (self.pid_start, process_start(self.pid)) {
            (Some(recorded), Some(now)) => recorded == now,
            // No start time recorded (no /proc when written): the pid alone.
            (None, now) => now.is_some() || Path::new(&format!("/proc/{}", self.pid)).exists(),
            (Some(_), None) => false,
        }
    }
}

/// The start time of process `pid` in clock ticks after boot, if it exists.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and ')': the
    // fields after the last ')' start at field 3 (state), so field 22 is the 20th.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The URL without user info, query or fragment: nothing secret goes into the file.
fn redact(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let url = Url::parse("wss://user:secret@example.com/v0/runners/r/channel?x=1").unwrap();
        let file = StatusFile::start(dir.path(), &url);
        let read_back = read(dir.path()).unwrap().unwrap();
        assert_eq!(&read_back, file.status());
        assert!(
            !read_back.channel.contains("secret"),
            "{}",
            read_back.channel
        );
        assert!(read_back.alive(), "this process is alive");
        // A leftover of a crashed writer goes at the next start.
        fs::write(dir.path().join(format!("{TMP_PREFIX}x")), b"{").unwrap();
        let mut file = StatusFile::start(dir.path(), &url);
        assert!(!dir.path().join(format!("{TMP_PREFIX}x")).exists());
        file.disconnected("refused", true);
        file.disconnected("refused again", true);
        let Connection::Disconnected {
            attempts,
            last_error,
            ..
        } = &read(dir.path()).unwrap().unwrap().connection
        else {
            panic!("disconnected");
        };
        assert_eq!((*attempts, last_error.as_str()), (2, "refused again"));
        let job = JobUuid::new_v4();
        file.connected();
        file.job_started(job);
        assert_eq!(read(dir.path()).unwrap().unwrap().job.unwrap().job, job);
        file.job_ended(job);
        assert_eq!(read(dir.path()).unwrap().unwrap().job, None);
        file.stopped("drained");
        assert!(!read(dir.path()).unwrap().unwrap().alive());
        // Only the file: every temporary file was renamed.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [STATUS_FILE]);
        let mode = fs::metadata(dir.path().join(STATUS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_dead_or_reused_pid_is_not_alive() {
        let mut status = StatusFile {
            dir: PathBuf::new(),
            status: read_self(),
        }
        .status
        .clone();
        assert!(status.alive());
        // Same pid, another start time: a later process.
        status.pid_start = status.pid_start.map(|t| t + 1);
        assert!(!status.alive());
        // A pid above the kernel's limit never exists.
        status.pid = u32::MAX;
        status.pid_start = None;
        assert!(!status.alive());
    }

    fn read_self() -> AgentStatus {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::parse("ws://127.0.0.1:1/v0/runners/r/channel").unwrap();
        StatusFile::start(dir.path(), &url).status().clone()
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATUS_FILE), b"{ not json").unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(StatusFileError::Decode { .. })
        ));
        assert_eq!(process_start(u32::MAX), None);
    }
}
