//! End to end through real processes: a real server (bencher_server on 127.0.0.1:0,
//! SQLite and PostgreSQL), a job submitted over REST for an image in its registry, and
//! the real `runner` binary claiming it over its WebSocket, pulling the image, running
//! it without a sandbox (`--danger-allow-no-sandbox`) and reporting the output.

mod common;

use std::process::Stdio;
use std::time::Duration;

use bencher_test_support::reqwest::{Method, StatusCode};
use bencher_test_support::{Backend, TestServer, backend_tests};
use common::{E2E_REPO, push_host_image};
use serde_json::{Value, json};

fn privileged() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the end-to-end tests need root (namespaces, mounts)"
    );
    eprintln!("SKIPPED: the end-to-end tests need root (namespaces, mounts)");
    false
}

async fn post(server: &TestServer, path: &str, body: Value) -> Value {
    let response = server
        .request(Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let value: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

/// Registers a runner serving a no-sandbox Spec for this host; returns its key.
async fn register_runner(server: &TestServer) -> String {
    let arch = if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else {
        "x86_64"
    };
    post(
        server,
        "/v0/specs",
        json!({ "name": "Host", "slug": "host", "os": "linux", "architecture": arch, "cpu": 1, "memory": 1 << 30, "disk": 1 << 30 }),
    )
    .await;
    let runner = post(
        server,
        "/v0/runners",
        json!({ "name": "E2E", "slug": "e2e" }),
    )
    .await;
    post(server, "/v0/runners/e2e/specs", json!({ "spec": "host" })).await;
    runner["key"].as_str().unwrap().to_owned()
}

struct Runner {
    child: tokio::process::Child,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Runner {
    fn start(server: &TestServer, key: &str) -> Self {
        let (cache, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runner"))
            .args([
                "up",
                "--host",
                server.url.as_str(),
                "--runner",
                "e2e",
                "--danger-allow-no-sandbox",
            ])
            .args(["--poll-timeout", "30", "--no-auto-update"])
            .arg("--cache-dir")
            .arg(cache.path())
            .arg("--spool-dir")
            .arg(spool.path())
            .env("BENCHER_RUNNER_KEY", key)
            .env_remove("BENCHER_HOST")
            .env_remove("BENCHER_RUNNER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the runner binary");
        Self {
            child,
            _dirs: (cache, spool),
        }
    }

    /// SIGTERM, then the exit code and everything the runner logged.
    async fn stop(self) -> (Option<i32>, String) {
        let pid = self.child.id().expect("running");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let output = tokio::time::timeout(Duration::from_secs(60), self.child.wait_with_output())
            .await
            .expect("the runner drains within a minute")
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// Submits a job and waits until it reaches one of `statuses`.
async fn run_job(server: &TestServer, job: Value, statuses: &[&str]) -> Value {
    let submitted = post(
        server,
        "/v0/run",
        json!({ "project": E2E_REPO, "job": job }),
    )
    .await;
    let uuid = submitted["uuid"].as_str().unwrap().to_owned();
    let path = format!("/v0/projects/{E2E_REPO}/jobs/{uuid}");
    for _ in 0..600 {
        let response = server.request(Method::GET, &path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let job: Value = response.json().await.unwrap();
        if statuses.contains(&job["status"].as_str().unwrap_or_default()) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {uuid} never reached {statuses:?}");
}

backend_tests!(a_job_runs_end_to_end);

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
        json!({ "image": format!("{E2E_REPO}:v1"), "spec": "host", "cmd": ["/bin/sh", "-c", "echo hello; echo oops >&2"], "iter": 2 }),
        &["completed", "failed", "canceled"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
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
        assert_eq!(result["stdout"], "hello\n");
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
