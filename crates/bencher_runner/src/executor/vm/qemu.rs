//! The QEMU VMM: `qemu-system-x86_64 -M microvm` with the guest's kernel, initramfs,
//! disks and the guest's channel (a virtio-serial port, or hybrid vsock through
//! `vhost-device-vsock`), started as a child that dies with the runner. IO: runs
//! `qemu-system-x86_64` and `vhost-device-vsock`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

/// `BENCHER_QEMU`, else `qemu-system-x86_64` from `PATH`.
pub(super) fn binary() -> PathBuf {
    std::env::var_os("BENCHER_QEMU").map_or_else(|| "qemu-system-x86_64".into(), PathBuf::from)
}

/// The virtio-serial port's name, which the guest looks for.
pub(super) const PORT_NAME: &str = "bencher";

/// `BENCHER_QEMU_VHOST_VSOCK`: the `vhost-device-vsock` binary (crates.io) through
/// which QEMU guests reach the host over hybrid vsock, Firecracker's channel (a guest
/// connection to port P arrives at `<uds>_P`), instead of a virtio-serial port, and end
/// by rebooting, as Firecracker's do. It needs no kernel support on the host
/// (`/dev/vhost-vsock`); the tests use it to run Firecracker's guest path under QEMU.
pub(super) fn vhost_vsock() -> Option<PathBuf> {
    std::env::var_os("BENCHER_QEMU_VHOST_VSOCK").map(PathBuf::from)
}

/// How the guest's records reach the host.
pub(super) enum Channel<'a> {
    /// QEMU connects the port to this listening socket.
    VirtioSerial(&'a Path),
    /// QEMU connects the device to this `vhost-device-vsock` socket.
    VhostUserVsock(&'a Path),
}

/// How QEMU runs guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation: near-native speed.
    Kvm,
    /// Software emulation: correct, but far too slow and noisy for benchmark figures.
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What one VM boots.
pub(super) struct Machine<'a> {
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u64,
    pub vmlinux: &'a Path,
    pub initramfs: &'a Path,
    pub root_disk: &'a Path,
    pub scratch_disk: &'a Path,
    pub channel: Channel<'a>,
    /// The job's network namespace with the tap QEMU attaches to, when the Spec allows
    /// network.
    pub network: Option<&'a super::super::network::JobNetwork>,
    /// The benchmark CPUs: the whole QEMU process (vCPU threads, and the I/O thread
    /// serving the guest's disks and channel) starts there.
    pub placement: Option<&'a super::super::Placement>,
}

/// Starts QEMU. Its stdout is the guest's serial console (piped, for diagnostics); it
/// is killed if the runner dies (parent-death signal) or the handle is dropped.
pub(super) fn spawn(machine: &Machine<'_>) -> std::io::Result<Child> {
    let mut command = Command::new(binary());
    if let Some(placement) = machine.placement {
        super::super::placement::install(&mut command, placement).map_err(std::io::Error::other)?;
    }
    let (accel, cpu) = match machine.accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg", "max"),
    };
    let drive = |id: &str, path: &Path, readonly: bool| {
        let mut spec = format!("id={id},file={},format=raw,if=none", escape(path));
        if readonly {
            spec.push_str(",readonly=on");
        }
        spec
    };
    // microvm's second IOAPIC (on by default) left the Debian 6.1 kernel without timer
    // interrupts under TCG (it hung calibrating the TSC); the legacy PIT, PIC and RTC
    // stay on, which the kernel needs to calibrate.
    let mut microvm = "microvm,ioapic2=off,pit=on,pic=on,rtc=on,x-option-roms=off".to_owned();
    if let Channel::VhostUserVsock(_) = machine.channel {
        // A vhost-user device reads the guest's memory: it must be shareable.
        microvm.push_str(",memory-backend=mem");
        command.args([
            "-object",
            &format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                machine.memory_mib
            ),
        ]);
    }
    command
        .args(["-M", &microvm])
        .args(["-accel", accel, "-cpu", cpu])
        .args(["-smp", &machine.cpus.to_string()])
        .args(["-m", &format!("{}M", machine.memory_mib)])
        // No default devices, no config files, no monitor: the guest's console is only
        // a serial port on stdout, so nothing it prints can reach a QEMU monitor.
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-monitor", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(machine.vmlinux)
        .arg("-initrd")
        .arg(machine.initramfs)
        .args(["-append", &kernel_command_line(machine)])
        .args(["-drive", &drive("root", machine.root_disk, true)])
        .args([
            "-device",
            "virtio-blk-device,drive=root,serial=bencher-root",
        ])
        .args(["-drive", &drive("scratch", machine.scratch_disk, false)])
        .args([
            "-device",
            "virtio-blk-device,drive=scratch,serial=bencher-scratch",
        ]);
    match machine.channel {
        Channel::VirtioSerial(socket) => {
            command
                .args(["-device", "virtio-serial-device"])
                .args([
                    "-chardev",
                    &format!("socket,id=channel,path={}", escape(socket)),
                ])
                .args([
                    "-device",
                    &format!("virtserialport,chardev=channel,name={PORT_NAME}"),
                ]);
        }
        Channel::VhostUserVsock(socket) => {
            command
                .args([
                    "-chardev",
                    &format!("socket,id=channel,path={}", escape(socket)),
                ])
                .args(["-device", "vhost-user-vsock-device,chardev=channel"]);
        }
    }
    if let Some(network) = machine.network {
        command.args([
            "-netdev",
            &format!(
                "tap,id=net0,ifname={},script=no,downscript=no",
                super::super::network::TAP
            ),
            "-device",
            "virtio-net-device,netdev=net0",
        ]);
        network.enter(&mut command).map_err(std::io::Error::other)?;
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    dies_with_the_runner(&mut command);
    command.spawn()
}

/// Without the runner's environment (it holds the runner's key, and the VMM is what
/// a guest would escape into); killed when dropped, and when the spawning thread (a
/// runtime worker) dies.
fn dies_with_the_runner(command: &mut Command) {
    command.env_clear().kill_on_drop(true);
    // SAFETY: prctl only, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Starts `vhost-device-vsock` for one guest (CID 3): QEMU connects to `socket`, the
/// guest's connections to port P arrive at `<uds>_P`. Returns once `socket` exists.
pub(super) async fn spawn_vhost_vsock(
    binary: &Path,
    socket: &Path,
    uds: &Path,
) -> Result<Child, String> {
    let mut command = Command::new(binary);
    command
        .args(["--guest-cid", "3"])
        .arg("--socket")
        .arg(socket)
        .arg("--uds-path")
        .arg(uds)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    dies_with_the_runner(&mut command);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !socket.exists() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{} did not open {} within 10 s",
                binary.display(),
                socket.display()
            ));
        }
        tokio::select! {
            status = child.wait() => {
                let mut message = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = stderr.read_to_string(&mut message).await;
                }
                return Err(format!(
                    "{} exited before it opened its socket ({}): {}",
                    binary.display(),
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    message.trim()
                ));
            }
            () = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
        }
    }
    Ok(child)
}

/// Under TCG the guest's TSC runs at the host's rate, but calibrating it against the
/// emulated PIT fails when the host is busy, and the Debian kernel then hangs for
/// want of a clock (seen in about one boot in three on a loaded 2-core host). So the
/// guest is told the host's TSC frequency and trusts it.
///
/// Over hybrid vsock the guest also ends the way Firecracker's does, by rebooting
/// (`-no-reboot` turns that into QEMU's exit), so Firecracker's whole guest path runs
/// under QEMU.
fn kernel_command_line(machine: &Machine<'_>) -> String {
    let mut line = "console=ttyS0 quiet panic=-1".to_owned();
    if let Channel::VhostUserVsock(_) = machine.channel {
        line.push(' ');
        line.push_str(bencher_types::guest::REBOOT_TO_EXIT);
    }
    if machine.accel == Accel::Tcg
        && let Some(khz) = host_tsc_khz()
    {
        line.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
    }
    line
}

/// The first `cpu MHz` of `/proc/cpuinfo`, in kHz.
fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|line| line.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    (mhz > 0.0).then_some((mhz * 1000.0) as u64)
}

/// QEMU option values separate by `,`; a literal comma is doubled.
fn escape(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// `QEMU emulator version 7.2.x ...`, for the capability line.
pub(super) fn version() -> Result<String, String> {
    let output = std::process::Command::new(binary())
        .arg("--version")
        .output()
        .map_err(|e| {
            format!(
                "sandbox `qemu` runs {}, which cannot run ({e}); install qemu-system-x86 or set \
                 BENCHER_QEMU",
                binary().display()
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    if !output.status.success() || line.is_empty() {
        return Err(format!("`{} --version` failed", binary().display()));
    }
    Ok(line)
}
