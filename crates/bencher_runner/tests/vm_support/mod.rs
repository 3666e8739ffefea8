//! Shared by the VM sandbox tests (`vm.rs`, `firecracker.rs`): the static
//! `bencher-init` built once, an image's root filesystem made of the host's own
//! binaries, jobs and requests, and the environment the VM code reads. IO: a cargo
//! build, files under the target's temp dir.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use bencher_oci::config::ImageConfig;
use bencher_runner::executor::{ExecOutcome, ExecRequest, OutputLimits, Resources};
use bencher_types::protocol::{IterationResult, JobConfig};

pub const PROGRAMS: &[&str] = &[
    "sh", "sleep", "cat", "env", "id", "ls", "echo", "pwd", "head", "mkdir", "ln", "rm", "tr",
    "touch", "wc",
];

/// Everything the VM tests share, set up once: `None` when the host cannot run them
/// (the reason printed, and a failure under `CI`).
pub struct Setup {
    pub rootfs: PathBuf,
    pub cache: PathBuf,
}

/// One VM test at a time: they look for leftover VMs and run directories, and the
/// machine has few cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sets up once per test binary (in `cell`), with the VM cache `cache_name` of its own
/// (tests look for their VMs by it) and the environment `extra` returns, set with the
/// rest before any VM code reads it; `None`, with the reason printed (and a failure
/// under `CI`), when the host cannot run VMs.
pub fn setup(
    cell: &'static OnceLock<Result<Setup, String>>,
    cache_name: &str,
    extra: impl FnOnce() -> Result<Vec<(&'static str, PathBuf)>, String>,
) -> Option<&'static Setup> {
    let setup = cell.get_or_init(|| {
        if Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_err()
        {
            return Err("qemu-system-x86_64 is not installed (apt install qemu-system-x86)".into());
        }
        let kernels = fs::read_dir("/boot")
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
            })
            .unwrap_or(false);
        if !kernels && std::env::var_os("BENCHER_VM_KERNEL").is_none() {
            return Err("no kernel in /boot (apt install linux-image-amd64)".into());
        }
        if !rustix::process::geteuid().is_root() {
            return Err("not root: the image's files must keep their owners".into());
        }
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let init = build_static_init(base);
        let extra = extra()?;
        let cache = base.join(cache_name);
        let rootfs = base
            .join(format!("vm-rootfs-{}", std::process::id()))
            .join("root");
        for entry in fs::read_dir(base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("vm-rootfs-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        build_rootfs(&rootfs);
        // SAFETY: set once, before any VM code reads them (the probe reads them once,
        // after this), while no other thread of this test binary touches the environment.
        unsafe {
            std::env::set_var("BENCHER_VM_INIT", &init);
            std::env::set_var("BENCHER_VM_CACHE_DIR", &cache);
            for (name, value) in &extra {
                std::env::set_var(name, value);
            }
        }
        Ok(Setup { rootfs, cache })
    });
    match setup {
        Ok(setup) => Some(setup),
        Err(reason) => {
            eprintln!("SKIPPED: {reason}");
            assert!(
                std::env::var_os("CI").is_none(),
                "under CI this must run: {reason}"
            );
            None
        }
    }
}

/// Builds `bencher-init` static, in a target directory of its own: the flag must not
/// reach the workspace's other builds, and the outer cargo holds its own directory.
pub fn build_static_init(base: &Path) -> PathBuf {
    let target_dir = base.join("bencher-init-static");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "-p", "bencher_init"])
        .args(["--target", "x86_64-unknown-linux-gnu", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the static bencher-init failed");
    target_dir.join("x86_64-unknown-linux-gnu/release/bencher-init")
}

pub fn build_rootfs(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("home/bench")).unwrap();
    fs::create_dir_all(root.join("work")).unwrap();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    for program in PROGRAMS {
        let host = ["/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(program))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{program} is not installed"))
            .canonicalize()
            .unwrap();
        copy_with_libraries(&host, &root.join("bin").join(program), root);
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nbench:x:1234:2345:Bench:/home/bench:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nbench:x:2345:\nextra:x:3456:bench\n",
    )
    .unwrap();
    fs::write(root.join("etc/image-file"), "from the image\n").unwrap();
    // Static: network tools (ip, nc) for the network test, where the host has it.
    let busybox = Path::new("/bin/busybox");
    if busybox.is_file() {
        fs::copy(busybox, root.join("bin/busybox")).unwrap();
    }
    std::os::unix::fs::chown(root.join("home/bench"), Some(1234), Some(2345)).unwrap();
}

pub fn copy_with_libraries(binary: &Path, dest: &Path, root: &Path) {
    fs::copy(binary, dest).unwrap();
    let ldd = Command::new("ldd").arg(binary).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let Some(library) = line.split_whitespace().find(|w| w.starts_with('/')) else {
            continue;
        };
        let target = root.join(library.trim_start_matches('/'));
        if !target.exists() {
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            fs::copy(library, &target).unwrap();
        }
    }
}

pub fn image(config: serde_json::Value) -> ImageConfig {
    let raw = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    ImageConfig::parse(&serde_json::to_vec(&raw).unwrap()).unwrap()
}

pub fn job(script: &str, extra: serde_json::Value) -> JobConfig {
    let mut config = serde_json::json!({
        "registry": "http://localhost:6610",
        "project": "00000000-0000-4000-8000-000000000001",
        "digest": format!("sha256:{}", "0".repeat(64)),
        "cmd": ["sh", "-c", script],
        "timeout": 300,
    });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    serde_json::from_value(config).unwrap()
}

pub fn request(setup: &Setup, image: ImageConfig, config: JobConfig) -> ExecRequest {
    ExecRequest {
        rootfs: setup.rootfs.clone(),
        image,
        config,
        resources: Resources {
            cpus: 1,
            memory: 256 << 20,
            disk: 256 << 20,
            network: false,
            tasks: Resources::tasks_for(1),
        },
        limits: OutputLimits::default(),
        grace_period: Duration::from_millis(500),
        placement: None,
    }
}

pub fn stdout(result: &IterationResult) -> &str {
    result.stdout.as_deref().unwrap_or_default()
}

pub fn stderr(result: &IterationResult) -> &str {
    result.stderr.as_deref().unwrap_or_default()
}

/// Run directories of this process left in the VM cache.
pub fn leftover_runs(setup: &Setup) -> Vec<PathBuf> {
    let prefix = format!("bencher-vm-{}-", std::process::id());
    fs::read_dir(setup.cache.join("run"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Kills the VMM of the job `task` runs as soon as `vmm_pids` finds it (within 30 s),
/// then checks that the job fails at once, not at its timeout, saying the VM stopped,
/// and leaves no run directory.
pub async fn a_killed_vmm_fails_the_job(
    setup: &Setup,
    task: tokio::task::JoinHandle<ExecOutcome>,
    vmm: &str,
    vmm_pids: impl Fn() -> Vec<i32>,
) {
    let mut killed = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(pid) = vmm_pids().first() {
            // SAFETY: kill(2) on the job's VMM.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
            killed = true;
            break;
        }
    }
    assert!(killed, "no {vmm} process appeared");
    let outcome = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the job ends without waiting for its timeout")
        .unwrap();
    let ExecOutcome::Failed { error, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(
        error.contains("the VM stopped before the job finished"),
        "{error}"
    );
    assert!(leftover_runs(setup).is_empty());
}
