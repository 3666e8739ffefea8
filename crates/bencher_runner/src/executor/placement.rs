//! Putting a job's processes on the CPUs host tuning set aside for the benchmark (the
//! cpuset partition, `crate::tuning::cpuset`): a `pre_exec` hook that joins the
//! partition's cgroup and sets the CPU affinity, for the processes the runner spawns
//! itself (sandbox `none`'s init, QEMU). IO: opens the cgroup's `cgroup.procs` before
//! the fork; the hook writes it and calls `sched_setaffinity` in the child.
//!
//! Why both: joining a cpuset cgroup is what keeps the job and everything it forks
//! inside the partition (a v2 partition's CPUs are reachable only from inside it), and
//! the affinity narrows it to the job's own CPUs, the first of the partition, as many
//! as its Spec has. The child is forked from a runner thread, which tuning moved to the
//! housekeeping CPUs: without this it would inherit those.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;

use rustix::thread::{CpuSet, sched_setaffinity};

use super::Placement;

impl Placement {
    /// The job's CPUs as an affinity mask, or why not.
    pub(super) fn cpu_set(&self) -> Result<CpuSet, String> {
        if self.cpus.is_empty() {
            return Err("the job's CPU placement names no CPU".to_owned());
        }
        let mut set = CpuSet::new();
        for &cpu in &self.cpus {
            match usize::try_from(cpu) {
                Ok(cpu) if cpu < CpuSet::MAX_CPU => set.set(cpu),
                _ => return Err(format!("CPU {cpu} cannot be named in an affinity mask")),
            }
        }
        Ok(set)
    }

    /// `cpus` as a kernel CPU list (`1-3,5`), as `config.json` takes it.
    pub(super) fn cpu_list(&self) -> String {
        crate::tuning::cpuset::format_cpu_list(&self.cpus)
    }
}

/// Installs the hook on `command`. Call it before any other `pre_exec` hook that
/// does not return (sandbox `none`'s init): hooks run in the order installed.
pub(super) fn install(
    command: &mut tokio::process::Command,
    placement: &Placement,
) -> Result<(), String> {
    let set = placement.cpu_set()?;
    let procs: Option<OwnedFd> = match &placement.cgroup {
        None => None,
        Some(dir) => {
            let path = dir.join("cgroup.procs");
            let file = OpenOptions::new().write(true).open(&path).map_err(|e| {
                format!(
                    "cannot join the benchmark CPUs' cgroup ({}): {e}",
                    path.display()
                )
            })?;
            Some(file.into())
        }
    };
    // SAFETY: the hook runs in the child between fork and exec and makes two raw
    // syscalls through rustix (write(2) on an fd opened before the fork, and
    // sched_setaffinity(2) with a mask built before it); it allocates nothing, and its
    // error is `io::Error::from` an errno, which does not allocate.
    unsafe {
        command.pre_exec(move || {
            if let Some(procs) = &procs {
                // `0`: the writing process itself, in v1 and v2 alike.
                rustix::io::write(procs, b"0")?;
            }
            sched_setaffinity(None, &set)?;
            Ok(())
        });
    }
    Ok(())
}
