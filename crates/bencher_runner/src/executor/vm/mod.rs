//! VM sandboxes (`qemu` and `firecracker`): each job boots its own guest from the
//! image's root filesystem (a cached read-only ext4 disk), a fresh sparse scratch disk
//! for the writable layers, and a cached kernel with `bencher-init` as PID 1; the init
//! runs every iteration in that one boot and streams framed records back
//! (`bencher_types::guest`) over one Unix socket on the host: a virtio-serial port's
//! under QEMU, the vsock's under Firecracker (a guest connection to port P arrives at
//! `<uds>_P`). IO: the VM cache directory, the VMM process, the channel socket; see
//! `kernel`, `disk`, `qemu`, `firecracker`.
//!
//! # One job
//!
//! 1. Plan on the host (argv, env, working directory, user from the image's passwd and
//!    group files) into a `GuestConfig`; build or reuse the root disk and the kernel.
//! 2. In a per-job run directory (`<vm cache>/run/bencher-vm-<pid>-<n>`; Firecracker's
//!    jail is inside it): the scratch disk, the job's initramfs (the cached one with the
//!    config appended as a second cpio archive), the channel socket the VMM connects
//!    to.
//! 3. Start the VMM and read records until `Done`, an `Error`, a failing iteration,
//!    the deadline, a cancel, or the VMM's exit, whichever is first; the VMM exiting
//!    before `Done` fails the job at once.
//! 4. Kill the VMM and delete the run directory. The VMM also dies with the runner
//!    (parent-death signal; a jailed Firecracker, which loses it with its uid, is
//!    killed at the next check), and run directories of dead runners are deleted at
//!    the next check, so a crash leaves nothing behind either.
//!
//! Per-iteration output caps are applied in the guest and again here: the guest is
//! the job's machine, so nothing it sends is trusted beyond its frame format.

mod cpio;
pub(super) mod disk;
mod firecracker;
mod kernel;
mod qemu;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bencher_oci::config::ImageConfig;
use bencher_types::guest::{
    FrameDecoder, GUEST_CONFIG_PATH, GUEST_PROTOCOL_VERSION, GuestChannel, GuestConfig, GuestDisks,
    IterationEnd, Record,
};
use bencher_types::protocol::{IterationResult, JobConfig};
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::capture::Captured;
use super::job::{Planned, admit, plan_process};
use super::network;
use super::plan;
use super::{Capability, ExecOutcome, ExecRequest, OutputLimits, Resources, Sandbox};
pub use firecracker::{FirecrackerConfig, configure as configure_firecracker};
pub use qemu::Accel;

/// The exit code reported for an iteration the executor killed: SIGKILL's.
const KILLED: i32 = 128 + 9;
/// The serial console kept for error messages.
const CONSOLE_TAIL: usize = 8 << 10;
/// How long a probe boot may take: a guest that needs longer is of no use.
const PROBE_TIMEOUT_KVM: Duration = Duration::from_secs(20);
const PROBE_TIMEOUT_TCG: Duration = Duration::from_secs(90);
/// A frame's payload beyond the output cap: a file record's path.
const FRAME_SLACK: u64 = 64 << 10;

/// The VM sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VmSandbox {
    Qemu,
    Firecracker,
}

impl VmSandbox {
    fn sandbox(self) -> Sandbox {
        match self {
            VmSandbox::Qemu => Sandbox::Qemu,
            VmSandbox::Firecracker => Sandbox::Firecracker,
        }
    }
}

/// The VMM a host runs jobs with, as its probe found it.
#[derive(Debug, Clone)]
enum Vmm {
    Qemu(Accel),
    Firecracker(firecracker::Installation),
}

/// What the probe found: everything a job needs that does not depend on the job.
#[derive(Debug, Clone)]
struct VmHost {
    init: PathBuf,
    kernel: kernel::KernelSource,
    cache: PathBuf,
    vmm: Vmm,
    /// What gives jobs network (`network`); without it, Specs allowing network are not
    /// served.
    slirp4netns: Option<PathBuf>,
    capability: Capability,
}

/// Whether this host can run guests of `sandbox`: the VMM, the kernel, the init, and a
/// test boot of a tiny guest with the real init. QEMU tries KVM first (only where the
/// CPU has hardware virtualisation: `/dev/kvm` alone proves nothing), then TCG;
/// Firecracker needs KVM, so on a host without it the boot fails and says so. Decided
/// once per process. Blocking: up to a few minutes in the worst case.
pub(super) fn check(sandbox: VmSandbox) -> Result<Capability, String> {
    probe(sandbox)
        .as_ref()
        .map(|host| host.capability.clone())
        .map_err(Clone::clone)
}

fn probe(sandbox: VmSandbox) -> &'static Result<VmHost, String> {
    static QEMU: OnceLock<Result<VmHost, String>> = OnceLock::new();
    static FIRECRACKER: OnceLock<Result<VmHost, String>> = OnceLock::new();
    let once = match sandbox {
        VmSandbox::Qemu => &QEMU,
        VmSandbox::Firecracker => &FIRECRACKER,
    };
    once.get_or_init(|| {
        // Its own thread and runtime: the caller may be inside a runtime or not.
        std::thread::Builder::new()
            .name("bencher-vm-probe".to_owned())
            .spawn(move || match sandbox {
                VmSandbox::Qemu => probe_qemu(),
                VmSandbox::Firecracker => probe_firecracker(),
            })
            .map_err(|e| format!("cannot start the VM probe: {e}"))?
            .join()
            .unwrap_or_else(|_| Err("the VM probe panicked".to_owned()))
    })
}

/// What every VMM needs: mkfs, the init, a kernel, the cache (cleaned of dead runners'
/// leftovers), and a runtime for the test boot.
struct Common {
    init: PathBuf,
    kernel: kernel::KernelSource,
    cache: PathBuf,
    slirp4netns: Option<PathBuf>,
    runtime: tokio::runtime::Runtime,
}

fn common() -> Result<Common, String> {
    disk::check_mkfs()?;
    let init = find_init()?;
    let kernel = kernel::KernelSource::find()?;
    let cache = cache_dir()?;
    clean_stale_runs(&cache);
    let slirp4netns = network::find_slirp4netns()
        .inspect_err(|reason| {
            tracing::info!(%reason, "VM jobs get no network: Specs allowing it are not served");
        })
        .ok();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the probe's runtime: {e}"))?;
    Ok(Common {
        init,
        kernel,
        cache,
        slirp4netns,
        runtime,
    })
}

fn vm_capability(sandbox: VmSandbox, slirp4netns: Option<&PathBuf>) -> Capability {
    Capability {
        sandbox: sandbox.sandbox(),
        detail: String::new(),
        enforces_resources: true,
        isolates_network: true,
        provides_network: slirp4netns.is_some(),
    }
}

/// How jobs allowing network get it, for the capability line.
fn network_detail(slirp4netns: Option<&PathBuf>) -> &'static str {
    match slirp4netns {
        Some(_) => "network through slirp4netns when the Spec allows it",
        None => "no network (no slirp4netns: Specs allowing it are not served)",
    }
}

fn probe_firecracker() -> Result<VmHost, String> {
    let installation = firecracker::Installation::find()?;
    let Common {
        init,
        kernel,
        cache,
        slirp4netns,
        runtime,
    } = common()?;
    let mut host = VmHost {
        init,
        kernel: kernel.clone(),
        cache,
        vmm: Vmm::Firecracker(installation.clone()),
        capability: vm_capability(VmSandbox::Firecracker, slirp4netns.as_ref()),
        slirp4netns,
    };
    match runtime.block_on(probe_boot(&host)) {
        Ok(boot) => {
            host.capability.detail = format!(
                "jobs run in Firecracker microVMs ({}; kernel {}; test boot {:.1} s); vCPUs, \
                 memory and disk from the Spec, {}",
                installation.describe(),
                kernel.version,
                boot.as_secs_f64(),
                network_detail(host.slirp4netns.as_ref()),
            );
            tracing::info!("Firecracker guests boot here");
            Ok(host)
        }
        Err(error) => {
            let hint = if candidate_accels().contains(&Accel::Kvm) {
                ""
            } else {
                " (this CPU shows no hardware virtualisation, or KVM here is a software \
                 virtualiser: Firecracker needs a host with real KVM)"
            };
            Err(format!(
                "a tiny Firecracker guest did not boot here{hint}: {error}"
            ))
        }
    }
}

fn probe_qemu() -> Result<VmHost, String> {
    let qemu_version = qemu::version()?;
    let Common {
        init,
        kernel,
        cache,
        slirp4netns,
        runtime,
    } = common()?;
    let mut failures = Vec::new();
    for accel in candidate_accels() {
        let mut host = VmHost {
            init: init.clone(),
            kernel: kernel.clone(),
            cache: cache.clone(),
            vmm: Vmm::Qemu(accel),
            capability: vm_capability(VmSandbox::Qemu, slirp4netns.as_ref()),
            slirp4netns: slirp4netns.clone(),
        };
        match runtime.block_on(probe_boot(&host)) {
            Ok(boot) => {
                let speed = match accel {
                    Accel::Kvm => "hardware virtualisation".to_owned(),
                    Accel::Tcg => "software emulation (TCG): correct results, but figures are \
                                   NOT meaningful for benchmarks"
                        .to_owned(),
                };
                host.capability.detail = format!(
                    "jobs run in QEMU microvm guests ({qemu_version}; kernel {}; accel {}: \
                     {speed}; test boot {:.1} s); vCPUs, memory and disk from the Spec, {}",
                    kernel.version,
                    accel.as_str(),
                    boot.as_secs_f64(),
                    network_detail(host.slirp4netns.as_ref()),
                );
                tracing::info!(accel = accel.as_str(), "QEMU guests boot here");
                return Ok(host);
            }
            Err(error) => {
                tracing::info!(accel = accel.as_str(), %error, "a QEMU test boot failed");
                failures.push(format!("with {}: {error}", accel.as_str()));
            }
        }
    }
    Err(format!(
        "a tiny QEMU guest did not boot here: {}",
        failures.join("; ")
    ))
}

/// KVM only where the CPU offers hardware virtualisation and the module is a real one
/// (`kvm_pvm`, a software virtualiser, cannot run an ordinary guest kernel).
fn candidate_accels() -> Vec<Accel> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hardware = cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .any(|line| line.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let kvm =
        hardware && Path::new("/dev/kvm").exists() && !Path::new("/sys/module/kvm_pvm").exists();
    if kvm {
        vec![Accel::Kvm, Accel::Tcg]
    } else {
        vec![Accel::Tcg]
    }
}

/// Boots a guest whose image is only the init binary, running `--version`.
async fn probe_boot(host: &VmHost) -> Result<Duration, String> {
    let dir = tempfile::Builder::new()
        .prefix("probe-")
        .tempdir_in(&host.cache)
        .map_err(|e| format!("cannot create a probe directory: {e}"))?;
    let rootfs = dir.path().join("root");
    fs::create_dir_all(&rootfs).map_err(|e| format!("cannot create the probe image: {e}"))?;
    fs::copy(&host.init, rootfs.join("probe"))
        .map_err(|e| format!("cannot create the probe image: {e}"))?;
    let guest = GuestConfig {
        // Set for the VMM at boot.
        channel: GuestChannel::VirtioSerial {
            name: qemu::PORT_NAME.to_owned(),
        },
        disks: GuestDisks::named(),
        network: None,
        argv: vec!["/probe".to_owned(), "--version".to_owned()],
        env: vec![("PATH".to_owned(), plan::DEFAULT_PATH.to_owned())],
        working_dir: "/".to_owned(),
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        iterations: 1,
        allow_failure: false,
        file_paths: Vec::new(),
        file_size: false,
        max_output_size: 4096,
        max_symlinks: 40,
        grace_period_ms: 0,
    };
    let timeout = match host.vmm {
        Vmm::Qemu(Accel::Kvm) | Vmm::Firecracker(_) => PROBE_TIMEOUT_KVM,
        Vmm::Qemu(Accel::Tcg) => PROBE_TIMEOUT_TCG,
    };
    let started = Instant::now();
    let job = PreparedJob {
        root_disk: disk::root_disk(&rootfs)?,
        guest,
        build_time: false,
        placement: None,
    };
    let resources = Resources {
        cpus: 1,
        memory: 256 << 20,
        disk: 64 << 20,
        network: false,
        tasks: Resources::tasks_for(1),
    };
    let (outcome, console) = boot(
        host,
        &job,
        &resources,
        started + timeout,
        &CancellationToken::new(),
    )
    .await;
    match outcome {
        ExecOutcome::Completed { results }
            if results
                .first()
                .and_then(|r| r.stdout.as_deref())
                .is_some_and(|out| out.starts_with("bencher-init")) =>
        {
            Ok(started.elapsed())
        }
        ExecOutcome::TimedOut { .. } => Err(format!("no answer within {timeout:?}{console}")),
        other => Err(match other {
            ExecOutcome::Failed { error, .. } => error,
            other => format!("unexpected outcome {other:?}"),
        }),
    }
}

/// `BENCHER_VM_INIT`, else `bencher-init` beside the running binary: installed with
/// `runner`, and statically linked (it runs alone in the guest).
fn find_init() -> Result<PathBuf, String> {
    let path = match std::env::var_os("BENCHER_VM_INIT") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find the runner's own path: {e}"))?
            .with_file_name("bencher-init"),
    };
    let bytes = fs::read(&path).map_err(|e| {
        format!(
            "VM sandboxes need the guest init `bencher-init` ({}: {e}); install it beside \
             `runner` or set BENCHER_VM_INIT",
            path.display()
        )
    })?;
    if !is_static_elf(&bytes) {
        return Err(format!(
            "{} is not a static x86-64 executable; build it with RUSTFLAGS='-C \
             target-feature=+crt-static' and --target x86_64-unknown-linux-gnu",
            path.display()
        ));
    }
    let output = std::process::Command::new(&path)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let version = String::from_utf8_lossy(&output.stdout);
    if !version.contains(&format!("guest protocol {GUEST_PROTOCOL_VERSION})")) {
        return Err(format!(
            "{} speaks another guest protocol than this runner ({GUEST_PROTOCOL_VERSION}): {}",
            path.display(),
            version.trim()
        ));
    }
    Ok(path)
}

/// An x86-64 ELF executable without a program interpreter (`PT_INTERP`).
fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read = |at: usize, len: usize| bytes.get(at..at + len);
    let u16_at = |at| read(at, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at =
        |at| read(at, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize);
    // 64-bit, little-endian, x86-64.
    if read(0, 6) != Some(b"\x7fELF\x02\x01".as_slice()) || u16_at(18) != Some(62) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    (0..phnum).all(|i| {
        read(phoff + i * phentsize, 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != PT_INTERP)
    })
}

/// `BENCHER_VM_CACHE_DIR`, else `/var/cache/bencher-runner/vm` for root and
/// `$XDG_CACHE_HOME/bencher-runner/vm` (or `~/.cache/…`) otherwise.
fn cache_dir() -> Result<PathBuf, String> {
    let dir = if let Some(dir) = std::env::var_os("BENCHER_VM_CACHE_DIR") {
        PathBuf::from(dir)
    } else if rustix::process::geteuid().is_root() {
        PathBuf::from("/var/cache/bencher-runner/vm")
    } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("bencher-runner/vm")
    } else if let Some(home) = std::env::var_os("HOME") {
        PathBuf::from(home).join(".cache/bencher-runner/vm")
    } else {
        return Err("cannot tell where to keep VM files: set BENCHER_VM_CACHE_DIR".to_owned());
    };
    fs::create_dir_all(dir.join("run"))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Firecracker's jails hard-link cached kernels and disks, readable by the jails'
    // uids: the cache itself keeps everyone else out.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Deletes run directories whose runner process is gone (its QEMUs died with it; a
/// jailed Firecracker is killed here first).
fn clean_stale_runs(cache: &Path) {
    for entry in fs::read_dir(cache.join("run"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("bencher-vm-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            tracing::info!(dir = %entry.path().display(), "removing a dead runner's VM files");
            firecracker::clean_stale(&entry.path(), pid);
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A job's files on the host; deleted when dropped.
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create(cache: &Path) -> Result<RunDir, String> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!(
            "bencher-vm-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = cache.join("run").join(name);
        fs::create_dir_all(path.parent().unwrap_or(cache))
            .and_then(|()| fs::create_dir(&path))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(RunDir { path })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            tracing::warn!(dir = %self.path.display(), error = %e, "cannot remove a VM's files");
        }
    }
}

/// The job, planned, with its root disk.
struct PreparedJob {
    guest: GuestConfig,
    root_disk: PathBuf,
    /// Whether results carry the guest's wall time of each command (it always sends it).
    build_time: bool,
    /// Where the VMM runs (host tuning's benchmark CPUs).
    placement: Option<super::Placement>,
}

pub(super) async fn execute(
    sandbox: VmSandbox,
    request: ExecRequest,
    cancel: CancellationToken,
) -> ExecOutcome {
    let ExecRequest {
        rootfs,
        image,
        config,
        limits,
        grace_period,
        resources,
        placement,
    } = request;
    let refuse = |error: String| ExecOutcome::Failed {
        results: Vec::new(),
        error,
    };
    let admitted = match admit(&config, &limits) {
        Ok(admitted) => admitted,
        Err(error) => return refuse(error),
    };
    let (iterations, deadline) = (admitted.iterations, admitted.deadline);
    let host = match tokio::task::spawn_blocking(move || probe(sandbox)).await {
        Ok(Ok(host)) => host,
        Ok(Err(error)) => {
            return refuse(format!(
                "sandbox `{}` is not available: {error}",
                sandbox.sandbox()
            ));
        }
        Err(error) => return refuse(format!("the VM probe failed: {error}")),
    };
    let job = tokio::task::spawn_blocking(move || {
        prepare(&rootfs, &image, &config, &limits, grace_period, iterations)
            .map(|job| PreparedJob { placement, ..job })
    })
    .await;
    let job = match job {
        Ok(Ok(job)) => job,
        Ok(Err(error)) => return refuse(error),
        Err(error) => return refuse(format!("preparing the job failed: {error}")),
    };
    boot(host, &job, &resources, deadline, &cancel).await.0
}

/// The guest config (decided here, from the image's own passwd and group files) and
/// the cached root disk.
fn prepare(
    rootfs: &Path,
    image: &ImageConfig,
    config: &JobConfig,
    limits: &OutputLimits,
    grace: Duration,
    iterations: u32,
) -> Result<PreparedJob, String> {
    let Planned {
        argv,
        env,
        working_dir,
        credentials,
    } = plan_process(rootfs, image, config, limits.max_symlinks)?;
    let guest = GuestConfig {
        // Set for the VMM at boot.
        channel: GuestChannel::VirtioSerial {
            name: qemu::PORT_NAME.to_owned(),
        },
        disks: GuestDisks::named(),
        network: None,
        argv,
        env,
        working_dir,
        uid: credentials.uid,
        gid: credentials.gid,
        groups: credentials.groups,
        iterations,
        allow_failure: config.allow_failure.unwrap_or(false),
        file_paths: config.file_paths.clone().unwrap_or_default(),
        file_size: config.file_size.unwrap_or(false),
        max_output_size: limits.max_output_size,
        max_symlinks: limits.max_symlinks,
        grace_period_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
    };
    Ok(PreparedJob {
        root_disk: disk::root_disk(rootfs)?,
        guest,
        build_time: config.build_time.unwrap_or(false),
        placement: None,
    })
}

/// Why the host stopped the VM.
#[derive(Clone, Copy)]
enum Stop {
    Canceled,
    TimedOut,
}

/// Boots the guest and turns its records into the outcome; also the end of the
/// console, for the probe's diagnosis.
async fn boot(
    host: &VmHost,
    job: &PreparedJob,
    resources: &Resources,
    deadline: Instant,
    cancel: &CancellationToken,
) -> (ExecOutcome, String) {
    let outcome = boot_outcome(host, job, resources, deadline, cancel).await;
    (
        outcome.0,
        outcome.1.map(|c| console_text(&c)).unwrap_or_default(),
    )
}

type Console = Arc<Mutex<Vec<u8>>>;

async fn boot_outcome(
    host: &VmHost,
    job: &PreparedJob,
    resources: &Resources,
    deadline: Instant,
    cancel: &CancellationToken,
) -> (ExecOutcome, Option<Console>) {
    let mut results = Results::new(&job.guest, job.build_time);
    let run = match RunDir::create(&host.cache) {
        Ok(run) => run,
        Err(error) => return (results.failed(error), None),
    };
    // Before the VMM, which starts inside it.
    let network = if resources.network {
        let Some(slirp4netns) = &host.slirp4netns else {
            let error = "the Spec allows network, and this host has no slirp4netns to give \
                         VM jobs network (Debian: slirp4netns)"
                .to_owned();
            return (results.failed(error), None);
        };
        let owner = match &host.vmm {
            Vmm::Qemu(_) => 0,
            Vmm::Firecracker(_) => firecracker::jail_uid(),
        };
        match network::JobNetwork::for_vm(slirp4netns, owner).await {
            Ok(network) => Some(network),
            Err(error) => return (results.failed(error), None),
        }
    } else {
        None
    };
    let files = {
        let host = host.clone();
        let run = run.path.clone();
        let mut guest = job.guest.clone();
        guest.network = network.as_ref().map(|_| network::GuestNetwork::SLIRP);
        let root_disk = job.root_disk.clone();
        let disk_size = resources.disk;
        let network = resources.network;
        tokio::task::spawn_blocking(move || {
            let kernel = host.kernel.prepare(&host.init, &host.cache, network)?;
            let layout = Layout::create(&host.vmm, &run, &kernel, &root_disk)?;
            disk::scratch_disk(&layout.dir.join(SCRATCH), disk_size)?;
            let scratch = layout.scratch()?;
            guest.channel = layout.guest_channel.clone();
            guest.disks = layout.disks()?;
            job_initramfs(&kernel.initramfs, &layout.dir.join(INITRAMFS), &guest)
                .map_err(|e| format!("cannot write the job's initramfs: {e}"))?;
            let initramfs = layout.hand_over(INITRAMFS)?;
            Ok::<_, String>((kernel, layout, initramfs, scratch))
        })
        .await
    };
    let (kernel, layout, initramfs, scratch) = match files {
        Ok(Ok(files)) => files,
        Ok(Err(error)) => return (results.failed(error), None),
        Err(error) => {
            return (
                results.failed(format!("preparing the VM failed: {error}")),
                None,
            );
        }
    };
    let listener = match layout.listen() {
        Ok(listener) => listener,
        Err(error) => return (results.failed(error), None),
    };
    let console = Arc::new(Mutex::new(Vec::new()));
    let cpus = resources.cpus.max(1);
    let memory_mib = (resources.memory >> 20).max(128);
    // Spawned from the async task (a runtime worker thread, which lives as long as the
    // runtime): the parent-death signal follows the spawning thread, not the process.
    // Lives as long as the VM, killed with it.
    let mut vhost_vsock = None;
    let (mut process, pipes) = match &host.vmm {
        Vmm::Qemu(accel) => {
            let channel = match &layout.vhost_vsock {
                None => qemu::Channel::VirtioSerial(&layout.channel),
                Some((daemon, socket)) => {
                    let uds = layout.dir.join(VSOCK_SOCKET);
                    match qemu::spawn_vhost_vsock(daemon, socket, &uds).await {
                        Ok(child) => vhost_vsock = Some(child),
                        Err(error) => return (results.failed(error), None),
                    }
                    qemu::Channel::VhostUserVsock(socket)
                }
            };
            let machine = qemu::Machine {
                accel: *accel,
                cpus,
                memory_mib,
                vmlinux: &kernel.vmlinux,
                initramfs: &initramfs,
                root_disk: &job.root_disk,
                scratch_disk: &scratch,
                channel,
                network: network.as_ref(),
                placement: job.placement.as_ref(),
            };
            match qemu::spawn(&machine) {
                Ok(mut child) => {
                    let pipes = (child.stdout.take(), child.stderr.take());
                    (VmmProcess::Child(child), pipes)
                }
                Err(e) => {
                    let error = format!("cannot start {}: {e}", qemu::binary().display());
                    return (results.failed(error), None);
                }
            }
        }
        Vmm::Firecracker(installation) => {
            let Some((jail, inside)) = &layout.jail else {
                return (results.failed("the jail is missing".to_owned()), None);
            };
            let machine = firecracker::Machine {
                cpus,
                memory_mib,
                kernel: &inside.kernel,
                initramfs: &inside.initramfs,
                root_disk: &inside.root_disk,
                scratch_disk: &inside.scratch_disk,
                network: network.as_ref(),
                placement: job.placement.as_ref(),
            };
            match firecracker::start(installation, jail, &machine).await {
                Ok(started) => (started.process, (started.stdout, started.stderr)),
                Err((error, started)) => {
                    if let Some(started) = started {
                        let tasks = keep_console(started.stdout, started.stderr, &console);
                        // The VMM is dead: what it printed is all in the pipes.
                        for task in tasks.into_iter().flatten() {
                            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
                        }
                    }
                    let error = format!("{error}{}", console_text(&console));
                    return (results.failed(error), Some(console));
                }
            }
        }
    };
    let started = Instant::now();
    let console_tasks = keep_console(pipes.0, pipes.1, &console);

    let mut decoder = FrameDecoder::new(job.guest.max_output_size + FRAME_SLACK);
    let mut channel: Option<tokio::net::UnixStream> = None;
    let mut buffer = vec![0u8; 64 << 10];
    let mut stop = None;
    let mut vmm_exit = None;
    while !results.finished() {
        tokio::select! {
            biased;
            () = cancel.cancelled() => stop = Some(Stop::Canceled),
            () = tokio::time::sleep_until(deadline) => stop = Some(Stop::TimedOut),
            accepted = listener.accept(), if channel.is_none() => match accepted {
                Ok((stream, _)) => channel = Some(stream),
                Err(e) => results.fail(format!("cannot accept the VM's channel: {e}")),
            },
            read = async { channel.as_mut()?.read(&mut buffer).await.ok() }, if channel.is_some() => {
                match read {
                    Some(n) if n > 0 => {
                        decoder.push(&buffer[..n]);
                        results.take_records(&mut decoder, started);
                    }
                    // The VM closed the channel (it powers off): its exit follows.
                    _ => channel = None,
                }
            }
            how = process.wait(), if vmm_exit.is_none() => {
                vmm_exit = Some(how);
                // What the guest sent before it stopped is still in the socket.
                if let Some(stream) = channel.as_mut() {
                    drain(stream, &mut decoder, &mut results, started).await;
                }
            }
        }
        if stop.is_some() {
            break;
        }
        if let Some(how) = &vmm_exit
            && !results.finished()
        {
            let tail = console_text(&console);
            results.fail(format!(
                "the VM stopped before the job finished ({} {how}){tail}",
                host.vmm.name()
            ));
        }
    }
    process.kill().await;
    if let Some(mut daemon) = vhost_vsock {
        let _ = daemon.start_kill();
        let _ = daemon.wait().await;
    }
    for task in console_tasks.into_iter().flatten() {
        task.abort();
    }
    drop(listener);
    if let Some(network) = network {
        network.close().await;
    }
    // Removing the jailer's cgroups may wait a moment for the VMM's exit to settle.
    let _ = tokio::task::spawn_blocking(move || {
        drop(layout);
        drop(run);
    })
    .await;
    let outcome = match stop {
        Some(Stop::Canceled) => ExecOutcome::Canceled {
            results: results.with_partial(),
        },
        Some(Stop::TimedOut) => ExecOutcome::TimedOut {
            results: results.with_partial(),
        },
        None => results.outcome(),
    };
    (outcome, Some(console))
}

/// The job's initramfs and scratch disk, by file name in the VM's directory.
const INITRAMFS: &str = "initramfs.cpio";
const SCRATCH: &str = "scratch.ext4";
/// The hybrid vsock's Unix socket in the VM's directory, and the port the guest's init
/// connects to: its connection arrives at `<VSOCK_SOCKET>_<VSOCK_PORT>`.
const VSOCK_SOCKET: &str = "vsock.sock";
const VSOCK_PORT: u32 = 1024;

/// Where a VM's files go and how its guest reaches the host: QEMU's in the run
/// directory with a virtio-serial socket; Firecracker's in a jail inside it, with the
/// kernel and root disk linked in and the vsock's listener.
struct Layout {
    /// Where the job's own files are written.
    dir: PathBuf,
    /// The host's listening socket for the guest's channel.
    channel: PathBuf,
    guest_channel: GuestChannel,
    /// QEMU over hybrid vsock: the `vhost-device-vsock` binary and the socket QEMU
    /// connects to it by.
    vhost_vsock: Option<(PathBuf, PathBuf)>,
    /// Firecracker's jail, and its files' paths inside it.
    jail: Option<(firecracker::Jail, JailPaths)>,
}

struct JailPaths {
    kernel: String,
    initramfs: String,
    root_disk: String,
    scratch_disk: String,
}

impl Layout {
    fn create(
        vmm: &Vmm,
        run: &Path,
        kernel: &kernel::PreparedKernel,
        root_disk: &Path,
    ) -> Result<Layout, String> {
        match vmm {
            Vmm::Qemu(_) => Ok(match qemu::vhost_vsock() {
                Some(daemon) => Layout {
                    dir: run.to_owned(),
                    channel: run.join(format!("{VSOCK_SOCKET}_{VSOCK_PORT}")),
                    guest_channel: GuestChannel::Vsock { port: VSOCK_PORT },
                    vhost_vsock: Some((daemon, run.join("vhost-user.sock"))),
                    jail: None,
                },
                None => Layout {
                    dir: run.to_owned(),
                    channel: run.join("channel.sock"),
                    guest_channel: GuestChannel::VirtioSerial {
                        name: qemu::PORT_NAME.to_owned(),
                    },
                    vhost_vsock: None,
                    jail: None,
                },
            }),
            Vmm::Firecracker(installation) => {
                let jail = firecracker::Jail::create(run, installation)?;
                let inside = JailPaths {
                    kernel: jail.link(&kernel.vmlinux, "vmlinux")?,
                    root_disk: jail.link(root_disk, "root.ext4")?,
                    initramfs: format!("/{INITRAMFS}"),
                    scratch_disk: format!("/{SCRATCH}"),
                };
                Ok(Layout {
                    dir: jail.root.clone(),
                    channel: jail.root.join(format!("{VSOCK_SOCKET}_{VSOCK_PORT}")),
                    guest_channel: GuestChannel::Vsock { port: VSOCK_PORT },
                    vhost_vsock: None,
                    jail: Some((jail, inside)),
                })
            }
        }
    }

    /// The guest's disk serials: QEMU's are set on its command line; Firecracker's
    /// follow from the files.
    fn disks(&self) -> Result<GuestDisks, String> {
        if self.jail.is_none() {
            return Ok(GuestDisks::named());
        }
        let serial = |name: &str| {
            let path = self.dir.join(name);
            firecracker::disk_serial(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let disks = GuestDisks {
            root: serial("root.ext4")?,
            scratch: serial(SCRATCH)?,
        };
        // Cut to 20 bytes, two serials could agree (very large inode numbers).
        if disks.root == disks.scratch {
            return Err(format!(
                "the guest could not tell its disks apart: both have serial {}",
                disks.root
            ));
        }
        Ok(disks)
    }

    /// The scratch disk, handed to the jail's uid under Firecracker.
    fn scratch(&self) -> Result<PathBuf, String> {
        self.hand_over(SCRATCH)
    }

    /// `name` in the VM's directory, the jail uid's own under Firecracker.
    fn hand_over(&self, name: &str) -> Result<PathBuf, String> {
        if let Some((jail, _)) = &self.jail {
            jail.give(name)?;
        }
        Ok(self.dir.join(name))
    }

    /// Listens for the guest's channel; under Firecracker the VMM (the jail's uid)
    /// connects to it.
    fn listen(&self) -> Result<UnixListener, String> {
        let listener = UnixListener::bind(&self.channel)
            .map_err(|e| format!("cannot listen on {}: {e}", self.channel.display()))?;
        if let Some((jail, _)) = &self.jail {
            jail.give(
                &self
                    .channel
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy(),
            )?;
        }
        Ok(listener)
    }
}

impl Vmm {
    fn name(&self) -> String {
        match self {
            Vmm::Qemu(_) => qemu::binary().display().to_string(),
            Vmm::Firecracker(installation) => installation.firecracker.display().to_string(),
        }
    }
}

/// The VMM process: QEMU and a self-jailed Firecracker are the runner's children; a
/// Firecracker started by the jailer runs in its own PID namespace and is watched
/// through a pidfd.
pub(super) enum VmmProcess {
    Child(tokio::process::Child),
    Pidfd(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>),
}

impl VmmProcess {
    fn watch(pid: rustix::process::Pid) -> std::io::Result<VmmProcess> {
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK)?;
        // SAFETY: an `OwnedFd` is a valid open descriptor that stays the same until
        // the `AsyncFd` that owns it drops it.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        Ok(VmmProcess::Pidfd(fd.map_err(std::io::Error::from)?))
    }

    /// Waits for the process to end; how it ended, for messages.
    async fn wait(&mut self) -> String {
        match self {
            VmmProcess::Child(child) => match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => e.to_string(),
            },
            // A pidfd is readable once its process has exited; the exit status belongs
            // to the process's parent.
            VmmProcess::Pidfd(fd) => match fd.readable().await {
                Ok(_) => "exited".to_owned(),
                Err(e) => e.to_string(),
            },
        }
    }

    /// Kills the process and waits for it to end.
    async fn kill(&mut self) {
        match self {
            VmmProcess::Child(child) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            VmmProcess::Pidfd(fd) => {
                let _ =
                    rustix::process::pidfd_send_signal(fd.get_ref(), rustix::process::Signal::KILL);
                let _ = tokio::time::timeout(Duration::from_secs(5), fd.readable()).await;
            }
        }
    }
}

/// Keeps the end of the VMM's stdout and stderr (the guest's console, the VMM's
/// messages).
fn keep_console(
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    console: &Console,
) -> [Option<tokio::task::JoinHandle<()>>; 2] {
    [
        stdout.map(|out| keep_tail(out, console.clone())),
        stderr.map(|err| keep_tail(err, console.clone())),
    ]
}

/// Reads what is left in the channel, for at most a second.
async fn drain(
    stream: &mut tokio::net::UnixStream,
    decoder: &mut FrameDecoder,
    results: &mut Results,
    started: Instant,
) {
    let mut buffer = vec![0u8; 64 << 10];
    let until = Instant::now() + Duration::from_secs(1);
    while !results.finished() {
        match tokio::time::timeout_at(until, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => {
                decoder.push(&buffer[..n]);
                results.take_records(decoder, started);
            }
            _ => break,
        }
    }
}

/// The cached base initramfs with the job's config appended as a second archive.
fn job_initramfs(base: &Path, out: &Path, guest: &GuestConfig) -> std::io::Result<()> {
    fs::copy(base, out)?;
    let config = serde_json::to_vec(guest).map_err(std::io::Error::other)?;
    let mut file = fs::OpenOptions::new().append(true).open(out)?;
    let mut archive = cpio::NewcWriter::new(Vec::new());
    archive.directory("bencher", 0o755)?;
    archive.file(GUEST_CONFIG_PATH.trim_start_matches('/'), 0o600, &config)?;
    file.write_all(&archive.finish()?)?;
    Ok(())
}

fn keep_tail(
    mut reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    tail: Arc<Mutex<Vec<u8>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        while let Ok(n) = reader.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
            tail.extend_from_slice(&buffer[..n]);
            let excess = tail.len().saturating_sub(CONSOLE_TAIL);
            tail.drain(..excess);
        }
    })
}

fn console_text(console: &Console) -> String {
    let tail = console.lock().unwrap_or_else(|e| e.into_inner());
    let text = String::from_utf8_lossy(&tail);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; console and VMM messages, last part:\n{text}")
    }
}

/// The iterations' results as records arrive, under the host's own caps.
struct Results {
    iterations: u32,
    allow_failure: bool,
    file_paths: Vec<String>,
    /// Whether the guest measures `file_paths` (`FileSize`) instead of sending them.
    file_size: bool,
    build_time: bool,
    limit: u64,
    done: Vec<IterationResult>,
    ready: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    dropped: [u64; 2],
    files: BTreeMap<String, String>,
    sizes: BTreeMap<String, u64>,
    failure: Option<String>,
    complete: bool,
}

impl Results {
    fn new(guest: &GuestConfig, build_time: bool) -> Self {
        Self {
            iterations: guest.iterations,
            allow_failure: guest.allow_failure,
            file_paths: guest.file_paths.clone(),
            file_size: guest.file_size,
            build_time,
            limit: guest.max_output_size,
            done: Vec::new(),
            ready: false,
            stdout: Vec::new(),
            stderr: Vec::new(),
            dropped: [0; 2],
            files: BTreeMap::new(),
            sizes: BTreeMap::new(),
            failure: None,
            complete: false,
        }
    }

    fn finished(&self) -> bool {
        self.complete || self.failure.is_some()
    }

    fn fail(&mut self, error: String) {
        if self.failure.is_none() {
            self.failure = Some(error);
        }
    }

    fn failed(mut self, error: String) -> ExecOutcome {
        self.fail(error);
        self.outcome()
    }

    fn which(&self) -> String {
        format!("iteration {} of {}", self.done.len() + 1, self.iterations)
    }

    fn take_records(&mut self, decoder: &mut FrameDecoder, started: Instant) {
        while !self.finished() {
            match decoder.next_record() {
                Ok(Some(record)) => self.record(record, started),
                Ok(None) => return,
                Err(error) => self.fail(format!("the VM's channel broke: {error}")),
            }
        }
    }

    fn record(&mut self, record: Record, started: Instant) {
        if !self.ready && !matches!(record, Record::Ready { .. } | Record::Error(_)) {
            return self.fail("the guest sent records before it was ready".to_owned());
        }
        match record {
            Record::Ready { version } => {
                if version != GUEST_PROTOCOL_VERSION {
                    return self.fail(format!(
                        "the guest speaks guest protocol {version}, this runner \
                         {GUEST_PROTOCOL_VERSION}: reinstall bencher-init with the runner"
                    ));
                }
                tracing::debug!(boot = ?started.elapsed(), "the guest is up");
                self.ready = true;
            }
            Record::Stdout(bytes) => self.keep(0, &bytes),
            Record::Stderr(bytes) => self.keep(1, &bytes),
            Record::FileSize { path, size } => {
                if !self.file_size
                    || !self.file_paths.contains(&path)
                    || self.sizes.contains_key(&path)
                {
                    return self.fail(format!("the guest sent an unexpected file size `{path}`"));
                }
                self.sizes.insert(path, size);
            }
            Record::File { path, contents } => {
                if self.file_size
                    || !self.file_paths.contains(&path)
                    || self.files.contains_key(&path)
                {
                    return self.fail(format!("the guest sent an unexpected file `{path}`"));
                }
                if contents.len() as u64 > self.limit {
                    return self.fail(format!(
                        "{}: output file `{path}` is larger than {} bytes (--max-output-size)",
                        self.which(),
                        self.limit
                    ));
                }
                match String::from_utf8(contents) {
                    Ok(text) => {
                        self.files.insert(path, text);
                    }
                    Err(_) => self.fail(format!(
                        "{}: output file `{path}` is not UTF-8 text",
                        self.which()
                    )),
                }
            }
            Record::IterationEnd(end) => self.end_iteration(end),
            Record::Error(message) => {
                let which = if self.ready {
                    format!("{}: ", self.which())
                } else {
                    String::new()
                };
                self.fail(format!("{which}{message}"));
            }
            Record::Done => {
                if (self.done.len() as u32) < self.iterations
                    && self
                        .done
                        .last()
                        .is_none_or(|r| r.exit_code == 0 || self.allow_failure)
                {
                    return self.fail("the guest stopped before every iteration ran".to_owned());
                }
                self.complete = true;
            }
        }
    }

    /// Keeps output under the shared per-iteration budget; counts the rest.
    fn keep(&mut self, stream: usize, bytes: &[u8]) {
        let used = (self.stdout.len() + self.stderr.len()) as u64;
        let granted = self.limit.saturating_sub(used).min(bytes.len() as u64) as usize;
        let kept = if stream == 0 {
            &mut self.stdout
        } else {
            &mut self.stderr
        };
        kept.extend_from_slice(&bytes[..granted]);
        self.dropped[stream] += (bytes.len() - granted) as u64;
    }

    fn take_result(&mut self, exit_code: i32, guest_dropped: [u64; 2]) -> IterationResult {
        let text = |kept: Vec<u8>, dropped: u64, limit: u64| {
            Captured::from_parts(kept, dropped, limit).into_text()
        };
        let dropped = std::mem::take(&mut self.dropped);
        IterationResult {
            exit_code,
            stdout: Some(text(
                std::mem::take(&mut self.stdout),
                dropped[0] + guest_dropped[0],
                self.limit,
            )),
            stderr: Some(text(
                std::mem::take(&mut self.stderr),
                dropped[1] + guest_dropped[1],
                self.limit,
            )),
            output: None,
            build_time_ns: None,
            file_sizes: None,
        }
    }

    fn end_iteration(&mut self, end: IterationEnd) {
        if self.done.len() as u32 >= self.iterations {
            return self.fail("the guest ran more iterations than asked".to_owned());
        }
        let which = self.which();
        let mut result = self.take_result(end.exit_code, [end.stdout_dropped, end.stderr_dropped]);
        let files = std::mem::take(&mut self.files);
        let sizes = std::mem::take(&mut self.sizes);
        if self.build_time {
            result.build_time_ns = Some(end.elapsed_ns);
        }
        if self.file_size {
            result.file_sizes = Some(sizes);
        }
        if let Some(error) = end.files_error {
            self.done.push(result);
            return self.fail(format!("{which}: {error}"));
        }
        if !self.file_size && !self.file_paths.is_empty() {
            result.output = Some(files);
        }
        let code = result.exit_code;
        self.done.push(result);
        if code != 0 && !self.allow_failure {
            self.fail(format!("{which}: the command exited with code {code}"));
        }
    }

    /// The results with the iteration the host interrupted, if one was running.
    fn with_partial(mut self) -> Vec<IterationResult> {
        if self.ready && (self.done.len() as u32) < self.iterations && self.failure.is_none() {
            let partial = self.take_result(KILLED, [0, 0]);
            self.done.push(partial);
        }
        self.done
    }

    fn outcome(self) -> ExecOutcome {
        match self.failure {
            Some(error) => ExecOutcome::Failed {
                results: self.done,
                error,
            },
            None => ExecOutcome::Completed { results: self.done },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_executables_are_told_from_dynamic_ones() {
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        // Test binaries are linked dynamically.
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(&[]));
    }
}
