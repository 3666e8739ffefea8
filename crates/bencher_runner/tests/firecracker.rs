//! Sandbox `firecracker` end to end, and the guest channel it uses, exercised here
//! without it. IO: a static `bencher-init` build, a root filesystem and a VM cache
//! under the target's temp dir, the VMs.
//!
//! - The channel: Firecracker's guest reaches the host over vsock, which Firecracker
//!   delivers to `<uds>_<port>` on the host. QEMU does the same through
//!   `vhost-device-vsock` (crates.io), so a QEMU guest under TCG runs a whole job over
//!   that channel: the guest init's `AF_VSOCK` path, the vsock modules and the host's
//!   listener are Firecracker's. Without `vhost-device-vsock` (on PATH or
//!   `BENCHER_TEST_VHOST_DEVICE_VSOCK`) the test prints why it is skipped, and under
//!   `CI` fails.
//! - Firecracker itself (`BENCHER_FIRECRACKER`/`BENCHER_JAILER`, else on PATH) needs a
//!   host with working KVM and a Firecracker release, which no package registry
//!   reachable here carries; where the runner's check fails, the test prints the
//!   check's reason and is skipped, in CI too.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use bencher_runner::executor::{self, ExecOutcome, FirecrackerConfig, Sandbox};
use tokio_util::sync::CancellationToken;

mod vm_support;
use vm_support::{SERIAL, Setup, image, job, leftover_runs, request, stderr, stdout};

fn vhost_device_vsock() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BENCHER_TEST_VHOST_DEVICE_VSOCK") {
        return Some(PathBuf::from(path));
    }
    let home_bin = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin"));
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(home_bin)
        .map(|dir| dir.join("vhost-device-vsock"))
        .find(|path| path.is_file())
}

fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Result<Setup, String>> = OnceLock::new();
    vm_support::setup(&SETUP, "vm-cache-vsock", || {
        Ok(vhost_device_vsock()
            .map(|path| vec![("BENCHER_QEMU_VHOST_VSOCK", path)])
            .unwrap_or_default())
    })
}

/// Processes of this test's VMs: QEMU by its command line, vhost-device-vsock by its
/// socket's path, a jailed Firecracker by the jail's uid (1 900 000 000 + the runner's
/// pid, here this test's).
fn vm_processes(setup: &Setup) -> Vec<(i32, String)> {
    let needle = setup.cache.to_string_lossy().into_owned();
    let jail_uid = format!("Uid:\t{}\t", 1_900_000_000 + std::process::id());
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let status = fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            (cmdline.contains(&needle) || status.contains(&jail_uid)).then_some((pid, cmdline))
        })
        .collect()
}

#[tokio::test]
async fn the_vsock_channel_firecracker_uses_carries_a_job_under_qemu() {
    let _serial = SERIAL.lock().await;
    let Some(setup) = setup() else { return };
    if vhost_device_vsock().is_none() {
        let reason = "vhost-device-vsock is not installed (cargo install vhost-device-vsock)";
        eprintln!("SKIPPED: {reason}");
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this must run: {reason}"
        );
        return;
    }
    let config = job(
        r#"echo "out $ITER"; echo err >&2; echo "{\"n\": 1}" > result.json; sleep 3"#,
        serde_json::json!({"iter": 2, "file_paths": ["result.json"]}),
    );
    let task = tokio::spawn(executor::execute(
        Sandbox::Qemu,
        request(setup, image(serde_json::json!({"Env": ["ITER=x"]})), config),
        CancellationToken::new(),
    ));
    // While it runs: QEMU has the vhost-user vsock device and no virtio-serial port,
    // served by a vhost-device-vsock of this job.
    let mut seen = Vec::new();
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = vm_processes(setup);
        if seen.iter().any(|(_, c)| c.contains("qemu-system")) || task.is_finished() {
            break;
        }
    }
    let qemu = seen
        .iter()
        .find(|(_, c)| c.contains("qemu-system"))
        .map(|(_, c)| c.clone())
        .expect("the job's QEMU runs");
    assert!(qemu.contains("vhost-user-vsock-device"), "{qemu}");
    // And the guest ends as Firecracker's does: by a reboot, which ends the VMM.
    assert!(qemu.contains("bencher.exit=reboot"), "{qemu}");
    assert!(!qemu.contains("virtserialport"), "{qemu}");
    assert!(
        seen.iter().any(|(_, c)| c.contains("vhost-device-vsock")),
        "{seen:?}"
    );

    let outcome = task.await.unwrap();
    let ExecOutcome::Completed { results } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(results.len(), 2);
    for result in &results {
        assert_eq!(result.exit_code, 0);
        assert_eq!(stdout(result), "out x\n");
        assert_eq!(stderr(result), "err\n");
        let files = result.output.as_ref().unwrap();
        assert_eq!(files["result.json"], "{\"n\": 1}\n");
    }
    assert!(vm_processes(setup).is_empty(), "{:?}", vm_processes(setup));
    assert!(leftover_runs(setup).is_empty());
}

/// The cgroups a jailer made for jails of this test process.
fn leftover_cgroups() -> Vec<PathBuf> {
    let prefix = format!("bencher-vm-{}-", std::process::id());
    let top = Path::new("/sys/fs/cgroup");
    let parents = [
        top.join("firecracker"),
        top.join("cpuset/firecracker"),
        top.join("memory/firecracker"),
    ];
    parents
        .iter()
        .flat_map(|parent| fs::read_dir(parent).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[tokio::test]
async fn firecracker_runs_jobs_in_jailed_microvms_where_the_host_can() {
    let _serial = SERIAL.lock().await;
    let Some(setup) = setup() else { return };
    executor::configure_firecracker(FirecrackerConfig {
        firecracker: std::env::var_os("BENCHER_FIRECRACKER").map(PathBuf::from),
        jailer: std::env::var_os("BENCHER_JAILER").map(PathBuf::from),
        log_level: None,
    });
    let check = tokio::task::spawn_blocking(|| executor::check(Sandbox::Firecracker))
        .await
        .unwrap();
    let capability = match check {
        Ok(capability) => capability,
        Err(reason) => {
            // Not a pass: this host has no Firecracker or no working KVM.
            eprintln!("SKIPPED: sandbox `firecracker` cannot run here: {reason}");
            return;
        }
    };
    eprintln!("firecracker: {}", capability.detail);
    assert_eq!(capability.sandbox, Sandbox::Firecracker);
    let run = |config| {
        executor::execute(
            Sandbox::Firecracker,
            request(setup, image(serde_json::json!({"User": "bench"})), config),
            CancellationToken::new(),
        )
    };

    // Iterations, output, identity, a fresh writable layer, files, no network.
    let config = job(
        r#"echo out; echo err >&2; id -u; ls /sys/class/net | tr '\n' ' '; echo
           [ -e /tmp/seen ] && echo LEAKED; touch /tmp/seen
           echo "{\"n\": 1}" > /tmp/result.json"#,
        serde_json::json!({"iter": 2, "file_paths": ["/tmp/result.json"]}),
    );
    let outcome = run(config).await;
    let ExecOutcome::Completed { results } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(results.len(), 2);
    for result in &results {
        assert_eq!(stdout(result), "out\n1234\nlo \n");
        assert_eq!(stderr(result), "err\n");
        assert_eq!(
            result.output.as_ref().unwrap()["/tmp/result.json"],
            "{\"n\": 1}\n"
        );
    }

    // With network: the job's namespace, slirp4netns, the guest's eth0 configured.
    let mut networked = request(
        setup,
        image(serde_json::json!({})),
        job(
            "cat /etc/resolv.conf; busybox ip -4 addr show dev eth0 | busybox grep -o 'inet [0-9./]*'",
            serde_json::json!({}),
        ),
    );
    networked.resources.network = true;
    let outcome =
        executor::execute(Sandbox::Firecracker, networked, CancellationToken::new()).await;
    let ExecOutcome::Completed { results } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        stdout(&results[0]),
        "nameserver 10.0.2.3\ninet 10.0.2.15/24\n"
    );

    // A failing iteration fails the job after it; a signal is 128 + N.
    let outcome = run(job("kill -TERM $$", serde_json::json!({"iter": 2}))).await;
    let ExecOutcome::Failed { results, error } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].exit_code, 143, "{error}");

    // A timeout kills the VM and leaves nothing: no process, run directory or cgroup.
    let mut config = job("echo started; sleep 1000", serde_json::json!({}));
    config.timeout = 20;
    let outcome = run(config).await;
    let ExecOutcome::TimedOut { results } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(results.last().map(|r| r.exit_code), Some(137));
    assert!(vm_processes(setup).is_empty(), "{:?}", vm_processes(setup));
    assert!(leftover_runs(setup).is_empty());
    assert!(leftover_cgroups().is_empty(), "{:?}", leftover_cgroups());

    // The VMM dying mid-job fails the job at once.
    let task = tokio::spawn(run(job("sleep 1000", serde_json::json!({}))));
    vm_support::a_killed_vmm_fails_the_job(setup, task, "Firecracker", || {
        vm_processes(setup)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    })
    .await;
}
