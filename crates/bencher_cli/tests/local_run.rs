//! End-to-end tests of `bencher run -- CMD` without `--image`: the real binary runs a
//! real command here, reports its output to a real server on 127.0.0.1:0 (SQLite and
//! PostgreSQL), and prints the report against the thresholds it set with
//! `--threshold-*`; `--err` turns an alert into a failing exit. Also what bad results and
//! impossible thresholds do: a clear error, and nothing written.

use std::process::Output;

use bencher_test_support::reqwest::{Method, StatusCode};
use bencher_test_support::{Backend, TestServer, backend_tests};
use serde_json::Value;

/// Prints one BMF document: benchmark `fib`, measure `latency`, value `$VALUE`.
const BENCHMARK: &[&str] = &[
    "sh",
    "-c",
    r#"printf '{"fib": {"latency": {"value": %s}}}' "$VALUE""#,
];

async fn bencher(server: &TestServer, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_bencher"))
        .args(args)
        .env_remove("BENCHER_FORMAT")
        .env_remove("BENCHER_PROJECT")
        .env("BENCHER_HOST", server.url.as_str())
        .env("BENCHER_API_TOKEN", server.admin_token.expose_secret())
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run bencher")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn exits(output: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// `bencher run` of [`BENCHMARK`] printing `value`, with `extra` options before `--`.
async fn run(server: &TestServer, value: &str, extra: &[&str]) -> Output {
    let env = format!("VALUE={value}");
    let mut args = vec![
        "run",
        "--project",
        "bench",
        "--adapter",
        "json",
        "--env",
        &env,
    ];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(BENCHMARK);
    bencher(server, &args).await
}

async fn get(server: &TestServer, path: &str) -> (Value, u64) {
    let response = server.request(Method::GET, path).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let total = response
        .headers()
        .get("x-total-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-Total-Count");
    (response.json().await.expect("JSON"), total)
}

async fn setup(backend: Backend) -> TestServer {
    let server = TestServer::start(backend).await;
    exits(
        &bencher(&server, &["project", "create", "--name", "bench"]).await,
        0,
    );
    exits(
        &bencher(
            &server,
            &[
                "spec",
                "create",
                "--name",
                "Laptop",
                "--os",
                "linux",
                "--architecture",
                "x86_64",
                "--cpu",
                "2",
                "--memory",
                "8GiB",
                "--disk",
                "64GiB",
                "--fallback",
            ],
        )
        .await,
        0,
    );
    server
}

backend_tests!(
    static_thresholds_alert_and_err_fails,
    a_regression_against_a_t_test_history,
    bad_results_and_thresholds_write_nothing,
    build_time_and_file_size_of_a_local_run,
);

const STATIC_150: &[&str] = &[
    "--threshold-measure",
    "latency",
    "--threshold-test",
    "static",
    "--threshold-upper-boundary",
    "150",
];

async fn static_thresholds_alert_and_err_fails(backend: Backend) {
    let server = setup(backend).await;

    // Under the boundary: the report prints its metric, no alert, exit 0 even with --err.
    let mut with_err = STATIC_150.to_vec();
    with_err.push("--err");
    let (stdout, _) = exits(&run(&server, "100", &with_err).await, 0);
    assert!(
        stdout.contains("fib") && stdout.contains("latency"),
        "{stdout}"
    );
    assert!(stdout.contains("spec `laptop`, alerts: 0"), "{stdout}");

    // Over it: the alert is printed; --err fails the command, without it only reported.
    let (stdout, stderr) = exits(&run(&server, "200", &with_err).await, 1);
    assert!(
        stdout.contains("alerts: 1") && stdout.contains("upper (active)"),
        "{stdout}"
    );
    assert!(stderr.contains("1 alert(s) in report"), "{stderr}");
    let (stdout, _) = exits(&run(&server, "200", STATIC_150).await, 0);
    assert!(stdout.contains("alerts: 1"), "{stdout}");

    // Three runs with the same options left one threshold with one model version.
    let (thresholds, total) = get(&server, "/v0/projects/bench/thresholds").await;
    assert_eq!(total, 1, "{thresholds}");
    let threshold = &thresholds[0];
    assert_eq!(threshold["measure"]["slug"], "latency");
    assert_eq!(threshold["model"]["upper_boundary"], 150.0);
    let first_model = threshold["model"]["uuid"].clone();

    // New options: a new model version, which the next report is compared with.
    let raised = [
        "--threshold-measure",
        "latency",
        "--threshold-test",
        "static",
        "--threshold-upper-boundary",
        "300",
        "--err",
        "--format",
        "json",
    ];
    let (stdout, _) = exits(&run(&server, "200", &raised).await, 0);
    let printed: Value = serde_json::from_str(&stdout).expect("--format json is JSON");
    assert_eq!(printed["report"]["alerts"], 0, "{printed}");
    assert_eq!(printed["job"], Value::Null);
    let (thresholds, total) = get(&server, "/v0/projects/bench/thresholds").await;
    assert_eq!(total, 1);
    assert_eq!(thresholds[0]["model"]["upper_boundary"], 300.0);
    assert_ne!(thresholds[0]["model"]["uuid"], first_model);

    let (alerts, total) = get(&server, "/v0/projects/bench/alerts").await;
    assert_eq!(total, 2, "{alerts}");

    // Runs racing to create the same threshold on a new branch all succeed, and there
    // is one threshold with one model.
    let mut racing = STATIC_150.to_vec();
    racing.extend_from_slice(&["--branch", "race"]);
    let runs: Vec<_> = (0..4).map(|_| run(&server, "100", &racing)).collect();
    for output in futures_util::future::join_all(runs).await {
        exits(&output, 0);
    }
    let (thresholds, total) = get(&server, "/v0/projects/bench/thresholds?branch=race").await;
    assert_eq!(total, 1, "{thresholds}");
    server.stop().await;
}

/// The issue's regression: a steady history, then 20% slower, caught by the default
/// statistical test (t-test, upper boundary 0.99).
async fn a_regression_against_a_t_test_history(backend: Backend) {
    let server = setup(backend).await;
    let t_test = [
        "--threshold-measure",
        "latency",
        "--threshold-test",
        "t_test",
        "--threshold-upper-boundary",
        "0.99",
        "--err",
    ];
    for value in ["100", "101", "99", "100.5", "99.5", "100"] {
        exits(&run(&server, value, &t_test).await, 0);
    }
    let (stdout, stderr) = exits(&run(&server, "120", &t_test).await, 1);
    assert!(stdout.contains("+20.00%"), "{stdout}");
    assert!(stderr.contains("1 alert(s)"), "{stderr}");
    // A value within the noise after it: no alert (the alert's report is in the history
    // now, but one outlier does not move a t-test's limit past 101).
    exits(&run(&server, "100", &t_test).await, 0);
    let (alerts, total) = get(&server, "/v0/projects/bench/alerts").await;
    assert_eq!(total, 1, "{alerts}");
    assert_eq!(alerts[0]["side"], "upper");
    server.stop().await;
}

async fn bad_results_and_thresholds_write_nothing(backend: Backend) {
    let server = setup(backend).await;
    exits(&run(&server, "100", &[]).await, 0);
    let (_, reports) = get(&server, "/v0/projects/bench/reports").await;
    assert_eq!(reports, 1);

    // Output the adapter cannot read: the server says why, nothing is written.
    let output = bencher(
        &server,
        &[
            "run",
            "--project",
            "bench",
            "--adapter",
            "json",
            "--branch",
            "feature",
            "--threshold-measure",
            "latency",
            "--threshold-test",
            "static",
            "--threshold-upper-boundary",
            "1",
            "--",
            "echo",
            "not a benchmark",
        ],
    )
    .await;
    let (_, stderr) = exits(&output, 1);
    assert!(
        stderr.contains("400") || stderr.contains("json"),
        "{stderr}"
    );

    // Non-finite numbers in BMF.
    let (_, stderr) = exits(&run(&server, "NaN", &[]).await, 1);
    assert!(stderr.contains("HTTP 400"), "{stderr}");

    // An impossible threshold: a t-test boundary must be inside (0, 1).
    let mut impossible = vec!["--branch", "feature"];
    impossible.extend_from_slice(&[
        "--threshold-measure",
        "latency",
        "--threshold-test",
        "t_test",
        "--threshold-upper-boundary",
        "1.5",
    ]);
    let (_, stderr) = exits(&run(&server, "100", &impossible).await, 1);
    assert!(
        stderr.contains("threshold for measure `latency`"),
        "{stderr}"
    );

    // Min sample size above max, and lines that do not line up (a usage error, exit 2).
    let (_, stderr) = exits(
        &run(
            &server,
            "100",
            &[
                "--threshold-measure",
                "latency",
                "--threshold-test",
                "z_score",
                "--threshold-min-sample-size",
                "10",
                "--threshold-max-sample-size",
                "5",
            ],
        )
        .await,
        1,
    );
    assert!(
        stderr.contains("threshold for measure `latency`"),
        "{stderr}"
    );
    let (_, stderr) = exits(
        &run(&server, "100", &["--threshold-measure", "latency"]).await,
        2,
    );
    assert!(stderr.contains("--threshold-test"), "{stderr}");

    // Nothing of any of them was written: no report, no threshold, no branch `feature`.
    let (_, reports) = get(&server, "/v0/projects/bench/reports").await;
    assert_eq!(reports, 1);
    let (_, thresholds) = get(&server, "/v0/projects/bench/thresholds").await;
    assert_eq!(thresholds, 0);
    let response = server
        .request(Method::GET, "/v0/projects/bench/reports?branch=feature")
        .send()
        .await
        .expect("GET");
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "branch `feature` exists"
    );
    server.stop().await;
}

/// `--build-time` times the command itself and `--file-size` measures the `--file`s it
/// wrote: metrics of their own beside the adapter's, here with no adapter output at all.
async fn build_time_and_file_size_of_a_local_run(backend: Backend) {
    let server = setup(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    let app = app.to_str().unwrap();
    let build = format!("sleep 0.2; head -c 3000 /dev/zero > {app}");
    let output = bencher(
        &server,
        &[
            "--format",
            "json",
            "run",
            "--project",
            "bench",
            "--iter",
            "2",
            "--build-time",
            "--file-size",
            "--file",
            app,
            "--",
            "sh",
            "-c",
            &build,
        ],
    )
    .await;
    let (stdout, _) = exits(&output, 0);
    let printed: Value = serde_json::from_str(&stdout).expect("--format json is JSON");
    let iterations = printed["report"]["results"].as_array().expect("results");
    assert_eq!(iterations.len(), 2, "{printed}");
    for iteration in iterations {
        let mut seen = Vec::new();
        for benchmark in iteration.as_array().unwrap() {
            for measure in benchmark["measures"].as_array().unwrap() {
                let (name, slug) = (
                    benchmark["benchmark"]["name"].as_str().unwrap(),
                    measure["measure"]["slug"].as_str().unwrap(),
                );
                let value = measure["metric"]["value"].as_f64().unwrap();
                match slug {
                    // A lower bound only: the command sleeps 0.2 s.
                    "build-time" => assert!(value >= 0.2 && name == format!("sh -c {build}")),
                    "file-size" => assert!(value == 3000.0 && name == app),
                    other => panic!("unexpected measure {other}"),
                }
                seen.push(slug.to_owned());
            }
        }
        seen.sort();
        assert_eq!(seen, ["build-time", "file-size"], "{printed}");
    }

    // --file-size needs files to measure; a file the command never wrote is named.
    let (_, stderr) = exits(
        &bencher(
            &server,
            &["run", "--project", "bench", "--file-size", "--", "true"],
        )
        .await,
        2,
    );
    assert!(
        stderr.contains("--file-size measures the --file paths"),
        "{stderr}"
    );
    let missing = dir.path().join("missing");
    let (_, stderr) = exits(
        &bencher(
            &server,
            &[
                "run",
                "--project",
                "bench",
                "--file-size",
                "--file",
                missing.to_str().unwrap(),
                "--",
                "true",
            ],
        )
        .await,
        1,
    );
    assert!(stderr.contains("missing"), "{stderr}");
    let (_, reports) = get(&server, "/v0/projects/bench/reports").await;
    assert_eq!(reports, 1);
    server.stop().await;
}
