//! `bencher-oci-init`: the init (PID 1) of a job's container in sandboxes `container`
//! (runc) and `gvisor` (runsc). Built by `build.rs` as a static executable, embedded in
//! the runner, and bind-mounted read-only into every container, so it runs in any
//! image. IO: spawns and reaps the job's processes, writes two report files.
//!
//! It gives a container job what sandbox `none`'s init gives a host job:
//! - the benchmark is not PID 1, so it dies by the signals it sends itself (PID 1
//!   ignores signals it has no handler for), and exit by signal N is 128 + N;
//! - the benchmark runs as the image's user while init stays root, so the job cannot
//!   signal or inspect its init;
//! - after the benchmark exits, what it left running gets the grace period, then init
//!   exits, and the kernel kills whatever is left in the PID namespace.
//!
//! Usage: `bencher-oci-init --version`, or `bencher-oci-init GRACE_MS UID GID GROUPS REPORT_DIR -- PROGRAM ARGS...`,
//! GROUPS comma-separated or `-`. Reports, each written whole (temp file, rename):
//! `REPORT_DIR/started` once the command was executed, `REPORT_DIR/elapsed_ns` with the
//! benchmark's wall time in nanoseconds and then `REPORT_DIR/exit` with its exit code
//! once it ended, `REPORT_DIR/error` if it could not start.
//!
//! The wall time is measured here, inside the container, from just before the spawn
//! (fork and exec) to the benchmark's reaping, on the container's monotonic clock
//! (gVisor's own under runsc): creating and starting the container, and the grace
//! period after the exit, are not the benchmark's time, and the runtime's start-up
//! (hundreds of milliseconds for runsc) would drown a short command's.
//!
//! Plain std with a few libc declarations: built with `rustc` alone, no crates.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

unsafe extern "C" {
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn setgroups(size: usize, list: *const u32) -> i32;
    fn setgid(gid: u32) -> i32;
    fn setuid(uid: u32) -> i32;
}

const WNOHANG: i32 = 1;
const EINTR: i32 = 4;
/// Exit code when init itself cannot do its job.
const INIT_FAILED: i32 = 127;

struct Args {
    grace: Duration,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    report_dir: String,
    command: Vec<String>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Option<Args> {
    let _program = argv.next()?;
    let grace = Duration::from_millis(argv.next()?.parse().ok()?);
    let uid = argv.next()?.parse().ok()?;
    let gid = argv.next()?.parse().ok()?;
    let groups = match argv.next()? {
        dash if dash == "-" => Vec::new(),
        list => list
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?,
    };
    let report_dir = argv.next()?;
    if argv.next()? != "--" {
        return None;
    }
    let command: Vec<String> = argv.collect();
    if command.is_empty() {
        return None;
    }
    Some(Args {
        grace,
        uid,
        gid,
        groups,
        report_dir,
        command,
    })
}

/// Writes `REPORT_DIR/name` whole: readers see all of it or nothing.
fn report(dir: &str, name: &str, text: &str) {
    let temp = format!("{dir}/.{name}.tmp");
    if std::fs::write(&temp, text).is_ok() {
        let _ = std::fs::rename(&temp, format!("{dir}/{name}"));
    }
}

/// The shell's convention: the exit status, or 128 + the signal that killed it.
fn exit_code(status: i32) -> i32 {
    let signal = status & 0x7f;
    if signal == 0 {
        (status >> 8) & 0xff
    } else {
        128 + signal
    }
}

fn main() {
    // The runner's probe: init runs itself this way to show it can run at all.
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("bencher-oci-init");
        return;
    }
    let Some(args) = parse(std::env::args()) else {
        eprintln!(
            "usage: bencher-oci-init GRACE_MS UID GID GROUPS REPORT_DIR -- PROGRAM ARGS..."
        );
        std::process::exit(INIT_FAILED);
    };
    let (uid, gid, groups) = (args.uid, args.gid, args.groups.clone());
    let mut command = Command::new(&args.command[0]);
    command.args(&args.command[1..]);
    // SAFETY: between fork and exec, only three async-signal-safe syscalls on values
    // prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            // Groups first, then the gid, then the uid: setuid from root drops the
            // rights the other two need, and every capability.
            if setgroups(groups.len(), groups.as_ptr()) != 0
                || setgid(gid) != 0
                || setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = Instant::now();
    let benchmark = match command.spawn() {
        Ok(child) => child.id() as i32,
        Err(error) => {
            let message = format!("cannot execute `{}`: {error}", args.command[0]);
            eprintln!("bencher: {message}");
            report(&args.report_dir, "error", &message);
            std::process::exit(INIT_FAILED);
        }
    };
    report(&args.report_dir, "started", "");

    // Reap everything; the benchmark's status is the job's.
    let mut code = INIT_FAILED;
    loop {
        let mut status = 0;
        // SAFETY: a plain syscall writing one int we own.
        let pid = unsafe { waitpid(-1, &mut status, 0) };
        if pid == benchmark {
            code = exit_code(status);
            break;
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() != Some(EINTR) {
            break;
        }
    }
    // Written before `exit`, so a reader that sees `exit` finds it.
    report(
        &args.report_dir,
        "elapsed_ns",
        &spawned.elapsed().as_nanos().to_string(),
    );
    report(&args.report_dir, "exit", &code.to_string());

    // The grace period for what the benchmark left running; over early once only init
    // is left.
    let deadline = Instant::now() + args.grace;
    loop {
        let mut status = 0;
        // SAFETY: as above.
        let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
        if pid > 0 {
            continue;
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(EINTR) {
            continue;
        }
        if pid < 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::process::exit(code);
}
