//! Sandbox `qemu` end to end: real QEMU (`microvm`, TCG on machines without hardware
//! virtualisation), the host's Debian kernel, and the real static `bencher-init`,
//! which this test builds (`cargo build -p bencher_init` with `+crt-static`, in its own
//! target directory so the flag reaches nothing else). The image's root filesystem is
//! built from the host's own binaries and the libraries `ldd` lists. IO: the build, a
//! root filesystem and a VM cache under the target's temp dir, the VMs.
//!
//! Each boot costs about 2 s under TCG, so the scenarios are grouped into few jobs.
//! Without QEMU or a kernel every test prints why it is skipped, and under `CI` fails.

use std::collections::BTreeMap;
use std::fs;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bencher_runner::executor::{self, ExecOutcome, ExecRequest, Sandbox};
use tokio_util::sync::CancellationToken;

mod host_service;
mod vm_support;
use vm_support::{SERIAL, Setup, image, job, leftover_runs, request, stderr, stdout};

fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Result<Setup, String>> = OnceLock::new();
    vm_support::setup(&SETUP, "vm-cache", || Ok(Vec::new()))
}

async fn run(request: ExecRequest) -> ExecOutcome {
    executor::execute(Sandbox::Qemu, request, CancellationToken::new()).await
}

/// `Cpus_allowed_list` of every thread of the QEMU processes of this test's VM cache.
fn qemu_thread_cpus(cache: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.contains("qemu-system") && cmdline.contains(cache)
            })
        })
        .flat_map(|entry| {
            fs::read_dir(entry.path().join("task"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|task| {
            let status = fs::read_to_string(task.path().join("status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        })
        .collect()
}

/// QEMU processes of this test's VM cache still running.
fn leftover_vms(setup: &Setup) -> Vec<String> {
    let needle = setup.cache.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("qemu-system") && cmdline.contains(&needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[tokio::test]
async fn check_boots_a_tiny_guest_and_says_how() {
    let _serial = SERIAL.lock().await;
    let Some(_setup) = setup() else { return };
    let capability = tokio::task::spawn_blocking(|| executor::check(Sandbox::Qemu))
        .await
        .unwrap()
        .expect("QEMU guests boot here");
    assert_eq!(capability.sandbox, Sandbox::Qemu);
    assert!(capability.isolates_network && capability.enforces_resources);
    assert!(capability.detail.contains("accel"), "{}", capability.detail);
    eprintln!("qemu: {}", capability.detail);
}

/// Iterations, stdout/stderr, env, working directory, user, a fresh writable layer per
/// iteration, output files and no network: one boot.
#[tokio::test]
async fn iterations_output_identity_and_isolation_in_one_boot() {
    let _serial = SERIAL.lock().await;
    let Some(setup) = setup() else { return };
    let script = r#"
        echo "out $ITER_MARK"; echo "err" >&2
        id -u; id -g; id -G; pwd; echo "HOME=$HOME"
        ls /sys/class/net; cat /sys/class/net/lo/flags
        cat /etc/image-file
        if [ -e /tmp/seen ] || [ -e seen ]; then echo "STATE LEAKED"; fi
        touch /tmp/seen seen 2>/dev/null || echo "cannot write the working directory"
        echo "{\"n\": 1}" > result.json
    "#;
    let bench_image = image(serde_json::json!({
        "User": "bench", "WorkingDir": "/home/bench", "Env": ["ITER_MARK=image", "KEEP=1"],
    }));
    let config = job(
        script,
        serde_json::json!({"iter": 2, "env": {"ITER_MARK": "job"}, "file_paths": ["result.json"]}),
    );
    let outcome = run(request(setup, bench_image, config)).await;
    let ExecOutcome::Completed { results } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(results.len(), 2);
    for result in &results {
        assert_eq!(result.exit_code, 0);
        let out = stdout(result);
        assert!(out.starts_with("out job\n1234\n2345\n"), "{out}");
        assert!(
            out.contains("\n2345 3456\n/home/bench\nHOME=/home/bench\n"),
            "{out}"
        );
        // No network device but the loopback, which is up (IFF_UP | IFF_LOOPBACK).
        assert!(out.contains("\nlo\n0x9\nfrom the image\n"), "{out}");
        assert!(!out.contains("STATE LEAKED"), "{out}");
        assert!(!out.contains("cannot write"), "{out}");
        assert_eq!(stderr(result), "err\n");
        let files = result.output.as_ref().unwrap();
        assert_eq!(
            files,
            &BTreeMap::from([("result.json".into(), "{\"n\": 1}\n".into())])
        );
    }
    assert!(leftover_runs(setup).is_empty());

    // Nothing the job wrote reaches the next job, and the image's files are unchanged.
    // The same boot checks CPU placement (host tuning's benchmark CPUs): QEMU and every
    // thread of it (vCPU and I/O threads) run only on the CPU it is given, here the
    // last online one, watched from the host while the guest runs. Affinity only: no
    // host setting changes.
    let config = job(
        "ls -a /home/bench /tmp; if [ -e /home/bench/seen ]; then echo LEAKED; fi",
        serde_json::json!({}),
    );
    let mut placed = request(setup, image(serde_json::json!({})), config);
    let online = bencher_runner::tuning::knob::parse_cpu_list(
        &fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default(),
    )
    .unwrap_or_default();
    let pinned = online.last().copied().filter(|_| online.len() >= 2);
    placed.placement = pinned.map(|cpu| executor::Placement {
        cpus: vec![cpu],
        cgroup: None,
        oci_parent: None,
    });
    let watching = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let watching = watching.clone();
        let cache = setup.cache.to_string_lossy().into_owned();
        async move {
            let mut seen = std::collections::BTreeSet::new();
            while !watching.is_cancelled() {
                seen.extend(qemu_thread_cpus(&cache));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        }
    });
    let outcome = run(placed).await;
    watching.cancel();
    let seen = watcher.await.unwrap();
    match pinned {
        Some(cpu) => {
            assert!(!seen.is_empty(), "QEMU's threads were never seen running");
            assert_eq!(seen, std::collections::BTreeSet::from([cpu.to_string()]));
        }
        None => eprintln!("SKIPPED (placement part): one online CPU, nothing to pin to"),
    }
    let ExecOutcome::Completed { results } = outcome else {
        panic!("{outcome:?}");
    };
    let out = stdout(&results[0]);
    assert!(!out.contains("LEAKED") && !out.contains("seen"), "{out}");
    assert!(!setup.rootfs.join("home/bench/seen").exists());
}

/// Exit codes, signals and allow_failure; build time and file sizes, measured in the
/// guest when asked (and absent when not); a job filling its disk gets ENOSPC from
/// the guest's scratch disk of the Spec's size, and the next iteration the whole disk
/// again.
#[tokio::test]
async fn exit_codes_signals_and_allow_failure() {
    const DISK: u64 = 64 << 20;
    let _serial = SERIAL.lock().await;
    let Some(setup) = setup() else { return };
    // A signal is 128 + N; with allow_failure every iteration runs. A command that
    // ended, even by a signal, has a wall time and its files' sizes.
    // (The fill comes after /app: a full disk would fail that write.)
    let config = job(
        "sleep 0.2; head -c 3000 /dev/zero > /app; \
         head -c 1000000000 /dev/zero > /fill; echo fill $? $(wc -c < /fill); kill -TERM $$",
        serde_json::json!({
            "iter": 2, "allow_failure": true, "build_time": true, "file_size": true,
            "file_paths": ["/app", "missing"],
        }),
    );
    let mut request_measured = request(setup, image(serde_json::json!({})), config);
    // Sizes are not contents: the output limit does not apply to them.
    request_measured.limits.max_output_size = 1000;
    request_measured.resources.disk = DISK;
    let outcome = run(request_measured).await;
    let ExecOutcome::Completed { results } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        results.iter().map(|r| r.exit_code).collect::<Vec<_>>(),
        [143, 143]
    );
    for result in &results {
        // At least the 0.2 s the command slept; the boot is not in it, but only a
        // lower bound is asserted.
        let nanos = result.build_time_ns.expect("a build time");
        assert!(nanos >= 200_000_000, "{nanos} ns");
        assert_eq!(
            result.file_sizes,
            Some(BTreeMap::from([("/app".to_owned(), 3000)]))
        );
        assert_eq!(result.output, None);
        // The fill failed inside the guest with the error in stderr, having written
        // most of the disk and never more.
        assert!(
            stderr(result).contains("No space left on device"),
            "{result:?}"
        );
        let written: u64 = stdout(result)
            .strip_prefix("fill 1 ")
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("{result:?}"));
        assert!(written > DISK / 2 && written <= DISK, "{written}");
    }
    assert!(leftover_runs(setup).is_empty());

    // Without it, the first failure ends the job.
    let config = job("echo ran; exit 3", serde_json::json!({"iter": 3}));
    let outcome = run(request(setup, image(serde_json::json!({})), config)).await;
    let ExecOutcome::Failed { results, error } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].exit_code, 3);
    assert_eq!(stdout(&results[0]), "ran\n");
    // Not asked for: not measured.
    assert_eq!(results[0].build_time_ns, None);
    assert_eq!(results[0].file_sizes, None);
    assert!(
        error.contains("iteration 1 of 3: the command exited with code 3"),
        "{error}"
    );
}

/// Output past the cap is dropped with the marker; a missing output file after a zero
/// exit fails the job; a file outside the root cannot be reached.
#[tokio::test]
async fn output_caps_and_file_rules() {
    let _serial = SERIAL.lock().await;
    let Some(setup) = setup() else { return };
    let mut request = request(
        setup,
        image(serde_json::json!({})),
        job(
            "head -c 300000 /dev/zero | tr '\\0' x; ln -s /../../etc/image-file link",
            serde_json::json!({"file_paths": ["link", "missing"]}),
        ),
    );
    request.limits.max_output_size = 1000;
    let outcome = run(request).await;
    let ExecOutcome::Failed { results, error } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(
        error.contains("output file `missing` does not exist"),
        "{error}"
    );
    let out = stdout(&results[0]);
    assert!(out.starts_with(&"x".repeat(1000)), "{out}");
    assert!(
        out.contains("[bencher: output truncated after 1000 bytes"),
        "{out}"
    );
}

/// A timeout kills the VM, reports 137 with the output so far, leaves nothing behind.
#[tokio::test]
async fn timeout_and_cancel_kill_the_vm_and_leave_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(setup) = setup() else { return };
    let mut config = job("echo started; sleep 1000", serde_json::json!({}));
    config.timeout = 20;
    let outcome = run(request(setup, image(serde_json::json!({})), config)).await;
    let ExecOutcome::TimedOut { results } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(results.last().map(|r| r.exit_code), Some(137));

    let cancel = CancellationToken::new();
    let config = job("echo started; sleep 1000", serde_json::json!({}));
    let task = tokio::spawn(executor::execute(
        Sandbox::Qemu,
        request(setup, image(serde_json::json!({})), config),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let canceled = Instant::now();
    cancel.cancel();
    let outcome = task.await.unwrap();
    assert!(
        matches!(outcome, ExecOutcome::Canceled { .. }),
        "{outcome:?}"
    );
    eprintln!("cancel took {:?}", canceled.elapsed());
    assert!(leftover_vms(setup).is_empty(), "{:?}", leftover_vms(setup));
    assert!(
        leftover_runs(setup).is_empty(),
        "{:?}",
        leftover_runs(setup)
    );
}

/// With network: the job's own namespace with slirp4netns behind a bridge. The guest's
/// `eth0` has slirp's address and default route, the job's resolver is slirp's, the
/// host's network is reached by the host's address, and the host's loopback is not.
#[tokio::test]
async fn with_network_the_guest_reaches_the_host_but_not_its_loopback() {
    let _serial = SERIAL.lock().await;
    let Some(setup) = setup() else { return };
    let service = match host_service::start(&setup.rootfs) {
        Ok(service) => service,
        Err(reason) => return host_service::skip(&reason),
    };
    let script = format!(
        "cat /etc/resolv.conf
         busybox ip -4 addr show dev eth0 | busybox grep -o 'inet [0-9./]*'
         busybox ip route | busybox grep default
         {}",
        service.script()
    );
    let mut with_network = request(
        setup,
        image(serde_json::json!({})),
        job(&script, serde_json::json!({})),
    );
    with_network.resources.network = true;
    let outcome = run(with_network).await;
    let ExecOutcome::Completed { results } = outcome else {
        panic!("{outcome:?}");
    };
    let out = stdout(&results[0]);
    assert!(out.contains("nameserver 10.0.2.3\n"), "{out}");
    assert!(out.contains("inet 10.0.2.15/24"), "{out}");
    assert!(out.contains("default via 10.0.2.2"), "{out}");
    assert!(out.contains(host_service::GREETING), "{out}");
    assert!(out.contains(host_service::LOOPBACK_REFUSED), "{out}");
    // The namespace's slirp4netns went with the job.
    let ours = std::process::id().to_string();
    let slirps: Vec<_> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            let status = fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            status.lines().any(|l| l == "Name:\tslirp4netns")
                && status
                    .lines()
                    .any(|l| l.strip_prefix("PPid:").is_some_and(|p| p.trim() == ours))
        })
        .collect();
    assert!(slirps.is_empty(), "{slirps:?}");
}

/// The VMM dying mid-job fails the job at once, naming it.
#[tokio::test]
async fn a_killed_vmm_fails_the_job_at_once() {
    let _serial = SERIAL.lock().await;
    let Some(setup) = setup() else { return };
    // The probe boots first, so the QEMU killed below is the job's.
    let capability = tokio::task::spawn_blocking(|| executor::check(Sandbox::Qemu));
    capability.await.unwrap().expect("QEMU guests boot here");
    let config = job("echo started; sleep 1000", serde_json::json!({}));
    let task = tokio::spawn(run(request(setup, image(serde_json::json!({})), config)));
    vm_support::a_killed_vmm_fails_the_job(setup, task, "QEMU", || qemu_pids(setup)).await;
}

fn qemu_pids(setup: &Setup) -> Vec<i32> {
    let needle = setup.cache.to_string_lossy().into_owned();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("qemu-system") && cmdline.contains(&needle)).then_some(pid)
        })
        .collect()
}
