//! `runner status`: what a runner on this host is doing, for an operator. Three parts,
//! each read on its own so one unreadable part does not hide the others: the agent
//! (from the status file a running `runner up` publishes, see [`file`], checked
//! against the live process), the spool (results waiting for an acknowledgement), and
//! host tuning (a saved original state means tuning is applied now, or a runner died
//! before restoring it). IO: reads the spool directory, the tuning state file and
//! `/proc`; writes nothing.

pub mod file;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bencher_types::JobUuid;
use chrono::{DateTime, Utc};
use serde::Serialize;

use self::file::{AgentStatus, Connection};
use crate::spool::{self, ListedKind};
use crate::tuning::knob::Knob;
use crate::tuning::{self, state};

/// One part of the report: what was read, or why it could not be.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Part<T> {
    Read(T),
    Error { error: String },
}

impl<T> Part<T> {
    fn of<E: std::error::Error>(result: Result<T, E>) -> Self {
        match result {
            Ok(value) => Part::Read(value),
            Err(error) => Part::Error {
                error: crate::agent::error_chain(&error),
            },
        }
    }

    fn is_read(&self) -> bool {
        matches!(self, Part::Read(_))
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub agent: Part<AgentPart>,
    pub spool: Part<SpoolPart>,
    pub tuning: Part<TuningPart>,
}

impl Report {
    /// Whether every part could be read (the exit code); a runner that is not running
    /// is a fact to report, not a failure.
    pub fn complete(&self) -> bool {
        self.agent.is_read() && self.spool.is_read() && self.tuning.is_read()
    }
}

#[derive(Debug, Serialize)]
pub struct AgentPart {
    /// The status file's process is alive and has not said it stopped.
    pub running: bool,
    /// The last status it published; `None` when no runner ever ran with this spool.
    pub status: Option<AgentStatus>,
}

#[derive(Debug, Serialize)]
pub struct SpoolPart {
    pub dir: PathBuf,
    pub entries: Vec<SpoolEntry>,
}

#[derive(Debug, Serialize)]
pub struct SpoolEntry {
    pub job: Option<JobUuid>,
    pub kind: ListedKind,
    pub event: Option<&'static str>,
    pub path: PathBuf,
    pub written: DateTime<Utc>,
    pub age_seconds: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TuningCondition {
    /// No saved state: the host is at its own values (as far as this runner knows).
    NotApplied,
    /// The process that saved it is alive: a job is being benchmarked on a tuned host.
    Applied,
    /// The process that saved it is gone: the next job, or `runner up` at start,
    /// restores these values.
    LeftUnrestored,
    /// Saved before the last reboot: the kernel reset every knob, and the next start
    /// discards it.
    PreviousBoot,
}

#[derive(Debug, Serialize)]
pub struct TuningPart {
    pub dir: PathBuf,
    pub condition: TuningCondition,
    /// The process that saved the state.
    pub pid: Option<u32>,
    pub knobs: Vec<TunedKnob>,
}

#[derive(Debug, Serialize)]
pub struct TunedKnob {
    pub knob: Knob,
    /// The kernel file, under the tuning root.
    pub path: PathBuf,
    /// The host's value, put back after the job.
    pub original: String,
    /// What the file holds now; `None` when it cannot be read.
    pub current: Option<String>,
}

/// Reads everything `runner status` shows. `spool_dir` is the runner's spool (its
/// status file is there); `tuning_root` is `/` on a real host.
pub fn gather(spool_dir: &Path, tuning_root: &Path) -> Report {
    let agent = Part::of(file::read(spool_dir).map(|status| AgentPart {
        running: status.as_ref().is_some_and(AgentStatus::alive),
        status,
    }));
    let now = SystemTime::now();
    let spool = Part::of(spool::list(spool_dir).map(|listed| {
        SpoolPart {
            dir: spool_dir.to_owned(),
            entries: listed
                .into_iter()
                .map(|l| SpoolEntry {
                    job: l.job,
                    kind: l.kind,
                    event: l.event,
                    path: l.path,
                    written: DateTime::<Utc>::from(l.modified),
                    age_seconds: now
                        .duration_since(l.modified)
                        .map_or(0, |age| age.as_secs()),
                })
                .collect(),
        }
    }));
    Report {
        agent,
        spool,
        tuning: Part::of(inspect_tuning(tuning_root)),
    }
}

fn inspect_tuning(root: &Path) -> Result<TuningPart, state::StateError> {
    let dir = root.join(tuning::TUNING_DIR);
    let Some(saved) = state::load(&dir)? else {
        return Ok(TuningPart {
            dir,
            condition: TuningCondition::NotApplied,
            pid: None,
            knobs: Vec::new(),
        });
    };
    let boot_id = std::fs::read_to_string(root.join(tuning::BOOT_ID))
        .ok()
        .map(|id| id.trim().to_owned());
    let condition = if saved.boot_id.is_some() && boot_id.is_some() && saved.boot_id != boot_id {
        TuningCondition::PreviousBoot
    } else if Path::new(&format!("/proc/{}", saved.pid)).exists() {
        TuningCondition::Applied
    } else {
        TuningCondition::LeftUnrestored
    };
    let knobs = saved
        .originals
        .into_iter()
        .map(|original| TunedKnob {
            knob: original.knob,
            current: std::fs::read_to_string(root.join(&original.path))
                .ok()
                .map(|value| value.trim().to_owned()),
            path: original.path,
            original: original.value,
        })
        .collect();
    Ok(TuningPart {
        dir,
        condition,
        pid: Some(saved.pid),
        knobs,
    })
}

/// The report as text for a person.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let now = Utc::now();
    match &report.agent {
        Part::Error { error } => line(format!("runner      cannot read its status: {error}")),
        Part::Read(AgentPart { status: None, .. }) => line(
            "runner      not running (no status file: no runner has run with this spool)".into(),
        ),
        Part::Read(AgentPart {
            running: false,
            status: Some(status),
        }) => {
            let why = match &status.stopped {
                Some(how) => format!("stopped: {how}"),
                None => format!("pid {} is gone", status.pid),
            };
            line(format!(
                "runner      not running ({why}; last status {})",
                when(status.updated, now)
            ));
            line(format!("server      {}", status.channel));
        }
        Part::Read(AgentPart {
            running: true,
            status: Some(status),
        }) => {
            line(format!(
                "runner      running (pid {}, version {}, started {})",
                status.pid,
                status.runner_version,
                when(status.started, now)
            ));
            line(format!("server      {}", status.channel));
            line(format!(
                "connection  {}",
                match &status.connection {
                    Connection::Connecting => "connecting (first attempt)".to_owned(),
                    Connection::Connected { since } =>
                        format!("connected since {}", when(*since, now)),
                    Connection::Disconnected {
                        since,
                        attempts,
                        last_error,
                    } => format!(
                        "disconnected since {}, {attempts} failed attempt(s) since; last error: {last_error}",
                        when(*since, now)
                    ),
                    Connection::Unauthorized { since } => format!(
                        "refused by the server since {} (HTTP 401: wrong or rotated key, or archived runner)",
                        when(*since, now)
                    ),
                }
            ));
            line(format!(
                "job         {}",
                match &status.job {
                    Some(job) => format!("{} since {}", job.job, when(job.since, now)),
                    None => "none".to_owned(),
                }
            ));
            if status.draining {
                line("draining    yes: no new jobs; the current one finishes or is canceled at the drain bound".into());
            }
        }
    }
    match &report.spool {
        Part::Error { error } => line(format!("spool       cannot read it: {error}")),
        Part::Read(spool) => {
            let count = |kind| spool.entries.iter().filter(|e| e.kind == kind).count();
            line(format!(
                "spool       {}: {} result(s) wait for an acknowledgement, {} never acknowledged, {} unreadable",
                spool.dir.display(),
                count(ListedKind::Pending),
                count(ListedKind::Unacknowledged),
                count(ListedKind::Unreadable),
            ));
            for entry in &spool.entries {
                let job = entry
                    .job
                    .map_or_else(|| "-".to_owned(), |job| job.to_string());
                let what = match entry.kind {
                    ListedKind::Pending => entry.event.unwrap_or("-").to_owned(),
                    ListedKind::Unacknowledged => {
                        format!(
                            "{} (never acknowledged, no longer sent)",
                            entry.event.unwrap_or("-")
                        )
                    }
                    ListedKind::Unreadable => {
                        format!("unreadable, set aside: {}", entry.path.display())
                    }
                };
                line(format!("  {job}  {what}, {} old", age(entry.age_seconds)));
            }
        }
    }
    match &report.tuning {
        Part::Error { error } => line(format!("tuning      cannot read its state: {error}")),
        Part::Read(tuning) => {
            let pid = tuning.pid.unwrap_or_default();
            line(format!(
                "tuning      {}",
                match tuning.condition {
                    TuningCondition::NotApplied =>
                        format!("not applied (no saved state in {})", tuning.dir.display()),
                    TuningCondition::Applied => {
                        format!("applied by pid {pid}, which is running a job")
                    }
                    TuningCondition::LeftUnrestored => format!(
                        "left unrestored by pid {pid}, which is gone: the next job or `runner up` puts these back"
                    ),
                    TuningCondition::PreviousBoot => format!(
                        "saved by pid {pid} before the last reboot: the kernel reset it; the next start discards it"
                    ),
                }
            ));
            for knob in &tuning.knobs {
                line(format!(
                    "  {:<20} original {:<14} now {}",
                    knob.knob.name(),
                    knob.original,
                    knob.current.as_deref().unwrap_or("(unreadable)")
                ));
            }
        }
    }
    out
}

/// A time and how long ago it was.
fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let ago = (now - at).num_seconds().max(0).unsigned_abs();
    format!("{} ({} ago)", at.format("%Y-%m-%dT%H:%M:%SZ"), age(ago))
}

/// `42s`, `5m 3s`, `2h 10m`, `3d 4h`.
fn age(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(61), "1m 1s");
        assert_eq!(age(3 * 3600 + 120), "3h 2m");
        assert_eq!(age(2 * 86_400 + 3600), "2d 1h");
    }

    #[test]
    fn an_empty_host_reads_completely() {
        let spool = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let report = gather(&spool.path().join("none"), root.path());
        assert!(report.complete());
        let text = render(&report);
        assert!(text.contains("not running"), "{text}");
        assert!(text.contains("0 result(s)"), "{text}");
        assert!(text.contains("not applied"), "{text}");
    }

    #[test]
    fn an_unreadable_part_is_reported_not_fatal() {
        let spool = tempfile::tempdir().unwrap();
        std::fs::write(spool.path().join(file::STATUS_FILE), b"garbage").unwrap();
        let root = tempfile::tempdir().unwrap();
        let report = gather(spool.path(), root.path());
        assert!(!report.complete());
        assert!(report.spool.is_read() && report.tuning.is_read());
        let text = render(&report);
        assert!(text.contains("cannot read its status"), "{text}");
    }
}
