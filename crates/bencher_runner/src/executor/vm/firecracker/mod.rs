//! The Firecracker VMM (`sandbox: firecracker`): the installed `firecracker` and its
//! `jailer` (found and version-checked), the per-job jail holding only the kernel, the
//! disks and the sockets, the VMM started in it and configured through its API
//! (`api`), and the disk serials its guest sees. IO: runs `--version`, creates the
//! jail (hard links, device nodes, ownership), spawns the jailer or the VMM, reads
//! `/proc` and removes cgroups to clean up after a dead runner.
//!
//! # Isolation
//!
//! With Firecracker's `jailer` (beside `firecracker`, or configured): the jailer
//! builds the chroot, its device nodes and a cgroup with the job's CPUs and a memory
//! limit, drops to the jail's own uid and gid, and starts the VMM as PID 1 of a new PID
//! namespace (`--new-pid-ns`); the runner puts it in a new, empty network namespace, or
//! the job's (`super::network`) when the Spec allows network. Without a jailer, the
//! runner does the equivalent itself: new mount, network (or the job's), IPC and UTS
//! namespaces, a chroot of the same contents, the jail's uid and gid, no new
//! privileges, and the benchmark CPUs (the cpuset cgroup and affinity QEMU gets). It
//! makes no PID namespace: the VMM's root holds no `/proc` and its uid owns no other
//! process, so there is nothing for it to see or signal.
//!
//! The jail's uid and gid are `1 900 000 000 + the runner's pid`: unused by any account,
//! and different for every runner on the host.

pub(super) mod api;

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use bencher_types::guest::REBOOT_TO_EXIT;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::time::Instant;

use super::super::Placement;
use super::super::network::{self, JobNetwork};
use super::VmmProcess;

/// The guest's vsock context id (any above 2, the host's).
const GUEST_CID: u32 = 3;
/// In the jail's root.
const API_SOCKET: &str = "api.sock";
/// The oldest release whose API this driver speaks (`vsock` without `vsock_id`,
/// `smt` in the machine config).
const MIN_VERSION: (u32, u32, u32) = (1, 0, 0);
const UID_BASE: u32 = 1_900_000_000;
/// How long the VMM may take to open its API socket, and the jailer to set up.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The VMM's own memory beside the guest's, in its cgroup's limit.
const VMM_OVERHEAD: u64 = 256 << 20;

/// How the runner runs Firecracker: where it is (`runner up --firecracker/--jailer`
/// and their environment variables, else `firecracker` on `PATH` and `jailer` beside it
/// or on `PATH`) and its log level (`--sandbox-log-level`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirecrackerConfig {
    pub firecracker: Option<PathBuf>,
    pub jailer: Option<PathBuf>,
    /// Firecracker's `--level` (`Off`, `Error`, `Warning`, `Info`, `Debug`, `Trace`);
    /// its default without one. Its log goes to the console the runner keeps the end
    /// of for error messages.
    pub log_level: Option<&'static str>,
}

static CONFIG: OnceLock<FirecrackerConfig> = OnceLock::new();

/// Sets how Firecracker runs, once, before the first check; later calls are ignored
/// (the probe has run with the first).
pub fn configure(config: FirecrackerConfig) {
    let _ = CONFIG.set(config);
}

/// A usable installation.
#[derive(Debug, Clone)]
pub(super) struct Installation {
    pub firecracker: PathBuf,
    pub jailer: Option<PathBuf>,
    /// As `firecracker --version` printed it (`Firecracker v1.7.0`).
    pub version: String,
    pub log_level: Option<&'static str>,
}

impl Installation {
    pub(super) fn find() -> Result<Installation, String> {
        let config = CONFIG.get().cloned().unwrap_or_default();
        let firecracker = match config.firecracker {
            Some(path) => path,
            None => super::super::on_path("firecracker").ok_or(
                "`firecracker` is not installed (not on PATH); install a Firecracker release \
                 and pass --firecracker (or BENCHER_FIRECRACKER)",
            )?,
        };
        // The jailer names the chroot, the pid file and the cgroup after the binary's
        // real file name (it canonicalizes `--exec-file`), so the runner must too.
        let firecracker = fs::canonicalize(&firecracker)
            .map_err(|e| format!("cannot find {}: {e}", firecracker.display()))?;
        let version = version_of(&firecracker)?;
        let jailer = match config.jailer {
            Some(path) => Some(path),
            None => Some(firecracker.with_file_name("jailer"))
                .filter(|p| p.is_file())
                .or_else(|| super::super::on_path("jailer")),
        };
        if let Some(jailer) = &jailer {
            let jailer_version = version_of(jailer)?;
            if release(&jailer_version) != release(&version) {
                return Err(format!(
                    "{} is {jailer_version} but {} is {version}; install both from one release",
                    jailer.display(),
                    firecracker.display()
                ));
            }
        }
        if !rustix::process::geteuid().is_root() {
            return Err(
                "sandbox `firecracker` needs root (the jail's chroot, device node and \
                        uid)"
                    .to_owned(),
            );
        }
        let kvm = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm");
        if let Err(e) = kvm {
            return Err(format!(
                "Firecracker needs KVM, and /dev/kvm cannot be opened ({e})"
            ));
        }
        Ok(Installation {
            firecracker,
            jailer,
            version,
            log_level: config.log_level,
        })
    }

    pub(super) fn describe(&self) -> String {
        match &self.jailer {
            Some(jailer) => format!("{}, jailed by {}", self.version, jailer.display()),
            None => format!(
                "{}, jailed by the runner (no jailer found beside {})",
                self.version,
                self.firecracker.display()
            ),
        }
    }
}

/// `<binary> --version`'s first line, checked against [`MIN_VERSION`].
fn version_of(binary: &Path) -> Result<String, String> {
    let output = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    match release(&line) {
        Some(found) if output.status.success() && found >= MIN_VERSION => Ok(line),
        Some(_) if output.status.success() => Err(format!(
            "{} is {line}; sandbox `firecracker` needs v{}.{}.{} or later",
            binary.display(),
            MIN_VERSION.0,
            MIN_VERSION.1,
            MIN_VERSION.2
        )),
        _ => Err(format!(
            "`{} --version` did not print a Firecracker version ({})",
            binary.display(),
            if line.is_empty() {
                output.status.to_string()
            } else {
                line
            }
        )),
    }
}

/// The release in a `--version` line: `Firecracker v1.7.0` or `Jailer v1.10.1-dev`.
fn release(line: &str) -> Option<(u32, u32, u32)> {
    let word = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))?;
    let core = word.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(str::parse::<u32>);
    let found = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    parts.next().is_none().then_some(found)
}

/// The serial Firecracker gives a virtio-blk disk: its backing file's device, raw
/// device and inode numbers, written one after the other, cut to the 20 bytes of a
/// virtio-blk id (as kvmtool does). A hard link has its source's numbers.
pub(super) fn disk_serial(path: &Path) -> io::Result<String> {
    let meta = fs::metadata(path)?;
    let mut serial = format!("{}{}{}", meta.dev(), meta.rdev(), meta.ino());
    serial.truncate(20);
    Ok(serial)
}

/// The uid and gid of this runner's jails.
pub(super) fn jail_uid() -> u32 {
    uid_of_runner(std::process::id())
}

/// The jails' uid and gid of the runner with this pid.
fn uid_of_runner(pid: u32) -> u32 {
    UID_BASE + pid
}

/// The cgroup parent of a jailer's cgroups when the benchmark CPUs are not a cgroup
/// v2 partition (there, the partition's own cgroup, `bencher-runner`).
const CGROUP_PARENT: &str = "bencher-firecracker";

/// A job's jail: `<run>/jail/<firecracker's file name>/<id>/root`, the layout the
/// jailer makes under its `--chroot-base-dir` (the run directory, deleted with it).
pub(super) struct Jail {
    /// The jail's `/`, on the host.
    pub root: PathBuf,
    pub uid: u32,
    id: String,
    base: PathBuf,
    jailer: bool,
}

impl Jail {
    /// Creates the jail's root in `run`, the job's run directory.
    pub(super) fn create(run: &Path, installation: &Installation) -> Result<Jail, String> {
        let id = run
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{} has no name", run.display()))?;
        let exe = installation
            .firecracker
            .file_name()
            .ok_or("the firecracker path has no file name")?;
        let base = run.join("jail");
        let root = base.join(exe).join(&id).join("root");
        fs::create_dir_all(&root).map_err(|e| format!("cannot create the jail {e}"))?;
        let uid = jail_uid();
        // The VMM creates its API socket in its root.
        rustix::fs::chown(
            &root,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(uid)),
        )
        .and_then(|()| rustix::fs::chmod(&root, rustix::fs::Mode::from_raw_mode(0o700)))
        .map_err(|e| format!("cannot hand the jail {} to its uid: {e}", root.display()))?;
        Ok(Jail {
            root,
            uid,
            id,
            base,
            jailer: installation.jailer.is_some(),
        })
    }

    /// Puts `source`, which the VMM only reads, into the jail as `/name`: a hard link
    /// (the cache and the jail share a filesystem), a copy where that fails; made
    /// readable by others, which the jail's uid is (the cache's directories keep other
    /// users out). Returns the path inside the jail.
    pub(super) fn link(&self, source: &Path, name: &str) -> Result<String, String> {
        let target = self.root.join(name);
        let failed = |e: io::Error| {
            format!(
                "cannot put {} into the jail {}: {e}",
                source.display(),
                self.root.display()
            )
        };
        if fs::hard_link(source, &target).is_err() {
            fs::copy(source, &target).map_err(failed)?;
        }
        let mode = fs::metadata(&target).map_err(failed)?.permissions().mode();
        if mode & 0o004 == 0 {
            fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o004))
                .map_err(failed)?;
        }
        Ok(format!("/{name}"))
    }

    /// Makes `/name` in the jail the jail uid's own (files only the job uses).
    pub(super) fn give(&self, name: &str) -> Result<String, String> {
        let path = self.root.join(name);
        let id = Some(rustix::fs::Uid::from_raw(self.uid));
        rustix::fs::chown(&path, id, Some(rustix::fs::Gid::from_raw(self.uid)))
            .map_err(|e| format!("cannot hand {} to the jail: {e}", path.display()))?;
        Ok(format!("/{name}"))
    }

    /// The cgroups a jailer made for this jail (v1: one per controller it was given;
    /// v2: one), which outlive the VMM.
    fn cgroups(id: &str, parent: &str) -> Vec<PathBuf> {
        let top = Path::new("/sys/fs/cgroup");
        if top.join("cgroup.controllers").exists() {
            vec![top.join(parent).join(id)]
        } else {
            ["cpuset", "memory"]
                .iter()
                .map(|controller| top.join(controller).join(parent).join(id))
                .collect()
        }
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        if self.jailer {
            remove_cgroups(&self.id);
        }
    }
}

/// Removes the jailer's cgroups of jail `id`, under either parent it may have used.
fn remove_cgroups(id: &str) {
    for parent in [CGROUP_PARENT, "bencher-runner"] {
        for dir in Jail::cgroups(id, parent) {
            // A cgroup is removable once its last process has exited, which follows
            // the kill by a moment.
            for _ in 0..50 {
                match fs::remove_dir(&dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => break,
                }
            }
        }
    }
}

/// What the dead runner `runner_pid`'s run directory `run` may have left besides its
/// files: a VMM still running in one of its jails (a jailed VMM does not die with the
/// runner: the uid change clears the parent-death signal), and the jailer's cgroups.
/// Kills the processes of that runner's jail uid (which finds them whether the jailer
/// chrooted or pivoted them), then removes the cgroups.
pub(super) fn clean_stale(run: &Path, runner_pid: u32) {
    let killed = kill_uid(uid_of_runner(runner_pid));
    if killed > 0 {
        tracing::info!(killed, "killed a dead runner's VMMs");
    }
    if let Some(id) = run.file_name() {
        remove_cgroups(&id.to_string_lossy());
    }
}

/// SIGKILLs every process whose real uid is `uid` (a jail's: nothing else has it);
/// how many there were.
fn kill_uid(uid: u32) -> usize {
    let mut killed = 0;
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if process_uid(pid) == Some(uid)
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
            && rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// The real uid of process `pid`, from `/proc/<pid>/status`.
fn process_uid(pid: i32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The microVM, with paths inside the jail.
pub(super) struct Machine<'a> {
    pub cpus: u32,
    pub memory_mib: u64,
    pub kernel: &'a str,
    pub initramfs: &'a str,
    pub root_disk: &'a str,
    pub scratch_disk: &'a str,
    /// The job's network namespace, with the tap the VMM attaches the guest's
    /// `eth0` to, when the Spec allows network.
    pub network: Option<&'a JobNetwork>,
    pub placement: Option<&'a Placement>,
}

/// A started VMM, its console, and when it started.
pub(super) struct Started {
    pub process: VmmProcess,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

/// The kernel command line: Firecracker's serial console, a reboot (which ends the
/// VMM) on the guest's exit and on a panic, no PCI bus to probe.
fn boot_args() -> String {
    format!("console=ttyS0 reboot=k panic=1 pci=off quiet {REBOOT_TO_EXIT}")
}

/// Starts the VMM in `jail`, configures `machine` through the API and boots it. On an
/// error the VMM is killed and the message says why (with the console's last lines
/// added by the caller).
pub(super) async fn start(
    installation: &Installation,
    jail: &Jail,
    machine: &Machine<'_>,
) -> Result<Started, (String, Option<Started>)> {
    let spawned = match &installation.jailer {
        Some(jailer) => spawn_jailed(jailer, installation, jail, machine).await,
        None => spawn_self_jailed(installation, jail, machine),
    };
    let mut started = spawned.map_err(|e| (e, None))?;
    let boot_args = boot_args();
    let configured = configure_vm(jail, machine, &boot_args, &mut started.process).await;
    match configured {
        Ok(()) => Ok(started),
        Err(error) => {
            started.process.kill().await;
            Err((error, Some(started)))
        }
    }
}

async fn configure_vm(
    jail: &Jail,
    machine: &Machine<'_>,
    boot_args: &str,
    process: &mut VmmProcess,
) -> Result<(), String> {
    let socket = jail.root.join(API_SOCKET);
    let deadline = Instant::now() + START_TIMEOUT;
    // The VMM binds its socket soon after it starts; until then there is nothing to
    // wait on but the file.
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err(format!(
                "Firecracker did not open its API socket within {START_TIMEOUT:?}"
            ));
        }
        tokio::select! {
            how = process.wait() => {
                return Err(format!("Firecracker exited before it opened its API socket ({how})"));
            }
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    let client = api::Api::new(&socket);
    let vsock = format!("/{}", super::VSOCK_SOCKET);
    let requests = api::configuration(&api::Machine {
        cpus: machine.cpus,
        memory_mib: machine.memory_mib,
        kernel: machine.kernel,
        initramfs: machine.initramfs,
        boot_args,
        root_disk: machine.root_disk,
        scratch_disk: machine.scratch_disk,
        vsock: &vsock,
        guest_cid: GUEST_CID,
        tap: machine.network.map(|_| network::TAP),
    });
    for request in requests {
        loop {
            let put = client.put(&request.path, &request.body);
            let answer = tokio::time::timeout_at(deadline, put).await.map_err(|_| {
                format!("Firecracker's API did not answer within {START_TIMEOUT:?}")
            })?;
            match answer {
                Ok(()) => break,
                // The socket file exists from `bind`, before `listen`: the first
                // connection may come too early.
                Err(api::ApiError::Connect { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(error) => return Err(bencher_client::error_chain(&error)),
            }
        }
    }
    Ok(())
}

/// No environment (the runner's holds its key), the console pipes, a null stdin, and
/// the VMM dying with the runner where it can.
fn stdio(command: &mut Command) {
    command
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
}

/// Through Firecracker's jailer: it makes the chroot's device nodes, the cgroup (the
/// job's CPUs, its memory plus the VMM's), drops to the jail's uid and starts the VMM
/// as PID 1 of a new PID namespace, then exits, leaving the VMM's pid in the jail.
async fn spawn_jailed(
    jailer: &Path,
    installation: &Installation,
    jail: &Jail,
    machine: &Machine<'_>,
) -> Result<Started, String> {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let mut command = Command::new(jailer);
    command
        .arg("--id")
        .arg(&jail.id)
        .arg("--exec-file")
        .arg(&installation.firecracker)
        .args([
            "--uid",
            &jail.uid.to_string(),
            "--gid",
            &jail.uid.to_string(),
        ])
        .arg("--chroot-base-dir")
        .arg(&jail.base)
        .arg("--new-pid-ns")
        .args(["--cgroup-version", if v2 { "2" } else { "1" }]);
    let memory = (machine.memory_mib << 20) + VMM_OVERHEAD;
    let memory_file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    command.args(["--cgroup", &format!("{memory_file}={memory}")]);
    // The jailer's cgroup holds the job's CPUs where tuning made a cpuset cgroup (as a
    // container's does, and for the same reason the jailer is not put into that
    // cgroup itself: it makes its own below, which on v2 needs the parent empty).
    // Without one, the affinity hook below places it.
    let mut parent = CGROUP_PARENT;
    let cpuset = machine.placement.filter(|p| p.cgroup.is_some());
    if let Some(placement) = cpuset {
        command.args(["--cgroup", &format!("cpuset.cpus={}", placement.cpu_list())]);
        if let Some(mems) = cpuset_mems(placement) {
            command.args(["--cgroup", &format!("cpuset.mems={mems}")]);
        }
        if let Some(oci_parent) = &placement.oci_parent {
            // On cgroup v2 the partition's CPUs are only reachable from inside it.
            parent = oci_parent.trim_start_matches('/');
        }
    }
    // Named always: the jailer's default is the binary's file name.
    command.args(["--parent-cgroup", parent]);
    if let Some(network) = machine.network {
        command.arg("--netns").arg(network.path());
    }
    command.args(["--", "--api-sock", &format!("/{API_SOCKET}")]);
    if let Some(level) = installation.log_level {
        command.args(["--level", level]);
    }
    stdio(&mut command);
    if let Some(placement) = machine.placement.filter(|p| p.cgroup.is_none()) {
        super::super::placement::install(&mut command, placement)?;
    }
    if machine.network.is_none() {
        // The jailer can only join a network namespace (`--netns`), so the runner makes
        // a fresh, empty one for it: the VMM has no network device at all.
        // SAFETY: one raw syscall between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut jailer_process = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", jailer.display()))?;
    let stdout = jailer_process.stdout.take();
    let mut stderr = jailer_process.stderr.take();
    let status = tokio::time::timeout(START_TIMEOUT, jailer_process.wait()).await;
    let failed = match status {
        Ok(Ok(status)) if status.success() => None,
        Ok(Ok(status)) => Some(format!("the jailer failed ({status})")),
        Ok(Err(e)) => Some(format!("cannot wait for the jailer: {e}")),
        Err(_) => Some(format!(
            "the jailer did not start Firecracker within {START_TIMEOUT:?}"
        )),
    };
    if let Some(failed) = failed {
        let _ = jailer_process.start_kill();
        // Whatever it started runs as the jail's uid.
        kill_uid(jail.uid);
        let mut said = String::new();
        if let Some(stderr) = stderr.take() {
            use tokio::io::AsyncReadExt;
            let mut tail = stderr.take(16 << 10);
            let read = tail.read_to_string(&mut said);
            let _ = tokio::time::timeout(Duration::from_secs(1), read).await;
        }
        let said = said.trim();
        return Err(if said.is_empty() {
            failed
        } else {
            format!("{failed}: {said}")
        });
    }
    let exe = installation
        .firecracker
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let pid_file = jail.root.join(format!("{exe}.pid"));
    let watched = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("the jailer left no pid in {}", pid_file.display()))
        .and_then(|pid| {
            let process = VmmProcess::watch(pid).map_err(|e| {
                format!(
                    "cannot watch Firecracker (pid {}): {e}",
                    pid.as_raw_nonzero()
                )
            })?;
            // The VMM is not the runner's child: its pid could have been reused between
            // the jailer's exit and the pidfd. The pidfd now holds the process; its uid
            // says whether it is the jail's.
            if process_uid(pid.as_raw_nonzero().get()) != Some(jail.uid) {
                return Err("Firecracker exited as soon as the jailer started it".to_owned());
            }
            Ok(process)
        });
    let process = match watched {
        Ok(process) => process,
        Err(error) => {
            kill_uid(jail.uid);
            return Err(error);
        }
    };
    Ok(Started {
        process,
        stdout,
        stderr,
    })
}

/// The memory nodes of the runner's benchmark cpuset cgroup, which a v1 cpuset must
/// have before it takes a process (`cpuset.mems`, else on v2 the effective ones).
fn cpuset_mems(placement: &Placement) -> Option<String> {
    let dir = placement.cgroup.as_deref()?;
    ["cpuset.mems", "cpuset.mems.effective"]
        .iter()
        .filter_map(|file| fs::read_to_string(dir.join(file)).ok())
        .map(|mems| mems.trim().to_owned())
        .find(|mems| !mems.is_empty())
}

/// Without a jailer: the VMM (a static binary) hard-linked into the jail with
/// `/dev/kvm`, started by [`Jail::spawn`].
fn spawn_self_jailed(
    installation: &Installation,
    jail: &Jail,
    machine: &Machine<'_>,
) -> Result<Started, String> {
    // A copy, as the jailer makes: the operator's binary keeps its mode and owner.
    let vmm = jail.root.join("firecracker");
    fs::copy(&installation.firecracker, &vmm)
        .and_then(|_| fs::set_permissions(&vmm, fs::Permissions::from_mode(0o555)))
        .map_err(|e| format!("cannot put Firecracker into the jail: {e}"))?;
    let dev = jail.root.join("dev");
    fs::create_dir_all(&dev).map_err(|e| format!("cannot create the jail's /dev: {e}"))?;
    let mut nodes = vec![("kvm", 10, 232), ("urandom", 1, 9)];
    if machine.network.is_some() {
        fs::create_dir_all(dev.join("net"))
            .map_err(|e| format!("cannot create the jail's /dev/net: {e}"))?;
        nodes.push(("net/tun", 10, 200));
    }
    for (name, major, minor) in nodes {
        let node = dev.join(name);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &node,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(major, minor),
        )
        .map_err(|e| format!("cannot create {}: {e}", node.display()))?;
        jail.give(&format!("dev/{name}"))?;
    }
    fs::set_permissions(&dev, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot set the jail's /dev mode: {e}"))?;
    let api = format!("/{API_SOCKET}");
    let mut args = vec!["--api-sock", &api, "--id", &jail.id];
    if let Some(level) = installation.log_level {
        args.extend(["--level", level]);
    }
    let mut child = jail.spawn("firecracker", &args, machine.network, machine.placement)?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    Ok(Started {
        process: VmmProcess::Child(child),
        stdout,
        stderr,
    })
}

impl Jail {
    /// Starts `/program` of the jail (a static binary linked in) the way the jailer
    /// would: new mount, network (or the job's, `network`), IPC and UTS namespaces,
    /// mounts private, chrooted to the jail, the jail's uid and gid with no
    /// supplementary groups, no new privileges, on the benchmark CPUs; killed with the
    /// runner. Its stdout and stderr are piped.
    fn spawn(
        &self,
        program: &str,
        args: &[&str],
        network: Option<&JobNetwork>,
        placement: Option<&Placement>,
    ) -> Result<Child, String> {
        // Looked up at exec, after the chroot.
        let mut command = Command::new(Path::new("/").join(program));
        command.args(args);
        stdio(&mut command);
        if let Some(placement) = placement {
            super::super::placement::install(&mut command, placement)?;
        }
        let namespaces = match network {
            Some(network) => {
                network.enter(&mut command)?;
                libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS
            }
            None => {
                libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS
            }
        };
        let root = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes())
            .map_err(|_| "the jail's path holds a NUL".to_owned())?;
        let id = self.uid;
        // SAFETY: between fork and exec, only raw syscalls on memory prepared before
        // the fork (the C string), nothing that allocates or locks.
        unsafe {
            command.pre_exec(move || {
                let check = |done: libc::c_int| {
                    if done == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                };
                check(libc::unshare(namespaces))?;
                // Nothing mounted here reaches the host.
                check(libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::chroot(root.as_ptr()))?;
                check(libc::chdir(c"/".as_ptr()))?;
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setresgid(id, id, id))?;
                check(libc::setresuid(id, id, id))?;
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
                // After the uid change, which clears it: the process dies with the
                // runner's thread that spawned it.
                check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
                Ok(())
            });
        }
        command.spawn().map_err(|e| {
            format!(
                "cannot start /{program} in the jail {}: {e}",
                self.root.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_from_version_lines() {
        assert_eq!(release("Firecracker v1.7.0"), Some((1, 7, 0)));
        assert_eq!(release("Jailer v1.10.1-dev"), Some((1, 10, 1)));
        assert_eq!(release("Firecracker v0.25.2"), Some((0, 25, 2)));
        assert!(release("Firecracker v0.25.2") < Some(MIN_VERSION));
        assert_eq!(release("Firecracker 1.7.0"), None);
        assert_eq!(release("Firecracker v1.7"), None);
        assert_eq!(release("Firecracker v1.7.0.1"), None);
        assert_eq!(release(""), None);
    }

    #[test]
    fn a_binary_that_is_not_firecracker_is_refused_with_what_it_printed() {
        let error = version_of(Path::new("/bin/true")).unwrap_err();
        assert!(
            error.contains("did not print a Firecracker version"),
            "{error}"
        );
        let error = version_of(Path::new("/nonexistent/firecracker")).unwrap_err();
        assert!(
            error.contains("cannot run /nonexistent/firecracker"),
            "{error}"
        );
    }

    #[test]
    fn disk_serials_are_device_and_inode_numbers_and_follow_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("root.ext4");
        fs::write(&disk, b"disk").unwrap();
        let meta = fs::metadata(&disk).unwrap();
        let serial = disk_serial(&disk).unwrap();
        assert_eq!(
            serial,
            format!("{}{}{}", meta.dev(), meta.rdev(), meta.ino())
                .chars()
                .take(20)
                .collect::<String>()
        );
        fs::hard_link(&disk, dir.path().join("linked")).unwrap();
        assert_eq!(disk_serial(&dir.path().join("linked")).unwrap(), serial);
        fs::write(dir.path().join("other"), b"").unwrap();
        assert_ne!(disk_serial(&dir.path().join("other")).unwrap(), serial);
    }

    /// The runner's own jail, with a static busybox standing in for the VMM (the real
    /// one needs KVM): what it starts runs as the jail's uid, chrooted to a root that
    /// holds only what was linked in, in namespaces of its own, without new
    /// privileges; and a dead runner's jailed process is killed by `clean_stale`.
    #[tokio::test]
    async fn the_runner_s_jail_confines_what_it_starts() {
        let busybox = Path::new("/bin/busybox");
        let skip = if !rustix::process::geteuid().is_root() {
            Some("not root: a jail needs chroot and a uid change")
        } else if !fs::read(busybox).is_ok_and(|b| super::super::is_static_elf(&b)) {
            Some("no static /bin/busybox (apt install busybox-static)")
        } else {
            None
        };
        if let Some(reason) = skip {
            eprintln!("SKIPPED: {reason}");
            assert!(std::env::var_os("CI").is_none(), "under CI this must run");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("bencher-vm-1-1");
        fs::create_dir(&run).unwrap();
        let installation = Installation {
            firecracker: PathBuf::from("/usr/local/bin/firecracker"),
            jailer: None,
            version: "Firecracker v1.7.0".to_owned(),
            log_level: None,
        };
        let jail = Jail::create(&run, &installation).unwrap();
        assert_eq!(jail.root, run.join("jail/firecracker/bencher-vm-1-1/root"));
        assert_eq!(jail.link(busybox, "busybox").unwrap(), "/busybox");
        let mut child = jail.spawn("busybox", &["sleep", "60"], None, None).unwrap();
        let proc = PathBuf::from(format!("/proc/{}", child.id().unwrap()));

        let status = fs::read_to_string(proc.join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let id = jail.uid.to_string();
        let ids = [id.as_str(); 4].join(" ");
        assert_eq!(field("Uid:"), ids);
        assert_eq!(field("Gid:"), ids);
        assert_eq!(field("Groups:"), "");
        assert_eq!(field("NoNewPrivs:"), "1");
        assert_eq!(field("CapEff:"), "0000000000000000");
        assert_eq!(fs::read_link(proc.join("root")).unwrap(), jail.root);
        for namespace in ["net", "mnt", "ipc", "uts"] {
            assert_ne!(
                fs::read_link(proc.join("ns").join(namespace)).unwrap(),
                fs::read_link(Path::new("/proc/self/ns").join(namespace)).unwrap(),
                "{namespace}"
            );
        }
        let inside: Vec<String> = fs::read_dir(&jail.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(inside, ["busybox"]);

        // As after a runner crash: the jailed process is found by its uid and killed.
        clean_stale(&run, std::process::id());
        let ended = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("clean_stale kills the jailed process")
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&ended),
            Some(libc::SIGKILL)
        );
    }

    #[test]
    fn the_kernel_line_reboots_to_end_the_vmm() {
        let args = boot_args();
        assert!(args.contains("reboot=k"), "{args}");
        assert!(
            args.split_whitespace().any(|w| w == REBOOT_TO_EXIT),
            "{args}"
        );
    }
}
