//! The job executor: runs a job's command from its image's root filesystem in a
//! Sandbox, iteration by iteration, and turns what happened into an [`ExecOutcome`].
//! IO: each sandbox's module (`host` for sandbox `none`, `oci_runtime` for `container`
//! and `gvisor`, `vm` for `qemu` and `firecracker`); `job` admits, plans and iterates the same way for
//! every sandbox; `plan` is pure,
//! `rootfs` reads and creates paths inside a root filesystem, `capture` reads pipes,
//! `placement` puts a spawned process on host tuning's benchmark CPUs.
//!
//! # Contract
//!
//! - The command is the image's `Entrypoint` + `Cmd` under Docker's override rule
//!   with the job's; the environment is the image's `Env`, then the job's, then `PATH`
//!   and `HOME` defaults; it runs in the image's `WorkingDir` as the image's `User`
//!   (looked up in the image's `/etc/passwd` and `/etc/group`).
//! - `iter` iterations (default 1), each from the image as it was: nothing one
//!   iteration writes is seen by the next, and the image's root filesystem, shared by
//!   all jobs of the image, is never modified.
//! - A non-zero exit fails the job (after that iteration) unless `allow_failure`. A
//!   death by signal N is exit code 128 + N. An iteration whose command the executor
//!   killed (timeout, cancel) is reported with 137 and the output captured until then.
//! - One timeout for the whole job. Timeout and cancel kill the job's whole process
//!   tree; a cancel ends the job within a second.
//! - stdout and stderr of an iteration share `max_output_size`; past it, output is
//!   read and dropped, and the text ends with a `[bencher: output truncated …]` line.
//!   Both are decoded as UTF-8 lossily.
//! - Output files (`file_paths`, at most `max_file_count`) are read after each
//!   iteration, inside the job's root (absolute symlinks and `..` cannot leave it, at
//!   most `max_symlinks` links are followed). Each must be UTF-8 text of at most
//!   `max_output_size` bytes: binary or oversized files fail the job with an error
//!   saying so, rather than reach the server mangled. A file missing after a zero exit
//!   fails the job; after a non-zero exit it is left out.
//! - `file_size`: the output files are measured instead of read: each iteration whose
//!   command exited gets `file_sizes`, the size (`stat`) of each path that is a regular
//!   file, whatever its contents or size; a missing path is absent (the server decides
//!   what that means), anything else that is not a regular file fails the job.
//! - `build_time`: each iteration whose command exited gets `build_time_ns`, its wall
//!   time from just before its exec to its exit, measured inside the sandbox by the
//!   sandbox's init (the host's forked init, `bencher-oci-init`, `bencher-init`), so
//!   image pull, container start and VM boot are not in it, nor the grace period.
//! - Every outcome is a value; the executor has no error type.

mod capture;
mod host;
mod job;
mod network;
mod oci_runtime;
mod placement;
mod plan;
mod rootfs;
mod vm;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use bencher_oci::config::ImageConfig;
use bencher_types::protocol::{IterationResult, JobConfig};
use tokio_util::sync::CancellationToken;

pub use plan::PlanError;
pub use vm::{Accel, FirecrackerConfig, configure_firecracker};

/// Where a job runs. A closed set: every sandbox the runner supports is a variant, so
/// every place that must treat them differently is found by the compiler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sandbox {
    /// On the host, chrooted into the image in private mount and PID namespaces. Only
    /// for trusted jobs: the agent runs it only with `--danger-allow-no-sandbox`.
    None,
    /// In a runc container: the host's kernel, the job's own namespaces and cgroup.
    Container,
    /// In a gVisor (runsc) sandbox: a user-space kernel between the job and the host's.
    Gvisor,
    /// In a QEMU `microvm` guest of its own (`vm`): the image as a read-only disk, the
    /// Spec's vCPUs, memory and disk, no network unless the Spec allows it.
    Qemu,
    /// In a Firecracker microVM of its own (`vm`), jailed: the same guest, kernel and
    /// disks as `qemu`, on KVM only.
    Firecracker,
}

impl Sandbox {
    /// The sandbox for a Spec's `sandbox` field: no sandbox is [`Sandbox::None`].
    pub fn from_spec(spec: Option<bencher_types::Sandbox>) -> Sandbox {
        match spec {
            None => Sandbox::None,
            Some(bencher_types::Sandbox::Container) => Sandbox::Container,
            Some(bencher_types::Sandbox::Gvisor) => Sandbox::Gvisor,
            Some(bencher_types::Sandbox::Qemu) => Sandbox::Qemu,
            Some(bencher_types::Sandbox::Firecracker) => Sandbox::Firecracker,
        }
    }

    /// Whether jobs run directly on the host, which the operator must allow with
    /// `--danger-allow-no-sandbox`.
    pub fn runs_on_host(self) -> bool {
        match self {
            Sandbox::None => true,
            Sandbox::Container | Sandbox::Gvisor | Sandbox::Qemu | Sandbox::Firecracker => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sandbox::None => "none",
            Sandbox::Container => "container",
            Sandbox::Gvisor => "gvisor",
            Sandbox::Qemu => "qemu",
            Sandbox::Firecracker => "firecracker",
        }
    }
}

impl fmt::Display for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`check`] found the host can do with a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub sandbox: Sandbox,
    /// One line for the log: what jobs get.
    pub detail: String,
    /// Whether the Spec's CPU, memory and disk are enforced on the job.
    pub enforces_resources: bool,
    /// Whether a Spec without network keeps the job off the network.
    pub isolates_network: bool,
    /// Whether a Spec with network gets it (the VM sandboxes need `slirp4netns`; where
    /// it is missing the runner announces that, and the server sends it no such Spec).
    pub provides_network: bool,
}

/// Per-iteration output caps, from `runner up`/`runner run` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// stdout and stderr bytes together per iteration; also the largest output file.
    pub max_output_size: u64,
    /// The most output files a job may ask for.
    pub max_file_count: u32,
    /// The most symlinks followed resolving one path inside the job's root
    /// (the kernel's own limit is 40).
    pub max_symlinks: u32,
}

impl OutputLimits {
    pub const DEFAULT_MAX_OUTPUT_SIZE: u64 = 25 << 20;
    pub const DEFAULT_MAX_FILE_COUNT: u32 = 255;
    pub const DEFAULT_MAX_SYMLINKS: u32 = 40;
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            max_output_size: Self::DEFAULT_MAX_OUTPUT_SIZE,
            max_file_count: Self::DEFAULT_MAX_FILE_COUNT,
            max_symlinks: Self::DEFAULT_MAX_SYMLINKS,
        }
    }
}

/// What the job's Spec grants it: the sandbox enforces these where it can
/// ([`Capability::enforces_resources`], [`Capability::isolates_network`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub cpus: u32,
    /// Bytes of memory.
    pub memory: u64,
    /// Bytes of writable disk for the job.
    pub disk: u64,
    /// Whether the job may use the network.
    pub network: bool,
    /// Most processes and threads the job may have at once (a container's `pids`
    /// limit; a VM's guest kernel has its own): enough for parallel builds and thread
    /// pools, few enough that a fork bomb stops long before the host's limit.
    pub tasks: u32,
}

impl Resources {
    /// Tasks a job gets per CPU of its Spec (see [`Resources::tasks`]).
    pub const TASKS_PER_CPU: u32 = 1024;

    /// `runner run` without `--vcpus`, `--memory`, `--disk`: a small machine.
    pub const RUN_DEFAULT: Resources = Resources {
        cpus: 1,
        memory: 1 << 30,
        disk: 2 << 30,
        network: false,
        tasks: Self::TASKS_PER_CPU,
    };

    /// The task limit for `cpus` CPUs.
    pub const fn tasks_for(cpus: u32) -> u32 {
        cpus.saturating_mul(Self::TASKS_PER_CPU)
    }

    /// A Spec's hardware, as the job gets it.
    pub fn from_spec(spec: &bencher_types::JsonSpec) -> Self {
        Self {
            cpus: spec.cpu.get(),
            memory: spec.memory.bytes(),
            disk: spec.disk.bytes(),
            network: spec.network,
            tasks: Self::tasks_for(spec.cpu.get()),
        }
    }
}

/// One job to execute.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The image's root filesystem (`ImageCache::rootfs`). Shared and cached: the
    /// executor never modifies it.
    pub rootfs: PathBuf,
    /// The image's config: default entrypoint, cmd, env, working dir, user.
    pub image: ImageConfig,
    pub config: JobConfig,
    pub resources: Resources,
    pub limits: OutputLimits,
    /// After the benchmark exits, how long processes it left behind may keep running
    /// (and writing output files) before they are killed and the output collected.
    pub grace_period: Duration,
    /// The CPUs host tuning set aside for the job (`None`: wherever the host
    /// schedules it). Every sandbox puts the whole job there.
    pub placement: Option<Placement>,
}

/// Where a job runs: host tuning's cpuset partition (`crate::tuning::cpuset`).
/// `none` and `qemu` start their process inside the cgroup with this affinity (so
/// QEMU's vCPU threads and its I/O thread are all on the job's CPUs); `container` and
/// `gvisor` give the CPUs to the runtime in `config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The job's CPUs, in order; not empty.
    pub cpus: Vec<u32>,
    /// The cpuset cgroup holding the benchmark CPUs, if host tuning made one.
    pub cgroup: Option<PathBuf>,
    /// cgroup v2: the cgroup path (from the hierarchy's top, `/bencher-runner`) a
    /// container's cgroup goes below, because a v2 partition's CPUs are out of reach of
    /// cgroups outside it. `None` on v1, where runc's usual `/bencher/…` cpuset can
    /// take the CPUs (and nesting would leave our name in every v1 hierarchy).
    pub oci_parent: Option<String>,
}

/// How a job ended: every variant carries the iterations' results so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    /// Every iteration ran; each exited 0, or `allow_failure` was set.
    Completed { results: Vec<IterationResult> },
    /// The job could not start, an iteration exited non-zero without
    /// `allow_failure`, or output files could not be collected.
    Failed {
        results: Vec<IterationResult>,
        error: String,
    },
    /// The cancel token fired; the job's processes are gone.
    Canceled { results: Vec<IterationResult> },
    /// The job's timeout passed; the job's processes are gone.
    TimedOut { results: Vec<IterationResult> },
}

impl ExecOutcome {
    pub fn results(&self) -> &[IterationResult] {
        match self {
            ExecOutcome::Completed { results }
            | ExecOutcome::Failed { results, .. }
            | ExecOutcome::Canceled { results }
            | ExecOutcome::TimedOut { results } => results,
        }
    }

    pub fn into_results(self) -> Vec<IterationResult> {
        match self {
            ExecOutcome::Completed { results }
            | ExecOutcome::Failed { results, .. }
            | ExecOutcome::Canceled { results }
            | ExecOutcome::TimedOut { results } => results,
        }
    }

    pub fn is_completed(&self) -> bool {
        matches!(self, ExecOutcome::Completed { .. })
    }

    /// `completed`, `failed`, `canceled` or `timed_out`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ExecOutcome::Completed { .. } => "completed",
            ExecOutcome::Failed { .. } => "failed",
            ExecOutcome::Canceled { .. } => "canceled",
            ExecOutcome::TimedOut { .. } => "timed_out",
        }
    }
}

/// The first file `name` in the directories of `PATH`: how the sandboxes find the
/// programs they run when no flag or variable names them.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Runs the job in `sandbox`. Never fails: whatever happens is an [`ExecOutcome`].
/// Call [`check`] first; on a host that cannot run the sandbox this returns `Failed`.
pub async fn execute(
    sandbox: Sandbox,
    request: ExecRequest,
    cancel: CancellationToken,
) -> ExecOutcome {
    match sandbox {
        Sandbox::None => host::execute(request, cancel).await,
        Sandbox::Container => {
            oci_runtime::execute(oci_runtime::Runtime::Runc, request, cancel).await
        }
        Sandbox::Gvisor => oci_runtime::execute(oci_runtime::Runtime::Runsc, request, cancel).await,
        Sandbox::Qemu => vm::execute(vm::VmSandbox::Qemu, request, cancel).await,
        Sandbox::Firecracker => vm::execute(vm::VmSandbox::Firecracker, request, cancel).await,
    }
}

/// Whether this host can run jobs in `sandbox`, by trying what a job needs (for `none`:
/// root, overlayfs, mount and PID namespaces; for `container` and `gvisor`: the runtime's
/// binary and a probe container, after removing what a crashed runner left; for `qemu`
/// and `firecracker`: the VMM, the guest kernel and init, and a test boot of a tiny
/// guest, once per process). `Err` says why not, for the agent's log; the agent then refuses Specs with
/// this sandbox. Blocking.
pub fn check(sandbox: Sandbox) -> Result<Capability, String> {
    match sandbox {
        Sandbox::None => host::check(),
        Sandbox::Container => oci_runtime::check(oci_runtime::Runtime::Runc),
        Sandbox::Gvisor => oci_runtime::check(oci_runtime::Runtime::Runsc),
        Sandbox::Qemu => vm::check(vm::VmSandbox::Qemu),
        Sandbox::Firecracker => vm::check(vm::VmSandbox::Firecracker),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandboxes_from_specs() {
        assert_eq!(Sandbox::from_spec(None), Sandbox::None);
        assert!(Sandbox::None.runs_on_host());
        assert_eq!(Sandbox::None.to_string(), "none");
        for (spec, sandbox) in [
            (bencher_types::Sandbox::Container, Sandbox::Container),
            (bencher_types::Sandbox::Gvisor, Sandbox::Gvisor),
            (bencher_types::Sandbox::Qemu, Sandbox::Qemu),
            (bencher_types::Sandbox::Firecracker, Sandbox::Firecracker),
        ] {
            assert_eq!(Sandbox::from_spec(Some(spec)), sandbox);
            assert!(!sandbox.runs_on_host());
            assert_eq!(sandbox.to_string(), spec.to_string());
        }
    }

    #[test]
    fn default_limits_match_the_runner_flags() {
        let limits = OutputLimits::default();
        assert_eq!(limits.max_output_size, 25 * 1024 * 1024);
        assert_eq!(limits.max_file_count, 255);
        assert_eq!(limits.max_symlinks, 40);
    }
}
