//! The real `bencher-server` binary: flags and environment, JSON logs that never carry
//! the admin token, readiness, and graceful shutdown on SIGTERM and SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

struct Server {
    child: Child,
    address: String,
    log: Vec<Value>,
    lines: std::io::Lines<BufReader<std::process::ChildStderr>>,
}

/// Starts the binary on port 0 with JSON logs and waits for its `listening` line.
fn start(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bencher-server"));
    command
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("BENCHER_DATA_DIR", data_dir)
        .env_remove("BENCHER_ADMIN_TOKEN")
        .env_remove("BENCHER_DATABASE_URL")
        .env_remove("BENCHER_CONFIG")
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn bencher-server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("log line");
        let entry: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        log.push(entry.clone());
        if entry["fields"]["message"] == "listening" {
            let address = entry["fields"]["address"].as_str().unwrap().to_owned();
            return Server {
                child,
                address,
                log,
                lines,
            };
        }
    }
    let status = child.wait().expect("wait for bencher-server");
    panic!("server exited ({status}) before listening: {log:?}");
}

impl Server {
    fn get(&self, path: &str) -> (u16, String) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let response = reqwest::Client::new()
                .get(format!("http://{}{path}", self.address))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .expect("request");
            (response.status().as_u16(), response.text().await.unwrap())
        })
    }

    /// Sends `signal`, waits for the exit, and returns the code and the rest of the log.
    fn stop(mut self, signal: &str) -> (Option<i32>, Vec<Value>) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        for line in self.lines.by_ref() {
            self.log.push(serde_json::from_str(&line.unwrap()).unwrap());
        }
        let code = self.child.wait().unwrap().code();
        (code, self.log)
    }
}

#[test]
fn serves_logs_json_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &[]);
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let (status, body) = server.get("/v0/server/health");
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.get("/v0/runners");
    assert_eq!(status, 401);
    let (code, log) = server.stop("TERM");
    assert_eq!(code, Some(0), "{log:?}");
    let text = serde_json::to_string(&log).unwrap();
    assert!(
        text.contains("admin-token"),
        "the token file path is logged: {text}"
    );
    assert!(
        !text.contains(token.trim()),
        "the admin token must never be logged"
    );
    assert!(
        text.contains("SIGTERM") && text.contains("stopped"),
        "{text}"
    );

    // A restart keeps the database and the token, and SIGINT stops it too.
    let server = start(&data, &[]);
    assert_eq!(
        std::fs::read_to_string(data.join("admin-token")).unwrap(),
        token
    );
    let (code, log) = server.stop("INT");
    assert_eq!(code, Some(0), "{log:?}");
}

#[test]
fn configuration_errors_are_reported_once_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "listen = \"0.0.0.0:1\"\nheartbeat = 5\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_bencher-server"))
        .args(["--config", config.to_str().unwrap()])
        .env("BENCHER_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: invalid configuration file"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `heartbeat`"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_bencher-server"))
        .env("BENCHER_DATA_DIR", dir.path().join("data"))
        .env(
            "BENCHER_DATABASE_URL",
            "mysql://root:secret-password@localhost/db",
        )
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unsupported database URL"), "{stderr}");
    assert!(
        !stderr.contains("secret-password"),
        "database URLs may hold passwords: {stderr}"
    );
}

/// An unsigned update artifact stops the start before the data directory is created.
#[test]
fn an_unsigned_update_artifact_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let releases = dir.path().join("releases");
    std::fs::create_dir(&releases).unwrap();
    std::fs::write(releases.join("runner-linux-x86_64"), b"a runner").unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[update]\nversion = \"0.2.0\"\ndirectory = \"{}\"\n",
            releases.display()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_bencher-server"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("BENCHER_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("runner-linux-x86_64.sig is missing: every artifact must be signed"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists());
}
