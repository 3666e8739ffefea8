//! End to end through real processes: a real server (bencher_server on 127.0.0.1:0,
//! SQLite and PostgreSQL), a job submitted over REST for an image in its registry, and
//! the real `runner` binary claiming it over its WebSocket, pulling the image, running
//! it without a sandbox (`--danger-allow-no-sandbox`) and reporting the output.

mod common;

use bencher_test_support::reqwest::Method;
use bencher_test_support::{Backend, TestServer, backend_tests};
use common::{
    E2E_REPO, Runner, bmf, get, job, post, print_bmf, privileged, push_host_image, register_runner,
    run_job, submit,
};
use serde_json::{Value, json};

backend_tests!(
    a_job_runs_end_to_end,
    build_time_and_file_size_become_metrics,
    large_output_is_uploaded,
    specs_the_runner_cannot_serve_are_never_claimed,
    a_sandboxed_job_runs_in_a_container,
    an_image_regression_raises_an_alert,
    the_environment_is_recorded_and_changes_are_marked
);

async fn a_job_runs_end_to_end(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start(backend).await;
    push_host_image(&server).await;
    let key = register_runner(&server).await;
    let runner = Runner::start(&server, &key);

    // Two iterations, stdout and stderr, reported back and stored by the server.
    let job = run_job(
        &server,
        json!({ "image": format!("{E2E_REPO}:v1"), "spec": "host", "cmd": ["/bin/sh", "-c", format!("{}; echo oops >&2", print_bmf("hello"))], "iter": 2 }),
        &["processed", "failed", "canceled"],
    )
    .await;
    // Run, reported, and turned into a report by the server.
    assert_eq!(job["status"], "processed", "{job}");
    assert!(
        !job["runner"].is_null(),
        "the job records its runner: {job}"
    );
    let results = job["output"]
        .as_array()
        .unwrap_or_else(|| panic!("no output: {job}"));
    assert_eq!(results.len(), 2, "{job}");
    for result in results {
        assert_eq!(result["exit_code"], 0);
        assert_eq!(result["stdout"], format!("{}\n", bmf("hello")));
        assert_eq!(result["stderr"], "oops\n");
    }

    // A failing benchmark fails the job with its exit code; the runner goes on. No Spec
    // named: the testbed's, recorded by the first job, is used.
    let job = run_job(
        &server,
        json!({ "image": format!("{E2E_REPO}:v1"), "cmd": ["/bin/sh", "-c", "echo partial; exit 3"] }),
        &["completed", "failed", "canceled"],
    )
    .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["output"][0]["exit_code"], 3, "{job}");
    assert_eq!(job["output"][0]["stdout"], "partial\n", "{job}");

    // The runner shows as idle, then drains on SIGTERM and exits 0, never logging its key.
    let view: Value = server
        .request(Method::GET, "/v0/runners/e2e")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["state"], "idle", "{view}");
    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains(&key), "the runner key must never be logged");
    server.stop().await;
}

/// A job asking for `build_time` and `file_size`: the runner measures the command and
/// the named file, and the server turns both into `build-time` and `file-size` metrics
/// of the report, beside the adapter's.
async fn build_time_and_file_size_become_metrics(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start(backend).await;
    push_host_image(&server).await;
    let key = register_runner(&server).await;
    let runner = Runner::start(&server, &key);

    let script = format!(
        "sleep 0.2; head -c 3000 /dev/zero > /tmp/app; {}",
        print_bmf("hello")
    );
    let done = run_job(
        &server,
        json!({
            "image": format!("{E2E_REPO}:v1"), "spec": "host",
            "cmd": ["/bin/sh", "-c", script], "iter": 2,
            "build_time": true, "file_size": true, "file_paths": ["/tmp/app"],
        }),
        &["processed", "failed", "canceled"],
    )
    .await;
    assert_eq!(done["status"], "processed", "{done}");
    for result in done["output"].as_array().unwrap() {
        assert!(
            result["build_time_ns"]
                .as_u64()
                .is_some_and(|n| n >= 200_000_000),
            "{result}"
        );
        assert_eq!(
            result["file_sizes"],
            json!({ "/tmp/app": 3000 }),
            "{result}"
        );
    }

    let report = done["report"].as_str().unwrap();
    let report = get(
        &server,
        &format!("/v0/projects/{E2E_REPO}/reports/{report}"),
    )
    .await;
    let iterations = report["results"].as_array().unwrap();
    assert_eq!(iterations.len(), 2, "{report}");
    // The build-time benchmark is the command as the job gave it.
    let command = format!("/bin/sh -c {script}");
    for iteration in iterations {
        let mut metrics = std::collections::BTreeMap::new();
        for benchmark in iteration.as_array().unwrap() {
            for measure in benchmark["measures"].as_array().unwrap() {
                metrics.insert(
                    (
                        benchmark["benchmark"]["name"].as_str().unwrap().to_owned(),
                        measure["measure"]["slug"].as_str().unwrap().to_owned(),
                    ),
                    measure["metric"]["value"].as_f64().unwrap(),
                );
            }
        }
        let value = |benchmark: &str, measure: &str| {
            metrics
                .get(&(benchmark.to_owned(), measure.to_owned()))
                .copied()
                .unwrap_or_else(|| panic!("no {benchmark} {measure}: {report}"))
        };
        assert_eq!(metrics.len(), 3, "{report}");
        assert_eq!(value("hello", "latency"), 1.0);
        assert!(value(&command, "build-time") >= 0.2, "{report}");
        assert_eq!(value("/tmp/app", "file-size"), 3000.0);
    }
    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    server.stop().await;
}

/// Output larger than a channel message (the server's 16 MiB request limit) is uploaded
/// over HTTP first (protocol extension `upload`) and nothing of it is lost.
async fn large_output_is_uploaded(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start(backend).await;
    push_host_image(&server).await;
    let key = register_runner(&server).await;
    let runner = Runner::start(&server, &key);

    let job = run_job(
        &server,
        json!({ "image": format!("{E2E_REPO}:v1"), "spec": "host", "cmd": ["/bin/sh", "-c", format!("{}; head -c 20000000 /dev/zero | tr '\\0' ' '", print_bmf("big"))] }),
        &["processed", "failed", "canceled"],
    )
    .await;
    // Benchmark output padded to 20 MB (JSON allows the trailing whitespace), stored in
    // full and processed.
    assert_eq!(job["status"], "processed", "{}", job["error"]);
    let stdout = job["output"][0]["stdout"].as_str().unwrap_or_default();
    let head = format!("{}\n", bmf("big"));
    assert_eq!(stdout.len(), head.len() + 20_000_000, "{}", job["error"]);
    assert!(stdout.starts_with(&head));
    assert!(stdout[head.len()..].bytes().all(|b| b == b' '));
    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("output uploaded"), "{log}");
    server.stop().await;
}

/// The runner announces what it can run (extension `capabilities`) and the server never
/// dispatches it a job of a Spec it cannot serve: the older job, for a Spec larger than
/// any host, stays pending while a younger one for the host runs. The runner says why.
async fn specs_the_runner_cannot_serve_are_never_claimed(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start(backend).await;
    push_host_image(&server).await;
    let key = register_runner(&server).await;
    let arch = if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else {
        "x86_64"
    };
    post(
        &server,
        "/v0/specs",
        json!({ "name": "Huge", "slug": "huge", "os": "linux", "architecture": arch, "cpu": 4096, "memory": 1 << 30, "disk": 1 << 30 }),
    )
    .await;
    post(&server, "/v0/runners/e2e/specs", json!({ "spec": "huge" })).await;
    // Submitted first: without the gate, the runner would claim it first (oldest first).
    let huge = submit(
        &server,
        json!({ "image": format!("{E2E_REPO}:v1"), "spec": "huge", "cmd": ["/bin/true"] }),
    )
    .await;
    let runner = Runner::start(&server, &key);
    let done = run_job(
        &server,
        json!({ "image": format!("{E2E_REPO}:v1"), "spec": "host", "cmd": ["/bin/sh", "-c", print_bmf("served")] }),
        &["processed", "failed", "canceled"],
    )
    .await;
    assert_eq!(done["status"], "processed", "{done}");
    assert_eq!(job(&server, &huge).await["status"], "pending");
    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("not serving this Spec") && log.contains("the Spec has 4096 CPUs"),
        "the runner says which Spec it does not serve and why: {log}"
    );
    server.stop().await;
}

/// A Spec with sandbox `container`: a runner started without
/// `--danger-allow-no-sandbox` runs the job under runc and the output becomes a report.
/// Needs runc (CI installs it); skipped with the reason when this host cannot run it.
async fn a_sandboxed_job_runs_in_a_container(backend: Backend) {
    if !privileged() {
        return;
    }
    if let Err(reason) =
        bencher_runner::executor::check(bencher_runner::executor::Sandbox::Container)
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run sandbox `container`: {reason}"
        );
        eprintln!("SKIPPED: sandbox `container` is not available here: {reason}");
        return;
    }
    let server = TestServer::start(backend).await;
    push_host_image(&server).await;
    let arch = if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else {
        "x86_64"
    };
    post(
        &server,
        "/v0/specs",
        json!({ "name": "Container", "slug": "container", "os": "linux", "architecture": arch, "sandbox": "container", "cpu": 1, "memory": 1 << 30, "disk": 1 << 30 }),
    )
    .await;
    let runner = post(
        &server,
        "/v0/runners",
        json!({ "name": "boxed", "slug": "boxed" }),
    )
    .await;
    post(
        &server,
        "/v0/runners/boxed/specs",
        json!({ "spec": "container" }),
    )
    .await;
    let key = runner["key"].as_str().unwrap().to_owned();
    let runner = Runner::start_sandboxed(&server, "boxed", &key);
    let done = run_job(
        &server,
        json!({ "image": format!("{E2E_REPO}:v1"), "spec": "container", "cmd": ["/bin/sh", "-c", print_bmf("boxed")], "iter": 2 }),
        &["processed", "failed", "canceled"],
    )
    .await;
    assert_eq!(done["status"], "processed", "{done}");
    for result in done["output"].as_array().unwrap() {
        assert_eq!(result["stdout"], format!("{}\n", bmf("boxed")));
    }
    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    server.stop().await;
}

/// The `bencher` CLI binary of this workspace, built (or found up to date) by cargo in
/// the target directory of this test's own binaries: a package's tests only get its own
/// binaries from cargo.
fn bencher_cli() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let runner = std::path::Path::new(env!("CARGO_BIN_EXE_runner"));
            let profile_dir = runner.parent().expect("the runner's directory");
            let target_dir = profile_dir.parent().expect("the target directory");
            let mut cargo = std::process::Command::new(env!("CARGO"));
            cargo
                .args(["build", "--quiet", "-p", "bencher_cli", "--bin", "bencher"])
                .arg("--target-dir")
                .arg(target_dir);
            if profile_dir.file_name() == Some("release".as_ref()) {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("run cargo");
            assert!(status.success(), "cargo build -p bencher_cli failed");
            profile_dir.join("bencher")
        })
        .clone()
}

/// `bencher run --image` of a benchmark printing `fib`'s latency `value`, followed to
/// its report, with a t-test threshold set by the run and `--err`.
async fn bencher_run(server: &TestServer, value: &str) -> std::process::Output {
    let env = format!("VALUE={value}");
    tokio::process::Command::new(bencher_cli())
        .args([
            "run",
            "--image",
            &format!("{E2E_REPO}:v1"),
            "--project",
            E2E_REPO,
        ])
        .args(["--spec", "host", "--adapter", "json", "--env", &env])
        .args([
            "--threshold-measure",
            "latency",
            "--threshold-test",
            "t_test",
        ])
        .args([
            "--threshold-upper-boundary",
            "0.99",
            "--err",
            "--job-poll-interval",
            "1",
        ])
        .args(["--", "/bin/sh", "-c"])
        .arg(r#"echo "{\"fib\": {\"latency\": {\"value\": $VALUE}}}""#)
        .env_remove("BENCHER_FORMAT")
        .env_remove("BENCHER_PROJECT")
        .env("BENCHER_HOST", server.url.as_str())
        .env("BENCHER_API_TOKEN", server.admin_token.expose_secret())
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run bencher")
}

/// The issue's scenario with real processes: a baseline built by running an image
/// through a runner several times, then a 20% regression: the alert, `--err` failing
/// the CLI, the Spec on the report, and the history before and after it.
async fn an_image_regression_raises_an_alert(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start(backend).await;
    push_host_image(&server).await;
    let key = register_runner(&server).await;
    let runner = Runner::start(&server, &key);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

    for value in ["100", "101", "99", "100.5", "99.5"] {
        let output = bencher_run(&server, value).await;
        assert!(
            output.status.success(),
            "{}\n{}",
            text(&output.stdout),
            text(&output.stderr)
        );
    }
    let perf = format!(
        "/v0/projects/{E2E_REPO}/perf?branches=main&testbeds=localhost&benchmarks=fib&measures=latency"
    );
    let before = common::get(&server, &perf).await;
    let points = before["results"][0]["metrics"]
        .as_array()
        .expect("points")
        .clone();
    assert_eq!(points.len(), 5, "{before}");
    assert!(
        points
            .iter()
            .all(|p| p["alert"].is_null() && p["spec"]["slug"] == "host")
    );

    let output = bencher_run(&server, "120").await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("1 alert(s)"), "{stderr}");
    assert!(stdout.contains("spec `host`, alerts: 1"), "{stdout}");
    assert!(stdout.contains("upper (active)"), "{stdout}");

    // The history: the same five points, unchanged, then the regression with its alert.
    let after = common::get(&server, &perf).await;
    let series = after["results"][0]["metrics"].as_array().expect("points");
    assert_eq!(series.len(), 6, "{after}");
    assert_eq!(series[..5], points[..]);
    let regression = &series[5];
    assert_eq!(regression["metric"]["value"], 120.0);
    assert_eq!(regression["spec"]["slug"], "host");
    assert_eq!(regression["alert"]["side"], "upper", "{regression}");
    let report = common::get(
        &server,
        &format!(
            "/v0/projects/{E2E_REPO}/reports/{}",
            regression["report"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(report["spec"]["slug"], "host");
    assert!(!report["job"].is_null(), "{report}");

    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    server.stop().await;
}

/// Every report of a job carries what it was measured on (the runner's noise probe and
/// fingerprint, tuning state included), and a report whose fingerprint differs from its
/// baseline's is marked: here the runner restarts with another swappiness.
async fn the_environment_is_recorded_and_changes_are_marked(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start(backend).await;
    push_host_image(&server).await;
    let key = register_runner(&server).await;
    let report_of = |job: &Value| {
        format!(
            "/v0/projects/{E2E_REPO}/reports/{}",
            job["report"].as_str().unwrap()
        )
    };
    let bench = || json!({ "image": format!("{E2E_REPO}:v1"), "spec": "host", "cmd": ["/bin/sh", "-c", print_bmf("env")] });

    let runner = Runner::start(&server, &key);
    let first = run_job(&server, bench(), &["processed", "failed", "canceled"]).await;
    assert_eq!(first["status"], "processed", "{first}");
    let report = common::get(&server, &report_of(&first)).await;
    let environment = &report["environment"];
    assert!(environment["noise"]["cpu"]["cv"].is_number(), "{report}");
    assert!(
        environment["noise"]["timer"]["p99_ns"].is_number(),
        "{report}"
    );
    let fingerprint = &environment["fingerprint"];
    assert_eq!(fingerprint["sandbox"], "none", "{fingerprint}");
    assert_eq!(fingerprint["tuning"]["kind"], "applied", "{fingerprint}");
    assert!(
        fingerprint["cpus"].as_u64().is_some_and(|n| n >= 1),
        "{fingerprint}"
    );
    assert!(
        report["environment_changed"].is_null(),
        "no baseline: {report}"
    );

    let second = run_job(&server, bench(), &["processed", "failed", "canceled"]).await;
    let report = common::get(&server, &report_of(&second)).await;
    assert_eq!(report["environment_changed"], false, "{report}");
    let (code, log, dirs) = runner.stop_keeping_dirs().await;
    assert_eq!(code, Some(0), "{log}");

    // The same runner, directories and all (the fingerprint names them: tests tune a fake
    // tree), with one knob asked otherwise.
    let runner = Runner::start_with(&server, &key, dirs, &["--swappiness", "20"]);
    let third = run_job(&server, bench(), &["processed", "failed", "canceled"]).await;
    let report = common::get(&server, &report_of(&third)).await;
    assert_eq!(report["environment_changed"], true, "{report}");
    // Lists say whether it changed, without the environment itself.
    let list = common::get(&server, &format!("/v0/projects/{E2E_REPO}/reports")).await;
    let listed: Vec<&Value> = list.as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|r| r["environment"].is_null()));
    assert_eq!(
        listed
            .iter()
            .filter(|r| r["environment_changed"] == true)
            .count(),
        1
    );
    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    server.stop().await;
}
