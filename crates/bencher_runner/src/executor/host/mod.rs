//! Sandbox `none`: the job runs on the host, chrooted into an overlay of its image's
//! root filesystem, in its own mount and PID namespaces, with the host's network and no
//! resource limits. IO: the image's root filesystem (read), a scratch directory per
//! iteration, mounts in private namespaces, the job's processes and pipes; see
//! `namespace` and `init`.
//!
//! This isolates a trusted job from the host by accident, not by design against
//! malice: a job running as root keeps root's capabilities (it could mount the host's
//! disks or leave the chroot), and can read its PID 1, the init, which is a fork of
//! the runner and so holds a copy of the runner's memory and environment (an image
//! `User` other than root cannot: the kernel denies other users a process's memory and
//! environ). That is what `--danger-allow-no-sandbox` acknowledges.
//!
//! # One iteration
//!
//! 1. `namespace::start`: a thread unshares a mount and a PID namespace, mounts the
//!    overlay, creates the mount points, and spawns the init with the job's command;
//!    the init chroots, mounts `/proc`, `/sys` (read-only), a minimal `/dev` and a
//!    `/tmp` tmpfs, and forks the benchmark, which takes the image's user and execs.
//! 2. stdout and stderr are captured under the output budget (see `capture`) while
//!    the executor waits for the first of: the benchmark's exit report, the job's
//!    deadline, the cancel token.
//! 3. After an exit the init gives leftover processes the grace period, then exits;
//!    after a timeout or cancel the executor kills the init. Either way the kernel kills
//!    everything left in the PID namespace, and the init is reaped only once that is
//!    done: nothing of the job survives the iteration.
//! 4. The pipes are drained, the output files read (or measured) from the overlay, the
//!    overlay unmounted and the scratch directory deleted.
//!
//! The build time (`build_time`) is the init's measure, sent with the exit code: from
//! just before it forks the benchmark to reaping it, inside the namespaces.

mod init;
mod namespace;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bencher_oci::config::ImageConfig;
use bencher_types::protocol::{IterationResult, JobConfig};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::capture::{Captured, OutputBudget, capture};
use super::job::{Ended, Planned, admit, plan_process, run_iterations};
use super::plan::Credentials;
use super::{Capability, ExecOutcome, ExecRequest, OutputLimits, Sandbox};
use init::{REPORT_LEN, Report};

/// How long the init may take to exit after the grace period, before it is killed.
const INIT_EXIT_SLACK: Duration = Duration::from_secs(1);
/// How long the output pipes may take to reach their end once the job is gone. Only a
/// job that handed its pipe to a process outside its namespace makes this matter.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The exit code reported for an iteration the executor killed: SIGKILL's.
const KILLED: i32 = 128 + 9;

/// What an iteration runs, prepared once per job.
#[derive(Debug)]
struct HostJob {
    rootfs: PathBuf,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: String,
    credentials: Credentials,
    grace: Duration,
    max_symlinks: u32,
    /// Whether results carry the benchmark's wall time.
    build_time: bool,
    /// Whether the output files are measured instead of read.
    file_size: bool,
    /// The benchmark CPUs, which the init joins before anything else.
    placement: Option<super::Placement>,
}

pub(super) async fn execute(request: ExecRequest, cancel: CancellationToken) -> ExecOutcome {
    let ExecRequest {
        rootfs,
        image,
        config,
        limits,
        grace_period,
        // Sandbox `none` enforces none of the Spec's resources (its capability says so).
        resources: _,
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

    let job = match tokio::task::spawn_blocking(move || {
        prepare(rootfs, &image, &config, &limits, grace_period)
            .map(|job| HostJob { placement, ..job })
    })
    .await
    {
        Ok(Ok(job)) => Arc::new(job),
        Ok(Err(error)) => return refuse(error),
        Err(error) => return refuse(format!("preparing the job failed: {error}")),
    };
    tracing::debug!(argv = ?job.argv, iterations = admitted.iterations, "running a job on the host");
    run_iterations(&admitted, &cancel, |_| {
        iteration(&job, &files, &limits, deadline, &cancel)
    })
    .await
}

/// Decides the command, environment, working directory and user, reading the image's
/// passwd and group files (confined to its root).
fn prepare(
    rootfs: PathBuf,
    image: &ImageConfig,
    config: &JobConfig,
    limits: &OutputLimits,
    grace: Duration,
) -> Result<HostJob, String> {
    let Planned {
        argv,
        env,
        working_dir,
        credentials,
    } = plan_process(&rootfs, image, config, limits.max_symlinks)?;
    Ok(HostJob {
        argv,
        env,
        working_dir,
        credentials,
        rootfs,
        grace,
        max_symlinks: limits.max_symlinks,
        build_time: config.build_time.unwrap_or(false),
        file_size: config.file_size.unwrap_or(false),
        placement: None,
    })
}

/// Why the executor stopped an iteration.
#[derive(Clone, Copy)]
enum Stop {
    Canceled,
    TimedOut,
}

async fn iteration(
    job: &Arc<HostJob>,
    files: &Arc<[String]>,
    limits: &OutputLimits,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Ended {
    let (session, started) = namespace::start(job.clone()).await;
    let spawned = match started {
        Ok(spawned) => spawned,
        Err(error) => {
            session.finish().await;
            return Ended::Failed(None, error);
        }
    };
    let namespace::Spawned {
        mut child,
        stdout,
        stderr,
        mut status,
    } = spawned;
    let budget = OutputBudget::new(limits.max_output_size);
    let stop_reading = CancellationToken::new();
    let stdout = tokio::spawn(capture(stdout, budget.clone(), stop_reading.clone()));
    let stderr = tokio::spawn(capture(stderr, budget, stop_reading.clone()));

    let mut stop = None;
    // In this order when several are ready: a cancel wins, and an exit that came in
    // time is not turned into a timeout by a late poll.
    let exited = tokio::select! {
        biased;
        () = cancel.cancelled() => {
            stop = Some(Stop::Canceled);
            None
        }
        exit = exit_report(&mut status) => exit,
        () = tokio::time::sleep_until(deadline) => {
            stop = Some(Stop::TimedOut);
            None
        }
    };
    if exited.is_some() {
        // The benchmark is done; the init gives what it left the grace period and
        // exits. A cancel still cuts that short; the deadline does not, the benchmark
        // having finished in time.
        tokio::select! {
            biased;
            () = cancel.cancelled() => stop = Some(Stop::Canceled),
            _ = tokio::time::timeout(job.grace + INIT_EXIT_SLACK, child.wait()) => {}
        }
    }
    // Kills the init if it still runs; the kernel then kills the rest of the namespace,
    // and the init is reaped only after all of it is gone.
    let _ = child.start_kill();
    let init_status = child.wait().await;

    // Every writer is gone; read what is left in the pipes, for a bounded time.
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(DRAIN_TIMEOUT).await;
        tracing::warn!("the job's output pipes stayed open after the job ended; stopped reading");
        stop_reading.cancel();
    });
    let (stdout, stderr) = tokio::join!(stdout, stderr);
    stopper.abort();
    let text =
        |captured: Result<Captured, _>| captured.map(Captured::into_text).unwrap_or_default();
    let mut result = IterationResult {
        exit_code: exited.map_or(KILLED, |(code, _)| code),
        stdout: Some(text(stdout)),
        stderr: Some(text(stderr)),
        output: None,
        build_time_ns: exited
            .filter(|_| job.build_time)
            .map(|(_, elapsed_ns)| elapsed_ns),
        file_sizes: None,
    };
    let exited = exited.map(|(code, _)| code);

    let ended = match (stop, exited) {
        (Some(Stop::Canceled), _) => Ended::Canceled(result),
        (Some(Stop::TimedOut), _) => Ended::TimedOut(result),
        (None, Some(_)) if job.file_size => match session.sizes(files.clone()).await {
            Ok(sizes) => {
                result.file_sizes = Some(sizes);
                Ended::Exited(result)
            }
            Err(error) => Ended::FilesFailed(result, error),
        },
        (None, Some(_)) if files.is_empty() => Ended::Exited(result),
        (None, Some(code)) => {
            // A failed run may not have written its files; that is not a second error.
            match session
                .collect(files.clone(), limits.max_output_size, code != 0)
                .await
            {
                Ok(output) => {
                    result.output = Some(output);
                    Ended::Exited(result)
                }
                Err(error) => Ended::FilesFailed(result, error),
            }
        }
        (None, None) => {
            let how = match &init_status {
                Ok(status) => status.to_string(),
                Err(e) => e.to_string(),
            };
            Ended::Failed(
                Some(result),
                format!("the job's init ended without the benchmark's status ({how})"),
            )
        }
    };
    session.finish().await;
    ended
}

/// The benchmark's exit code and wall time (nanoseconds) from the status pipe; `None`
/// if the pipe ends first (the init died).
async fn exit_report(status: &mut tokio::net::unix::pipe::Receiver) -> Option<(i32, u64)> {
    let mut message = [0u8; REPORT_LEN];
    loop {
        status.read_exact(&mut message).await.ok()?;
        if let Some(Report::Exited { code, elapsed_ns }) = Report::decode(message) {
            return Some((code, elapsed_ns));
        }
    }
}

pub(super) fn check() -> Result<Capability, String> {
    if !rustix::process::geteuid().is_root() {
        return Err(
            "sandbox `none` needs root: every job gets mount and PID namespaces, an \
                    overlay mount and a chroot; run the runner as root"
                .to_owned(),
        );
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems")
        .map_err(|e| format!("cannot read /proc/filesystems: {e}"))?;
    for needed in ["overlay", "tmpfs", "proc", "sysfs"] {
        if !filesystems
            .lines()
            .any(|line| line.split_whitespace().last() == Some(needed))
        {
            return Err(format!(
                "the kernel does not offer the `{needed}` filesystem (see /proc/filesystems), \
                 which sandbox `none` mounts for every job"
            ));
        }
    }
    namespace::probe()?;
    Ok(Capability {
        sandbox: Sandbox::None,
        detail: "jobs run on the host, chrooted into an overlay of their image in their own \
                 mount and PID namespaces; host network, no CPU, memory or disk limits"
            .to_owned(),
        enforces_resources: false,
        isolates_network: false,
        provides_network: true,
    })
}
