//! Sandboxes `container` (runc) and `gvisor` (runsc): the job runs in an OCI container,
//! one per iteration, started by the runtime's `run` from a bundle the executor writes.
//! Both runtimes take the same bundle; [`Runtime`] says which binary and flags. IO: the
//! bundle (see `bundle`), the runtime's processes and their pipes, the runtime's state
//! directory (see `state`).
//!
//! # What a job gets
//!
//! - An overlay of its image's root filesystem with a fresh upper directory per
//!   iteration, mounted by the runner (root) in the bundle; the runtime's default
//!   `/proc`, minimal `/dev`, read-only `/sys`, masked and read-only paths.
//! - PID, mount, IPC and UTS namespaces, and a new network namespace with only `lo`;
//!   with network, the job's own namespace where slirp4netns gives it the host's
//!   network but not the host's loopback (`super::network`), and `/etc/resolv.conf`
//!   naming slirp's DNS forwarder (runsc gets `--network=host` then, its sockets being
//!   those of the job's namespace, and `--network=none` otherwise).
//! - The Spec's CPUs as a CFS quota, its memory as the memory limit and 1024 tasks per
//!   CPU as the pids limit of the container's cgroup (`/bencher/<id>`; under runsc the
//!   pids limit counts the sandbox's own threads, and the memory limit is what bounds
//!   the job's tasks). The Spec's disk bounds what the job writes to its root: the
//!   overlay's upper directory is a directory of an ext4 scratch filesystem of that
//!   size, made once per job (a sparse image on a loop device, see `scratch`) and
//!   emptied between iterations, so a job filling its disk gets ENOSPC inside and the
//!   host keeps its free space. Under runsc the same
//!   holds: `--overlay2=none` makes gVisor write through to that overlay, not to a
//!   memory-backed overlay of its own, and `/tmp` is bound to the overlay's. Init's
//!   report directory, writable by root in the container, is a 1 MiB tmpfs.
//! - No new privileges; Docker's default capabilities for root, none for other users.
//! - Its init (PID 1) is `bencher-oci-init` (see `oci-init/main.rs`), bind-mounted
//!   read-only from the runner, which gives the benchmark the image's user and the same
//!   semantics as sandbox `none`: death by signal is 128 + N, leftovers get the grace
//!   period, and init's report files say when the benchmark exited, with what, and
//!   after how long (the build time, measured inside the container; see its source).
//!
//! # One iteration
//!
//! 0. Once per job, after the process is planned: the scratch filesystem is made and
//!    mounted; after the last iteration it is unmounted (its loop device and image go
//!    with it).
//! 1. The bundle is created, its report tmpfs and the overlay (upper and work
//!    directories new on the scratch) mounted; the working directory, `/tmp`
//!    and the mount points are made inside the root, and the command is looked up in
//!    the image (so a missing program fails the job with the same message as `none`).
//! 2. `<runtime> run --bundle DIR ID` in the foreground, stdin `/dev/null`, stdout and
//!    stderr pipes captured under the output budget (see `capture`).
//! 3. The first of: the runtime exits (init exited after the grace period), the
//!    deadline, the cancel token. At the deadline, a benchmark that already exited
//!    (init's `exit` report) still gets its grace period. Timeout or cancel:
//!    `kill ID KILL`; the PID namespace dies with its init.
//! 4. Output files are read (or measured) from the overlay's merged view, inside the root; then
//!    `delete --force ID`, the overlay and report tmpfs unmounted, the bundle and the
//!    iteration's layer on the scratch deleted. If the
//!    executor's future is dropped, a thread does that cleanup. If the runner crashes,
//!    the next `check` of the sandbox does it (see `state`).

mod bundle;
mod scratch;
mod state;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bencher_types::protocol::IterationResult;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::capture::{Captured, OutputBudget, capture};
use super::job::{Ended, Planned, admit, plan_process, run_iterations};
use super::network;
use super::plan;
use super::rootfs::{Root, RootfsError};
use super::{Capability, ExecOutcome, ExecRequest, Resources, Sandbox};
use bundle::{Bundle, Process};
use scratch::JobScratch;
use state::Dirs;

/// How long the runtime may take to exit after its init's grace period, or after
/// `kill`, before the runtime process itself is killed.
const EXIT_SLACK: Duration = Duration::from_secs(5);
/// How long the output pipes may take to reach their end once the container is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The exit code reported for an iteration the executor killed: SIGKILL's.
const KILLED: i32 = 128 + 9;
/// Mount points the runtime mounts on; made in the root first, as `none` does.
const MOUNT_POINTS: [&str; 3] = ["/proc", "/sys", "/dev"];
/// How long `check`'s probe container may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// An OCI runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Runtime {
    /// runc: namespaces and cgroups on the host kernel.
    Runc,
    /// gVisor's runsc: the job's system calls go to gVisor's user-space kernel, on its
    /// default platform (the KVM platform is not used).
    Runsc,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Runsc => "runsc",
        }
    }

    fn sandbox(self) -> Sandbox {
        match self {
            Runtime::Runc => Sandbox::Container,
            Runtime::Runsc => Sandbox::Gvisor,
        }
    }

    /// The variable naming the binary, when it is not the one on `PATH`.
    fn env_var(self) -> &'static str {
        match self {
            Runtime::Runc => "BENCHER_RUNC",
            Runtime::Runsc => "BENCHER_RUNSC",
        }
    }

    /// The runtime's binary: `$BENCHER_RUNC`/`$BENCHER_RUNSC`, else from `PATH`.
    fn binary(self) -> Result<PathBuf, String> {
        if let Some(path) = std::env::var_os(self.env_var()).filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "{}={} is not a file",
                    self.env_var(),
                    path.display()
                ))
            };
        }
        super::on_path(self.name()).ok_or_else(|| {
            format!(
                "`{}` is not on PATH (install it, e.g. `apt-get install {}`, or set {})",
                self.name(),
                self.name(),
                self.env_var()
            )
        })
    }

    /// Global flags: the state directory, and for runsc its network and the file
    /// system mode in which the job's writes reach the overlay (where output files
    /// are read).
    fn global_args(self, dirs: &Dirs, network: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--root".into(), dirs.state.clone().into()];
        if self == Runtime::Runsc {
            args.push("--overlay2=none".into());
            // With network, the sockets of the container's network namespace, the
            // job's. (`sandbox`, gVisor's own stack over that namespace's interfaces,
            // is refused by Debian's runsc on kernels since 5.14: its test for the
            // host's namespace, `/proc/sys/net/core/rmem_default`, is true in every
            // namespace there.)
            args.push(
                if network {
                    "--network=host"
                } else {
                    "--network=none"
                }
                .into(),
            );
        }
        args
    }
}

/// What an iteration runs, prepared once per job.
struct Job {
    runtime: Runtime,
    binary: PathBuf,
    dirs: Dirs,
    image_rootfs: PathBuf,
    /// The mount point of the job's scratch filesystem (see `scratch`).
    scratch: PathBuf,
    process: Process,
    resources: Resources,
    grace: Duration,
    max_symlinks: u32,
    /// Whether results carry the benchmark's wall time.
    build_time: bool,
    /// Whether the output files are measured instead of read.
    file_size: bool,
    /// The benchmark CPUs (`bundle::place`).
    placement: Option<super::Placement>,
    /// The job's network namespace, when its Spec allows network: a path to it for
    /// `config.json`, and a handle the runtime starts in.
    network: Option<(PathBuf, std::os::fd::OwnedFd)>,
}

pub(super) async fn execute(
    runtime: Runtime,
    request: ExecRequest,
    cancel: CancellationToken,
) -> ExecOutcome {
    let ExecRequest {
        rootfs,
        image,
        config,
        resources,
        limits,
        grace_period,
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
    let files: Arc<[String]> = config.file_paths.clone().unwrap_or_default().into();
    let deadline = admitted.deadline;
    let network = if resources.network {
        let created = match tokio::task::spawn_blocking(network::find_slirp4netns).await {
            Ok(Ok(slirp4netns)) => network::JobNetwork::for_container(&slirp4netns).await,
            Ok(Err(error)) => Err(format!(
                "the Spec allows network, and this host cannot give it: {error}"
            )),
            Err(error) => Err(format!("looking for slirp4netns failed: {error}")),
        };
        match created {
            Ok(network) => Some(network),
            Err(error) => return refuse(error),
        }
    } else {
        None
    };
    let namespace = match &network {
        Some(network) => match network.namespace() {
            Ok(handle) => Some((network.path(), handle)),
            Err(error) => return refuse(error),
        },
        None => None,
    };

    let prepared = tokio::task::spawn_blocking(move || -> Result<(Job, JobScratch), String> {
        let binary = runtime.binary()?;
        let dirs = Dirs::of(runtime);
        dirs.prepare()?;
        let Planned {
            argv,
            env,
            working_dir,
            credentials,
        } = plan_process(&rootfs, &image, &config, limits.max_symlinks)?;
        let process = Process {
            argv,
            env,
            working_dir,
            credentials,
            grace_ms: u64::try_from(grace_period.as_millis()).unwrap_or(u64::MAX),
        };
        // Once the job is known to be runnable: its scratch, shared by its iterations.
        let scratch = JobScratch::create(dirs.bundles.join(state::scratch_name()), resources.disk)?;
        let job = Job {
            runtime,
            binary,
            dirs,
            image_rootfs: rootfs,
            scratch: scratch.mount.clone(),
            process,
            resources,
            grace: grace_period,
            max_symlinks: limits.max_symlinks,
            build_time: config.build_time.unwrap_or(false),
            file_size: config.file_size.unwrap_or(false),
            placement,
            network: namespace,
        };
        Ok((job, scratch))
    })
    .await;
    let (job, mut scratch) = match prepared {
        Ok(Ok((job, scratch))) => (Arc::new(job), scratch),
        Ok(Err(error)) => return refuse(error),
        Err(error) => return refuse(format!("preparing the job failed: {error}")),
    };
    tracing::debug!(argv = ?job.process.argv, iterations = admitted.iterations, runtime = runtime.name(), "running a job in a container");
    let outcome = run_iterations(&admitted, &cancel, |index| {
        iteration(
            &job,
            index,
            &files,
            limits.max_output_size,
            deadline,
            &cancel,
        )
    })
    .await;
    // Every iteration's container and bundle is gone (dropped ones on their own
    // threads, which unmount lazily, so the order does not matter).
    let _ = tokio::task::spawn_blocking(move || scratch.remove()).await;
    if let Some(network) = network {
        network.close().await;
    }
    outcome
}

/// One iteration's container and bundle; [`Container::finish`] removes both, and
/// dropping it unfinished does so on a thread of its own.
struct Container {
    runtime: Runtime,
    binary: PathBuf,
    dirs: Dirs,
    id: String,
    bundle: Option<Bundle>,
}

impl Container {
    fn cleanup(&mut self) {
        state::stop(self.runtime, &self.binary, &self.dirs, &self.id);
        if let Some(mut bundle) = self.bundle.take() {
            bundle.remove();
        }
    }

    async fn finish(mut self) {
        let mut this = Container {
            runtime: self.runtime,
            binary: std::mem::take(&mut self.binary),
            dirs: self.dirs.clone(),
            id: std::mem::take(&mut self.id),
            bundle: self.bundle.take(),
        };
        let _ = tokio::task::spawn_blocking(move || this.cleanup()).await;
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.bundle.is_none() {
            return;
        }
        let mut this = Container {
            runtime: self.runtime,
            binary: std::mem::take(&mut self.binary),
            dirs: self.dirs.clone(),
            id: std::mem::take(&mut self.id),
            bundle: self.bundle.take(),
        };
        let _ = std::thread::Builder::new()
            .name("bencher-container-cleanup".to_owned())
            .spawn(move || this.cleanup());
    }
}

/// Creates the bundle and readies the root: mount points, working directory, `/tmp`,
/// the command looked up in the image, `config.json`. Blocking.
fn create(job: &Job, id: &str) -> Result<Bundle, String> {
    let mut bundle = Bundle::create(job.dirs.bundles.join(id), &job.image_rootfs, &job.scratch)?;
    match ready(job, id, &bundle) {
        Ok(()) => Ok(bundle),
        Err(error) => {
            // Its layer too: the scratch's space is the job's.
            bundle.remove();
            Err(error)
        }
    }
}

fn ready(job: &Job, id: &str, bundle: &Bundle) -> Result<(), String> {
    let root = Root::open(&bundle.rootfs, job.max_symlinks)
        .map_err(|e| format!("cannot open the job's root filesystem: {e}"))?;
    for dir in MOUNT_POINTS
        .iter()
        .copied()
        .chain([job.process.working_dir.as_str()])
    {
        root.ensure_dir(dir).map_err(|e| {
            format!("cannot prepare a directory in the image's root filesystem: {e}")
        })?;
    }
    let tmp_bind = prepare_tmp(&bundle.rootfs)?;
    find_program(&root, &job.process)?;
    let network = match &job.network {
        Some((netns, _)) => {
            let resolv_conf = bundle.dir.join("resolv.conf");
            std::fs::write(&resolv_conf, network::RESOLV_CONF)
                .map_err(|e| format!("cannot write the job's resolv.conf: {e}"))?;
            Some(bundle::Network {
                netns: netns.clone(),
                resolv_conf,
            })
        }
        None => None,
    };
    let mut spec = bundle::spec(
        id,
        bundle,
        &job.dirs.init,
        &job.process,
        &job.resources,
        tmp_bind,
        network.as_ref(),
    )
    .map_err(|e| format!("cannot build the container's config.json: {e}"))?;
    if let Some(placement) = &job.placement {
        bundle::place(&mut spec, id, placement);
    }
    spec.save(bundle.dir.join("config.json"))
        .map_err(|e| format!("cannot write the container's config.json: {e}"))?;
    Ok(())
}

/// Makes `/tmp` a world-writable sticky directory when the image has none, as
/// sandbox `none`'s tmpfs is. Returns whether `/tmp` is a real directory, to be
/// bind-mounted (see `bundle::spec`); a symlink is left alone.
fn prepare_tmp(rootfs: &Path) -> Result<bool, String> {
    let tmp = rootfs.join("tmp");
    match fs::symlink_metadata(&tmp) {
        Ok(meta) => Ok(meta.is_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir(&tmp)
                .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)))
                .map_err(|e| format!("cannot create /tmp in the job's root filesystem: {e}"))?;
            Ok(true)
        }
        Err(e) => Err(format!(
            "cannot read /tmp in the job's root filesystem: {e}"
        )),
    }
}

/// Whether the command exists in the image: a path as given (from the working
/// directory), a bare name in the job's `PATH`. The messages are sandbox `none`'s.
fn find_program(root: &Root, process: &Process) -> Result<(), String> {
    let program = &process.argv[0];
    let in_dir = |dir: &str, name: &str| {
        if name.starts_with('/') {
            name.to_owned()
        } else if dir.starts_with('/') {
            format!("{}/{name}", dir.trim_end_matches('/'))
        } else {
            format!("{}/{dir}/{name}", process.working_dir.trim_end_matches('/'))
        }
    };
    // Reading one byte tells a file from nothing; anything but "missing" is left to
    // the exec, which reports it.
    let exists = |path: &str| {
        !matches!(
            root.read_file(path, 0),
            Err(RootfsError::NotFound { .. }
                | RootfsError::NotADirectory { .. }
                | RootfsError::NotAFile { .. })
        )
    };
    if program.contains('/') {
        if exists(&in_dir(&process.working_dir, program)) {
            return Ok(());
        }
        return Err(format!(
            "cannot execute `{program}`: it does not exist in the image"
        ));
    }
    let path = process
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("", |(_, v)| v.as_str());
    if path
        .split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .any(|dir| exists(&in_dir(dir, program)))
    {
        return Ok(());
    }
    Err(format!(
        "cannot execute `{program}`: not found in the image's PATH ({path})"
    ))
}

#[derive(Clone, Copy)]
enum Stop {
    Canceled,
    TimedOut,
}

async fn iteration(
    job: &Arc<Job>,
    index: u32,
    files: &Arc<[String]>,
    max_output_size: u64,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Ended {
    let id = state::container_id(index);
    let mut container = Container {
        runtime: job.runtime,
        binary: job.binary.clone(),
        dirs: job.dirs.clone(),
        id: id.clone(),
        bundle: None,
    };
    let created = {
        let job = job.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || create(&job, &id)).await
    };
    match created {
        Ok(Ok(bundle)) => container.bundle = Some(bundle),
        Ok(Err(error)) => {
            // A failed create may have left the bundle mounted: its directory is
            // removed by the next check's leftover cleanup only if this process is
            // gone, so remove it now.
            let dir = job.dirs.bundles.join(&id);
            let _ = tokio::task::spawn_blocking(move || bundle::remove_leftover(&dir)).await;
            return Ended::Failed(None, error);
        }
        Err(error) => {
            return Ended::Failed(None, format!("preparing the container failed: {error}"));
        }
    }
    let (bundle_dir, report) = match &container.bundle {
        Some(bundle) => (bundle.dir.clone(), bundle.report.clone()),
        None => return Ended::Failed(None, "the bundle is gone".to_owned()),
    };

    let mut command = tokio::process::Command::new(&job.binary);
    command
        // The container's environment is config.json's; the runtime itself (under
        // runsc, the sandbox the job runs against) gets none of the runner's, which
        // holds its key.
        .env_clear()
        .args(job.runtime.global_args(&job.dirs, job.resources.network))
        .arg("run")
        .arg("--bundle")
        .arg(&bundle_dir)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A terminal's Ctrl-C reaches the runner, which stops the job cleanly, not the
        // runtime (which would forward it to the container).
        .process_group(0);
    if let Some((_, netns)) = &job.network {
        match netns.try_clone() {
            Ok(netns) => network::enter(&mut command, netns),
            Err(error) => {
                container.finish().await;
                return Ended::Failed(None, format!("cannot hand the job's network on: {error}"));
            }
        }
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            container.finish().await;
            return Ended::Failed(
                None,
                format!("cannot run `{}`: {error}", job.binary.display()),
            );
        }
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.start_kill();
        let _ = child.wait().await;
        container.finish().await;
        return Ended::Failed(None, "cannot read the container's output".to_owned());
    };
    let budget = OutputBudget::new(max_output_size);
    let stop_reading = CancellationToken::new();
    let stdout = tokio::spawn(capture(stdout, budget.clone(), stop_reading.clone()));
    let stderr = tokio::spawn(capture(stderr, budget, stop_reading.clone()));

    let mut stop = None;
    let mut status = tokio::select! {
        biased;
        () = cancel.cancelled() => {
            stop = Some(Stop::Canceled);
            None
        }
        status = child.wait() => Some(status),
        () = tokio::time::sleep_until(deadline) => None,
    };
    if status.is_none() && stop.is_none() {
        // The deadline. A benchmark that exited in time still gets its grace period.
        if report.join("exit").exists() {
            tokio::select! {
                biased;
                () = cancel.cancelled() => stop = Some(Stop::Canceled),
                waited = tokio::time::timeout(job.grace + EXIT_SLACK, child.wait()) => {
                    status = waited.ok();
                }
            }
        } else {
            stop = Some(Stop::TimedOut);
        }
    }
    if status.is_none() {
        // Timeout, cancel, or leftovers past the grace period: the init dies, and the
        // PID namespace with it; then the runtime exits.
        let (runtime, binary, dirs, id) = (
            job.runtime,
            job.binary.clone(),
            job.dirs.clone(),
            id.clone(),
        );
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::process::Command::new(&binary)
                .args(runtime.global_args(&dirs, false))
                .args(["kill", &id, "KILL"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        })
        .await;
        if let Ok(waited) = tokio::time::timeout(EXIT_SLACK, child.wait()).await {
            status = Some(waited);
        } else {
            let _ = child.start_kill();
            status = Some(child.wait().await);
        }
    }

    let stopper = tokio::spawn(async move {
        tokio::time::sleep(DRAIN_TIMEOUT).await;
        tracing::warn!("the container's output pipes stayed open after it ended; stopped reading");
        stop_reading.cancel();
    });
    let (stdout, stderr) = tokio::join!(stdout, stderr);
    stopper.abort();
    let text =
        |captured: Result<Captured, _>| captured.map(Captured::into_text).unwrap_or_default();
    let exited = fs::read_to_string(report.join("exit"))
        .ok()
        .and_then(|code| code.trim().parse::<i32>().ok());
    // Init writes it before `exit`; a benchmark that did not exit has none.
    let elapsed_ns = exited
        .filter(|_| job.build_time)
        .and_then(|_| fs::read_to_string(report.join("elapsed_ns")).ok())
        .and_then(|nanos| nanos.trim().parse::<u64>().ok());
    let mut result = IterationResult {
        exit_code: exited.unwrap_or(KILLED),
        stdout: Some(text(stdout)),
        stderr: Some(text(stderr)),
        output: None,
        build_time_ns: elapsed_ns,
        file_sizes: None,
    };

    let how = match &status {
        Some(Ok(status)) => status.to_string(),
        Some(Err(e)) => e.to_string(),
        None => "no status".to_owned(),
    };
    let ended = match (stop, exited) {
        (Some(Stop::Canceled), _) => {
            result.exit_code = KILLED;
            Ended::Canceled(result)
        }
        (Some(Stop::TimedOut), _) => {
            result.exit_code = KILLED;
            Ended::TimedOut(result)
        }
        (None, Some(_)) if job.build_time && result.build_time_ns.is_none() => Ended::Failed(
            Some(result),
            "the container's init did not report the benchmark's wall time".to_owned(),
        ),
        (None, Some(_)) if job.file_size => {
            let rootfs = container.bundle.as_ref().map(|b| b.rootfs.clone());
            let (job, files) = (job.clone(), files.clone());
            let measured = tokio::task::spawn_blocking(move || {
                let rootfs = rootfs.ok_or_else(|| "the job's root is gone".to_owned())?;
                Root::open(&rootfs, job.max_symlinks)
                    .map_err(|e| format!("cannot open the job's root filesystem: {e}"))?
                    .file_sizes(&job.process.working_dir, &files)
            })
            .await
            .unwrap_or_else(|e| Err(format!("measuring output files failed: {e}")));
            match measured {
                Ok(sizes) => {
                    result.file_sizes = Some(sizes);
                    Ended::Exited(result)
                }
                Err(error) => Ended::FilesFailed(result, error),
            }
        }
        (None, Some(_)) if files.is_empty() => Ended::Exited(result),
        (None, Some(code)) => {
            let rootfs = container.bundle.as_ref().map(|b| b.rootfs.clone());
            let (job, files) = (job.clone(), files.clone());
            let collected = tokio::task::spawn_blocking(move || {
                let rootfs = rootfs.ok_or_else(|| "the job's root is gone".to_owned())?;
                collect(&job, &rootfs, &files, max_output_size, code != 0)
            })
            .await
            .unwrap_or_else(|e| Err(format!("reading output files failed: {e}")));
            match collected {
                Ok(output) => {
                    result.output = Some(output);
                    Ended::Exited(result)
                }
                Err(error) => Ended::FilesFailed(result, error),
            }
        }
        (None, None) => {
            if let Ok(error) = fs::read_to_string(report.join("error")) {
                Ended::Failed(None, error)
            } else if report.join("started").exists() {
                Ended::Failed(
                    Some(result),
                    format!("the container ended without the benchmark's status ({how})"),
                )
            } else {
                let stderr = result.stderr.as_deref().unwrap_or_default().trim();
                Ended::Failed(
                    None,
                    format!(
                        "{} could not start the container ({how}): {}",
                        job.runtime.name(),
                        tail(stderr, 2000)
                    ),
                )
            }
        }
    };
    container.finish().await;
    ended
}

/// The last `max` bytes of `text`, on a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Reads the output files from the overlay's merged view, inside the root.
fn collect(
    job: &Job,
    rootfs: &Path,
    paths: &[String],
    max_bytes: u64,
    skip_missing: bool,
) -> Result<BTreeMap<String, String>, String> {
    let root = Root::open(rootfs, job.max_symlinks)
        .map_err(|e| format!("cannot open the job's root filesystem: {e}"))?;
    let mut files = BTreeMap::new();
    for path in paths {
        let in_root = if path.starts_with('/') {
            path.clone()
        } else {
            format!("{}/{path}", job.process.working_dir.trim_end_matches('/'))
        };
        match root.read_text(&in_root, max_bytes) {
            Ok(Some(text)) => {
                files.insert(path.clone(), text);
            }
            Ok(None) if skip_missing => {}
            Ok(None) => return Err(format!("output file `{path}` does not exist")),
            Err(e) => return Err(format!("output file {e}")),
        }
    }
    Ok(files)
}

/// Whether this host runs the sandbox: root, the runtime's binary and version, the
/// cleanup of what a crashed runner left, and a probe container that runs the init.
/// Blocking.
pub(super) fn check(runtime: Runtime) -> Result<Capability, String> {
    let sandbox = runtime.sandbox();
    if !rustix::process::geteuid().is_root() {
        return Err(format!(
            "sandbox `{sandbox}` needs root: the runner mounts each job's overlay and runs {}",
            runtime.name()
        ));
    }
    let binary = runtime.binary()?;
    let version = std::process::Command::new(&binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{} --version`: {e}", binary.display()))?;
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if version.is_empty() {
        return Err(format!("`{} --version` printed nothing", binary.display()));
    }
    let dirs = Dirs::of(runtime);
    dirs.prepare()?;
    let removed = state::clean_leftovers(runtime, &binary, &dirs);
    if !removed.is_empty() {
        tracing::warn!(
            runtime = runtime.name(),
            ?removed,
            "removed containers and bundles a previous runner left behind"
        );
    }
    probe(runtime, &binary, &dirs)?;
    let slirp4netns = network::find_slirp4netns();
    let engine = match runtime {
        Runtime::Runc => "runc containers",
        Runtime::Runsc => "gVisor (runsc, default platform) sandboxes",
    };
    Ok(Capability {
        sandbox,
        detail: format!(
            "jobs run in {engine} ({version}): an overlay of their image per iteration; own \
             PID, mount, IPC and UTS namespaces; a network namespace with only loopback, or \
             with network {}; the Spec's CPUs as a CPU quota, \
             its memory as a memory limit, 1024 tasks per CPU; its disk as the size of an ext4 \
             scratch filesystem per job holding each iteration's overlay upper directory (a sparse \
             image on a loop device, in {})",
            match &slirp4netns {
                Ok(_) => "the job's own through slirp4netns, without the host's loopback",
                Err(_) => "none (no slirp4netns: Specs allowing network are not served)",
            },
            dirs.bundles.display()
        ),
        enforces_resources: true,
        isolates_network: true,
        provides_network: slirp4netns.is_ok(),
    })
}

/// Runs the init in an empty image: it runs itself with `--version`.
fn probe(runtime: Runtime, binary: &Path, dirs: &Dirs) -> Result<(), String> {
    let id = state::container_id(0);
    let image = tempfile::Builder::new()
        .prefix(&format!("{id}-image"))
        .tempdir_in(&dirs.bundles)
        .map_err(|e| format!("cannot create the probe's image directory: {e}"))?;
    // The smallest scratch: the probe also proves loop devices and ext4 work here.
    let mut scratch = JobScratch::create(dirs.bundles.join(state::scratch_name()), 0)?;
    let mut bundle = Bundle::create(dirs.bundles.join(&id), image.path(), &scratch.mount)?;
    let result = (|| {
        let process = Process {
            argv: vec![bundle::INIT_PATH.to_owned(), "--version".to_owned()],
            env: vec![("PATH".to_owned(), plan::DEFAULT_PATH.to_owned())],
            working_dir: "/".to_owned(),
            credentials: plan::Credentials {
                uid: 0,
                gid: 0,
                groups: Vec::new(),
                home: None,
            },
            grace_ms: 0,
        };
        let resources = Resources::RUN_DEFAULT;
        let tmp_bind = prepare_tmp(&bundle.rootfs)?;
        bundle::spec(
            &id, &bundle, &dirs.init, &process, &resources, tmp_bind, None,
        )
        .and_then(|spec| spec.save(bundle.dir.join("config.json")))
        .map_err(|e| format!("cannot write the probe's config.json: {e}"))?;
        let mut child = std::process::Command::new(binary)
            .args(runtime.global_args(dirs, false))
            .arg("run")
            .arg("--bundle")
            .arg(&bundle.dir)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run `{}`: {e}", binary.display()))?;
        let started = std::time::Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if started.elapsed() < PROBE_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "a probe container did not finish within {PROBE_TIMEOUT:?}"
                    ));
                }
            }
        }
        let output = child
            .wait_with_output()
            .map_err(|e| format!("cannot read the probe's output: {e}"))?;
        let code = fs::read_to_string(bundle.report.join("exit")).unwrap_or_default();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if output.status.success() && code.trim() == "0" && stdout.starts_with("bencher-oci-init") {
            Ok(())
        } else {
            Err(format!(
                "a probe container failed ({}): {}",
                output.status,
                tail(String::from_utf8_lossy(&output.stderr).trim(), 2000)
            ))
        }
    })();
    state::stop(runtime, binary, dirs, &id);
    bundle.remove();
    scratch.remove();
    result
}
