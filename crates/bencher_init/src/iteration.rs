//! The job's iterations, all in this one boot. Each runs on a fresh overlay (the image
//! disk read-only below, a new directory of the scratch disk above), chrooted, as the
//! image's user, with stdout and stderr streamed to the host under the per-iteration
//! budget; then what it left running gets the grace period and is killed, the output
//! files are read (or, for a job measuring file sizes, measured) inside the root, and
//! the layer is unmounted and deleted, so nothing one iteration writes reaches the next.
//! The command's wall time is measured here, on the guest's clock, so the boot and the
//! host's view of the channel are not in it. IO: mounts, the job's processes and pipes,
//! the scratch disk.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bencher_types::guest::{GuestConfig, GuestNetwork, IterationEnd, OUTPUT_CHUNK, Record};

use crate::channel;
use crate::rootfs::Root;
use crate::setup::{self, Disks};

/// Where each iteration's root is mounted.
const JOB_ROOT: &str = "/mnt/job";

/// The job's identity and directories as the forked child needs them: built before
/// the fork, so the child only makes syscalls.
struct Prepared {
    job_root: CString,
    working_dir: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

pub fn run_all(config: &GuestConfig, disks: &Disks) -> Result<(), String> {
    let prepared = Arc::new(Prepared {
        job_root: CString::new(JOB_ROOT).map_err(|e| e.to_string())?,
        working_dir: CString::new(config.working_dir.as_str())
            .map_err(|_| "the working directory contains a NUL byte".to_owned())?,
        uid: config.uid,
        gid: config.gid,
        groups: config.groups.clone(),
    });
    if config.argv.is_empty() {
        return Err("the job config has an empty command".to_owned());
    }
    for index in 1..=config.iterations {
        let end = run_one(config, &prepared, disks, index)?;
        let stop = end.files_error.is_some() || (end.exit_code != 0 && !config.allow_failure);
        channel::send(&Record::IterationEnd(end))?;
        if stop {
            break;
        }
    }
    Ok(())
}

fn run_one(
    config: &GuestConfig,
    prepared: &Arc<Prepared>,
    disks: &Disks,
    index: u32,
) -> Result<IterationEnd, String> {
    let layer = disks.scratch.join(format!("iteration-{index}"));
    let (upper, work) = (layer.join("upper"), layer.join("work"));
    for dir in [&upper, &work, Path::new(JOB_ROOT)] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        disks.lower.display(),
        upper.display(),
        work.display()
    );
    let options = CString::new(options).map_err(|e| e.to_string())?;
    setup::mount("overlay", JOB_ROOT, "overlay", 0, Some(&options))
        .map_err(|e| format!("cannot mount the job's overlay: {e}"))?;
    let result = in_root(config, prepared);
    // Lazily, with everything below it; every job process is gone by now.
    let target = CString::new(JOB_ROOT).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    let _ = fs::remove_dir_all(&layer);
    result
}

/// The network's DNS forwarder as the job's `/etc/resolv.conf`, replacing the image's
/// (a file or a link) in this iteration's layer, as container engines do.
fn resolver(network: &GuestNetwork) -> Result<(), String> {
    // Paths are the guest's own here: what a link in the image points to is inside
    // the guest, the sandbox.
    let etc = Path::new(JOB_ROOT).join("etc");
    fs::create_dir_all(&etc).map_err(|e| format!("cannot create the job's /etc: {e}"))?;
    let path = etc.join("resolv.conf");
    let _ = fs::remove_file(&path);
    fs::write(&path, format!("nameserver {}\n", network.nameserver))
        .map_err(|e| format!("cannot write the job's /etc/resolv.conf: {e}"))
}

fn in_root(config: &GuestConfig, prepared: &Arc<Prepared>) -> Result<IterationEnd, String> {
    let root = Root::open(Path::new(JOB_ROOT), config.max_symlinks)
        .map_err(|e| format!("cannot open the job's root: {e}"))?;
    for dir in ["/proc", "/sys", "/dev", "/tmp", config.working_dir.as_str()] {
        root.ensure_dir(dir)
            .map_err(|e| format!("cannot create {dir} in the image: {e}"))?;
    }
    if let Some(network) = &config.network {
        resolver(network)?;
    }

    let mut command = Command::new(&config.argv[0]);
    command
        .args(&config.argv[1..])
        .env_clear()
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child_config = prepared.clone();
    // SAFETY: `enter` makes only syscalls on data prepared before the fork; this
    // process has no other threads while it spawns (the output threads of earlier
    // iterations were joined).
    unsafe { command.pre_exec(move || enter(&child_config)) };
    // From just before the fork: `spawn` returns only once the exec happened (or
    // failed), so the clock starts before the command and includes only the fork and
    // the few syscalls of `enter`, microseconds against a build.
    let spawned = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the command `{}`: {e}", config.argv[0]))?;

    let budget = Arc::new(AtomicU64::new(config.max_output_size));
    let pumps = [
        child
            .stdout
            .take()
            .map(|out| pump(out, &budget, Record::Stdout)),
        child
            .stderr
            .take()
            .map(|err| pump(err, &budget, Record::Stderr)),
    ];
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for the command: {e}"))?;
    // Before the grace period: what the command left running is not its time.
    let elapsed_ns = u64::try_from(spawned.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let exit_code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    end_leftovers(Duration::from_millis(config.grace_period_ms));
    let [stdout_dropped, stderr_dropped] =
        pumps.map(|pump| pump.map_or(0, |p| p.join().unwrap_or(0)));

    let files_error = if config.file_size {
        measure_files(config, &root)
    } else {
        collect_files(config, &root, exit_code != 0)
    }
    .err();
    Ok(IterationEnd {
        exit_code,
        stdout_dropped,
        stderr_dropped,
        elapsed_ns,
        files_error,
    })
}

/// In the forked child: into the root, the pseudo filesystems, the working directory,
/// the image's user.
fn enter(prepared: &Prepared) -> io::Result<()> {
    let check = |result: libc::c_int| {
        if result == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: syscalls on NUL-terminated strings and a slice prepared before the fork.
    unsafe {
        libc::umask(0o022);
        check(libc::chroot(prepared.job_root.as_ptr()))?;
        check(libc::chdir(c"/".as_ptr()))?;
        for (source, target, fstype, flags, data) in [
            (c"proc", c"/proc", c"proc", 0, None),
            (c"sysfs", c"/sys", c"sysfs", libc::MS_RDONLY, None),
            (c"devtmpfs", c"/dev", c"devtmpfs", 0, None),
            (c"tmpfs", c"/tmp", c"tmpfs", 0, Some(c"mode=1777")),
        ] {
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags,
                data.map_or(std::ptr::null(), |d: &std::ffi::CStr| d.as_ptr().cast()),
            ))?;
        }
        check(libc::chdir(prepared.working_dir.as_ptr()))?;
        check(libc::setgroups(
            prepared.groups.len(),
            prepared.groups.as_ptr(),
        ))?;
        check(libc::setgid(prepared.gid))?;
        check(libc::setuid(prepared.uid))?;
    }
    Ok(())
}

/// Reads a stream to its end on a thread, sending what the shared budget allows and
/// counting the rest; returns the bytes dropped.
fn pump(
    mut reader: impl Read + Send + 'static,
    budget: &Arc<AtomicU64>,
    record: fn(Vec<u8>) -> Record,
) -> std::thread::JoinHandle<u64> {
    let budget = budget.clone();
    std::thread::spawn(move || {
        let mut buffer = vec![0; OUTPUT_CHUNK];
        let mut dropped = 0u64;
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let mut granted = 0;
            let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                granted = left.min(n as u64);
                Some(left - granted)
            });
            if granted > 0 {
                // If the host is gone the job goes on; its output has nowhere to go.
                let _ = channel::send(&record(buffer[..granted as usize].to_vec()));
            }
            dropped += n as u64 - granted;
        }
        dropped
    })
}

/// Gives processes the command left behind `grace` to end, then kills every process
/// but this one and reaps them all. PID 1 inherits every orphan, so `waitpid(-1)` sees
/// the whole job.
fn end_leftovers(grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        // SAFETY: waitpid without a status pointer.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid > 0 {
            continue;
        }
        if pid < 0 || Instant::now() >= deadline {
            break; // ECHILD: nothing left; or the grace period is over
        }
        // Only after the benchmark ended, while leftovers finish.
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(-1) spares the caller (PID 1); waitpid without a status pointer.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
        while libc::waitpid(-1, std::ptr::null_mut(), 0) > 0 {}
    }
}

/// Sends the sizes of the output files that exist; the same rules and messages as the
/// runner's sandbox `none`.
fn measure_files(config: &GuestConfig, root: &Root) -> Result<(), String> {
    for path in &config.file_paths {
        match root.file_size(&path_in_root(config, path)) {
            Ok(Some(size)) => channel::send(&Record::FileSize {
                path: path.clone(),
                size,
            })?,
            Ok(None) => {}
            Err(e) => return Err(format!("output file {e}")),
        }
    }
    Ok(())
}

/// A job's output file path inside the root: relative ones from the working directory.
fn path_in_root(config: &GuestConfig, path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{path}", config.working_dir.trim_end_matches('/'))
    }
}

/// Sends the output files; the same rules and messages as the runner's sandbox `none`.
fn collect_files(config: &GuestConfig, root: &Root, skip_missing: bool) -> Result<(), String> {
    for path in &config.file_paths {
        match root.read_text(&path_in_root(config, path), config.max_output_size) {
            Ok(Some(text)) => channel::send(&Record::File {
                path: path.clone(),
                contents: text.into_bytes(),
            })?,
            Ok(None) if skip_missing => {}
            Ok(None) => return Err(format!("output file `{path}` does not exist")),
            Err(e) => return Err(format!("output file {e}")),
        }
    }
    Ok(())
}
