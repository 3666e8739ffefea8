//! Measures what each sandbox costs, against baselines taken in the same run: setup
//! time per iteration (`true`, many iterations, in each sandbox vs sandbox `none`) and
//! CPU overhead (a CPU-bound shell loop in each sandbox vs the same loop run directly
//! on the host). IO: a root filesystem built from the host's `sh` and `true` (with
//! their libraries) in a temp dir, the sandboxes' processes.
//!
//! Run as root: `cargo run --release -p bencher_runner --example sandbox_overhead`
//! (optional arguments: iterations of `true`, default 20; loop count, default 2000000).
//! A sandbox this host cannot run is reported and skipped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bencher_oci::config::ImageConfig;
use bencher_runner::executor::{self, ExecOutcome, ExecRequest, OutputLimits, Resources, Sandbox};
use bencher_types::protocol::JobConfig;
use tokio_util::sync::CancellationToken;

const SANDBOXES: [Sandbox; 3] = [Sandbox::None, Sandbox::Container, Sandbox::Gvisor];

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let iterations: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let loops: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    build_rootfs(&root);
    let script = format!("i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done");

    // Baseline: the loop on the host, best of three.
    let host_loop = (0..3)
        .map(|_| {
            let start = Instant::now();
            let status = Command::new(root.join("bin/sh"))
                .args(["-c", &script])
                .status()
                .expect("sh");
            assert!(status.success());
            start.elapsed()
        })
        .min()
        .unwrap_or_default();
    println!("host: CPU loop ({loops} shell iterations) {host_loop:.2?}");

    let mut setup_none = None;
    println!(
        "{:<10} {:>16} {:>10} {:>14} {:>10}",
        "sandbox", "setup/iteration", "vs none", "CPU loop", "vs host"
    );
    for sandbox in SANDBOXES {
        if let Err(reason) = tokio::task::spawn_blocking(move || executor::check(sandbox))
            .await
            .expect("check")
        {
            println!("{sandbox:<10} unavailable: {reason}");
            continue;
        }
        // Setup: a job of `true` iterations; the time per iteration is the sandbox's
        // cost to start and tear down one.
        let setup = timed(sandbox, &root, &["/bin/true"], iterations).await / iterations;
        let setup_none = *setup_none.get_or_insert(setup);
        // CPU: one iteration of the loop, best of three, minus one iteration's setup.
        let mut best = Duration::MAX;
        for _ in 0..3 {
            best = best.min(timed(sandbox, &root, &["/bin/sh", "-c", &script], 1).await);
        }
        let cpu = best.saturating_sub(setup);
        println!(
            "{:<10} {:>16.2?} {:>9.2}x {:>14.2?} {:>9.3}x",
            sandbox.as_str(),
            setup,
            setup.as_secs_f64() / setup_none.as_secs_f64(),
            cpu,
            cpu.as_secs_f64() / host_loop.as_secs_f64()
        );
    }
}

/// Runs `argv` for `iterations` iterations in `sandbox`; the job's wall time.
async fn timed(sandbox: Sandbox, root: &Path, argv: &[&str], iterations: u32) -> Duration {
    let mut config: JobConfig = serde_json::from_value(serde_json::json!({
        "registry": "http://localhost:6610",
        "project": "00000000-0000-4000-8000-000000000000",
        "digest": format!("sha256:{}", "a".repeat(64)),
        "timeout": 600,
    }))
    .expect("job config");
    config.cmd = Some(argv.iter().map(|s| (*s).to_owned()).collect());
    config.iter = Some(iterations);
    let image = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let request = ExecRequest {
        rootfs: root.to_owned(),
        image: ImageConfig::parse(&serde_json::to_vec(&image).expect("json")).expect("image"),
        config,
        resources: Resources {
            cpus: 1,
            memory: 1 << 30,
            disk: 1 << 30,
            network: false,
            tasks: Resources::tasks_for(1),
        },
        limits: OutputLimits::default(),
        grace_period: Duration::ZERO,
        placement: None,
    };
    let start = Instant::now();
    let outcome = executor::execute(sandbox, request, CancellationToken::new()).await;
    let took = start.elapsed();
    assert!(
        matches!(outcome, ExecOutcome::Completed { .. }),
        "{sandbox}: {outcome:#?}"
    );
    took
}

/// `sh` and `true` from the host with their libraries.
fn build_rootfs(root: &Path) {
    fs::create_dir_all(root.join("bin")).expect("mkdir");
    for program in ["sh", "true"] {
        let host = ["/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(program))
            .find(|path| path.exists())
            .and_then(|path| path.canonicalize().ok())
            .unwrap_or_else(|| panic!("{program} is not installed"));
        copy_with_libraries(&host, &root.join("bin").join(program), root);
    }
}

fn copy_with_libraries(binary: &Path, dest: &Path, root: &Path) {
    fs::copy(binary, dest).expect("copy");
    let ldd = Command::new("ldd").arg(binary).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let Some(library) = line
            .split_whitespace()
            .find(|word| word.starts_with('/'))
            .map(PathBuf::from)
        else {
            continue;
        };
        let target = root.join(library.strip_prefix("/").expect("absolute"));
        if target.exists() {
            continue;
        }
        fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        fs::copy(&library, &target).expect("copy library");
    }
}
