//! Measures the VM sandboxes on this host, `qemu` and `firecracker`: the setup time of
//! a job (executor called until the guest's first record, and until the job's result),
//! and a CPU-bound shell loop timed inside the guest against the same loop on the host,
//! printed as ratios. A VM sandbox this host cannot run is reported with the reason and
//! skipped (Firecracker needs real KVM and `firecracker` on PATH or in
//! `BENCHER_FIRECRACKER`). Run by `scripts/bench-vm`. IO: builds a small root
//! filesystem from the host's `sh` and `date` under a temp dir, boots VMs.
//!
//! Needs `BENCHER_VM_INIT` (a static bencher-init) and root. Under TCG (no hardware
//! virtualisation) the figures describe software emulation, not what a benchmark would
//! see on a KVM host.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bencher_oci::config::ImageConfig;
use bencher_runner::executor::{
    self, ExecOutcome, ExecRequest, FirecrackerConfig, OutputLimits, Resources, Sandbox,
};
use tokio_util::sync::CancellationToken;

const LOOP: &str = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done";

#[tokio::main]
async fn main() {
    // The executor logs each guest's boot time (VMM start to its first record).
    tracing_subscriber::fmt()
        .with_env_filter("bencher_runner::executor::vm=debug")
        .with_target(false)
        .without_time()
        .init();
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = dir.path().join("root");
    for program in ["sh", "date"] {
        copy_with_libraries(&Path::new("/bin").join(program), &root, program);
    }
    executor::configure_firecracker(FirecrackerConfig {
        firecracker: std::env::var_os("BENCHER_FIRECRACKER").map(PathBuf::from),
        jailer: std::env::var_os("BENCHER_JAILER").map(PathBuf::from),
        log_level: None,
    });
    let mut measured = 0;
    for sandbox in [Sandbox::Qemu, Sandbox::Firecracker] {
        let capability = tokio::task::spawn_blocking(move || executor::check(sandbox))
            .await
            .expect("the check runs");
        match capability {
            Ok(capability) => {
                println!("sandbox {sandbox}: {}", capability.detail);
                measure(sandbox, &root, &capability.detail).await;
                measured += 1;
            }
            Err(error) => println!("sandbox {sandbox}: not available, skipped: {error}"),
        }
    }
    if measured == 0 {
        std::process::exit(1);
    }
}

async fn measure(sandbox: Sandbox, root: &Path, detail: &str) {
    let runs = 3;
    let mut totals = Vec::new();
    for _ in 0..runs {
        let (outcome, total) = run(sandbox, root, "true").await;
        assert!(outcome.is_completed(), "{outcome:?}");
        totals.push(total);
    }
    let mean = totals.iter().sum::<Duration>() / runs;
    println!(
        "whole job `true` (prepare, boot, run, power-off, cleanup): mean {:.2} s over {runs} \
         (the boot alone is logged above as `boot`)",
        mean.as_secs_f64()
    );

    // The loop timed by the guest's own clock, against the host running it directly.
    let script = format!("a=$(date +%s%N); {LOOP}; b=$(date +%s%N); echo $((b-a))");
    let (outcome, _) = run(sandbox, root, &script).await;
    let ExecOutcome::Completed { results } = outcome else {
        panic!("{outcome:?}");
    };
    let guest_ns: u64 = results[0]
        .stdout
        .as_deref()
        .unwrap_or_default()
        .trim()
        .parse()
        .expect("nanoseconds");
    let host_started = Instant::now();
    let status = Command::new("/bin/sh")
        .args(["-c", LOOP])
        .status()
        .expect("sh");
    assert!(status.success());
    let host = host_started.elapsed();
    let guest = Duration::from_nanos(guest_ns);
    println!(
        "CPU-bound shell loop: host {:.2} s, guest {:.2} s, guest/host = {:.2}x",
        host.as_secs_f64(),
        guest.as_secs_f64(),
        guest.as_secs_f64() / host.as_secs_f64()
    );
    if detail.contains("accel tcg") {
        println!("note: TCG (software emulation): these figures are not meaningful for benchmarks");
    }
}

/// Runs `script` in a guest; returns the outcome and how long the job took.
async fn run(sandbox: Sandbox, root: &Path, script: &str) -> (ExecOutcome, Duration) {
    let raw = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let config = serde_json::json!({
        "registry": "http://localhost", "project": "00000000-0000-4000-8000-000000000001",
        "digest": format!("sha256:{}", "0".repeat(64)),
        "cmd": ["/bin/sh", "-c", script], "timeout": 600,
    });
    let request = ExecRequest {
        rootfs: root.to_owned(),
        image: ImageConfig::parse(&serde_json::to_vec(&raw).unwrap()).unwrap(),
        config: serde_json::from_value(config).unwrap(),
        resources: Resources {
            cpus: 1,
            memory: 512 << 20,
            disk: 1 << 30,
            network: false,
            tasks: Resources::tasks_for(1),
        },
        limits: OutputLimits::default(),
        grace_period: Duration::ZERO,
        placement: None,
    };
    let started = Instant::now();
    let outcome = executor::execute(sandbox, request, CancellationToken::new()).await;
    (outcome, started.elapsed())
}

fn copy_with_libraries(binary: &Path, root: &Path, name: &str) {
    let binary = binary.canonicalize().expect("the program exists");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy(&binary, root.join("bin").join(name)).unwrap();
    let ldd = Command::new("ldd").arg(&binary).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let Some(library) = line.split_whitespace().find(|w| w.starts_with('/')) else {
            continue;
        };
        let target = root.join(library.trim_start_matches('/'));
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(library, &target).unwrap();
    }
}
