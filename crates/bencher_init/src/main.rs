//! `bencher-init`: PID 1 in a VM sandbox's guest. It brings the guest up (mounts,
//! kernel modules, the channel to the host, the disks), runs the job's iterations
//! (`iteration`), streams everything back as framed records (`bencher_types::guest`),
//! and powers the guest off. IO: all of it is the guest's, through `setup`, `channel`
//! and `iteration`.
//!
//! Every path ends in a power-off: a failure becomes an `Error` record (or, before the
//! channel exists, a line on the console), and a panic hook does the same, so the host
//! never waits on a guest that silently died.
//!
//! Run as anything but PID 1 it only answers `--version`, so a host can check the
//! binary it is about to put into an initramfs.

mod channel;
mod iteration;
// One confined path walk for the runner and the guest: output files are resolved the
// same way (inside the root, `--max-symlinks` bounded) on both sides.
#[path = "../../bencher_runner/src/executor/rootfs.rs"]
#[allow(dead_code)]
mod rootfs;
mod setup;

use std::io::Write;

use bencher_types::guest::{
    GUEST_CONFIG_PATH, GUEST_PROTOCOL_VERSION, GuestConfig, REBOOT_TO_EXIT, Record,
};

fn main() {
    if std::process::id() != 1 {
        return not_pid_one();
    }
    std::panic::set_hook(Box::new(|info| {
        report_failure(&format!("bencher-init panicked: {info}"));
        power_off();
    }));
    if let Err(error) = run() {
        report_failure(&error);
    }
    power_off();
}

fn not_pid_one() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!(
            "bencher-init {} (guest protocol {GUEST_PROTOCOL_VERSION})",
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    eprintln!("bencher-init is the init of a bencher VM guest and runs only as PID 1");
    std::process::exit(2);
}

/// Brings the guest up and runs the job; every `Err` is reported by the caller.
fn run() -> Result<(), String> {
    setup::mount_basics()?;
    let config = std::fs::read(GUEST_CONFIG_PATH)
        .map_err(|e| format!("cannot read the job config {GUEST_CONFIG_PATH}: {e}"))?;
    let config: GuestConfig = serde_json::from_slice(&config)
        .map_err(|e| format!("the job config {GUEST_CONFIG_PATH} is invalid: {e}"))?;
    setup::load_modules()?;
    channel::open(&config.channel)?;
    channel::send(&Record::Ready {
        version: GUEST_PROTOCOL_VERSION,
    })?;
    let disks = setup::mount_disks(&config.disks)?;
    setup::loopback_up()?;
    if let Some(network) = &config.network {
        setup::network_up(network)?;
    }
    iteration::run_all(&config, &disks)?;
    channel::send(&Record::Done)
}

/// Reports on the channel if it is open, and always on the console.
fn report_failure(message: &str) {
    let _ = channel::try_send(&Record::Error(message.to_owned()));
    let _ = writeln!(std::io::stderr(), "bencher-init: {message}");
}

/// Flushes the disks and ends the guest, which makes the VMM exit: a power-off for
/// QEMU, a reboot where the command line asks for one (Firecracker, which has no
/// power-off device: a powered-off guest would only halt). Never returns.
fn power_off() -> ! {
    channel::flush();
    let reboot = std::fs::read_to_string("/proc/cmdline")
        .is_ok_and(|line| line.split_whitespace().any(|word| word == REBOOT_TO_EXIT));
    let how = if reboot {
        libc::RB_AUTOBOOT
    } else {
        libc::RB_POWER_OFF
    };
    // SAFETY: plain syscalls without pointers.
    unsafe {
        libc::sync();
        libc::reboot(how);
    }
    // Only reached if the kernel refused; PID 1 exiting panics the kernel, which with
    // `panic=-1` reboots, and `-no-reboot` / `reboot=k` make the VMM exit either way.
    std::process::exit(1)
}
