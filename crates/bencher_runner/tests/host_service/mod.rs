//! Shared by the network tests of the sandboxes (`executor.rs`, `vm.rs`): a TCP service
//! on the host that a job with network must reach by the host's own address and must
//! not reach through the host's loopback, and the job's side of that check (busybox's
//! `nc`). IO: a listening socket and its thread.

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;

/// What the service answers every connection with.
pub const GREETING: &str = "hello from the host";
/// What the job's script prints when the host's loopback is out of its reach.
pub const LOOPBACK_REFUSED: &str = "loopback refused";

pub struct HostService {
    /// The host's address on its default route.
    pub address: IpAddr,
    pub port: u16,
}

/// Why a network test cannot run here (`rootfs` must hold a static busybox), or the
/// service, started. The caller prints the reason and fails under `CI`.
pub fn start(rootfs: &Path) -> Result<HostService, String> {
    if !rootfs.join("bin/busybox").is_file() {
        return Err("no static /bin/busybox for `nc` (apt install busybox-static)".to_owned());
    }
    if Command::new("slirp4netns")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("slirp4netns is not installed (apt install slirp4netns)".to_owned());
    }
    let address = UdpSocket::bind("0.0.0.0:0")
        .and_then(|socket| {
            // No packet is sent: this only picks the address of the default route.
            socket.connect("192.0.2.1:9")?;
            socket.local_addr()
        })
        .map_err(|e| format!("this host has no default route to reach itself by: {e}"))?
        .ip();
    // On every address, the loopback too: the job must fail to reach it there.
    let listener = TcpListener::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut &stream, format!("{GREETING}\n").as_bytes());
        }
    });
    Ok(HostService { address, port })
}

impl HostService {
    /// Shell lines for the job: the greeting through the host's address, then
    /// [`LOOPBACK_REFUSED`] when slirp's gateway (the host's loopback, were it
    /// allowed) does not answer.
    pub fn script(&self) -> String {
        let HostService { address, port } = self;
        format!(
            "busybox nc -w 10 {address} {port} </dev/null
             if busybox nc -w 5 10.0.2.2 {port} </dev/null; then echo LOOPBACK REACHED; \
             else echo {LOOPBACK_REFUSED}; fi"
        )
    }
}

/// Prints why a test is skipped; under `CI` it fails instead.
pub fn skip(reason: &str) {
    eprintln!("SKIPPED: {reason}");
    assert!(
        std::env::var_os("CI").is_none(),
        "under CI this must run: {reason}"
    );
}
