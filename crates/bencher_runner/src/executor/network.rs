//! A job's network, when its Spec allows one, for every sandbox but `none`: a network
//! namespace of the job's own where `slirp4netns` carries the job's traffic to the
//! host's network in user space, as connections of its own. The host gets no routes,
//! NAT rules, forwarding or devices, and the host's loopback is out of the job's reach
//! (`--disable-host-loopback`). Everything goes with the namespace: when the sandbox
//! and `slirp4netns` are gone and the runner closes its handle. IO: namespaces, tap and
//! bridge ioctls, runs `slirp4netns`.
//!
//! - A container joins the namespace (and its runtime starts in it), where
//!   slirp4netns's tap is configured as slirp's guest (`10.0.2.100/24`, default route
//!   `10.0.2.2`; [`JobNetwork::for_container`]).
//! - A VM's tap device (`vm0`, which the VMM opens by name) and slirp4netns's tap are
//!   joined by a bridge, so the guest itself is slirp's guest ([`GuestNetwork::SLIRP`];
//!   [`JobNetwork::for_vm`]); the VMM starts in the namespace.
//!
//! Both resolve names through slirp's forwarder, `10.0.2.3` ([`RESOLV_CONF`]).

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub(super) use bencher_types::guest::GuestNetwork;

/// The job's `/etc/resolv.conf`: slirp's DNS forwarder.
pub(super) const RESOLV_CONF: &str = "nameserver 10.0.2.3\n";
/// The VM's tap device in the job's namespace, which the VMM opens by name.
pub(super) const TAP: &str = "vm0";
/// The bridge joining it to slirp4netns's tap.
const BRIDGE: &str = "br0";
/// slirp4netns's tap.
const SLIRP_TAP: &str = "slirp0";
/// How long slirp4netns may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// `<linux/sockios.h>`: bridge ioctls the libc crate does not have for glibc.
const SIOCBRADDBR: libc::c_ulong = 0x89a0;
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

/// `slirp4netns` from `BENCHER_SLIRP4NETNS`, else on `PATH`, if it runs and the
/// runner can make namespaces and devices (root).
pub(super) fn find_slirp4netns() -> Result<PathBuf, String> {
    // Once per process: every job allowed network asks.
    static FOUND: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    FOUND.get_or_init(look_for_slirp4netns).clone()
}

fn look_for_slirp4netns() -> Result<PathBuf, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("a job's network namespace and devices need root".to_owned());
    }
    let path = match std::env::var_os("BENCHER_SLIRP4NETNS") {
        Some(path) => PathBuf::from(path),
        None => super::on_path("slirp4netns")
            .ok_or("slirp4netns is not installed (Debian: slirp4netns)")?,
    };
    let output = std::process::Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", path.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`{} --version` failed ({})",
            path.display(),
            output.status
        ));
    }
    Ok(path)
}

/// The job's network; torn down when dropped.
pub(super) struct JobNetwork {
    /// The namespace, held open by the runner for the sandbox to enter.
    netns: OwnedFd,
    /// Killed when dropped, and with the runner.
    slirp: Child,
}

/// How the job reaches the namespace's network.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attach {
    /// The job is in the namespace: slirp4netns configures its tap.
    Container,
    /// A VM's tap, owned by this uid, bridged to slirp4netns's.
    Vm { owner: u32 },
}

/// Runs `build` on a thread of its own (which it may move into another namespace).
fn on_own_thread<T: Send + 'static>(
    build: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    std::thread::Builder::new()
        .name("bencher-netns".to_owned())
        .spawn(build)
        .map_err(|e| format!("cannot start a thread for the job's network: {e}"))?
        .join()
        .map_err(|_| "building the job's network panicked".to_owned())?
}

impl JobNetwork {
    /// For a container, which joins the namespace ([`JobNetwork::path`]) and whose
    /// runtime starts in it ([`enter`]).
    pub(super) async fn for_container(slirp4netns: &Path) -> Result<JobNetwork, String> {
        Self::create(slirp4netns, Attach::Container).await
    }

    /// For a VM whose VMM runs as `owner` and opens [`TAP`] in the namespace.
    pub(super) async fn for_vm(slirp4netns: &Path, owner: u32) -> Result<JobNetwork, String> {
        Self::create(slirp4netns, Attach::Vm { owner }).await
    }

    /// Makes the namespace (with the VM's tap and the bridge, for a VM), then starts
    /// slirp4netns on it and waits until it is ready.
    async fn create(slirp4netns: &Path, attach: Attach) -> Result<JobNetwork, String> {
        let netns = on_own_thread(move || build_namespace(attach))?;
        let (mut ready_read, ready_write) = pipe()?;
        let namespace = format!("/proc/{}/fd/{}", std::process::id(), netns.as_raw_fd());
        let mut command = Command::new(slirp4netns);
        // It parses the job's traffic as root: in a mount namespace of its own with
        // its capabilities dropped, under seccomp, and without the runner's
        // environment (which holds its key).
        command.env_clear().args([
            "--netns-type=path",
            "--disable-host-loopback",
            "--enable-sandbox",
            "--enable-seccomp",
            "--ready-fd=3",
        ]);
        if attach == Attach::Container {
            command.arg("--configure");
        }
        command
            .arg(&namespace)
            .arg(SLIRP_TAP)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let ready_fd = ready_write.as_raw_fd();
        // SAFETY: dup2, fcntl and prctl between fork and exec, on an fd opened before
        // the fork.
        unsafe {
            command.pre_exec(move || {
                // dup2 onto itself would keep the close-on-exec flag.
                let moved = if ready_fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(ready_fd, 3)
                };
                if moved < 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut slirp = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", slirp4netns.display()))?;
        drop(ready_write);
        // It writes to the fd once its tap is up; it never closes it without writing
        // unless it exits, which the EOF then says.
        let ready = tokio::task::spawn_blocking(move || {
            let mut byte = [0u8; 1];
            ready_read.read(&mut byte)
        });
        match tokio::time::timeout(READY_TIMEOUT, ready).await {
            Ok(Ok(Ok(1))) => {}
            outcome => {
                let _ = slirp.start_kill();
                let mut message = String::new();
                if let Some(mut stderr) = slirp.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        stderr.read_to_string(&mut message),
                    )
                    .await;
                }
                let why = match outcome {
                    Err(_) => format!("not ready within {READY_TIMEOUT:?}"),
                    _ => "it exited before it was ready".to_owned(),
                };
                return Err(format!(
                    "the job's network did not come up: {} {why}: {}",
                    slirp4netns.display(),
                    message.trim()
                ));
            }
        }
        // Its log from here on is of no use to the job; unread, it would fill the pipe
        // and stop slirp4netns.
        if let Some(mut stderr) = slirp.stderr.take() {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            });
        }
        let network = JobNetwork { netns, slirp };
        if let Attach::Vm { .. } = attach {
            let fd = network.netns.try_clone().map_err(|e| e.to_string())?;
            on_own_thread(move || join_bridge(&fd))?;
        }
        Ok(network)
    }

    /// A path to the namespace for other processes (a container's `config.json`, the
    /// jailer's `--netns`), valid while this lives.
    pub(super) fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.netns.as_raw_fd()
        ))
    }

    /// A handle on the namespace, for [`enter`].
    pub(super) fn namespace(&self) -> Result<OwnedFd, String> {
        self.netns
            .try_clone()
            .map_err(|e| format!("cannot hand the job's network on: {e}"))
    }

    /// Makes `command` start in the job's namespace.
    pub(super) fn enter(&self, command: &mut Command) -> Result<(), String> {
        enter(command, self.namespace()?);
        Ok(())
    }
}

/// Makes `command` start in the network namespace `netns`.
pub(super) fn enter(command: &mut Command, netns: OwnedFd) {
    // SAFETY: setns(2) on an fd opened before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl JobNetwork {
    /// Stops slirp4netns and waits for it; the namespace goes with the last handle.
    pub(super) async fn close(mut self) {
        let _ = self.slirp.start_kill();
        let _ = self.slirp.wait().await;
    }
}

/// For early returns: killed, reaped by tokio in the background.
impl Drop for JobNetwork {
    fn drop(&mut self) {
        let _ = self.slirp.start_kill();
    }
}

fn pipe() -> Result<(std::fs::File, OwnedFd), String> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("cannot make a pipe: {e}"))?;
    Ok((std::fs::File::from(read), write))
}

/// On its own thread, which it moves into the new namespace: the loopback, and for a
/// VM its tap and the bridge. Returns the namespace.
fn build_namespace(attach: Attach) -> Result<OwnedFd, String> {
    // SAFETY: unshare(2) of this thread's network namespace only; the thread is ours
    // and ends with this function.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "cannot make the job's network namespace: {}",
            io::Error::last_os_error()
        ));
    }
    let netns = OpenOptions::new()
        .read(true)
        .open("/proc/thread-self/ns/net")
        .map_err(|e| format!("cannot open the job's network namespace: {e}"))?;
    let control = Control::open()?;
    control.set_up("lo")?;
    if let Attach::Vm { owner } = attach {
        make_tap(owner)?;
        control.ioctl_name(SIOCBRADDBR, BRIDGE, "create the bridge")?;
        control.add_to_bridge(TAP)?;
        control.set_up(TAP)?;
        control.set_up(BRIDGE)?;
    }
    Ok(netns.into())
}

/// On its own thread, in the namespace: slirp4netns's tap joins the bridge.
fn join_bridge(netns: &OwnedFd) -> Result<(), String> {
    // SAFETY: setns(2) of this thread, which is ours and ends with this function.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "cannot enter the job's network namespace: {}",
            io::Error::last_os_error()
        ));
    }
    let control = Control::open()?;
    control.add_to_bridge(SLIRP_TAP)?;
    control.set_up(SLIRP_TAP)
}

/// A persistent tap device `TAP` owned by `owner`, which the VMM opens by name. It
/// lives as long as its namespace.
fn make_tap(owner: u32) -> Result<(), String> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| format!("cannot open /dev/net/tun: {e}"))?;
    let mut request = ifreq(TAP);
    // The flags both VMMs open it with: no packet info, virtio-net headers.
    request.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as _;
    // SAFETY: tun ioctls on an open /dev/net/tun with a request built here.
    unsafe {
        let fd = tun.as_raw_fd();
        if libc::ioctl(fd, libc::TUNSETIFF, &raw mut request) != 0
            || libc::ioctl(fd, libc::TUNSETOWNER, owner as libc::c_ulong) != 0
            || libc::ioctl(fd, libc::TUNSETGROUP, owner as libc::c_ulong) != 0
            || libc::ioctl(fd, libc::TUNSETPERSIST, 1 as libc::c_ulong) != 0
        {
            return Err(format!(
                "cannot create the VM's tap device: {}",
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: an all-zero ifreq is valid.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request
}

/// A socket for interface ioctls in the calling thread's namespace.
struct Control(OwnedFd);

impl Control {
    fn open() -> Result<Control, String> {
        // SAFETY: socket(2) with constant arguments; the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(format!(
                "cannot open a socket to configure the job's network: {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: a fresh fd nobody else owns.
        Ok(Control(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ioctl(
        &self,
        code: libc::c_ulong,
        request: &mut libc::ifreq,
        what: &str,
    ) -> Result<(), String> {
        // SAFETY: an interface ioctl with a request built here.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), code, std::ptr::from_mut(request)) } != 0 {
            return Err(format!("cannot {what}: {}", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// An ioctl whose argument is only a device name (the bridge's add and delete).
    fn ioctl_name(&self, code: libc::c_ulong, name: &str, what: &str) -> Result<(), String> {
        let name = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated name that outlives the call.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), code, name.as_ptr()) } != 0 {
            return Err(format!("cannot {what}: {}", io::Error::last_os_error()));
        }
        Ok(())
    }

    fn set_up(&self, name: &str) -> Result<(), String> {
        let mut request = ifreq(name);
        self.ioctl(
            libc::SIOCGIFFLAGS,
            &mut request,
            &format!("read {name}'s flags"),
        )?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        let flags = unsafe { request.ifr_ifru.ifru_flags };
        request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        self.ioctl(
            libc::SIOCSIFFLAGS,
            &mut request,
            &format!("bring {name} up"),
        )
    }

    fn add_to_bridge(&self, name: &str) -> Result<(), String> {
        let mut index = ifreq(name);
        self.ioctl(libc::SIOCGIFINDEX, &mut index, &format!("find {name}"))?;
        let mut request = ifreq(BRIDGE);
        // SAFETY: SIOCGIFINDEX filled the index member.
        request.ifr_ifru.ifru_ifindex = unsafe { index.ifr_ifru.ifru_ifindex };
        self.ioctl(
            SIOCBRADDIF,
            &mut request,
            &format!("add {name} to the bridge"),
        )
    }
}
