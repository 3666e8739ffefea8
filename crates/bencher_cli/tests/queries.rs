//! End-to-end tests of `bencher report`, `bencher threshold`, `bencher alert` and
//! `bencher perf`: the real binary against a real server on 127.0.0.1:0, on SQLite and
//! on PostgreSQL. Reports are made as the server makes them (`Store::create_run`) and
//! filled through `Store::write_report`, the write processing uses.

use std::process::Output;

use bencher_server::store::jobs::NewRun;
use bencher_server::store::reports::{NewBoundary, NewMetric, ReportWrite};
use bencher_test_support::{Backend, TestServer, backend_tests};
use bencher_types::protocol::JobConfig;
use bencher_types::{JsonNewProject, ProjectUuid};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

async fn bencher(server: &TestServer, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_bencher"))
        .args(args)
        .env_remove("BENCHER_FORMAT")
        .env("BENCHER_HOST", server.url.as_str())
        .env("BENCHER_API_TOKEN", server.admin_token.expose_secret())
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run bencher")
}

#[track_caller]
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "bencher failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[track_caller]
fn fails(output: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
}

#[track_caller]
fn json(output: &Output) -> Value {
    let text = ok(output);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap() + TimeDelta::minutes(minutes)
}

fn metric(benchmark: &str, measure: &str, value: f64) -> NewMetric {
    NewMetric {
        iteration: 0,
        benchmark: benchmark.into(),
        measure: measure.into(),
        value,
        lower_value: None,
        upper_value: None,
    }
}

/// A run on `main`/`localhost` at `minutes`, with its results written. Returns the
/// report's UUID.
async fn seed(
    server: &TestServer,
    project: ProjectUuid,
    minutes: i64,
    hash: &str,
    metrics: &[NewMetric],
    boundaries: &[NewBoundary],
) -> String {
    let store = server.store();
    let job = store
        .create_run(
            &NewRun {
                project,
                branch: "main".parse().unwrap(),
                testbed: "localhost".parse().unwrap(),
                spec: None,
                adapter: None,
                hash: Some(hash.parse().unwrap()),
                fold: None,
                config: JobConfig {
                    registry: "http://localhost:6610".into(),
                    project,
                    digest: format!("sha256:{}", "a".repeat(64)),
                    image: None,
                    entrypoint: None,
                    cmd: None,
                    env: None,
                    timeout: 60,
                    file_paths: None,
                    build_time: None,
                    file_size: None,
                    iter: Some(1),
                    allow_failure: None,
                },
                thresholds: Vec::new(),
                priority: 0,
            },
            at(minutes),
        )
        .await
        .unwrap();
    let report = job.report.to_string();
    assert!(
        store
            .write_report(
                &ReportWrite {
                    report: &report,
                    project,
                    job: None,
                    start_time: Some(at(minutes)),
                    end_time: Some(at(minutes) + TimeDelta::seconds(5)),
                    iterations: 1,
                    metrics,
                    boundaries,
                    environment: None,
                    environment_changed: None,
                },
                at(minutes) + TimeDelta::seconds(6),
            )
            .await
            .unwrap()
    );
    report
}

backend_tests!(reports_thresholds_alerts_and_perf);

async fn reports_thresholds_alerts_and_perf(backend: Backend) {
    let server = TestServer::start(backend).await;
    let project = server
        .store()
        .create_project(
            &JsonNewProject {
                name: "Bench".parse().unwrap(),
                slug: None,
            },
            server.clock.now(),
        )
        .await
        .unwrap()
        .uuid;
    ok(&bencher(
        &server,
        &[
            "spec",
            "create",
            "--name",
            "Intel v1",
            "--os",
            "linux",
            "--architecture",
            "x86_64",
            "--cpu",
            "4",
            "--memory",
            "48GiB",
            "--disk",
            "128GiB",
            "--fallback",
        ],
    )
    .await);
    let first = seed(
        &server,
        project,
        0,
        "aaaa0001",
        &[metric("fib", "latency", 10.0)],
        &[],
    )
    .await;

    // Thresholds: create (a model the server refuses is a clear error), list, view,
    // update, delete.
    fails(
        &bencher(
            &server,
            &[
                "threshold",
                "create",
                "bench",
                "--branch",
                "main",
                "--testbed",
                "localhost",
                "--measure",
                "latency",
                "--test",
                "t_test",
                "--upper-boundary",
                "2.0",
            ],
        )
        .await,
        1,
        "confidence level",
    );
    fails(
        &bencher(
            &server,
            &[
                "threshold",
                "create",
                "bench",
                "--branch",
                "main",
                "--testbed",
                "localhost",
                "--measure",
                "latency",
                "--test",
                "t-test",
                "--upper-boundary",
                "0.9",
            ],
        )
        .await,
        2,
        "unknown threshold test",
    );
    fails(
        &bencher(
            &server,
            &[
                "threshold",
                "create",
                "bench",
                "--branch",
                "main",
                "--testbed",
                "localhost",
                "--measure",
                "latency",
                "--test",
                "static",
                "--upper-boundary",
                "inf",
            ],
        )
        .await,
        2,
        "not a finite number",
    );
    let created = json(
        &bencher(
            &server,
            &[
                "threshold",
                "create",
                "bench",
                "--branch",
                "main",
                "--testbed",
                "localhost",
                "--measure",
                "latency",
                "--test",
                "static",
                "--lower-boundary",
                "0",
                "--upper-boundary",
                "11",
                "--format",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(created["measure"]["slug"], "latency");
    assert_eq!(created["model"]["test"], "static");
    let threshold = created["uuid"].as_str().unwrap().to_owned();
    let model = created["model"]["uuid"].as_str().unwrap().to_owned();
    let listed = ok(&bencher(&server, &["threshold", "list", "bench"]).await);
    assert!(
        listed.contains(&threshold) && listed.contains("1 of 1 threshold"),
        "{listed}"
    );
    let viewed = ok(&bencher(&server, &["threshold", "view", "bench", &threshold]).await);
    assert!(viewed.contains("upper boundary:  11"), "{viewed}");

    // A regression against it, and the report that shows it.
    let second = seed(
        &server,
        project,
        10,
        "aaaa0002",
        &[
            metric("fib", "latency", 12.5),
            metric("sort", "latency", 3.0),
        ],
        &[NewBoundary {
            metric: 0,
            threshold: threshold.clone(),
            model: model.clone(),
            baseline: None,
            lower_limit: Some(0.0),
            upper_limit: Some(11.0),
            alert: Some("upper"),
        }],
    )
    .await;
    let reports = ok(&bencher(&server, &["report", "list", "bench"]).await);
    let (at_second, at_first) = (
        reports.find(&second).unwrap(),
        reports.find(&first).unwrap(),
    );
    assert!(at_second < at_first, "newest first: {reports}");
    assert!(
        reports.contains("2 of 2 reports") && reports.contains("2 (aaaa0002)"),
        "{reports}"
    );
    let page = json(
        &bencher(
            &server,
            &[
                "report",
                "list",
                "bench",
                "--per-page",
                "1",
                "--direction",
                "asc",
                "--format",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["uuid"], first.as_str());
    fails(
        &bencher(&server, &["report", "list", "bench", "--branch", "nothing"]).await,
        1,
        "branch `nothing` not found",
    );
    let view = ok(&bencher(&server, &["report", "view", "bench", &second]).await);
    for needle in [
        "main",
        "localhost",
        "intel-v1",
        "fib",
        "sort",
        "12.5",
        "upper (active)",
    ] {
        assert!(view.contains(needle), "`{needle}` missing: {view}");
    }
    let report = json(
        &bencher(
            &server,
            &["report", "view", "bench", &second, "--format", "json"],
        )
        .await,
    );
    assert_eq!(
        report["results"][0][0]["measures"][0]["boundary"]["upper_limit"],
        11.0
    );
    fails(
        &bencher(
            &server,
            &[
                "report",
                "view",
                "bench",
                "67e55044-10b1-426f-9247-bb680e5fe0c8",
            ],
        )
        .await,
        1,
        "not found",
    );

    // Alerts: list, view, dismiss and undo.
    let alerts = json(&bencher(&server, &["alert", "list", "bench", "--format", "json"]).await);
    assert_eq!(alerts.as_array().unwrap().len(), 1);
    let alert = alerts[0]["uuid"].as_str().unwrap().to_owned();
    let table = ok(&bencher(&server, &["alert", "list", "bench", "--status", "active"]).await);
    assert!(table.contains(&alert) && table.contains("12.5"), "{table}");
    let viewed = ok(&bencher(&server, &["alert", "view", "bench", &alert]).await);
    assert!(
        viewed.contains(&second) && viewed.contains("upper limit: 11"),
        "{viewed}"
    );
    let dismissed = ok(&bencher(&server, &["alert", "dismiss", "bench", &alert]).await);
    assert!(dismissed.contains("is now dismissed"), "{dismissed}");
    let active = ok(&bencher(&server, &["alert", "list", "bench", "--status", "active"]).await);
    assert!(active.contains("No alerts."), "{active}");
    let undone = json(
        &bencher(
            &server,
            &[
                "alert", "dismiss", "bench", &alert, "--undo", "--format", "json",
            ],
        )
        .await,
    );
    assert_eq!(undone["status"], "active");
    fails(
        &bencher(&server, &["alert", "list", "bench", "--status", "gone"]).await,
        2,
        "unknown alert status",
    );

    // Perf: the history as a table and as JSON, by Spec.
    let perf = ok(&bencher(
        &server,
        &[
            "perf",
            "bench",
            "--branch",
            "main",
            "--testbed",
            "localhost",
            "--benchmark",
            "fib,sort",
            "--measure",
            "latency",
        ],
    )
    .await);
    assert!(perf.contains("3 points in 2 series"), "{perf}");
    assert!(
        perf.contains("1 (aaaa0001)") && perf.contains("upper (active)"),
        "{perf}"
    );
    let perf = json(
        &bencher(
            &server,
            &[
                "perf",
                "bench",
                "--branch",
                "main",
                "--testbed",
                "localhost",
                "--benchmark",
                "fib",
                "--measure",
                "latency",
                "--spec",
                "intel-v1",
                "--format",
                "json",
            ],
        )
        .await,
    );
    let values: Vec<f64> = perf["results"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metric"]["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [10.0, 12.5]);
    fails(
        &bencher(
            &server,
            &[
                "perf",
                "bench",
                "--branch",
                "main",
                "--testbed",
                "localhost",
                "--benchmark",
                "nothing",
                "--measure",
                "latency",
            ],
        )
        .await,
        1,
        "benchmark `nothing` not found",
    );
    fails(
        &bencher(&server, &["perf", "bench", "--branch", "main"]).await,
        2,
        "--testbed",
    );

    // Update makes a new model version; delete removes the threshold.
    let updated = json(
        &bencher(
            &server,
            &[
                "threshold",
                "update",
                "bench",
                &threshold,
                "--test",
                "percentage",
                "--upper-boundary",
                "0.1",
                "--format",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(updated["model"]["test"], "percentage");
    assert_ne!(updated["model"]["uuid"], model.as_str());
    let deleted = ok(&bencher(&server, &["threshold", "delete", "bench", &threshold]).await);
    assert!(deleted.contains("Deleted threshold"), "{deleted}");
    fails(
        &bencher(&server, &["threshold", "view", "bench", &threshold]).await,
        1,
        "not found",
    );
    server.stop().await;
}
