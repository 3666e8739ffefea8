//! Shared by the runner's integration tests: an image made of the host's `sh` and
//! `sleep` with their libraries, pushed to a test server's registry. No network or
//! package needed. Also the helpers of the end-to-end tests through real processes
//! (`e2e.rs`, `faults.rs`): REST calls, runner registration and the `runner` binary.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use bencher_oci::digest::Digest;
use bencher_test_support::TestServer;
use bencher_test_support::reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The repository (and project slug) the test image is pushed to.
pub const E2E_REPO: &str = "agent-e2e";

/// An image of the host's `sh`, `sleep`, `head` and `tr` with the libraries `ldd` lists: no network
/// or package needed. Returns (config, layer blob, manifest).
pub fn host_image() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut files: std::collections::BTreeMap<String, std::path::PathBuf> = Default::default();
    for (name, host) in [
        ("bin/sh", "/bin/sh"),
        ("bin/sleep", "/bin/sleep"),
        ("bin/head", "/bin/head"),
        ("bin/tr", "/bin/tr"),
    ] {
        let host = std::path::Path::new(host).canonicalize().unwrap();
        let ldd = std::process::Command::new("ldd")
            .arg(&host)
            .output()
            .expect("ldd");
        for library in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|word| word.starts_with('/'))
        {
            files.insert(library.trim_start_matches('/').to_owned(), library.into());
        }
        files.insert(name.to_owned(), host);
    }
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for path in files.keys() {
        let mut parent = std::path::Path::new(path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
    }
    for dir in dirs
        .iter()
        .chain(["etc".to_owned(), "tmp".to_owned()].iter())
    {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder.append_data(&mut header, dir, &[][..]).unwrap();
    }
    for (path, host) in &files {
        let contents = std::fs::read(host).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_size(contents.len() as u64);
        builder
            .append_data(&mut header, path, &contents[..])
            .unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(passwd.len() as u64);
    builder
        .append_data(&mut header, "etc/passwd", &passwd[..])
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let diff_id = Digest::sha256_of(&tar);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &tar).unwrap();
    let layer = encoder.finish().unwrap();

    let config = serde_json::to_vec(&json!({
        "architecture": bencher_oci::platform::Platform::host().architecture,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::sha256_of(&config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": Digest::sha256_of(&layer).to_string(),
            "size": layer.len(),
        }],
    }))
    .unwrap();
    (config, layer, manifest)
}

/// Pushes the host image; returns the project's UUID and the manifest digest.
pub async fn push_host_image(server: &TestServer) -> (String, String) {
    let (config, layer, manifest) = host_image();
    for blob in [&config, &layer] {
        let digest = Digest::sha256_of(blob);
        let response = server
            .request(
                Method::POST,
                &format!("/v2/{E2E_REPO}/blobs/uploads/?digest={digest}"),
            )
            .header("content-type", "application/octet-stream")
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }
    let response = server
        .request(Method::PUT, &format!("/v2/{E2E_REPO}/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let project: Value = server
        .request(Method::GET, &format!("/v0/projects/{E2E_REPO}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uuid = project["uuid"].as_str().expect("project uuid").to_owned();
    (uuid, Digest::sha256_of(&manifest).to_string())
}

/// Whether the end-to-end tests can run (they need root); prints why not when they
/// cannot. Panics under CI, where they must run.
pub fn privileged() -> bool {
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

/// POSTs `body` as the admin and returns the (successful) JSON answer.
pub async fn post(server: &TestServer, path: &str, body: Value) -> Value {
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

/// GETs `path` as the admin and returns the (200) JSON answer.
pub async fn get(server: &TestServer, path: &str) -> Value {
    let response = server.request(Method::GET, path).send().await.unwrap();
    let status = response.status();
    let value: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {value}");
    value
}

/// Creates the no-sandbox Spec `host` for this host.
pub async fn register_spec(server: &TestServer) {
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
}

/// Registers the runner `slug` serving the Spec `host` (see `register_spec`); returns
/// its key.
pub async fn register_named_runner(server: &TestServer, slug: &str) -> String {
    let runner = post(server, "/v0/runners", json!({ "name": slug, "slug": slug })).await;
    post(
        server,
        &format!("/v0/runners/{slug}/specs"),
        json!({ "spec": "host" }),
    )
    .await;
    runner["key"].as_str().unwrap().to_owned()
}

/// Registers the runner `e2e` serving a no-sandbox Spec for this host; returns its key.
pub async fn register_runner(server: &TestServer) -> String {
    register_spec(server).await;
    register_named_runner(server, "e2e").await
}

/// A runner's cache and spool directories and its log, kept across restarts.
pub struct RunnerDirs {
    cache: tempfile::TempDir,
    spool: tempfile::TempDir,
    log: tempfile::TempDir,
}

impl RunnerDirs {
    pub fn new() -> Self {
        Self {
            cache: tempfile::tempdir().unwrap(),
            spool: tempfile::tempdir().unwrap(),
            log: tempfile::tempdir().unwrap(),
        }
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.log.path().join("runner.log")
    }

    /// Whether the spool holds an unacknowledged terminal message for the job.
    pub fn spooled(&self, job: &str) -> bool {
        self.spool.path().join(format!("{job}.json")).exists()
    }

    /// The spool directory (`--spool-dir`), where the runner also keeps its status file.
    pub fn spool_path(&self) -> &std::path::Path {
        self.spool.path()
    }

    /// Everything the runner logged so far, over all its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// The real `runner` binary, `runner up --danger-allow-no-sandbox`. Its stderr goes to
/// a file (a pipe nobody reads could fill and block it).
pub struct Runner {
    child: tokio::process::Child,
    dirs: RunnerDirs,
}

impl Runner {
    /// Starts the runner `e2e`.
    pub fn start(server: &TestServer, key: &str) -> Self {
        Self::start_as(server, "e2e", key, RunnerDirs::new())
    }

    /// Starts the runner `slug` with the cache and spool of `dirs`.
    pub fn start_as(server: &TestServer, slug: &str, key: &str, dirs: RunnerDirs) -> Self {
        Self::spawn(server, slug, key, dirs, true, &[], None)
    }

    /// Starts the runner `e2e` with the cache and spool of `dirs` and `extra` flags.
    pub fn start_with(server: &TestServer, key: &str, dirs: RunnerDirs, extra: &[&str]) -> Self {
        Self::spawn(server, "e2e", key, dirs, true, extra, None)
    }

    /// Starts the runner `slug` without `--danger-allow-no-sandbox`: it runs only
    /// sandboxed jobs.
    pub fn start_sandboxed(server: &TestServer, slug: &str, key: &str) -> Self {
        Self::spawn(server, slug, key, RunnerDirs::new(), false, &[], None)
    }

    /// Starts the runner `e2e` from `binary` (a copy it may replace) with self-update
    /// on, and `extra` flags.
    pub fn start_updating(
        server: &TestServer,
        key: &str,
        dirs: RunnerDirs,
        binary: &std::path::Path,
        extra: &[&str],
    ) -> Self {
        Self::spawn(server, "e2e", key, dirs, true, extra, Some(binary))
    }

    fn spawn(
        server: &TestServer,
        slug: &str,
        key: &str,
        dirs: RunnerDirs,
        allow_host: bool,
        extra: &[&str],
        updating_binary: Option<&std::path::Path>,
    ) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dirs.log_path())
            .unwrap();
        let binary = updating_binary.map_or(
            std::path::Path::new(env!("CARGO_BIN_EXE_runner")),
            |binary| binary,
        );
        let child = tokio::process::Command::new(binary)
            .args(["up", "--host", server.url.as_str(), "--runner", slug])
            .args(allow_host.then_some("--danger-allow-no-sandbox"))
            .args(["--poll-timeout", "30"])
            .args(updating_binary.is_none().then_some("--no-auto-update"))
            .arg("--cache-dir")
            .arg(dirs.cache.path())
            .arg("--spool-dir")
            .arg(dirs.spool.path())
            // Never the real host's knobs: an empty fake tree (every knob unsupported).
            .arg("--tuning-root")
            .arg(dirs.log.path())
            .args(extra)
            .env("BENCHER_RUNNER_KEY", key)
            .env_remove("BENCHER_HOST")
            .env_remove("BENCHER_RUNNER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the runner binary");
        Self { child, dirs }
    }

    pub fn log(&self) -> String {
        self.dirs.log()
    }

    /// The runner's spool directory.
    pub fn spool_path(&self) -> &std::path::Path {
        self.dirs.spool_path()
    }

    /// Whether the runner's spool holds an unacknowledged result for the job.
    pub fn spooled(&self, job: &str) -> bool {
        self.dirs.spooled(job)
    }

    /// SIGTERM, then the exit code and everything the runner logged.
    pub async fn stop(self) -> (Option<i32>, String) {
        let pid = self.child.id().expect("running");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        self.wait().await
    }

    /// Waits (at most a minute) for the runner to exit by itself; its exit code and log.
    pub async fn wait(self) -> (Option<i32>, String) {
        let (code, log, _) = self.wait_keeping_dirs().await;
        (code, log)
    }

    /// SIGTERM, then the exit code, the log, and its directories, for a restart.
    pub async fn stop_keeping_dirs(self) -> (Option<i32>, String, RunnerDirs) {
        let pid = self.child.id().expect("running");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        self.wait_keeping_dirs().await
    }

    async fn wait_keeping_dirs(mut self) -> (Option<i32>, String, RunnerDirs) {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the runner exits within a minute: {}", self.log()))
            .unwrap();
        (status.code(), self.dirs.log(), self.dirs)
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the runner process only.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// SIGKILL: no chance to clean up. Returns its directories, for a restart.
    pub async fn kill9(mut self) -> RunnerDirs {
        self.child.kill().await.expect("SIGKILL the runner");
        self.dirs
    }
}

/// One line of benchmark output in the Bencher Metric Format, naming benchmark `name`:
/// what test jobs print, so the server turns their output into a report (output no
/// adapter reads fails the job).
pub fn bmf(name: &str) -> String {
    format!(r#"{{"{name}":{{"latency":{{"value":1.0}}}}}}"#)
}

/// A shell command printing [`bmf`] of `name` and a newline.
pub fn print_bmf(name: &str) -> String {
    format!("echo '{}'", bmf(name))
}

/// Submits a job for the test image; returns its UUID.
pub async fn submit(server: &TestServer, job: Value) -> String {
    let submitted = post(
        server,
        "/v0/run",
        json!({ "project": E2E_REPO, "job": job }),
    )
    .await;
    submitted["uuid"].as_str().unwrap().to_owned()
}

/// The job as the server shows it.
pub async fn job(server: &TestServer, uuid: &str) -> Value {
    get(server, &format!("/v0/projects/{E2E_REPO}/jobs/{uuid}")).await
}

/// Waits (at most two minutes, a failure bound only) until the job reaches one of
/// `statuses`; returns it.
pub async fn wait_job(server: &TestServer, uuid: &str, statuses: &[&str]) -> Value {
    let mut last = Value::Null;
    for _ in 0..1200 {
        last = job(server, uuid).await;
        if statuses.contains(&last["status"].as_str().unwrap_or_default()) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {uuid} never reached {statuses:?}: {last}");
}

/// Submits a job and waits until it reaches one of `statuses`.
pub async fn run_job(server: &TestServer, job: Value, statuses: &[&str]) -> Value {
    let uuid = submit(server, job).await;
    wait_job(server, &uuid, statuses).await
}

/// The terminal (or, for `completed`, final as far as the runner is concerned) states.
pub const DONE: &[&str] = &["completed", "processed", "failed", "canceled"];

/// A `sleep` argument unique to this call (`30.<n>` with a unique `n`), to find the
/// job's process in /proc.
pub fn marker(seconds: u32) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{seconds}.{:04}{:05}", n % 10_000, nanos % 100_000)
}

/// Whether a process with `marker` as one of its arguments exists.
pub fn marker_alive(marker: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
            cmdline
                .split(|byte| *byte == 0)
                .any(|arg| arg == marker.as_bytes())
        })
    })
}

/// Waits (at most a minute, a failure bound only) until a process with `marker` runs.
pub async fn wait_marker_alive(marker: &str) {
    for _ in 0..600 {
        if marker_alive(marker) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no process with {marker} ever ran");
}

/// Waits (at most a minute, a failure bound only) until no process with `marker` is left.
pub async fn wait_marker_gone(marker: &str) {
    for _ in 0..600 {
        if !marker_alive(marker) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a process with {marker} survived");
}
