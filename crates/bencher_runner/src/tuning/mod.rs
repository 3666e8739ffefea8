//! Host tuning: the kernel knobs set before each benchmark to lower measurement noise,
//! and put back after it. The only place in the runner that writes `/proc` or `/sys`
//! (a job's process joining the runner's cpuset cgroup, `executor::placement`, aside).
//! The cpuset partition (`cpuset`) also creates a cgroup and moves the runner's threads.
//! IO: kernel files under the tuning root (`/` on a real host, a fake tree in tests),
//! the state file and lock under `ROOT/var/lib/bencher-runner/tuning/`; every call
//! blocks except [`Tuning::apply`].
//!
//! # What holds
//!
//! - One runner tunes a host at a time: applying takes an exclusive `flock` on the
//!   host-wide lock file and holds it until restored. Another runner's job waits.
//! - Crash-safe: the original value of every file about to change is in the state file
//!   (fsynced, atomic) before the first write. Whoever takes the lock next — the next
//!   benchmark, or `runner up` at start — restores a leftover state file first; after
//!   a reboot (another boot id) the kernel's own defaults stand and it is discarded.
//! - Restoring is idempotent: a file already at its original value is not written.
//! - Verified: every write is read back; a knob the host lacks (file missing, write
//!   refused, value read back different) is `unsupported` with the reason, never
//!   skipped silently. [`TuningState`] is what a job's record carries.
//! - What writing an original back cannot undo (the cpuset cgroup, enabling the cpuset
//!   controller) is an [`state::Undo`] entry of the same state file. The runner's
//!   thread affinities are undone from memory only: they die with the runner.
//! - Deep C-states are held off by a request on `/dev/cpu_dma_latency` that lives as
//!   long as its file descriptor: the kernel drops it when the runner dies.

pub mod cpuset;
pub mod knob;
pub mod state;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use self::cpuset::CpusetDetail;
use self::knob::{Format, Knob, Resolved, Target, io_reason};
use self::state::{Original, SavedState, StateError, Undo};
use crate::cli::TuningArgs;

/// The tuning directory (state file and lock), relative to the tuning root. Host-wide
/// on purpose: the knobs are host-wide, whatever `--spool-dir` each runner has.
pub const TUNING_DIR: &str = "var/lib/bencher-runner/tuning";
const LOCK_FILE: &str = "lock";
pub(crate) const BOOT_ID: &str = "proc/sys/kernel/random/boot_id";
/// How often a runner waiting for another runner's benchmark tries the lock again.
const LOCK_RETRY: Duration = Duration::from_millis(200);

/// What to do with one knob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// The operator keeps the host's value.
    Keep,
    Set(String),
}

/// Every knob and what the operator wants for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    wanted: Vec<(Knob, Wanted)>,
}

impl Settings {
    /// The flags of `runner up`; `None` for `--no-tuning`.
    pub fn from_args(args: &TuningArgs) -> Option<Self> {
        if args.no_tuning {
            return None;
        }
        let unless = |keep: bool, value: &str| {
            if keep {
                Wanted::Keep
            } else {
                Wanted::Set(value.to_owned())
            }
        };
        let wanted = Knob::ALL
            .iter()
            .map(|&knob| {
                let wanted = match knob {
                    Knob::Aslr => unless(args.aslr, "0"),
                    Knob::NmiWatchdog => unless(args.nmi_watchdog, "0"),
                    Knob::Smt => unless(args.smt, "off"),
                    Knob::Turbo => unless(args.turbo, "off"),
                    Knob::Swappiness => Wanted::Set(args.swappiness.to_string()),
                    Knob::Governor => Wanted::Set(args.governor.clone()),
                    Knob::PerfEventParanoid => Wanted::Set(args.perf_event_paranoid.to_string()),
                    Knob::TransparentHugepages => unless(args.thp, "never"),
                    Knob::NumaBalancing => unless(args.numa_balancing, "0"),
                    Knob::TimerMigration => unless(args.timer_migration, "0"),
                    Knob::Ksm => unless(args.ksm, "0"),
                    Knob::SoftWatchdog => unless(args.soft_watchdog, "0"),
                    Knob::Cstates => unless(args.cstates, "0"),
                    Knob::IrqAffinity | Knob::WorkqueueAffinity => {
                        unless(args.irq_affinity, "housekeeping")
                    }
                    Knob::Cpuset => unless(args.cpuset, "partition"),
                };
                (knob, wanted)
            })
            .collect();
        Some(Self { wanted })
    }

    /// One knob set, every other kept at the host's value: for tools and tests that
    /// want one knob's effect alone (the cpuset partition on a real host).
    pub fn only(knob: Knob, value: &str) -> Self {
        let wanted = Knob::ALL
            .iter()
            .map(|&k| {
                let wanted = if k == knob {
                    Wanted::Set(value.to_owned())
                } else {
                    Wanted::Keep
                };
                (k, wanted)
            })
            .collect();
        Self { wanted }
    }

    pub fn wanted(&self, knob: Knob) -> &Wanted {
        self.wanted
            .iter()
            .find(|(k, _)| *k == knob)
            .map_or(&Wanted::Keep, |(_, w)| w)
    }
}

/// The verified state of every knob, as a job's record carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TuningState {
    pub knobs: Vec<KnobState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnobState {
    pub knob: Knob,
    /// What was asked for (`None` when kept).
    pub requested: Option<String>,
    /// The host's value before.
    pub original: Option<String>,
    /// What the kernel reads back now.
    pub actual: Option<String>,
    #[serde(flatten)]
    pub status: KnobStatus,
    /// The cpuset partition's CPUs (knob `cpuset` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<CpusetDetail>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum KnobStatus {
    Applied,
    /// The operator kept the host's value.
    Kept,
    /// Some of the knob's files took the value, some did not (IRQs the kernel will not
    /// move, for example).
    Partial {
        reason: String,
    },
    Unsupported {
        reason: String,
    },
}

impl TuningState {
    pub fn get(&self, knob: Knob) -> Option<&KnobState> {
        self.knobs.iter().find(|k| k.knob == knob)
    }

    /// The cpuset partition in effect, if the knob made one.
    pub fn cpuset(&self) -> Option<&CpusetDetail> {
        self.get(Knob::Cpuset)?.cpuset.as_ref()
    }

    /// `aslr=applied smt=unsupported …`, for one log line.
    pub fn summary(&self) -> String {
        self.knobs
            .iter()
            .map(|k| {
                let status = match k.status {
                    KnobStatus::Applied => "applied",
                    KnobStatus::Kept => "kept",
                    KnobStatus::Partial { .. } => "partial",
                    KnobStatus::Unsupported { .. } => "unsupported",
                };
                format!("{}={status}", k.knob)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("canceled while waiting for another runner's benchmark to end (host tuning lock)")]
    Canceled,
    #[error("cannot tune the host")]
    Tuning(#[source] TuningError),
    #[error("the tuning task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// What `restore` put back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Files written back to their original value.
    pub written: Vec<PathBuf>,
    /// Files already at their original value.
    pub unchanged: usize,
    /// Files that could not be put back, with why.
    pub failed: Vec<String>,
}

/// What `runner up` found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    None,
    /// Another live runner holds the lock: it restores its own changes.
    Busy,
    /// A runner (`pid`) died with the host tuned; its changes are undone.
    Restored {
        pid: u32,
        restored: Restored,
    },
    /// Left before the last reboot; the kernel started from its defaults since.
    PreviousBoot {
        pid: u32,
    },
}

/// Host tuning under one root.
#[derive(Debug, Clone)]
pub struct Tuning {
    root: PathBuf,
    dir: PathBuf,
    settings: Settings,
}

impl Tuning {
    /// The seed's defaults (every knob on) for the host under `root` (`/` for real).
    pub fn new(root: PathBuf) -> Self {
        let defaults = TuningArgs::default();
        Self {
            dir: root.join(TUNING_DIR),
            root,
            settings: Settings::from_args(&defaults).expect("defaults tune"),
        }
    }

    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding the state file and the lock.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The host-wide lock, if free.
    fn try_lock(&self) -> Result<Option<File>, TuningError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| TuningError::Io {
            action: "create the tuning directory",
            path: self.dir.clone(),
            source,
        })?;
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| TuningError::Io {
                action: "open the tuning lock",
                path: path.clone(),
                source,
            })?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(file)),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(TuningError::Io {
                action: "lock",
                path,
                source: e.into(),
            }),
        }
    }

    fn boot_id(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join(BOOT_ID))
            .ok()
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
    }

    /// At start: undoes what a runner that died left, unless a live runner holds the
    /// lock (then the state file is its own).
    pub fn restore_leftover(&self) -> Result<Leftover, TuningError> {
        let Some(_lock) = self.try_lock()? else {
            return Ok(Leftover::Busy);
        };
        self.restore_leftover_locked()
    }

    fn restore_leftover_locked(&self) -> Result<Leftover, TuningError> {
        let Some(saved) = state::load(&self.dir)? else {
            return Ok(Leftover::None);
        };
        let current = self.boot_id();
        let leftover = if saved.boot_id.is_some() && current.is_some() && saved.boot_id != current {
            Leftover::PreviousBoot { pid: saved.pid }
        } else {
            Leftover::Restored {
                pid: saved.pid,
                restored: self.restore_saved(&saved),
            }
        };
        state::remove(&self.dir)?;
        Ok(leftover)
    }

    /// Writes each original value back, newest first; never stops at a failure.
    fn restore_saved(&self, saved: &SavedState) -> Restored {
        let mut restored = Restored::default();
        for original in saved.originals.iter().rev() {
            let path = self.root.join(&original.path);
            let current = read_value(&path, original.format);
            if current.as_deref().ok() == Some(original.value.as_str()) {
                restored.unchanged += 1;
                continue;
            }
            match write_value(&path, &original.value) {
                Ok(()) => restored.written.push(original.path.clone()),
                Err(e) => {
                    restored
                        .failed
                        .push(format!("{}: {}", original.knob, io_reason(&path, &e)))
                }
            }
        }
        for undo in saved.undo.iter().rev() {
            match undo {
                Undo::RemoveCgroup { knob, path } => {
                    let dir = self.root.join(path);
                    match cpuset::remove_cgroup(&dir) {
                        Ok(true) => restored.written.push(path.clone()),
                        Ok(false) => restored.unchanged += 1,
                        Err(e) => restored
                            .failed
                            .push(format!("{knob}: {}", io_reason(&dir, &e))),
                    }
                }
                Undo::Write { knob, path, value } => {
                    let file = self.root.join(path);
                    match write_value(&file, value) {
                        Ok(()) => restored.written.push(path.clone()),
                        Err(e) => restored
                            .failed
                            .push(format!("{knob}: {}", io_reason(&file, &e))),
                    }
                }
            }
        }
        restored
    }

    /// Tunes the host now if no other runner holds the lock; `None` if one does.
    pub fn try_apply(&self) -> Result<Option<Applied>, TuningError> {
        let Some(lock) = self.try_lock()? else {
            return Ok(None);
        };
        match self.restore_leftover_locked()? {
            Leftover::Restored { pid, restored } => {
                tracing::warn!(
                    pid, written = restored.written.len(), failed = ?restored.failed,
                    "restored host tuning left behind by a runner that stopped mid-benchmark"
                );
            }
            Leftover::PreviousBoot { pid } => tracing::info!(
                pid,
                "discarded host tuning state from before the last reboot"
            ),
            Leftover::None | Leftover::Busy => {}
        }
        Ok(Some(self.apply_locked(lock)?))
    }

    /// Tunes the host, waiting while another runner's benchmark holds the lock.
    pub async fn apply(&self, cancel: &CancellationToken) -> Result<Applied, ApplyError> {
        let mut said = false;
        loop {
            let tuning = self.clone();
            let attempt = tokio::task::spawn_blocking(move || tuning.try_apply())
                .await
                .map_err(ApplyError::Task)?
                .map_err(ApplyError::Tuning)?;
            if let Some(applied) = attempt {
                return Ok(applied);
            }
            if !said {
                tracing::info!(
                    lock = %self.dir.join(LOCK_FILE).display(),
                    "another runner is benchmarking on this host; waiting for it"
                );
                said = true;
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(ApplyError::Canceled),
                () = tokio::time::sleep(LOCK_RETRY) => {}
            }
        }
    }

    fn apply_locked(&self, lock: File) -> Result<Applied, TuningError> {
        // First what every knob would change and the values it has now, then the state
        // file, then the writes: nothing changes before the originals are on disk.
        let plans: Vec<Plan> = Knob::ALL.iter().map(|&knob| self.plan(knob)).collect();
        let originals: Vec<Original> = plans
            .iter()
            .flat_map(|plan| match &plan.action {
                Action::Files(files) => files
                    .iter()
                    .filter_map(|(target, original)| {
                        Some(Original {
                            knob: plan.knob,
                            path: target.path.clone(),
                            value: original.as_ref().ok()?.clone(),
                            format: target.format,
                        })
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        let undo: Vec<Undo> = plans
            .iter()
            .flat_map(|plan| match &plan.action {
                Action::Cpuset(cpuset::CpusetPlan {
                    cgroup: Some(cgroup),
                }) => cgroup.undo(),
                _ => Vec::new(),
            })
            .collect();
        let saved = SavedState::new(self.boot_id(), originals, undo);
        if !saved.is_empty() {
            state::save(&self.dir, &saved)?;
        }
        let mut latency = None;
        let mut cpuset = None;
        let knobs = plans
            .into_iter()
            .map(|plan| self.execute(plan, &mut latency, &mut cpuset))
            .collect();
        Ok(Applied {
            tuning: self.clone(),
            saved: (!saved.is_empty()).then_some(saved),
            state: TuningState { knobs },
            latency,
            cpuset,
            lock: Some(lock),
            done: false,
        })
    }

    fn plan(&self, knob: Knob) -> Plan {
        let value = match self.settings.wanted(knob) {
            Wanted::Keep => {
                return Plan {
                    knob,
                    requested: None,
                    action: Action::Keep,
                };
            }
            Wanted::Set(value) => value.clone(),
        };
        let action = match knob::resolve(&self.root, knob, &value) {
            Resolved::Unsupported(reason) => Action::Unsupported(reason),
            Resolved::LatencyRequest { path, microseconds } => {
                Action::Latency(self.root.join(path), microseconds)
            }
            Resolved::Cpuset(plan) => Action::Cpuset(plan),
            Resolved::Files(targets) => Action::Files(
                targets
                    .into_iter()
                    .map(|target| {
                        let path = self.root.join(&target.path);
                        let original =
                            read_value(&path, target.format).map_err(|e| io_reason(&path, &e));
                        (target, original)
                    })
                    .collect(),
            ),
        };
        let requested = match &action {
            Action::Files(files) => {
                summarize(files.iter().map(|(t, _)| t.format.normalize(&t.value)))
            }
            _ => Some(value),
        };
        Plan {
            knob,
            requested,
            action,
        }
    }

    fn execute(
        &self,
        plan: Plan,
        latency: &mut Option<File>,
        active: &mut Option<cpuset::Active>,
    ) -> KnobState {
        let mut knob_state = KnobState {
            knob: plan.knob,
            requested: plan.requested,
            original: None,
            actual: None,
            status: KnobStatus::Kept,
            cpuset: None,
        };
        match plan.action {
            Action::Keep => {}
            Action::Cpuset(cpuset_plan) => {
                let (state, made) = cpuset::apply(&self.root, cpuset_plan, knob_state.requested);
                *active = made;
                return state;
            }
            Action::Unsupported(reason) => {
                knob_state.status = KnobStatus::Unsupported { reason };
            }
            Action::Latency(path, microseconds) => match hold_latency(&path, microseconds) {
                Ok((file, actual)) => {
                    knob_state.actual = Some(actual.to_string());
                    knob_state.status = if actual == microseconds {
                        KnobStatus::Applied
                    } else {
                        KnobStatus::Unsupported {
                            reason: format!(
                                "asked for {microseconds} µs, the kernel holds {actual} µs"
                            ),
                        }
                    };
                    *latency = Some(file);
                }
                Err(e) => {
                    knob_state.status = KnobStatus::Unsupported {
                        reason: io_reason(&path, &e),
                    };
                }
            },
            Action::Files(files) => {
                let total = files.len();
                knob_state.original =
                    summarize(files.iter().filter_map(|(_, o)| o.as_ref().ok().cloned()));
                let mut actual = Vec::new();
                let mut refused = Vec::new();
                for (target, original) in files {
                    let path = self.root.join(&target.path);
                    if let Err(reason) = original {
                        refused.push(reason);
                        continue;
                    }
                    match self.write_verified(&target, &path) {
                        Ok(value) => actual.push(value),
                        Err((reason, value)) => {
                            actual.extend(value);
                            refused.push(reason);
                        }
                    }
                }
                knob_state.actual = summarize(actual);
                knob_state.status = match refused.len() {
                    0 => KnobStatus::Applied,
                    n if n == total => KnobStatus::Unsupported {
                        reason: describe_refusals(&refused, total),
                    },
                    _ => KnobStatus::Partial {
                        reason: describe_refusals(&refused, total),
                    },
                };
            }
        }
        knob_state
    }

    /// Writes the target's value and reads it back: the value read, or why it is not
    /// the one asked for (with the value read, if any).
    fn write_verified(
        &self,
        target: &Target,
        path: &Path,
    ) -> Result<String, (String, Option<String>)> {
        let written = write_value(path, &target.value);
        let read = read_value(path, target.format);
        let wanted = target.format.normalize(&target.value);
        match (written, read) {
            (Ok(()), Ok(value)) if value == wanted => Ok(value),
            (Ok(()), Ok(value)) => Err((
                format!(
                    "{}: wrote `{}`, reads back `{value}`",
                    path.display(),
                    target.value
                ),
                Some(value),
            )),
            (Err(e), read) => Err((io_reason(path, &e), read.ok())),
            (Ok(()), Err(e)) => Err((io_reason(path, &e), None)),
        }
    }

    /// Each knob's current value on this host, without changing anything (for the
    /// environment fingerprint).
    pub fn observe(&self) -> Vec<(Knob, Result<String, String>)> {
        Knob::ALL
            .iter()
            .map(|&knob| {
                let value = match knob::resolve(&self.root, knob, "") {
                    Resolved::Unsupported(reason) => Err(reason),
                    Resolved::Cpuset(_) => cpuset::observe(&self.root),
                    Resolved::LatencyRequest { path, .. } => {
                        let path = self.root.join(path);
                        read_latency(&path)
                            .map(|v| v.to_string())
                            .map_err(|e| io_reason(&path, &e))
                    }
                    Resolved::Files(targets) => {
                        let values: Result<Vec<String>, String> = targets
                            .iter()
                            .map(|t| {
                                let path = self.root.join(&t.path);
                                read_value(&path, t.format).map_err(|e| io_reason(&path, &e))
                            })
                            .collect();
                        values.map(|v| summarize(v).unwrap_or_default())
                    }
                };
                (knob, value)
            })
            .collect()
    }
}

struct Plan {
    knob: Knob,
    requested: Option<String>,
    action: Action,
}

enum Action {
    Keep,
    Unsupported(String),
    Latency(PathBuf, i32),
    Cpuset(cpuset::CpusetPlan),
    /// Each file and its original value (or why it cannot be read).
    Files(Vec<(Target, Result<String, String>)>),
}

/// Where one job runs: its CPUs and the cpuset cgroup to join (with its hierarchy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCpus {
    pub cpus: Vec<u32>,
    pub cgroup: Option<(PathBuf, cpuset::Hierarchy)>,
}

impl JobCpus {
    /// What the sandboxes take. On cgroup v2 a container's cgroup goes below ours,
    /// the only place a partition's CPUs can be had.
    pub fn placement(&self) -> crate::executor::Placement {
        crate::executor::Placement {
            cpus: self.cpus.clone(),
            cgroup: self.cgroup.as_ref().map(|(dir, _)| dir.clone()),
            oci_parent: match &self.cgroup {
                Some((_, cpuset::Hierarchy::V2)) => Some(format!("/{}", cpuset::CGROUP_NAME)),
                _ => None,
            },
        }
    }
}

/// The host, tuned; put back by [`Applied::restore`] (or, as a last resort, on drop).
/// Holds the host-wide lock and the C-state request until then.
#[derive(Debug)]
pub struct Applied {
    tuning: Tuning,
    saved: Option<SavedState>,
    state: TuningState,
    latency: Option<File>,
    /// The cpuset partition, while it holds the runner's threads on housekeeping CPUs.
    cpuset: Option<cpuset::Active>,
    lock: Option<File>,
    done: bool,
}

impl Applied {
    /// The verified state, for the job's record.
    pub fn state(&self) -> &TuningState {
        &self.state
    }

    /// The cpuset partition in effect: where jobs go.
    pub fn cpuset(&self) -> Option<&cpuset::Active> {
        self.cpuset.as_ref()
    }

    /// Places a job of a Spec with `spec_cpus` CPUs: the first benchmark CPUs, as many
    /// as the Spec has (the same CPUs every time, so runs compare), or all of them when
    /// it asks for more, which the record says. `None` without a partition.
    pub fn place_job(&mut self, spec_cpus: u32) -> Option<JobCpus> {
        let active = self.cpuset.as_ref()?;
        let benchmark = &active.split.benchmark;
        let wanted = usize::try_from(spec_cpus).unwrap_or(usize::MAX).max(1);
        let cpus: Vec<u32> = benchmark.iter().copied().take(wanted).collect();
        let capped = (wanted > benchmark.len()).then_some(spec_cpus);
        let cgroup = active.cgroup.clone();
        if let Some(detail) = self
            .state
            .knobs
            .iter_mut()
            .find(|k| k.knob == Knob::Cpuset)
            .and_then(|k| k.cpuset.as_mut())
        {
            detail.job_cpus = Some(cpuset::format_cpu_list(&cpus));
            detail.spec_cpus_capped = capped;
        }
        Some(JobCpus { cpus, cgroup })
    }

    /// Puts every changed file back and removes the state file. Blocking.
    pub fn restore(mut self) -> Result<Restored, TuningError> {
        self.restore_now()
    }

    /// [`Applied::restore`] off the async runtime.
    pub async fn restore_async(self) -> Result<Restored, ApplyError> {
        tokio::task::spawn_blocking(move || self.restore())
            .await
            .map_err(ApplyError::Task)?
            .map_err(ApplyError::Tuning)
    }

    fn restore_now(&mut self) -> Result<Restored, TuningError> {
        self.done = true;
        // The latency request ends with its file descriptor.
        self.latency = None;
        // The runner's threads first: they must not stay on the housekeeping CPUs
        // whatever happens to the files.
        let threads = self
            .cpuset
            .take()
            .map(|active| active.restore_threads(&self.tuning.root))
            .unwrap_or_default();
        let mut restored = match &self.saved {
            Some(saved) => self.tuning.restore_saved(saved),
            None => Restored::default(),
        };
        restored.failed.extend(threads);
        // Removed even if some files could not be written back: they will not take
        // the value later either, and a state file left now would be applied again
        // over a future benchmark's originals.
        let removed = state::remove(&self.tuning.dir);
        self.lock = None;
        removed?;
        Ok(restored)
    }

    /// A crash: the lock and the C-state request go (as the kernel releases them when a
    /// process dies), the host stays tuned and the state file stays.
    #[cfg(test)]
    pub(crate) fn crash(mut self) {
        self.done = true;
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        if !self.done {
            match self.restore_now() {
                Ok(restored) if restored.failed.is_empty() => {}
                Ok(restored) => {
                    tracing::error!(failed = ?restored.failed, "cannot restore host tuning");
                }
                Err(error) => tracing::error!(
                    error = %crate::agent::error_chain(&error),
                    "cannot restore host tuning"
                ),
            }
        }
    }
}

/// One value per distinct value, with how many files hold it when they differ.
fn summarize(values: impl IntoIterator<Item = String>) -> Option<String> {
    let mut groups: Vec<(String, usize)> = Vec::new();
    for value in values {
        match groups.iter_mut().find(|(v, _)| *v == value) {
            Some((_, n)) => *n += 1,
            None => groups.push((value, 1)),
        }
    }
    match groups.as_slice() {
        [] => None,
        [(value, _)] => Some(value.clone()),
        _ => Some(
            groups
                .iter()
                .map(|(v, n)| format!("{v} ×{n}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    }
}

fn describe_refusals(refused: &[String], total: usize) -> String {
    const SHOWN: usize = 3;
    let mut text = if total > 1 {
        format!("{} of {total} files refused: ", refused.len())
    } else {
        String::new()
    };
    text.push_str(&refused[..refused.len().min(SHOWN)].join("; "));
    if refused.len() > SHOWN {
        text.push_str(&format!("; and {} more", refused.len() - SHOWN));
    }
    text
}

fn read_value(path: &Path, format: Format) -> io::Result<String> {
    std::fs::read_to_string(path).map(|raw| format.normalize(&raw))
}

/// One `write(2)` of the whole value, as sysfs and procfs expect.
fn write_value(path: &Path, value: &str) -> io::Result<()> {
    // Truncating matters only for the fake tree; the kernel's files ignore it.
    let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(value.as_bytes())
}

/// Opens `/dev/cpu_dma_latency`, asks for `microseconds`, and reads the latency the
/// kernel now holds to. The request lasts while the file stays open.
fn hold_latency(path: &Path, microseconds: i32) -> io::Result<(File, i32)> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    file.write_at(&microseconds.to_ne_bytes(), 0)?;
    let mut buf = [0u8; 4];
    file.read_exact_at(&mut buf, 0)?;
    Ok((file, i32::from_ne_bytes(buf)))
}

fn read_latency(path: &Path) -> io::Result<i32> {
    let mut buf = [0u8; 4];
    File::open(path)?.read_exact_at(&mut buf, 0)?;
    Ok(i32::from_ne_bytes(buf))
}

#[cfg(test)]
mod tests;
