//! The cpuset partition knob: the online CPUs split into housekeeping CPUs (the
//! runner's own threads, interrupts, work queues) and benchmark CPUs (the job), a
//! runner-owned cpuset cgroup holding the benchmark CPUs, and the runner's threads
//! moved to the housekeeping CPUs for the job. IO: under the tuning root, the cgroup
//! filesystem (`sys/fs/cgroup…`), `sys/devices/system/cpu` (online CPUs, SMT
//! siblings) and `proc/self/task` (the runner's threads, whose affinity is set with
//! `sched_setaffinity`); every call blocks.
//!
//! # Decisions
//!
//! - How exclusive the benchmark CPUs are depends on what the kernel offers, and the
//!   verified state says which level was reached ([`Exclusivity`]):
//!   - cgroup v2 with the cpuset controller: the cgroup becomes a *partition root*
//!     (`cpuset.cpus.partition = root`), so the kernel itself takes its CPUs away from
//!     every other cgroup: nothing else on the host is scheduled there. `root`, not
//!     `isolated`: an isolated partition has no load balancing, so a multi-threaded
//!     benchmark's threads would never move between its CPUs.
//!   - cgroup v1 (this project's CI host: hybrid, cpuset on v1): a plain cpuset cgroup.
//!     `cpu_exclusive` only forbids *sibling* cpusets to overlap; it moves no task, and
//!     would make runc's own per-container cpusets (under `/bencher/…`) fail to take
//!     the benchmark CPUs. Moving every other task of the host into a second cpuset
//!     is what isolation tools do, but it rewrites the cgroup of every service on the
//!     machine and cannot be undone exactly after a crash; too invasive for a runner.
//!     So on v1 the benchmark is confined to its CPUs and the runner keeps its own
//!     threads off them, but other host tasks may still run there: `cpuset`.
//!   - No cpuset controller at all: the sandboxes still set the job's affinity to the
//!     benchmark CPUs (`affinity`).
//! - One cgroup, directly below the hierarchy's top: a v2 partition root needs a
//!   partition-root parent, and the top cgroup is one. It is named for the runner
//!   (`bencher-runner`) and exists only while a job runs.
//! - The CPUs are split when the knob is applied, after SMT (applied just before) took
//!   sibling threads offline, so the benchmark set never names an offline CPU.
//! - One housekeeping CPU per 16 online CPUs, at least one, from the lowest; their SMT
//!   siblings join them when SMT stays on, so the benchmark never shares a core with
//!   the runner. The first housekeeping CPU is also where IRQs and work queues go.
//! - The runner's thread affinities are not in the state file: they die with the
//!   process, and a thread id in a dead runner's file could name someone else's thread
//!   by the time it is read. The cgroup and controller changes are (see `SavedState`).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rustix::process::Pid;
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
use serde::{Deserialize, Serialize};

use super::knob::{CPU_DIR, CPUS_ONLINE, Knob, io_reason, parse_cpu_list};
use super::state::Undo;
use super::{KnobState, KnobStatus};

/// The runner's cgroup, below the top of the cpuset hierarchy.
pub const CGROUP_NAME: &str = "bencher-runner";
/// cgroup v2 on its own (the unified hierarchy at the usual place).
pub const CGROUP_V2: &str = "sys/fs/cgroup";
/// cgroup v2 beside v1 (systemd's hybrid layout), where cpuset usually stays on v1.
pub const CGROUP_V2_HYBRID: &str = "sys/fs/cgroup/unified";
/// The v1 cpuset hierarchy.
pub const CGROUP_V1_CPUSET: &str = "sys/fs/cgroup/cpuset";
/// The runner's own threads.
pub const SELF_TASKS: &str = "proc/self/task";
/// One housekeeping CPU per this many online CPUs.
const CPUS_PER_HOUSEKEEPING: usize = 16;

/// How far the benchmark CPUs are the benchmark's alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusivity {
    /// A cgroup v2 partition root: the kernel keeps every other task off these CPUs.
    Partition,
    /// A cpuset cgroup confines the benchmark, and the runner's threads stay off its
    /// CPUs; other host tasks may still run there.
    Cpuset,
    /// No cpuset cgroup: only the job's CPU affinity and the runner's own threads.
    Affinity,
}

/// What the cpuset knob did, in the job's record beside the knob's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpusetDetail {
    /// The CPUs the benchmark may run on (`1-3`), as read back.
    pub benchmark_cpus: String,
    /// Where the runner's threads, IRQs and work queues go.
    pub housekeeping_cpus: String,
    pub exclusivity: Exclusivity,
    /// The runner-owned cgroup holding the benchmark CPUs, if any.
    pub cgroup: Option<PathBuf>,
    /// Runner threads moved to the housekeeping CPUs.
    pub runner_threads: u32,
    /// The CPUs this job was placed on: the first of the benchmark CPUs, as many as
    /// its Spec has (set by the agent once it knows the Spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_cpus: Option<String>,
    /// The Spec's CPU count, when it asks for more CPUs than the benchmark set has:
    /// the job then gets the benchmark set only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_cpus_capped: Option<u32>,
}

/// Which cpuset hierarchy the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hierarchy {
    V1,
    V2,
}

/// The cgroup the knob will create, known before anything changes so the state file
/// can say how to undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPlan {
    pub hierarchy: Hierarchy,
    /// The hierarchy's top, relative to the tuning root.
    pub base: PathBuf,
    /// cgroup v2 only: the top's `cgroup.subtree_control` lacks `cpuset`, so the knob
    /// enables it (and disables it again when restoring).
    pub enable_controller: bool,
}

impl CgroupPlan {
    /// The cgroup's directory, relative to the tuning root.
    pub fn dir(&self) -> PathBuf {
        self.base.join(CGROUP_NAME)
    }

    /// How to undo it, in the order the changes happen (undone backwards).
    pub fn undo(&self) -> Vec<Undo> {
        let mut undo = Vec::new();
        if self.enable_controller {
            undo.push(Undo::Write {
                knob: Knob::Cpuset,
                path: self.base.join("cgroup.subtree_control"),
                value: "-cpuset".to_owned(),
            });
        }
        undo.push(Undo::RemoveCgroup {
            knob: Knob::Cpuset,
            path: self.dir(),
        });
        undo
    }
}

/// What applying the knob will do on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpusetPlan {
    /// `None` when the host has no cpuset controller (affinity only).
    pub cgroup: Option<CgroupPlan>,
}

/// The housekeeping and benchmark CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub housekeeping: Vec<u32>,
    pub benchmark: Vec<u32>,
}

/// Splits the online CPUs (in order); `siblings` gives a CPU's SMT siblings.
pub fn split(online: &[u32], siblings: impl Fn(u32) -> Vec<u32>) -> Result<Split, String> {
    if online.len() < 2 {
        return Err(format!(
            "{} online CPU: a benchmark CPU needs at least one other CPU for housekeeping",
            online.len()
        ));
    }
    let count = (online.len() / CPUS_PER_HOUSEKEEPING).max(1);
    let first: Vec<u32> = online[..count].to_vec();
    let mut housekeeping = first.clone();
    for &cpu in &first {
        for sibling in siblings(cpu) {
            if online.contains(&sibling) && !housekeeping.contains(&sibling) {
                housekeeping.push(sibling);
            }
        }
    }
    // A host whose only core is the housekeeping one (one core, two threads): the
    // sibling is better used for the benchmark than left idle.
    if housekeeping.len() == online.len() {
        housekeeping = first;
    }
    housekeeping.sort_unstable();
    let benchmark = online
        .iter()
        .copied()
        .filter(|cpu| !housekeeping.contains(cpu))
        .collect();
    Ok(Split {
        housekeeping,
        benchmark,
    })
}

/// `[0, 1, 2, 5]` → `0-2,5`, as the kernel writes CPU lists.
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The CPU mask of `cpus`; `None` if one is beyond what `sched_setaffinity` can name.
pub fn cpu_set(cpus: &[u32]) -> Option<CpuSet> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        let cpu = usize::try_from(cpu).ok().filter(|c| *c < CpuSet::MAX_CPU)?;
        set.set(cpu);
    }
    Some(set)
}

/// What the knob will do here, or why it cannot.
pub fn plan(root: &Path) -> Result<CpusetPlan, String> {
    let online = online_cpus(root)?;
    // Checked again when applying (SMT may take CPUs offline in between); refused here
    // already so a one-CPU host creates nothing.
    split(&online, |_| Vec::new())?;
    Ok(CpusetPlan {
        cgroup: find_hierarchy(root),
    })
}

/// The current value for the environment fingerprint: the online CPUs, and the
/// runner's cgroup if one exists (it does only while a job runs).
pub fn observe(root: &Path) -> Result<String, String> {
    let online = online_cpus(root)?;
    let mut text = format!("online {}", format_cpu_list(&online));
    if let Some(cgroup) = find_hierarchy(root)
        && root.join(cgroup.dir()).is_dir()
    {
        text.push_str(&format!(", {} exists", cgroup.dir().display()));
    }
    Ok(text)
}

fn online_cpus(root: &Path) -> Result<Vec<u32>, String> {
    let path = root.join(CPUS_ONLINE);
    let text = std::fs::read_to_string(&path).map_err(|e| io_reason(&path, &e))?;
    parse_cpu_list(&text).ok_or_else(|| format!("cannot read CPU list `{}`", text.trim()))
}

/// cgroup v2 with the cpuset controller available, else the v1 cpuset hierarchy.
/// Fixed mount points rather than `/proc/self/mountinfo`: they are where every
/// distribution (and systemd) mounts them, and the fake tree can hold them.
fn find_hierarchy(root: &Path) -> Option<CgroupPlan> {
    for base in [CGROUP_V2, CGROUP_V2_HYBRID] {
        let Ok(controllers) = std::fs::read_to_string(root.join(base).join("cgroup.controllers"))
        else {
            continue;
        };
        if controllers.split_whitespace().any(|c| c == "cpuset") {
            let subtree = std::fs::read_to_string(root.join(base).join("cgroup.subtree_control"))
                .unwrap_or_default();
            return Some(CgroupPlan {
                hierarchy: Hierarchy::V2,
                base: base.into(),
                enable_controller: !has_controller(&subtree, "cpuset"),
            });
        }
    }
    root.join(CGROUP_V1_CPUSET)
        .join("cpuset.cpus")
        .exists()
        .then(|| CgroupPlan {
            hierarchy: Hierarchy::V1,
            base: CGROUP_V1_CPUSET.into(),
            enable_controller: false,
        })
}

/// `cpu cpuset memory` names `cpuset`. A plain file that was written `+cpuset` (a fake
/// tree) counts too.
fn has_controller(subtree_control: &str, name: &str) -> bool {
    subtree_control
        .split_whitespace()
        .any(|c| c.trim_start_matches('+') == name)
}

fn siblings(root: &Path, cpu: u32) -> Vec<u32> {
    let path = root
        .join(CPU_DIR)
        .join(format!("cpu{cpu}"))
        .join("topology/thread_siblings_list");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| parse_cpu_list(&text))
        .unwrap_or_default()
}

/// The knob in effect: what the agent places jobs with, and what restoring undoes
/// beyond the state file.
#[derive(Debug)]
pub struct Active {
    pub split: Split,
    /// The cgroup's directory (under the tuning root) and its hierarchy.
    pub cgroup: Option<(PathBuf, Hierarchy)>,
    /// Each moved thread and its affinity before.
    threads: Vec<(Pid, CpuSet)>,
    /// For threads born during the job (they inherit the housekeeping CPUs from the
    /// thread that made them): the runner's affinity before, from its first thread.
    before: Option<CpuSet>,
}

/// Applies the plan: splits the CPUs online now, creates and fills the cgroup, moves
/// the runner's threads. The state file already says how to undo the cgroup.
pub fn apply(
    root: &Path,
    plan: CpusetPlan,
    requested: Option<String>,
) -> (KnobState, Option<Active>) {
    let mut state = KnobState {
        knob: Knob::Cpuset,
        requested,
        original: None,
        actual: None,
        status: KnobStatus::Kept,
        cpuset: None,
    };
    let unsupported = |mut state: KnobState, reason: String| {
        state.status = KnobStatus::Unsupported { reason };
        (state, None)
    };
    let online = match online_cpus(root) {
        Ok(online) => online,
        Err(reason) => return unsupported(state, reason),
    };
    state.original = Some(format!("all online CPUs ({})", format_cpu_list(&online)));
    let split = match split(&online, |cpu| siblings(root, cpu)) {
        Ok(split) => split,
        Err(reason) => return unsupported(state, reason),
    };
    // Checked for both sets now: the sandboxes build the benchmark mask later.
    let (Some(_), Some(housekeeping_set)) =
        (cpu_set(&split.benchmark), cpu_set(&split.housekeeping))
    else {
        return unsupported(
            state,
            format!(
                "CPU numbers beyond {} cannot be placed with sched_setaffinity",
                CpuSet::MAX_CPU
            ),
        );
    };
    state.requested = Some(format!(
        "benchmark {}, housekeeping {}",
        format_cpu_list(&split.benchmark),
        format_cpu_list(&split.housekeeping)
    ));

    let mut problems = Vec::new();
    let mut exclusivity = Exclusivity::Affinity;
    let mut benchmark_read = split.benchmark.clone();
    let mut cgroup = None;
    if let Some(plan) = &plan.cgroup {
        match make_cgroup(root, plan, &split.benchmark) {
            Ok(made) => {
                benchmark_read = made.cpus;
                exclusivity = made.exclusivity;
                problems.extend(made.problem);
                cgroup = Some((root.join(plan.dir()), plan.hierarchy));
            }
            // The job still runs on the benchmark CPUs by affinity.
            Err(reason) => problems.push(reason),
        }
    }

    let moved = move_threads(root, &housekeeping_set);
    let threads = match moved {
        Ok((threads, refused)) => {
            problems.extend(refused);
            threads
        }
        Err(reason) => {
            problems.push(reason);
            Vec::new()
        }
    };
    let before = threads.first().map(|(_, set)| *set);
    state.actual = Some(format!(
        "benchmark {}, housekeeping {}",
        format_cpu_list(&benchmark_read),
        format_cpu_list(&split.housekeeping)
    ));
    state.cpuset = Some(CpusetDetail {
        benchmark_cpus: format_cpu_list(&benchmark_read),
        housekeeping_cpus: format_cpu_list(&split.housekeeping),
        exclusivity,
        cgroup: cgroup.as_ref().map(|(dir, _)| dir.clone()),
        runner_threads: u32::try_from(threads.len()).unwrap_or(u32::MAX),
        job_cpus: None,
        spec_cpus_capped: None,
    });
    state.status = if problems.is_empty() {
        KnobStatus::Applied
    } else {
        KnobStatus::Partial {
            reason: problems.join("; "),
        }
    };
    let active = Active {
        split: Split {
            housekeeping: split.housekeeping,
            benchmark: benchmark_read,
        },
        cgroup,
        threads,
        before,
    };
    (state, Some(active))
}

struct Made {
    /// The benchmark CPUs as the cgroup reads them back.
    cpus: Vec<u32>,
    exclusivity: Exclusivity,
    /// Something short of what was asked (a refused partition).
    problem: Option<String>,
}

fn make_cgroup(root: &Path, plan: &CgroupPlan, cpus: &[u32]) -> Result<Made, String> {
    let base = root.join(&plan.base);
    let dir = root.join(plan.dir());
    if plan.enable_controller {
        let path = base.join("cgroup.subtree_control");
        write_control(&path, "+cpuset").map_err(|e| io_reason(&path, &e))?;
        let now = std::fs::read_to_string(&path).map_err(|e| io_reason(&path, &e))?;
        if !has_controller(&now, "cpuset") {
            return Err(format!(
                "{}: wrote `+cpuset`, reads back `{}`",
                path.display(),
                now.trim()
            ));
        }
    }
    // Left by a runner whose restore could not remove it (a task was still inside):
    // it is ours by name, so it is reused.
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_reason(&dir, &e)),
    }
    let list = format_cpu_list(cpus);
    if plan.hierarchy == Hierarchy::V1 {
        // A v1 cpuset takes no task until it has memory nodes: the parent's.
        let parent = base.join("cpuset.mems");
        let mems = std::fs::read_to_string(&parent).map_err(|e| io_reason(&parent, &e))?;
        let path = dir.join("cpuset.mems");
        write_control(&path, mems.trim()).map_err(|e| io_reason(&path, &e))?;
    }
    let path = dir.join("cpuset.cpus");
    write_control(&path, &list).map_err(|e| io_reason(&path, &e))?;
    let read = std::fs::read_to_string(&path).map_err(|e| io_reason(&path, &e))?;
    let read_cpus = parse_cpu_list(&read).unwrap_or_default();
    if read_cpus != cpus {
        return Err(format!(
            "{}: wrote `{list}`, reads back `{}`",
            path.display(),
            read.trim()
        ));
    }
    if plan.hierarchy == Hierarchy::V1 {
        return Ok(Made {
            cpus: read_cpus,
            exclusivity: Exclusivity::Cpuset,
            problem: None,
        });
    }
    // Asked for last: a partition's CPUs must already be the cgroup's own.
    let path = dir.join("cpuset.cpus.partition");
    let partition = write_control(&path, "root")
        .map_err(|e| io_reason(&path, &e))
        .and_then(|()| std::fs::read_to_string(&path).map_err(|e| io_reason(&path, &e)));
    match partition {
        Ok(text) if text.trim() == "root" => Ok(Made {
            cpus: read_cpus,
            exclusivity: Exclusivity::Partition,
            problem: None,
        }),
        // `root invalid (…)`: the kernel says why (CPUs in use by a sibling, parent
        // not a partition); a member cpuset is still a cpuset.
        Ok(text) => {
            let _ = write_control(&path, "member");
            Ok(Made {
                cpus: read_cpus,
                exclusivity: Exclusivity::Cpuset,
                problem: Some(format!(
                    "{}: the kernel refused a partition root, reads `{}`",
                    path.display(),
                    text.trim()
                )),
            })
        }
        Err(reason) => Ok(Made {
            cpus: read_cpus,
            exclusivity: Exclusivity::Cpuset,
            problem: Some(format!("no partition root: {reason}")),
        }),
    }
}

/// One `write(2)` of the value. Created if missing only for a fake tree: the kernel
/// makes a cgroup's control files itself, and refuses to create others.
fn write_control(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(value.as_bytes())
}

/// The runner's thread ids.
fn threads(root: &Path) -> Result<Vec<Pid>, String> {
    let dir = root.join(SELF_TASKS);
    let entries = std::fs::read_dir(&dir).map_err(|e| io_reason(&dir, &e))?;
    let mut tids: Vec<Pid> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(Pid::from_raw)
        .collect();
    tids.sort_unstable_by_key(|p| p.as_raw_nonzero());
    Ok(tids)
}

/// The threads moved (each with its affinity before) and why others were not.
type Moved = (Vec<(Pid, CpuSet)>, Vec<String>);

/// Moves every runner thread to `set`; a thread made while moving inherits from its
/// maker, so the list is read again until it holds no new thread (a few rounds).
fn move_threads(root: &Path, set: &CpuSet) -> Result<Moved, String> {
    let mut moved: Vec<(Pid, CpuSet)> = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..3 {
        let fresh: Vec<Pid> = threads(root)?
            .into_iter()
            .filter(|tid| !moved.iter().any(|(t, _)| t == tid))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for tid in fresh {
            let before = match sched_getaffinity(Some(tid)) {
                Ok(before) => before,
                // The thread ended meanwhile.
                Err(rustix::io::Errno::SRCH) => continue,
                Err(e) => {
                    refused.push(format!("thread {}: {e}", tid.as_raw_nonzero()));
                    continue;
                }
            };
            match sched_setaffinity(Some(tid), set) {
                Ok(()) => moved.push((tid, before)),
                Err(rustix::io::Errno::SRCH) => {}
                Err(e) => refused.push(format!(
                    "runner thread {} stays where it was: {e}",
                    tid.as_raw_nonzero()
                )),
            }
        }
    }
    Ok((moved, refused))
}

impl Active {
    /// Puts the runner's threads back; threads born during the job get the runner's
    /// affinity from before. Failures, for the log.
    pub fn restore_threads(&self, root: &Path) -> Vec<String> {
        let Some(before) = self.before else {
            return Vec::new();
        };
        let tids = match threads(root) {
            Ok(tids) => tids,
            Err(reason) => return vec![reason],
        };
        tids.into_iter()
            .filter_map(|tid| {
                let set = self
                    .threads
                    .iter()
                    .find(|(t, _)| *t == tid)
                    .map_or(before, |(_, set)| *set);
                match sched_setaffinity(Some(tid), &set) {
                    Ok(()) | Err(rustix::io::Errno::SRCH) => None,
                    Err(e) => Some(format!(
                        "cpuset: runner thread {}: {e}",
                        tid.as_raw_nonzero()
                    )),
                }
            })
            .collect()
    }
}

/// Removes a runner-owned cgroup and any cgroups below it (a container's, left by a
/// crash), deepest first. Absent is fine: restoring is idempotent.
pub fn remove_cgroup(dir: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
        Ok(meta) if !meta.is_dir() => return Ok(false),
        Ok(_) => {}
    }
    for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path())?;
        }
    }
    // A partition root gives its CPUs back as soon as it is a member again, even if
    // the removal below fails (EBUSY while a task is still inside), so a failed restore
    // never leaves the host's other cgroups without those CPUs.
    let partition = dir.join("cpuset.cpus.partition");
    if partition.exists() {
        let _ = std::fs::write(&partition, "member");
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        // cgroupfs removes a cgroup with its control files; a plain directory (a fake
        // tree) holds them as files, which go first.
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
            for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
                std::fs::remove_file(entry.path())?;
            }
            std::fs::remove_dir(dir)?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cpus() {
        let none = |_| Vec::new();
        assert_eq!(
            split(&[0, 1], none),
            Ok(Split {
                housekeeping: vec![0],
                benchmark: vec![1]
            })
        );
        assert!(split(&[0], none).unwrap_err().contains("1 online CPU"));
        assert!(split(&[], none).is_err());
        let big: Vec<u32> = (0..64).collect();
        let s = split(&big, none).unwrap();
        assert_eq!(s.housekeeping, vec![0, 1, 2, 3]);
        assert_eq!(s.benchmark.len(), 60);
        // SMT siblings of CPU 0 (CPU 4) join the housekeeping CPUs.
        let smt = |cpu: u32| vec![cpu % 4, cpu % 4 + 4];
        let s = split(&(0..8).collect::<Vec<_>>(), smt).unwrap();
        assert_eq!(s.housekeeping, vec![0, 4]);
        assert_eq!(s.benchmark, vec![1, 2, 3, 5, 6, 7]);
        // One core with two threads: the sibling goes to the benchmark.
        let s = split(&[0, 1], |_| vec![0, 1]).unwrap();
        assert_eq!((s.housekeeping, s.benchmark), (vec![0], vec![1]));
    }

    #[test]
    fn formats_cpu_lists() {
        assert_eq!(format_cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(format_cpu_list(&[3]), "3");
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(
            parse_cpu_list(&format_cpu_list(&[9, 1, 2])),
            Some(vec![1, 2, 9])
        );
        assert!(cpu_set(&[1, 3]).is_some_and(|s| s.is_set(3) && !s.is_set(2)));
        assert!(cpu_set(&[u32::MAX]).is_none());
    }
}
