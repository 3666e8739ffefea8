//! The job lifecycle as a pure state machine: which event moves a Job from which status
//! to which (the table of `protocol.md`), and the timeout rules as functions of the
//! Job's status, its timestamps, `now` and the configuration. No IO and no clock reads:
//! the store applies these decisions as conditional updates, and callers pass the time.
//!
//! ```text
//! pending ──claim──▶ claimed ──running──▶ running ──completed──▶ completed ──processed──▶ processed
//!    ▲                │  │                 │  │                      ▲
//!    └────unclaim─────┘  │ failed,         │  │ failed,              │ late completed (after a
//!                        │ heartbeat/claim │  │ heartbeat timeout    │ heartbeat-timeout failure)
//!                        ▼ timeout         ▼  │                      │
//!                      failed ◀────────────┘  └───────────────── failed
//! pending, claimed, running ──cancel──▶ canceled;  running ──hard timeout──▶ canceled
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bencher_types::JobStatus;
use chrono::{DateTime, TimeDelta, Utc};

use crate::config::{DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_JOB_GRACE_PERIOD};

/// What can happen to a Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobEvent {
    /// A runner claims a pending job.
    Claim,
    /// Sending the job to the runner failed: the claim is undone (`protocol.md`,
    /// recovery), so the job is never left dangling.
    Unclaim,
    /// The runner sent `running`.
    Running,
    /// The runner sent `completed` for a running job.
    Completed,
    /// The runner sent `completed` for a job that had failed by heartbeat timeout (it
    /// kept running while the connection was down).
    LateCompleted,
    /// The runner sent `failed`.
    Failed,
    /// No valid message from the runner within the heartbeat timeout.
    HeartbeatTimeout,
    /// The job sat in `claimed` past its hard limit: the runner never started it.
    ClaimTimeout,
    /// A user canceled the job.
    Cancel,
    /// The job ran past its timeout plus the grace period.
    HardTimeout,
    /// The server parsed the results into the report.
    Processed,
    /// The server could not parse the results (the adapter's message is the job's
    /// error): a benchmark whose output means nothing did not complete.
    ProcessingFailed,
}

impl JobEvent {
    pub const ALL: &'static [Self] = &[
        Self::Claim,
        Self::Unclaim,
        Self::Running,
        Self::Completed,
        Self::LateCompleted,
        Self::Failed,
        Self::HeartbeatTimeout,
        Self::ClaimTimeout,
        Self::Cancel,
        Self::HardTimeout,
        Self::Processed,
        Self::ProcessingFailed,
    ];

    /// The stored form (`job.last_event`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Unclaim => "unclaim",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::LateCompleted => "late_completed",
            Self::Failed => "failed",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::ClaimTimeout => "claim_timeout",
            Self::Cancel => "cancel",
            Self::HardTimeout => "hard_timeout",
            Self::Processed => "processed",
            Self::ProcessingFailed => "processing_failed",
        }
    }

    /// The verb for error messages: "cannot {verb} a job that is {status}".
    fn verb(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Unclaim => "unclaim",
            Self::Running => "start",
            Self::Completed | Self::LateCompleted => "complete",
            Self::Failed => "fail",
            Self::HeartbeatTimeout => "time out (heartbeat)",
            Self::ClaimTimeout => "time out (claim)",
            Self::Cancel => "cancel",
            Self::HardTimeout => "time out (hard limit)",
            Self::Processed => "process",
            Self::ProcessingFailed => "fail processing",
        }
    }
}

impl FromStr for JobEvent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|event| event.as_str() == s)
            .ok_or_else(|| format!("unknown job event `{s}`"))
    }
}

impl fmt::Display for JobEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `event` does not apply to a job in status `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct InvalidTransition {
    pub from: JobStatus,
    pub event: JobEvent,
}

impl fmt::Display for InvalidTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} a job that is {}",
            self.event.verb(),
            self.from
        )?;
        if self.event == JobEvent::Cancel {
            f.write_str("; only pending, claimed or running jobs can be canceled")?;
        }
        Ok(())
    }
}

/// The status `event` moves a job in status `from` to: the table of `protocol.md`, plus
/// the recovery rules (unclaim, claim timeout).
pub fn transition(from: JobStatus, event: JobEvent) -> Result<JobStatus, InvalidTransition> {
    use JobEvent as E;
    use JobStatus as S;
    Ok(match (from, event) {
        (S::Pending, E::Claim) => S::Claimed,
        (S::Claimed, E::Unclaim) => S::Pending,
        (S::Pending | S::Claimed | S::Running, E::Cancel) => S::Canceled,
        (S::Running, E::HardTimeout) => S::Canceled,
        (S::Claimed, E::Running) => S::Running,
        (S::Claimed | S::Running, E::Failed | E::HeartbeatTimeout) => S::Failed,
        (S::Claimed, E::ClaimTimeout) => S::Failed,
        (S::Running, E::Completed) => S::Completed,
        (S::Completed, E::Processed) => S::Processed,
        (S::Completed, E::ProcessingFailed) => S::Failed,
        (S::Failed, E::LateCompleted) => S::Completed,
        _ => return Err(InvalidTransition { from, event }),
    })
}

/// Whether `event` repeats what already happened to a job in `status`: a runner
/// re-sending `running` or a terminal message after a reconnect, or results processed
/// twice after a crash. Repeats are acknowledged and change nothing.
pub fn is_repeat(status: JobStatus, event: JobEvent) -> bool {
    use JobEvent as E;
    use JobStatus as S;
    matches!(
        (status, event),
        (S::Running, E::Running)
            | (S::Completed | S::Processed, E::Completed | E::LateCompleted)
            | (S::Failed, E::Failed)
            | (S::Processed, E::Processed)
            | (S::Failed, E::ProcessingFailed)
    )
}

/// The event a runner's `completed` stands for: a late completion when the job failed by
/// heartbeat timeout (the runner kept going while its connection was down), otherwise
/// a plain completion (which a job the runner itself failed refuses).
pub fn completion_event(status: JobStatus, last_event: Option<JobEvent>) -> JobEvent {
    if status == JobStatus::Failed && last_event == Some(JobEvent::HeartbeatTimeout) {
        JobEvent::LateCompleted
    } else {
        JobEvent::Completed
    }
}

/// What a runner's terminal message (`completed` or `failed`) does to a job the runner
/// holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalOutcome {
    /// Store the output, then apply this event.
    Apply(JobEvent),
    /// Nothing changes: the message repeats what already happened (a re-send after a
    /// reconnect), or the job ended otherwise first (a user's cancel, a timeout). The
    /// runner is acknowledged all the same, so it stops re-sending a message that can
    /// never change the job. `record_output`: the job has no output yet (a runner's
    /// `failed` after a heartbeat-timeout failure, a `completed` racing a cancel), so the
    /// runner's output is kept for users to read.
    Keep { record_output: bool },
}

/// The outcome of a runner's `completed` (`completed = true`) or `failed` for its own job
/// in `status`, reached by `last_event`; `has_output`: an output is already recorded.
pub fn terminal_outcome(
    status: JobStatus,
    last_event: Option<JobEvent>,
    completed: bool,
    has_output: bool,
) -> TerminalOutcome {
    let event = if completed {
        completion_event(status, last_event)
    } else {
        JobEvent::Failed
    };
    if !is_repeat(status, event) && transition(status, event).is_ok() {
        TerminalOutcome::Apply(event)
    } else {
        TerminalOutcome::Keep {
            record_output: !has_output,
        }
    }
}

/// How the server answers a runner's `running` for a job the runner holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunningAnswer {
    /// The job was claimed: it starts (`claimed → running`).
    Start,
    /// The job already runs: a resume after a reconnect, which refreshes liveness.
    Resume,
    /// The job failed by heartbeat timeout while the runner was away: nothing changes,
    /// but the runner may go on, since its late `completed` still counts.
    Continue,
    /// The job is over for the server (canceled, failed otherwise, finished): the runner
    /// is told to stop it.
    Stop,
}

pub fn running_answer(status: JobStatus, last_event: Option<JobEvent>) -> RunningAnswer {
    if transition(status, JobEvent::Running).is_ok() {
        RunningAnswer::Start
    } else if is_repeat(status, JobEvent::Running) {
        RunningAnswer::Resume
    } else if completion_event(status, last_event) == JobEvent::LateCompleted {
        RunningAnswer::Continue
    } else {
        RunningAnswer::Stop
    }
}

/// The server's timeout settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest silence from the runner during a job.
    pub heartbeat: Duration,
    /// How long a job may run past its own timeout before the server cancels it.
    pub grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            heartbeat: DEFAULT_HEARTBEAT_TIMEOUT,
            grace: DEFAULT_JOB_GRACE_PERIOD,
        }
    }
}

/// What the timeout rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobClock {
    pub status: JobStatus,
    /// The job's own timeout.
    pub timeout: Duration,
    pub claimed: Option<DateTime<Utc>>,
    /// When the runner reported `running`.
    pub started: Option<DateTime<Utc>>,
    /// The last valid protocol message from the runner.
    pub last_heartbeat: Option<DateTime<Utc>>,
}

fn plus(time: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| time.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// When the hard limit (job timeout + grace) passes: counted from `running`, and, for a
/// job still `claimed`, the same bound counted from the claim. `None` when no timer runs
/// (not claimed or running, or the timestamp it counts from is missing).
pub fn hard_deadline(job: &JobClock, timeouts: &Timeouts) -> Option<DateTime<Utc>> {
    let from = match job.status {
        JobStatus::Claimed => job.claimed?,
        // A running job always has `started`; a row from before that column was written
        // falls back to the claim, the earlier and so stricter bound.
        JobStatus::Running => job.started.or(job.claimed)?,
        _ => return None,
    };
    Some(plus(plus(from, job.timeout), timeouts.grace))
}

/// When the heartbeat timeout passes: one heartbeat timeout after the last sign of life
/// (the claim, `running`, or any later valid message).
pub fn heartbeat_deadline(job: &JobClock, timeouts: &Timeouts) -> Option<DateTime<Utc>> {
    if !matches!(job.status, JobStatus::Claimed | JobStatus::Running) {
        return None;
    }
    let alive = [job.claimed, job.started, job.last_heartbeat]
        .into_iter()
        .flatten()
        .max()?;
    Some(plus(alive, timeouts.heartbeat))
}

/// The earliest time a timeout may fire, for arming a timer; `None` when none runs.
pub fn next_deadline(job: &JobClock, timeouts: &Timeouts) -> Option<DateTime<Utc>> {
    [
        hard_deadline(job, timeouts),
        heartbeat_deadline(job, timeouts),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// The timeout event due at `now`, if any. The hard limit wins over the heartbeat: a
/// silent running job past its hard limit becomes `canceled`, otherwise `failed`. A
/// claimed job never ran, so past either bound it becomes `failed` (the table has no
/// claimed → canceled by timeout). A runner that disconnected is under the same rule:
/// the silence since its last message is what counts.
pub fn timeout_event(job: &JobClock, now: DateTime<Utc>, timeouts: &Timeouts) -> Option<JobEvent> {
    let past = |deadline: Option<DateTime<Utc>>| deadline.is_some_and(|d| now >= d);
    let hard = past(hard_deadline(job, timeouts));
    let heartbeat = past(heartbeat_deadline(job, timeouts));
    match job.status {
        JobStatus::Running if hard => Some(JobEvent::HardTimeout),
        JobStatus::Claimed if hard => Some(JobEvent::ClaimTimeout),
        JobStatus::Running | JobStatus::Claimed if heartbeat => Some(JobEvent::HeartbeatTimeout),
        _ => None,
    }
}

/// The `error` recorded when a timeout ends a job.
pub fn timeout_message(event: JobEvent, job: &JobClock, timeouts: &Timeouts) -> Option<String> {
    let limit = job.timeout.as_secs() + timeouts.grace.as_secs();
    match event {
        JobEvent::HeartbeatTimeout => Some(format!(
            "no message from the runner for {} s (heartbeat timeout)",
            timeouts.heartbeat.as_secs()
        )),
        JobEvent::HardTimeout => Some(format!(
            "the job ran longer than its timeout of {} s plus {} s grace",
            job.timeout.as_secs(),
            timeouts.grace.as_secs()
        )),
        JobEvent::ClaimTimeout => Some(format!(
            "the runner did not start the job within {limit} s of claiming it"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobEvent as E;
    use JobStatus as S;

    /// Every legal transition, written out independently of `transition`'s match.
    const TABLE: &[(JobStatus, JobEvent, JobStatus)] = &[
        (S::Pending, E::Claim, S::Claimed),
        (S::Pending, E::Cancel, S::Canceled),
        (S::Claimed, E::Cancel, S::Canceled),
        (S::Running, E::Cancel, S::Canceled),
        (S::Running, E::HardTimeout, S::Canceled),
        (S::Claimed, E::Running, S::Running),
        (S::Claimed, E::Failed, S::Failed),
        (S::Running, E::Failed, S::Failed),
        (S::Claimed, E::HeartbeatTimeout, S::Failed),
        (S::Running, E::HeartbeatTimeout, S::Failed),
        (S::Running, E::Completed, S::Completed),
        (S::Completed, E::Processed, S::Processed),
        (S::Completed, E::ProcessingFailed, S::Failed),
        (S::Failed, E::LateCompleted, S::Completed),
        // Recovery rules of protocol.md.
        (S::Claimed, E::Unclaim, S::Pending),
        (S::Claimed, E::ClaimTimeout, S::Failed),
    ];

    #[test]
    fn every_row_of_the_table() {
        for &(from, event, to) in TABLE {
            assert_eq!(transition(from, event), Ok(to), "{from} --{event}-->");
        }
    }

    #[test]
    fn every_other_pair_is_illegal() {
        let mut illegal = 0;
        for &from in S::ALL {
            for &event in E::ALL {
                if TABLE.iter().any(|&(f, e, _)| (f, e) == (from, event)) {
                    continue;
                }
                assert_eq!(
                    transition(from, event),
                    Err(InvalidTransition { from, event }),
                    "{from} --{event}--> must be refused"
                );
                illegal += 1;
            }
        }
        assert_eq!(illegal, S::ALL.len() * E::ALL.len() - TABLE.len());
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        for &from in S::ALL.iter().filter(|s| s.is_terminal()) {
            for &event in E::ALL {
                assert!(transition(from, event).is_err(), "{from} --{event}-->");
            }
        }
    }

    #[test]
    fn every_non_terminal_status_is_reachable_and_leavable() {
        for &status in S::ALL {
            let reachable = status == S::Pending || TABLE.iter().any(|&(_, _, to)| to == status);
            assert!(reachable, "{status} unreachable");
            if !status.is_terminal() {
                assert!(TABLE.iter().any(|&(from, _, _)| from == status), "{status}");
            }
        }
    }

    #[test]
    fn refusals_explain_themselves() {
        let err = transition(S::Completed, E::Cancel).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot cancel a job that is completed; only pending, claimed or running jobs can be canceled"
        );
        assert_eq!(
            transition(S::Pending, E::Running).unwrap_err().to_string(),
            "cannot start a job that is pending"
        );
    }

    #[test]
    fn repeats_are_not_transitions() {
        for &status in S::ALL {
            for &event in E::ALL {
                if is_repeat(status, event) {
                    assert!(
                        transition(status, event).is_err(),
                        "{status}/{event}: a repeat must not also be a transition"
                    );
                }
            }
        }
        assert!(is_repeat(S::Running, E::Running));
        assert!(is_repeat(S::Processed, E::Completed));
        assert!(
            !is_repeat(S::Canceled, E::Cancel),
            "canceling twice is a 409"
        );
        assert!(!is_repeat(S::Canceled, E::Completed));
    }

    #[test]
    fn late_completion_only_after_a_heartbeat_timeout() {
        assert_eq!(
            completion_event(S::Failed, Some(E::HeartbeatTimeout)),
            E::LateCompleted
        );
        // A job the runner itself failed, or one that never started, stays failed.
        for last in [Some(E::Failed), Some(E::ClaimTimeout), None] {
            let event = completion_event(S::Failed, last);
            assert_eq!(event, E::Completed);
            assert!(transition(S::Failed, event).is_err());
        }
        assert_eq!(completion_event(S::Running, Some(E::Running)), E::Completed);
    }

    #[test]
    fn terminal_messages() {
        use TerminalOutcome::{Apply, Keep};
        // The normal ends.
        assert_eq!(
            terminal_outcome(S::Running, Some(E::Running), true, false),
            Apply(E::Completed)
        );
        assert_eq!(
            terminal_outcome(S::Running, Some(E::Running), false, false),
            Apply(E::Failed)
        );
        assert_eq!(
            terminal_outcome(S::Claimed, Some(E::Claim), false, false),
            Apply(E::Failed),
            "setup can fail before `running`"
        );
        // A late completion overrides a heartbeat-timeout failure.
        assert_eq!(
            terminal_outcome(S::Failed, Some(E::HeartbeatTimeout), true, false),
            Apply(E::LateCompleted)
        );
        // Re-sends change nothing; their output is already there.
        assert_eq!(
            terminal_outcome(S::Completed, Some(E::Completed), true, true),
            Keep {
                record_output: false
            }
        );
        assert_eq!(
            terminal_outcome(S::Failed, Some(E::Failed), false, true),
            Keep {
                record_output: false
            }
        );
        // A runner's own failure after the heartbeat timeout failed the job: the status
        // stays, the runner's output is kept.
        assert_eq!(
            terminal_outcome(S::Failed, Some(E::HeartbeatTimeout), false, false),
            Keep {
                record_output: true
            }
        );
        // The job ended otherwise first: nothing changes, but nothing is lost either.
        for (status, last) in [
            (S::Canceled, E::Cancel),
            (S::Canceled, E::HardTimeout),
            (S::Failed, E::ClaimTimeout),
        ] {
            assert_eq!(
                terminal_outcome(status, Some(last), true, false),
                Keep {
                    record_output: true
                },
                "{status}/{last}"
            );
        }
        // Every `Apply` is a legal transition.
        for &status in S::ALL {
            for &last in E::ALL {
                for completed in [true, false] {
                    if let Apply(event) = terminal_outcome(status, Some(last), completed, false) {
                        assert!(transition(status, event).is_ok(), "{status}/{last}");
                    }
                }
            }
        }
    }

    #[test]
    fn running_messages() {
        assert_eq!(
            running_answer(S::Claimed, Some(E::Claim)),
            RunningAnswer::Start
        );
        assert_eq!(
            running_answer(S::Running, Some(E::Running)),
            RunningAnswer::Resume
        );
        assert_eq!(
            running_answer(S::Failed, Some(E::HeartbeatTimeout)),
            RunningAnswer::Continue
        );
        for (status, last) in [
            (S::Failed, E::Failed),
            (S::Failed, E::ClaimTimeout),
            (S::Canceled, E::Cancel),
            (S::Canceled, E::HardTimeout),
            (S::Completed, E::Completed),
            (S::Processed, E::Processed),
        ] {
            assert_eq!(
                running_answer(status, Some(last)),
                RunningAnswer::Stop,
                "{status}/{last}"
            );
        }
    }

    #[test]
    fn events_round_trip() {
        for event in E::ALL {
            assert_eq!(event.as_str().parse::<JobEvent>(), Ok(*event));
        }
        assert!("nope".parse::<JobEvent>().is_err());
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn running(timeout: u64, started: i64, heartbeat: Option<i64>) -> JobClock {
        JobClock {
            status: S::Running,
            timeout: Duration::from_secs(timeout),
            claimed: Some(at(started - 5)),
            started: Some(at(started)),
            last_heartbeat: heartbeat.map(at),
        }
    }

    #[test]
    fn defaults_match_the_protocol() {
        let t = Timeouts::default();
        assert_eq!(t.heartbeat, Duration::from_secs(90));
        assert_eq!(t.grace, Duration::from_secs(60));
    }

    #[test]
    fn heartbeat_timeout_fails_a_running_job() {
        let t = Timeouts::default();
        // Timeout 3600 s: the hard limit is far away; only silence counts.
        let job = running(3600, 0, Some(100));
        assert_eq!(heartbeat_deadline(&job, &t), Some(at(190)));
        assert_eq!(timeout_event(&job, at(189), &t), None);
        assert_eq!(timeout_event(&job, at(190), &t), Some(E::HeartbeatTimeout));
        assert_eq!(next_deadline(&job, &t), Some(at(190)));
        // Without any heartbeat, `running` itself is the last sign of life.
        let job = running(3600, 0, None);
        assert_eq!(timeout_event(&job, at(89), &t), None);
        assert_eq!(timeout_event(&job, at(90), &t), Some(E::HeartbeatTimeout));
    }

    #[test]
    fn hard_timeout_cancels_a_running_job_even_with_heartbeats() {
        let t = Timeouts::default();
        let job = running(10, 0, Some(69));
        assert_eq!(hard_deadline(&job, &t), Some(at(70)));
        assert_eq!(timeout_event(&job, at(69), &t), None);
        assert_eq!(timeout_event(&job, at(70), &t), Some(E::HardTimeout));
        assert_eq!(next_deadline(&job, &t), Some(at(70)));
        assert_eq!(
            transition(S::Running, E::HardTimeout),
            Ok(S::Canceled),
            "past the hard limit a job is canceled"
        );
    }

    #[test]
    fn silence_past_the_hard_limit_cancels_rather_than_fails() {
        let t = Timeouts::default();
        // Silent since 0, hard limit at 70, heartbeat deadline at 90: at 90 both have
        // passed, and the hard limit decides.
        let job = running(10, 0, None);
        assert_eq!(timeout_event(&job, at(90), &t), Some(E::HardTimeout));
        assert_eq!(
            timeout_message(E::HardTimeout, &job, &t).unwrap(),
            "the job ran longer than its timeout of 10 s plus 60 s grace"
        );
    }

    #[test]
    fn claimed_jobs_are_bounded_too() {
        let t = Timeouts {
            heartbeat: Duration::from_secs(600),
            grace: Duration::from_secs(60),
        };
        let job = JobClock {
            status: S::Claimed,
            timeout: Duration::from_secs(30),
            claimed: Some(at(0)),
            started: None,
            last_heartbeat: Some(at(80)),
        };
        // Heartbeats during setup do not extend the bound on `claimed`.
        assert_eq!(hard_deadline(&job, &t), Some(at(90)));
        assert_eq!(timeout_event(&job, at(89), &t), None);
        assert_eq!(timeout_event(&job, at(90), &t), Some(E::ClaimTimeout));
        assert_eq!(transition(S::Claimed, E::ClaimTimeout), Ok(S::Failed));
        // A silent claimed job fails by heartbeat first when that comes sooner.
        let t = Timeouts::default();
        let silent = JobClock {
            last_heartbeat: None,
            timeout: Duration::from_secs(3600),
            ..job
        };
        assert_eq!(
            timeout_event(&silent, at(90), &t),
            Some(E::HeartbeatTimeout)
        );
    }

    #[test]
    fn no_timers_outside_claimed_and_running() {
        let t = Timeouts::default();
        for &status in S::ALL {
            if matches!(status, S::Claimed | S::Running) {
                continue;
            }
            let job = JobClock {
                status,
                ..running(1, 0, None)
            };
            assert_eq!(next_deadline(&job, &t), None, "{status}");
            assert_eq!(timeout_event(&job, at(1_000_000), &t), None, "{status}");
        }
    }

    #[test]
    fn huge_values_saturate() {
        let t = Timeouts {
            heartbeat: Duration::MAX,
            grace: Duration::MAX,
        };
        let job = running(u64::MAX, 0, None);
        assert_eq!(hard_deadline(&job, &t), Some(DateTime::<Utc>::MAX_UTC));
        assert_eq!(timeout_event(&job, at(1_000_000_000), &t), None);
    }
}
