//! The one stream to the host: a virtio-serial port or an `AF_VSOCK` connection to the
//! host (CID 2), held in a process-wide locked writer so the output threads and the
//! panic hook can all send whole records. IO: `/sys/class/virtio-ports`, the port's
//! device node, the vsock socket.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use bencher_types::guest::{GuestChannel, Record};

/// How long the port may take to appear after its driver loaded.
const DEVICE_WAIT: Duration = Duration::from_secs(10);
/// The host's CID for vsock.
const HOST_CID: u32 = 2;

static CHANNEL: OnceLock<Mutex<File>> = OnceLock::new();

pub fn open(channel: &GuestChannel) -> Result<(), String> {
    let file = match channel {
        GuestChannel::VirtioSerial { name } => open_port(name)?,
        GuestChannel::Vsock { port } => File::from(
            connect_vsock(*port)
                .map_err(|e| format!("cannot connect to the host over vsock port {port}: {e}"))?,
        ),
    };
    CHANNEL
        .set(Mutex::new(file))
        .map_err(|_| "the channel was opened twice".to_owned())
}

/// Sends a record whole; an error means the host is gone.
pub fn send(record: &Record) -> Result<(), String> {
    let channel = CHANNEL.get().ok_or("the channel to the host is not open")?;
    let mut writer = channel.lock().unwrap_or_else(|e| e.into_inner());
    record
        .write_to(&mut *writer)
        .map_err(|e| format!("cannot write to the host: {e}"))
}

/// For the failure path and the panic hook: never blocks on a lock the panicking
/// thread may hold.
pub fn try_send(record: &Record) -> Result<(), String> {
    let channel = CHANNEL.get().ok_or("the channel to the host is not open")?;
    let mut writer = match channel.try_lock() {
        Ok(writer) => writer,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => return Err("the channel is busy".to_owned()),
    };
    record
        .write_to(&mut *writer)
        .map_err(|e| format!("cannot write to the host: {e}"))
}

/// Waits until everything written has left (the port's `fsync` waits for the host).
pub fn flush() {
    if let Some(channel) = CHANNEL.get()
        && let Ok(writer) = channel.try_lock()
    {
        let _ = writer.sync_all();
    }
}

fn open_port(name: &str) -> Result<File, String> {
    let started = Instant::now();
    loop {
        if let Some(device) = find_port(name) {
            return OpenOptions::new()
                .write(true)
                .open(&device)
                .map_err(|e| format!("cannot open the channel {}: {e}", device.display()));
        }
        if started.elapsed() > DEVICE_WAIT {
            return Err(format!(
                "no virtio-serial port named `{name}` appeared within {DEVICE_WAIT:?}"
            ));
        }
        // Only while the guest boots, before the benchmark runs.
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn find_port(name: &str) -> Option<PathBuf> {
    for entry in fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let port_name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        let device = PathBuf::from("/dev").join(entry.file_name());
        if port_name.trim_end() == name && device.exists() {
            return Some(device);
        }
    }
    None
}

fn connect_vsock(port: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_vm is valid; fields set below.
    let mut address: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    address.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    address.svm_cid = HOST_CID;
    address.svm_port = port;
    // SAFETY: a valid address of the given length.
    let connected = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&raw const address).cast(),
            size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if connected != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
