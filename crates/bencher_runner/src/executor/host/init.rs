//! The code that runs between `fork` and `exec` to start a job inside its namespaces:
//! the job's init (PID 1 of its PID namespace) and, forked from it, the benchmark
//! process that `exec`s the job's command. IO: syscalls only (chroot, mounts in the
//! job's private mount namespace, device nodes on its `/dev` tmpfs, credentials,
//! `wait`), plus 8-byte reports on the status pipe.
//!
//! # Why a hand-written init
//!
//! The first process of a PID namespace is its init: killing it kills every other
//! process in the namespace, and the kernel only lets its exit complete once they are
//! all gone. So SIGKILL to this one process, which the runner spawned, takes down the
//! whole job tree, including daemons and double forks, with nothing left to hunt. But
//! init ignores signals it has no handler for and inherits orphans, which a benchmark
//! should not have to do; so init only sets up the root, forks the benchmark, reaps,
//! reports the benchmark's status, gives stragglers the grace period, and exits.
//!
//! # Why no allocation
//!
//! This runs in a child of a multithreaded process, where only async-signal-safe calls
//! are allowed: no allocation, no locks. Everything it needs (paths, ids, argv, env)
//! is prepared before the fork; the syscalls go through rustix with `&CStr` paths
//! (which rustix passes to the kernel as they are), and the few calls rustix lacks
//! (`fork`, `_exit`, `close_range`, `signal`) through libc. Errors are raw errno values, reported
//! with the step that failed on the status pipe.
//!
//! # Status pipe
//!
//! Messages are 16 bytes: a kind, a step, two zero bytes, an `i32` and a `u64` (little
//! endian). Kind 1: a setup step failed with that errno (the `u64` is 0). Kind 2: the
//! benchmark ended with that exit code (128 + N for signal N), after that many
//! nanoseconds: the init times the benchmark from just before its fork to its reaping,
//! inside the job's namespaces, so the runner's scheduling and the pipe are not in it. The write end is `O_CLOEXEC`, so the benchmark
//! never holds it: only init (which never execs) and the runner do.

use std::ffi::CStr;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use rustix::fs::{CWD, FileType, Mode, makedev, mkdirat, mknodat, symlinkat};
use rustix::io::Errno;
use rustix::mount::{MountFlags, mount, mount_bind, mount_remount};
use rustix::process::{Gid, Signal, Uid, WaitOptions, WaitStatus};
use rustix::time::{ClockId, Timespec, clock_gettime};

/// Everything the forked code needs, prepared before the fork.
#[derive(Debug)]
pub(super) struct InitConfig {
    /// `O_PATH` directory fd of the job's root (the overlay), open across the fork.
    pub root: RawFd,
    /// Write end of the status pipe.
    pub status: RawFd,
    pub grace: Duration,
    pub working_dir: std::ffi::CString,
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
}

/// A setup step, named in the error the runner reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Step {
    NewSession = 1,
    ParentDeathSignal,
    Chroot,
    MountProc,
    ProcSysReadOnly,
    MountSys,
    MountDev,
    DeviceNodes,
    MountShm,
    MountTmp,
    Fork,
    WorkingDir,
    Groups,
    Gid,
    Uid,
}

impl Step {
    const ALL: [Step; 15] = [
        Step::NewSession,
        Step::ParentDeathSignal,
        Step::Chroot,
        Step::MountProc,
        Step::ProcSysReadOnly,
        Step::MountSys,
        Step::MountDev,
        Step::DeviceNodes,
        Step::MountShm,
        Step::MountTmp,
        Step::Fork,
        Step::WorkingDir,
        Step::Groups,
        Step::Gid,
        Step::Uid,
    ];

    pub(super) fn describe(self) -> &'static str {
        match self {
            Step::NewSession => "starting a new session",
            Step::ParentDeathSignal => "arming the parent-death signal",
            Step::Chroot => "changing root into the image's root filesystem",
            Step::MountProc => "mounting /proc",
            Step::ProcSysReadOnly => "making /proc/sys read-only",
            Step::MountSys => "mounting /sys read-only",
            Step::MountDev => "mounting the /dev tmpfs",
            Step::DeviceNodes => "creating /dev nodes and links",
            Step::MountShm => "mounting /dev/shm",
            Step::MountTmp => "mounting /tmp",
            Step::Fork => "forking the benchmark process",
            Step::WorkingDir => "changing to the working directory",
            Step::Groups => "setting the supplementary groups",
            Step::Gid => "setting the group id",
            Step::Uid => "setting the user id",
        }
    }
}

/// A status pipe message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Report {
    SetupFailed { step: Step, errno: i32 },
    Exited { code: i32, elapsed_ns: u64 },
}

const REPORT_SETUP_FAILED: u8 = 1;
const REPORT_EXITED: u8 = 2;
pub(super) const REPORT_LEN: usize = 16;

impl Report {
    fn encode(self) -> [u8; REPORT_LEN] {
        let (kind, step, value, nanos) = match self {
            Report::SetupFailed { step, errno } => (REPORT_SETUP_FAILED, step as u8, errno, 0),
            Report::Exited { code, elapsed_ns } => (REPORT_EXITED, 0, code, elapsed_ns),
        };
        let mut bytes = [0; REPORT_LEN];
        bytes[0] = kind;
        bytes[1] = step;
        bytes[4..8].copy_from_slice(&value.to_le_bytes());
        bytes[8..].copy_from_slice(&nanos.to_le_bytes());
        bytes
    }

    pub(super) fn decode(bytes: [u8; REPORT_LEN]) -> Option<Report> {
        let value = i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let mut nanos = [0; 8];
        nanos.copy_from_slice(&bytes[8..]);
        let nanos = u64::from_le_bytes(nanos);
        match bytes[0] {
            REPORT_SETUP_FAILED => Step::ALL
                .into_iter()
                .find(|s| *s as u8 == bytes[1])
                .map(|step| Report::SetupFailed { step, errno: value }),
            REPORT_EXITED => Some(Report::Exited {
                code: value,
                elapsed_ns: nanos,
            }),
            _ => None,
        }
    }
}

/// Installs the init as the command's `pre_exec` hook. The spawn must happen on a
/// thread that has unshared its PID namespace (so the child is PID 1 of a new one) and
/// whose mount namespace holds the job's root; see `namespace`.
pub(super) fn install(command: &mut tokio::process::Command, config: InitConfig) {
    // SAFETY: the hook runs in the child between fork and exec. `start` calls only
    // async-signal-safe functions: raw syscalls through rustix with `&CStr` paths and
    // fixed-size stack buffers, and libc's `fork`, `_exit` and the `close_range`
    // syscall. It reads `config` (allocated before the fork, never freed in the child)
    // and allocates nothing; errors are built with `io::Error::from_raw_os_error`,
    // which does not allocate.
    unsafe {
        command.pre_exec(move || start(&config));
    }
}

/// Writes a report; a failure is ignored because there is no one else to tell.
fn report(config: &InitConfig, report: Report) {
    // SAFETY: `status` is open in this process until it exits: the runner keeps its
    // copy open until the spawn returns, and init closes every fd but this one.
    let fd = unsafe { BorrowedFd::borrow_raw(config.status) };
    let _ = rustix::io::write(fd, &report.encode());
}

/// The result of a setup step; a failure is reported and becomes the error that aborts
/// the spawn.
fn attempt<T>(config: &InitConfig, step: Step, result: rustix::io::Result<T>) -> io::Result<T> {
    result.map_err(|errno| {
        report(
            config,
            Report::SetupFailed {
                step,
                errno: errno.raw_os_error(),
            },
        );
        io::Error::from_raw_os_error(errno.raw_os_error())
    })
}

/// The init: the process the runner spawned, PID 1 of the job's PID namespace.
/// Returns only with an error (setup failed) or in the forked benchmark process.
fn start(config: &InitConfig) -> io::Result<()> {
    reset_signal_handlers();
    // Its own session: a terminal's Ctrl-C reaches the runner, which stops the job
    // cleanly, not the job directly.
    attempt(config, Step::NewSession, rustix::process::setsid())?;
    // Dies with the runner thread that spawned it (see `namespace`), so a crashed
    // runner leaves no job behind.
    attempt(
        config,
        Step::ParentDeathSignal,
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL)),
    )?;
    // Device nodes and mount points get exactly the modes given below.
    rustix::process::umask(Mode::empty());
    enter_root(config)?;
    mount_filesystems(config)?;

    // The benchmark's time starts before its fork: the fork and its few setup syscalls
    // are microseconds against a build.
    let started = now();
    // SAFETY: this process is single-threaded (a fresh fork), so glibc's fork has no
    // other thread's locks to inherit; both sides continue with async-signal-safe code.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => attempt(config, Step::Fork, Err(last_errno())),
        0 => benchmark(config),
        benchmark => supervise(config, benchmark, started),
    }
}

/// The runner's signal handlers (tokio's, for SIGCHLD, SIGINT, SIGTERM) were copied
/// by the fork; in the init they would run on behalf of a process that never execs.
/// With default dispositions, the init (as PID 1) ignores what the job sends it.
fn reset_signal_handlers() {
    for signal in 1..=64 {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            // SAFETY: `signal` (a `sigaction`) is async-signal-safe; numbers the
            // kernel or libc reserve fail with EINVAL, which changes nothing.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
}

fn last_errno() -> Errno {
    Errno::from_raw_os_error(
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

fn enter_root(config: &InitConfig) -> io::Result<()> {
    // SAFETY: `root` is an fd the runner keeps open until the spawn returns.
    let root = unsafe { BorrowedFd::borrow_raw(config.root) };
    attempt(config, Step::Chroot, rustix::process::fchdir(root))?;
    attempt(config, Step::Chroot, rustix::process::chroot(c"."))?;
    attempt(config, Step::Chroot, rustix::process::chdir(c"/"))?;
    Ok(())
}

/// The job's `/proc`, `/sys`, `/dev` and `/tmp`, mounted after the chroot so that every
/// path resolves inside the root whatever links the image has. The mount points exist:
/// the runner created them (confined) before the spawn.
fn mount_filesystems(config: &InitConfig) -> io::Result<()> {
    let hardened = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    // procfs of the new PID namespace: the job sees only its own processes.
    attempt(
        config,
        Step::MountProc,
        mount(c"proc", c"/proc", c"proc", hardened, None),
    )?;
    // /proc/sys is global kernel state (and the runner's host tuning); a job must not
    // change it by accident.
    attempt(
        config,
        Step::ProcSysReadOnly,
        mount_bind(c"/proc/sys", c"/proc/sys"),
    )?;
    attempt(
        config,
        Step::ProcSysReadOnly,
        mount_remount(
            c"/proc/sys",
            MountFlags::BIND | MountFlags::RDONLY | hardened,
            c"",
        ),
    )?;
    // Read-only: benchmarks read CPU topology and frequencies from it.
    attempt(
        config,
        Step::MountSys,
        mount(
            c"sysfs",
            c"/sys",
            c"sysfs",
            MountFlags::RDONLY | hardened,
            None,
        ),
    )?;
    // A minimal /dev of our own rather than the host's.
    attempt(
        config,
        Step::MountDev,
        mount(
            c"tmpfs",
            c"/dev",
            c"tmpfs",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            Some(c"mode=755,size=64k"),
        ),
    )?;
    const NODES: [(&CStr, u32, u32); 6] = [
        (c"/dev/null", 1, 3),
        (c"/dev/zero", 1, 5),
        (c"/dev/full", 1, 7),
        (c"/dev/random", 1, 8),
        (c"/dev/urandom", 1, 9),
        (c"/dev/tty", 5, 0),
    ];
    for (path, major, minor) in NODES {
        attempt(
            config,
            Step::DeviceNodes,
            mknodat(
                CWD,
                path,
                FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                makedev(major, minor),
            ),
        )?;
    }
    const LINKS: [(&CStr, &CStr); 4] = [
        (c"/proc/self/fd", c"/dev/fd"),
        (c"/proc/self/fd/0", c"/dev/stdin"),
        (c"/proc/self/fd/1", c"/dev/stdout"),
        (c"/proc/self/fd/2", c"/dev/stderr"),
    ];
    for (target, link) in LINKS {
        attempt(config, Step::DeviceNodes, symlinkat(target, CWD, link))?;
    }
    attempt(
        config,
        Step::MountShm,
        mkdirat(CWD, c"/dev/shm", Mode::from_raw_mode(0o1777)),
    )?;
    attempt(
        config,
        Step::MountShm,
        mount(
            c"shm",
            c"/dev/shm",
            c"tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some(c"mode=1777"),
        ),
    )?;
    attempt(
        config,
        Step::MountTmp,
        mount(
            c"tmpfs",
            c"/tmp",
            c"tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some(c"mode=1777"),
        ),
    )?;
    Ok(())
}

/// The benchmark process: takes the job's identity and returns to std, which `exec`s
/// the command (resolving it with the job's `PATH`, inside the root).
fn benchmark(config: &InitConfig) -> io::Result<()> {
    // Docker's umask for the job.
    rustix::process::umask(Mode::from_raw_mode(0o022));
    // Any fd the runner leaked without `O_CLOEXEC` would be a way out of the root;
    // none reaches the job. Best effort: kernels before 5.11 lack the flag, and every
    // fd the runner opens is `O_CLOEXEC` anyway.
    close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
    // As root, before dropping privileges: the directory may not be searchable by the
    // job's user, which Docker allows too.
    attempt(
        config,
        Step::WorkingDir,
        rustix::process::chdir(config.working_dir.as_c_str()),
    )?;
    attempt(
        config,
        Step::Groups,
        rustix::thread::set_thread_groups(&config.groups),
    )?;
    // This process is single-threaded, so the per-thread syscalls set the process's
    // ids; from root, setuid also sets the saved id and drops every capability.
    attempt(
        config,
        Step::Gid,
        rustix::thread::set_thread_gid(config.gid),
    )?;
    attempt(
        config,
        Step::Uid,
        rustix::thread::set_thread_uid(config.uid),
    )?;
    Ok(())
}

/// The init's life after the fork: reap everything, report the benchmark's status
/// when it ends, give what it left running the grace period, exit. Init's exit kills
/// whatever is still in the namespace.
fn supervise(config: &InitConfig, benchmark: libc::pid_t, started: Timespec) -> ! {
    // Init holds nothing: not the job's stdout and stderr (so the runner sees their end
    // when the job's processes close them), not std's exec-error pipe (so the runner's
    // spawn returns once the benchmark has exec'd), not any runner fd.
    let status = config.status.max(0) as u32;
    if status > 0 {
        close_range(0, status - 1, 0);
    }
    close_range(status + 1, u32::MAX, 0);

    let mut code = 255;
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, wait_status))) if pid.as_raw_nonzero().get() == benchmark => {
                code = exit_code(wait_status);
                break;
            }
            Ok(_) | Err(Errno::INTR) => {}
            // ECHILD cannot happen while the benchmark lives; give up rather than spin.
            Err(_) => break,
        }
    }
    // Before the grace period: what the benchmark left running is not its time.
    let elapsed_ns = nanos_between(started, now());
    report(config, Report::Exited { code, elapsed_ns });

    let deadline = add(now(), config.grace);
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some(_)) | Err(Errno::INTR) => {}
            Ok(None) if before(now(), deadline) => {
                let _ = rustix::thread::nanosleep(&Timespec {
                    tv_sec: 0,
                    tv_nsec: 5_000_000,
                });
            }
            // Deadline passed, or ECHILD: the namespace is empty but for init.
            Ok(None) | Err(_) => break,
        }
    }
    // SAFETY: `_exit` ends the process without running any user-space cleanup, the
    // only way out of a forked child.
    unsafe { libc::_exit(code & 0xff) }
}

/// The shell's convention: the exit status, or 128 + the signal that killed it.
fn exit_code(status: WaitStatus) -> i32 {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 255,
    }
}

fn close_range(first: u32, last: u32, flags: libc::c_uint) {
    // SAFETY: closing fds in a forked child that will exec or `_exit`; no Rust object
    // in this process uses them afterwards. `close_range` is a plain syscall.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            flags,
        )
    };
}

fn now() -> Timespec {
    clock_gettime(ClockId::Monotonic)
}

fn add(t: Timespec, d: Duration) -> Timespec {
    let nanos = t.tv_nsec + i64::from(d.subsec_nanos());
    Timespec {
        tv_sec: t
            .tv_sec
            .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .saturating_add(nanos / 1_000_000_000),
        tv_nsec: nanos % 1_000_000_000,
    }
}

fn before(a: Timespec, b: Timespec) -> bool {
    (a.tv_sec, a.tv_nsec) < (b.tv_sec, b.tv_nsec)
}

/// Nanoseconds from `a` to a later `b` on the monotonic clock; 0 if `b` is not later.
fn nanos_between(a: Timespec, b: Timespec) -> u64 {
    let total = |t: Timespec| i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec);
    u64::try_from((total(b) - total(a)).max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for step in Step::ALL {
            let r = Report::SetupFailed { step, errno: 13 };
            assert_eq!(Report::decode(r.encode()), Some(r));
            assert!(!step.describe().is_empty());
        }
        for (code, elapsed_ns) in [(0, 0), (1, 200_000_000), (137, 1 << 40), (255, u64::MAX)] {
            let r = Report::Exited { code, elapsed_ns };
            assert_eq!(Report::decode(r.encode()), Some(r));
        }
        let mut unknown = [0; REPORT_LEN];
        unknown[0] = 9;
        assert_eq!(Report::decode(unknown), None);
        unknown[0] = 1;
        unknown[1] = 99;
        assert_eq!(Report::decode(unknown), None);
    }

    #[test]
    fn time_arithmetic() {
        let t = Timespec {
            tv_sec: 5,
            tv_nsec: 900_000_000,
        };
        let later = add(t, Duration::from_millis(250));
        assert_eq!((later.tv_sec, later.tv_nsec), (6, 150_000_000));
        assert!(before(t, later));
        assert!(!before(later, t));
        assert!(!before(t, t));
        assert_eq!(nanos_between(t, later), 250_000_000);
        assert_eq!(nanos_between(later, t), 0);
    }
}
