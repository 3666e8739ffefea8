//! One iteration's namespaces, held by a thread of their own: it leaves the runner's
//! mount namespace for a private one, mounts the job's overlay there, spawns the job's
//! init into a new PID namespace, and after the job reads the output files from the
//! same overlay. IO: the scratch directory (overlay upper and work dirs, under the
//! system temp dir), mounts in the private namespace, the spawn, output file reads.
//!
//! # Why a thread
//!
//! Mount and PID namespaces can be unshared by one thread of a multithreaded process
//! (the mount namespace comes with a private copy of that thread's root and cwd; the
//! PID namespace is where that thread's next child is born). So this thread does the
//! mounting with ordinary code, where the forked child could only make raw syscalls,
//! and the runner's other threads never see any of it: the host's root is never
//! touched, and everything mounted disappears with the namespace when the thread and
//! the job are gone, even if the runner crashes. The thread also anchors the init's
//! parent-death signal, so it lives until the job has been reaped. It must not create
//! threads: the kernel refuses them to a thread whose children go to another PID
//! namespace than its own.
//!
//! # The overlay
//!
//! The image's root filesystem is shared by every job of the image, so a job gets an
//! overlayfs with it as the read-only lower layer and a fresh upper directory: what the
//! job writes lands in the upper directory, deleted with the scratch directory after
//! the iteration. Each iteration starts from the image as it was.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use rustix::fs::{Mode, OFlags, open};
use rustix::mount::{
    MountFlags, MountPropagationFlags, UnmountFlags, mount, mount_change, unmount,
};
use rustix::pipe::{PipeFlags, pipe_with};
use rustix::process::{Gid, Uid};
use rustix::thread::UnshareFlags;
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::HostJob;
use super::init::{self, InitConfig, REPORT_LEN, Report};
use crate::executor::rootfs::Root;

/// Mount points the init mounts on; they must exist in the image's root, as
/// directories.
const MOUNT_POINTS: [&str; 4] = ["/proc", "/sys", "/dev", "/tmp"];

/// The spawned job.
pub(super) struct Spawned {
    /// The job's init; killing it kills the job.
    pub child: Child,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    /// Read end of the status pipe (see `init`).
    pub status: pipe::Receiver,
}

/// The thread holding an iteration's namespaces, and its scratch directory.
pub(super) struct Session {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    scratch: Option<Scratch>,
}

enum Request {
    Collect {
        paths: Arc<[String]>,
        max_bytes: u64,
        skip_missing: bool,
        reply: oneshot::Sender<Result<BTreeMap<String, String>, String>>,
    },
    /// The sizes of the output files, for a job measuring file sizes.
    Sizes {
        paths: Arc<[String]>,
        reply: oneshot::Sender<Result<BTreeMap<String, u64>, String>>,
    },
}

/// Starts the thread and, through it, the job. On error nothing runs, and the
/// session only needs `finish`ing.
pub(super) async fn start(job: Arc<HostJob>) -> (Session, Result<Spawned, String>) {
    let mut session = Session {
        requests: None,
        thread: None,
        scratch: None,
    };
    let scratch = match blocking(Scratch::create).await {
        Ok(scratch) => scratch,
        Err(e) => {
            return (
                session,
                Err(format!(
                    "cannot create the job's scratch directory in {} (set TMPDIR to move it): {e}",
                    std::env::temp_dir().display()
                )),
            );
        }
    };
    let paths = scratch.paths();
    session.scratch = Some(scratch);
    let (started_tx, started_rx) = oneshot::channel();
    let (requests_tx, requests_rx) = mpsc::channel();
    let handle = Handle::current();
    let thread = std::thread::Builder::new()
        .name("bencher-job".to_owned())
        .spawn(move || hold(&job, &paths, &handle, started_tx, &requests_rx));
    match thread {
        Ok(thread) => {
            session.thread = Some(thread);
            session.requests = Some(requests_tx);
        }
        Err(e) => {
            return (
                session,
                Err(format!("cannot start a thread for the job: {e}")),
            );
        }
    }
    let started = started_rx.await.unwrap_or_else(|_| {
        Err("the thread holding the job's namespaces ended unexpectedly".to_owned())
    });
    (session, started)
}

impl Session {
    /// Reads the output files (inside the job's root, see `Root`) after the job ended.
    /// Relative paths are taken from the working directory. With `skip_missing`, a
    /// file that does not exist is left out instead of being an error.
    pub(super) async fn collect(
        &self,
        paths: Arc<[String]>,
        max_bytes: u64,
        skip_missing: bool,
    ) -> Result<BTreeMap<String, String>, String> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Collect {
            paths,
            max_bytes,
            skip_missing,
            reply,
        };
        let sent = self.requests.as_ref().map(|r| r.send(request));
        if !matches!(sent, Some(Ok(()))) {
            return Err("the job's namespaces are gone; output files cannot be read".to_owned());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the thread reading output files ended unexpectedly".into()))
    }

    /// The sizes of the output files that exist (inside the job's root, see `Root`)
    /// after the job ended. Relative paths are taken from the working directory.
    pub(super) async fn sizes(
        &self,
        paths: Arc<[String]>,
    ) -> Result<BTreeMap<String, u64>, String> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .requests
            .as_ref()
            .map(|r| r.send(Request::Sizes { paths, reply }));
        if !matches!(sent, Some(Ok(()))) {
            return Err(
                "the job's namespaces are gone; output files cannot be measured".to_owned(),
            );
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the thread measuring output files ended unexpectedly".into()))
    }

    /// Ends the thread (unmounting the job's root) and deletes the scratch directory.
    pub(super) async fn finish(mut self) {
        let (thread, scratch) = self.release();
        let _ = blocking(move || {
            end(thread, scratch);
            Ok(())
        })
        .await;
    }

    fn release(&mut self) -> (Option<JoinHandle<()>>, Option<Scratch>) {
        // Dropping the sender is what tells the thread to end.
        drop(self.requests.take());
        (self.thread.take(), self.scratch.take())
    }
}

impl Drop for Session {
    /// Only when `finish` was not awaited (the executor's future was dropped): the
    /// thread ends (its parent-death signal kills a job still running), and the
    /// cleanup runs on a thread of its own rather than blocking the caller.
    fn drop(&mut self) {
        let (thread, scratch) = self.release();
        if thread.is_some() || scratch.is_some() {
            let _ = std::thread::Builder::new()
                .name("bencher-job-cleanup".to_owned())
                .spawn(move || end(thread, scratch));
        }
    }
}

fn end(thread: Option<JoinHandle<()>>, scratch: Option<Scratch>) {
    if let Some(thread) = thread
        && thread.join().is_err()
    {
        tracing::error!("the thread holding a job's namespaces panicked");
    }
    // Removed from the runner's own mount namespace, where no job mount was ever
    // visible, so the removal cannot reach into the overlay's layers or /proc.
    if let Some(scratch) = scratch {
        let path = scratch.dir.path().to_owned();
        if let Err(error) = scratch.dir.close() {
            tracing::warn!(path = %path.display(), %error, "cannot remove a job's scratch directory");
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// A job's scratch directory (0700, under the system temp dir): the overlay's upper
/// and work directories and the mount point of the job's root.
struct Scratch {
    dir: tempfile::TempDir,
}

#[derive(Clone)]
struct ScratchPaths {
    upper: PathBuf,
    work: PathBuf,
    root: PathBuf,
}

impl Scratch {
    fn create() -> io::Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix("bencher-job-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()?;
        let scratch = Scratch { dir };
        let paths = scratch.paths();
        for path in [&paths.upper, &paths.work, &paths.root] {
            fs::create_dir(path)?;
        }
        Ok(scratch)
    }

    fn paths(&self) -> ScratchPaths {
        let dir = self.dir.path();
        ScratchPaths {
            upper: dir.join("upper"),
            work: dir.join("work"),
            root: dir.join("root"),
        }
    }
}

/// The thread's body.
fn hold(
    job: &HostJob,
    scratch: &ScratchPaths,
    handle: &Handle,
    started: oneshot::Sender<Result<Spawned, String>>,
    requests: &mpsc::Receiver<Request>,
) {
    let mut mounted = false;
    let result = enter_namespaces()
        .and_then(|()| mount_overlay(&job.rootfs, scratch))
        .and_then(|()| {
            mounted = true;
            let root = Root::open(&scratch.root, job.max_symlinks)
                .map_err(|e| format!("cannot open the job's root filesystem: {e}"))?;
            for dir in MOUNT_POINTS
                .iter()
                .copied()
                .chain([job.working_dir.as_str()])
            {
                root.ensure_dir(dir).map_err(|e| {
                    format!("cannot prepare a directory in the image's root filesystem: {e}")
                })?;
            }
            let spawned = spawn(job, &root, handle)?;
            Ok((root, spawned))
        });
    match result {
        Ok((root, spawned)) => {
            if started.send(Ok(spawned)).is_ok() {
                serve(job, &root, requests);
            }
            // Otherwise the executor is gone and dropped the child, which kills it.
        }
        Err(error) => {
            let _ = started.send(Err(error));
        }
    }
    if mounted {
        // Everything under the root goes too (lazy unmount takes the whole tree); the
        // namespace itself ends with this thread.
        if let Err(error) = unmount(&scratch.root, UnmountFlags::DETACH) {
            tracing::warn!(%error, "cannot unmount a job's root filesystem; it goes with its namespace");
        }
    }
}

/// Moves this thread into a private mount namespace and makes its next child the
/// first process of a new PID namespace.
fn enter_namespaces() -> Result<(), String> {
    // SAFETY: `NEWNS` also gives this thread its own root, cwd and umask (`CLONE_FS`),
    // which nothing else in the process relies on being shared with it; `NEWPID` only
    // changes where this thread's children are born. Neither touches memory or fds
    // other threads use.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS | UnshareFlags::NEWPID) }.map_err(
        |e| {
            format!(
                "cannot create the job's mount and PID namespaces: {e} (sandbox `none` needs root)"
            )
        },
    )?;
    // First of all, so that no mount below propagates back to the host.
    mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| format!("cannot make the job's mount namespace private: {e}"))
}

/// Mounts the overlay of the image's root and a fresh upper directory on
/// `scratch.root`. The layers are named by `/proc/self/fd/N` links to fds opened here,
/// so their paths need no escaping for overlayfs's option syntax (`,` and `:`).
fn mount_overlay(rootfs: &Path, scratch: &ScratchPaths) -> Result<(), String> {
    let io_error =
        |what: &str, path: &Path, e: io::Error| format!("cannot {what} {}: {e}", path.display());
    // The merged root has the upper directory's owner and mode: make them the image's.
    let lower = fs::metadata(rootfs).map_err(|e| io_error("read", rootfs, e))?;
    fs::set_permissions(
        &scratch.upper,
        fs::Permissions::from_mode(lower.mode() & 0o7777),
    )
    .map_err(|e| io_error("set the mode of", &scratch.upper, e))?;
    std::os::unix::fs::chown(&scratch.upper, Some(lower.uid()), Some(lower.gid()))
        .map_err(|e| io_error("set the owner of", &scratch.upper, e))?;
    let open_dir = |path: &Path| -> Result<OwnedFd, String> {
        open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error("open", path, e.into()))
    };
    let (lower, upper, work) = (
        open_dir(rootfs)?,
        open_dir(&scratch.upper)?,
        open_dir(&scratch.work)?,
    );
    let options = format!(
        "lowerdir=/proc/self/fd/{},upperdir=/proc/self/fd/{},workdir=/proc/self/fd/{}",
        lower.as_raw_fd(),
        upper.as_raw_fd(),
        work.as_raw_fd()
    );
    let options = CString::new(options).map_err(|e| e.to_string())?;
    mount(
        c"overlay",
        &scratch.root,
        c"overlay",
        MountFlags::empty(),
        Some(options.as_c_str()),
    )
    .map_err(|e| {
        format!(
            "cannot mount the job's overlay of {} (upper directory in {}; set TMPDIR to move it): {e}",
            rootfs.display(),
            scratch.upper.display()
        )
    })
}

/// Spawns the init (see `init`) with the job's command, environment and pipes.
fn spawn(job: &HostJob, root: &Root, handle: &Handle) -> Result<Spawned, String> {
    let (status_read, status_write) =
        pipe_with(PipeFlags::CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))?;
    let working_dir = CString::new(job.working_dir.as_str())
        .map_err(|_| "the working directory contains a NUL byte".to_owned())?;
    let (program, args) = job
        .argv
        .split_first()
        .ok_or_else(|| "the command is empty".to_owned())?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Before the init's hook, which does not return: the init, and so the benchmark it
    // forks, starts on the benchmark CPUs.
    if let Some(placement) = &job.placement {
        super::super::placement::install(&mut command, placement)?;
    }
    let credentials = &job.credentials;
    init::install(
        &mut command,
        InitConfig {
            root: root.fd().as_raw_fd(),
            status: status_write.as_raw_fd(),
            grace: job.grace,
            working_dir,
            uid: Uid::from_raw(credentials.uid),
            gid: Gid::from_raw(credentials.gid),
            groups: credentials
                .groups
                .iter()
                .copied()
                .map(Gid::from_raw)
                .collect(),
        },
    );
    // Pipes and the child are registered with the executor's runtime.
    let _runtime = handle.enter();
    let spawned = command.spawn();
    // From here only the init holds the write end.
    drop(status_write);
    match spawned {
        Ok(mut child) => {
            let stdout = child.stdout.take();
            let stderr = child.stderr.take();
            let status = pipe::Receiver::from_owned_fd(status_read);
            match (stdout, stderr, status) {
                (Some(stdout), Some(stderr), Ok(status)) => Ok(Spawned {
                    child,
                    stdout,
                    stderr,
                    status,
                }),
                (_, _, status) => Err(format!(
                    "cannot read the job's output: {}",
                    status
                        .err()
                        .map_or("pipes missing".to_owned(), |e| e.to_string())
                )),
            }
        }
        Err(error) => Err(spawn_error(job, &error, status_read)),
    }
}

/// Why the spawn failed: the setup step init or the benchmark process reported, or
/// else the exec itself.
fn spawn_error(job: &HostJob, error: &io::Error, status_read: OwnedFd) -> String {
    // Every writer is gone: std waited for the init, which waited for the benchmark
    // process, so this read ends.
    let mut bytes = Vec::new();
    let _ = File::from(status_read).read_to_end(&mut bytes);
    let setup_failure = bytes.chunks_exact(REPORT_LEN).find_map(|chunk| {
        let mut message = [0u8; REPORT_LEN];
        message.copy_from_slice(chunk);
        match Report::decode(message) {
            Some(Report::SetupFailed { step, errno }) => Some((step, errno)),
            _ => None,
        }
    });
    if let Some((step, errno)) = setup_failure {
        return format!(
            "cannot start the job: {} failed: {}",
            step.describe(),
            io::Error::from_raw_os_error(errno)
        );
    }
    let program = &job.argv[0];
    if error.kind() == io::ErrorKind::NotFound {
        if program.contains('/') {
            format!("cannot execute `{program}`: it does not exist in the image")
        } else {
            let path = job
                .env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map_or("", |(_, v)| v.as_str());
            format!("cannot execute `{program}`: not found in the image's PATH ({path})")
        }
    } else {
        format!("cannot execute `{program}`: {error}")
    }
}

/// Answers the executor's requests until it drops the sender.
fn serve(job: &HostJob, root: &Root, requests: &mpsc::Receiver<Request>) {
    for request in requests {
        match request {
            Request::Collect {
                paths,
                max_bytes,
                skip_missing,
                reply,
            } => {
                let _ = reply.send(collect(job, root, &paths, max_bytes, skip_missing));
            }
            Request::Sizes { paths, reply } => {
                let _ = reply.send(root.file_sizes(&job.working_dir, &paths));
            }
        }
    }
}

fn collect(
    job: &HostJob,
    root: &Root,
    paths: &[String],
    max_bytes: u64,
    skip_missing: bool,
) -> Result<BTreeMap<String, String>, String> {
    let mut files = BTreeMap::new();
    for path in paths {
        let in_root = if path.starts_with('/') {
            path.clone()
        } else {
            format!("{}/{path}", job.working_dir.trim_end_matches('/'))
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

/// Whether this host can create the namespaces and the overlay a job needs: the same
/// calls on a throwaway overlay, on a thread of their own.
pub(super) fn probe() -> Result<(), String> {
    let scratch =
        Scratch::create().map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let paths = scratch.paths();
    let lower = scratch.dir.path().join("lower");
    fs::create_dir(&lower).map_err(|e| format!("cannot create {}: {e}", lower.display()))?;
    let thread = std::thread::Builder::new()
        .name("bencher-probe".to_owned())
        .spawn(move || -> Result<(), String> {
            enter_namespaces()?;
            mount_overlay(&lower, &paths)?;
            let _ = unmount(&paths.root, UnmountFlags::DETACH);
            Ok(())
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let result = thread
        .join()
        .unwrap_or_else(|_| Err("the probe thread panicked".to_owned()));
    end(None, Some(scratch));
    result
}
