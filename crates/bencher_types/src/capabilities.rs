//! What a runner can run (protocol extension `capabilities`, sent in `ready`) and the one
//! rule deciding whether that serves a Spec. The server claims jobs only for Specs the
//! runner serves; the runner applies the same rule to log why it cannot serve a Spec and
//! to refuse a job that reaches it anyway. Pure.
//!
//! Names travel as strings, not as the wire enums: a newer runner may name a platform or
//! sandbox this server does not know, and that must not make its `ready` unreadable.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ByteSize, JsonSpec};

/// The runner's host and what it can run there, measured at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `std::env::consts::OS` naming: `linux`, `macos`, `windows`.
    pub os: String,
    /// `std::env::consts::ARCH` naming: `x86_64`, `aarch64`.
    pub arch: String,
    /// Whether jobs whose Spec has no sandbox run here (the operator passed
    /// `--danger-allow-no-sandbox` and the host can run them).
    pub no_sandbox: bool,
    /// The sandboxes found working at start (`firecracker`, `qemu`, …).
    #[serde(default)]
    pub sandboxes: Vec<String>,
    /// Those of `sandboxes` that cannot give a job network access here (the VM
    /// sandboxes on a host without `slirp4netns`): a Spec allowing network needs
    /// another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandboxes_without_network: Vec<String>,
    /// CPUs available to the runner.
    pub cpus: u32,
    /// Bytes of memory (`MemTotal`).
    pub memory: u64,
    /// Bytes of the filesystem holding the runner's cache, where jobs' disks live.
    pub disk: u64,
}

/// Why a runner cannot serve a Spec; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unservable {
    #[error("the Spec is for {spec_os}/{spec_arch}, and this runner is {os}/{arch}")]
    Platform {
        spec_os: String,
        spec_arch: String,
        os: String,
        arch: String,
    },
    #[error(
        "the Spec has no sandbox, and this runner does not run jobs directly on its host \
         (--danger-allow-no-sandbox is not set, or the host cannot run them)"
    )]
    NoSandbox,
    #[error("the Spec needs the {needed} sandbox, and this runner has {}", Available(.available))]
    Sandbox {
        needed: String,
        available: Vec<String>,
    },
    #[error("the Spec allows network, and this runner's {sandbox} sandbox gives jobs no network")]
    Network { sandbox: String },
    #[error("the Spec has {needed} CPUs, and this runner has {available}")]
    Cpus { needed: u32, available: u32 },
    #[error("the Spec has {} of memory, and this runner has {}", ByteCount(*.needed), ByteCount(*.available))]
    Memory { needed: u64, available: u64 },
    #[error("the Spec has {} of disk, and this runner's cache filesystem has {}", ByteCount(*.needed), ByteCount(*.available))]
    Disk { needed: u64, available: u64 },
}

impl Capabilities {
    /// Whether this runner can run jobs of `spec`, or the first reason it cannot.
    ///
    /// Memory and disk allow a Spec up to 1/16 above what the host reports: a Spec
    /// records nominal sizes (48 GiB of RAM, a 128 GiB disk) while the kernel reports
    /// what is left after its reservations and filesystem metadata.
    pub fn serves(&self, spec: &JsonSpec) -> Result<(), Unservable> {
        if spec.os.as_str() != self.os || spec.architecture.as_str() != self.arch {
            return Err(Unservable::Platform {
                spec_os: spec.os.to_string(),
                spec_arch: spec.architecture.to_string(),
                os: self.os.clone(),
                arch: self.arch.clone(),
            });
        }
        match spec.sandbox {
            None if !self.no_sandbox => return Err(Unservable::NoSandbox),
            Some(sandbox) if !self.sandboxes.iter().any(|s| s == sandbox.as_str()) => {
                return Err(Unservable::Sandbox {
                    needed: sandbox.to_string(),
                    available: self.sandboxes.clone(),
                });
            }
            Some(sandbox)
                if spec.network
                    && self
                        .sandboxes_without_network
                        .iter()
                        .any(|s| s == sandbox.as_str()) =>
            {
                return Err(Unservable::Network {
                    sandbox: sandbox.to_string(),
                });
            }
            _ => {}
        }
        if spec.cpu.get() > self.cpus {
            return Err(Unservable::Cpus {
                needed: spec.cpu.get(),
                available: self.cpus,
            });
        }
        let fits = |needed: ByteSize, available: u64| {
            needed.bytes() <= available.saturating_add(available / 16)
        };
        if !fits(spec.memory, self.memory) {
            return Err(Unservable::Memory {
                needed: spec.memory.bytes(),
                available: self.memory,
            });
        }
        if !fits(spec.disk, self.disk) {
            return Err(Unservable::Disk {
                needed: spec.disk.bytes(),
                available: self.disk,
            });
        }
        Ok(())
    }
}

/// A list of sandboxes for a message, `none` when empty.
struct Available<'a>(&'a [String]);

impl fmt::Display for Available<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&self.0.join(", "))
        }
    }
}

/// Bytes for a message: exact, with a binary unit when it divides evenly.
struct ByteCount(u64);

impl fmt::Display for ByteCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const GIB: u64 = 1 << 30;
        const MIB: u64 = 1 << 20;
        match self.0 {
            n if n >= GIB && n % GIB == 0 => write!(f, "{} GiB", n / GIB),
            n if n >= GIB => write!(f, "{:.1} GiB ({n} bytes)", n as f64 / GIB as f64),
            n if n >= MIB && n % MIB == 0 => write!(f, "{} MiB", n / MIB),
            n => write!(f, "{n} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sandbox;

    fn spec(sandbox: Option<Sandbox>, cpu: u32, memory: u64, disk: u64) -> JsonSpec {
        serde_json::from_value(serde_json::json!({
            "uuid": "5d1f8a06-0b8e-4b3a-9d4c-2f3e4a5b6c7d",
            "name": "Intel v1",
            "slug": "intel-v1",
            "os": "linux",
            "architecture": "x86_64",
            "sandbox": sandbox.map(|s| s.as_str()),
            "cpu": cpu,
            "memory": memory,
            "disk": disk,
            "network": false,
            "fallback": false,
            "created": "2026-01-01T00:00:00Z",
            "modified": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    fn host() -> Capabilities {
        Capabilities {
            os: "linux".into(),
            arch: "x86_64".into(),
            no_sandbox: false,
            sandboxes: vec!["gvisor".into(), "container".into()],
            sandboxes_without_network: Vec::new(),
            cpus: 4,
            memory: 16 << 30,
            disk: 100 << 30,
        }
    }

    #[test]
    fn a_spec_within_the_host_is_served() {
        assert_eq!(
            host().serves(&spec(Some(Sandbox::Gvisor), 4, 16 << 30, 100 << 30)),
            Ok(())
        );
        // Nominal sizes a little above what the kernel reports still fit.
        assert_eq!(
            host().serves(&spec(Some(Sandbox::Container), 1, 17 << 30, 106 << 30)),
            Ok(())
        );
    }

    #[test]
    fn each_reason_is_found_and_said() {
        let host = host();
        let error = host
            .serves(&spec(Some(Sandbox::Firecracker), 1, 1 << 30, 1 << 30))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the Spec needs the firecracker sandbox, and this runner has gvisor, container"
        );
        assert_eq!(
            host.serves(&spec(None, 1, 1 << 30, 1 << 30)),
            Err(Unservable::NoSandbox)
        );
        let error = host
            .serves(&spec(Some(Sandbox::Gvisor), 8, 1 << 30, 1 << 30))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the Spec has 8 CPUs, and this runner has 4"
        );
        let error = host
            .serves(&spec(Some(Sandbox::Gvisor), 1, 48 << 30, 1 << 30))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the Spec has 48 GiB of memory, and this runner has 16 GiB"
        );
        let error = host
            .serves(&spec(Some(Sandbox::Gvisor), 1, 1 << 30, 128 << 30))
            .unwrap_err();
        assert!(matches!(error, Unservable::Disk { .. }), "{error}");
        let mut arm = host.clone();
        arm.arch = "aarch64".into();
        let error = arm.serves(&spec(None, 1, 1, 1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the Spec is for linux/x86_64, and this runner is linux/aarch64"
        );
        let mut offline = host.clone();
        offline.sandboxes.push("firecracker".into());
        offline.sandboxes_without_network.push("firecracker".into());
        let mut networked = spec(Some(Sandbox::Firecracker), 1, 1, 1);
        assert_eq!(offline.serves(&networked), Ok(()));
        networked.network = true;
        assert_eq!(
            offline.serves(&networked).unwrap_err().to_string(),
            "the Spec allows network, and this runner's firecracker sandbox gives jobs no \
             network"
        );
        networked.sandbox = Some(Sandbox::Gvisor);
        assert_eq!(offline.serves(&networked), Ok(()));
        let mut bare = host;
        bare.sandboxes.clear();
        bare.no_sandbox = true;
        assert_eq!(bare.serves(&spec(None, 1, 1, 1)), Ok(()));
        let error = bare
            .serves(&spec(Some(Sandbox::Qemu), 1, 1, 1))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the Spec needs the qemu sandbox, and this runner has none"
        );
    }

    #[test]
    fn unknown_names_from_a_newer_runner_still_parse() {
        let caps: Capabilities = serde_json::from_value(serde_json::json!({
            "os": "freebsd", "arch": "riscv64", "no_sandbox": false,
            "sandboxes": ["jail"], "cpus": 2, "memory": 1, "disk": 1,
        }))
        .unwrap();
        assert!(matches!(
            caps.serves(&spec(None, 1, 1, 1)),
            Err(Unservable::Platform { .. })
        ));
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(ByteCount(48 << 30).to_string(), "48 GiB");
        assert_eq!(ByteCount(512 << 20).to_string(), "512 MiB");
        assert_eq!(ByteCount(1000).to_string(), "1000 bytes");
        assert_eq!(
            ByteCount((16 << 30) - 4096).to_string(),
            "16.0 GiB (17179865088 bytes)"
        );
    }
}
