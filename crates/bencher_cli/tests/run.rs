//! End-to-end tests of `bencher run --image …` and `bencher job …`: the real binary
//! against a real server on 127.0.0.1:0, on SQLite and on PostgreSQL. No runner exists
//! yet, so jobs stay pending: these tests submit, list, view and cancel them, and follow
//! one while the test cancels it through the REST API (or interrupts the CLI), once
//! through a proxy that answers some polls with 503 and `Retry-After`.

use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bencher_client::Client;
use bencher_test_support::image::{File, write_layout};
use bencher_test_support::reqwest::{Method, StatusCode};
use bencher_test_support::{Backend, TestServer, backend_tests};
use bencher_types::{ApiToken, JobQuery, JobStatus, Pagination};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// How long a followed job may take to be noticed as canceled: the poll interval backs
/// off to 10 s while pending.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(60);
const SECRET: &str = "hunter2-do-not-show";

/// `bencher` with `args` against `host` as the admin, with a clean environment.
fn command(server: &TestServer, host: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bencher"));
    command
        .args(args)
        .env_remove("BENCHER_FORMAT")
        .env_remove("BENCHER_PROJECT")
        .env("BENCHER_HOST", host)
        .env("BENCHER_API_TOKEN", server.admin_token.expose_secret())
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    command
}

async fn bencher(server: &TestServer, args: &[&str]) -> Output {
    command(server, server.url.as_str(), args)
        .output()
        .await
        .expect("run bencher")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "bencher failed: {}\n{}",
        text(&output.stderr),
        text(&output.stdout)
    );
    text(&output.stdout)
}

#[track_caller]
fn json(output: &Output) -> Value {
    let stdout = ok(output);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[track_caller]
fn fails(output: &Output, code: i32, needle: &str) -> String {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let err = text(&output.stderr);
    assert!(err.contains(needle), "expected `{needle}` in stderr: {err}");
    err
}

/// Pushes `bench:v1` with `bencher image push`; the push creates project `bench`.
async fn push_image(server: &TestServer) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_layout(
        dir.path(),
        "v1",
        &[vec![File {
            path: "bin/bench",
            contents: b"#!/bin/sh\necho 1\n",
            mode: 0o755,
        }]],
        &["/bin/bench"],
    );
    let layout = dir.path().to_str().expect("UTF-8 temp path");
    ok(&bencher(server, &["image", "push", layout, "bench:v1"]).await);
    dir
}

async fn create_fallback_spec(server: &TestServer) {
    ok(&bencher(
        server,
        &[
            "spec",
            "create",
            "--name",
            "Intel v1",
            "--os",
            "linux",
            "--architecture",
            "x86_64",
            "--sandbox",
            "firecracker",
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
}

/// A server with image `bench:v1` and a fallback Spec, ready for jobs.
async fn ready(backend: Backend) -> (TestServer, TempDir) {
    let server = TestServer::start(backend).await;
    let layout = push_image(&server).await;
    create_fallback_spec(&server).await;
    (server, layout)
}

/// The job as the REST API shows it.
async fn rest_job(server: &TestServer, uuid: &str) -> Value {
    let response = server
        .request(Method::GET, &format!("/v0/projects/bench/jobs/{uuid}"))
        .send()
        .await
        .expect("GET job");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("job JSON")
}

async fn rest_cancel(server: &TestServer, uuid: &str) {
    let response = server
        .request(
            Method::POST,
            &format!("/v0/projects/bench/jobs/{uuid}/cancel"),
        )
        .send()
        .await
        .expect("cancel job");
    assert_eq!(response.status(), StatusCode::OK);
}

/// Submits a pending job with `--detach --format json` and returns it.
async fn submit(server: &TestServer, extra: &[&str]) -> Value {
    let mut args = vec![
        "--format",
        "json",
        "run",
        "--image",
        "bench:v1",
        "--project",
        "bench",
        "--detach",
    ];
    args.extend(extra);
    json(&bencher(server, &args).await)
}

fn uuid_of(job: &Value) -> String {
    job["uuid"].as_str().expect("job uuid").to_owned()
}

backend_tests!(
    submission_errors_are_clear,
    detach_submits_and_prints_the_job,
    job_list_view_and_cancel,
    following_notices_a_cancel,
    ctrl_c_cancels_the_followed_job,
    polls_honour_retry_after_and_never_hammer,
);

async fn submission_errors_are_clear(backend: Backend) {
    let server = TestServer::start(backend).await;
    let _layout = push_image(&server).await;
    let run = [
        "run",
        "--image",
        "bench:v1",
        "--project",
        "bench",
        "--detach",
    ];

    // No Spec anywhere: the server's own message, which says what to do.
    fails(
        &bencher(&server, &run).await,
        1,
        "no Spec for this job: the request names none",
    );
    create_fallback_spec(&server).await;

    let err = fails(
        &bencher(
            &server,
            &[
                "run",
                "--image",
                "bench:v9",
                "--project",
                "bench",
                "--detach",
            ],
        )
        .await,
        1,
        "tag `v9` not found in repository `bench`; push the image first",
    );
    assert!(err.contains("HTTP 400"), "{err}");
    fails(
        &bencher(
            &server,
            &[
                "run",
                "--image",
                "other:v1",
                "--project",
                "bench",
                "--detach",
            ],
        )
        .await,
        1,
        "not in project `bench`'s",
    );
    fails(
        &bencher(
            &server,
            &[
                "run",
                "--image",
                "bench:v1",
                "--project",
                "nope",
                "--detach",
            ],
        )
        .await,
        1,
        "HTTP 404",
    );
    fails(
        &bencher(
            &server,
            &[
                "run",
                "--image",
                "bench:v1",
                "--project",
                "bench",
                "--spec",
                "amd-v9",
                "--detach",
            ],
        )
        .await,
        1,
        "spec `amd-v9` not found",
    );

    // Usage errors: exit 2, nothing sent.
    let before = server.count_requests("POST", "/v0/run");
    fails(
        &bencher(
            &server,
            &[
                "run",
                "--project",
                "bench",
                "--detach",
                "--",
                "cargo",
                "bench",
            ],
        )
        .await,
        2,
        "--detach applies to jobs on a runner: pass --image",
    );
    fails(
        &bencher(&server, &["run", "--image", "bench:v1"]).await,
        2,
        "--project",
    );
    let with = |extra: &[&str]| {
        let mut line = vec!["run", "--image", "bench:v1", "--project", "bench"];
        line.extend_from_slice(extra);
        line.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    for (extra, needle) in [
        (vec!["--env", "TOKEN"], "`TOKEN` has no `=`"),
        (
            vec!["--env", "A=1", "--env", "A=2"],
            "--env A is given more than once",
        ),
        (
            vec!["--job-poll-interval", "0"],
            "between 1 and 600, got `0`",
        ),
        (
            vec!["--job-poll-interval", "1.5"],
            "whole number of seconds",
        ),
        (vec!["--job-poll-interval", "601"], "between 1 and 600"),
        (
            vec!["--detach", "--job-poll-interval", "5"],
            "cannot be used with",
        ),
        (vec!["--iter", "256"], "iter must be between 1 and 255"),
        (vec!["--job-timeout", "0"], "between 1 and 86400"),
        (vec!["--branch", " "], "name must not be empty"),
    ] {
        let line = with(&extra);
        let line: Vec<&str> = line.iter().map(String::as_str).collect();
        fails(&bencher(&server, &line).await, 2, needle);
    }
    let many: Vec<String> = (0..65).map(|i| format!("arg{i}")).collect();
    let mut line = with(&["--"]);
    line.extend(many);
    let line: Vec<&str> = line.iter().map(String::as_str).collect();
    fails(&bencher(&server, &line).await, 2, "job.cmd has 65 items");
    assert_eq!(
        server.count_requests("POST", "/v0/run"),
        before,
        "usage errors send nothing"
    );
}

async fn detach_submits_and_prints_the_job(backend: Backend) {
    let (server, _layout) = ready(backend).await;

    // Human: the job, its status, and how to follow it.
    let out = ok(&bencher(
        &server,
        &[
            "run",
            "--image",
            "bench:v1",
            "--project",
            "bench",
            "--detach",
        ],
    )
    .await);
    let uuid = out
        .strip_prefix("Submitted job ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job uuid in: {out}"))
        .to_owned();
    assert!(
        out.contains(&format!("Submitted job {uuid} (pending).")),
        "{out}"
    );
    assert!(out.contains("intel-v1"), "{out}");
    assert!(
        out.contains(&format!("bencher job view bench {uuid}")),
        "{out}"
    );
    assert_eq!(rest_job(&server, &uuid).await["status"], "pending");

    // Every flag reaches the job; the project comes from BENCHER_PROJECT.
    let output = command(
        &server,
        server.url.as_str(),
        &[
            "--format",
            "json",
            "run",
            "--image",
            "bench:v1",
            "--detach",
            "--branch",
            "feature",
            "--testbed",
            "ci box",
            "--spec",
            "intel-v1",
            "--adapter",
            "json",
            "--entrypoint",
            "/bin/sh",
            "--entrypoint",
            "-c",
            "--env",
            &format!("API_KEY={SECRET}"),
            "--env",
            "MODE=a=b",
            "--job-timeout",
            "120",
            "--iter",
            "3",
            "--file",
            "/out/a.json",
            "--file",
            "/out/b.json",
            "--allow-failure",
            "--build-time",
            "--file-size",
            "--",
            "echo $MODE",
            "--flag",
        ],
    )
    .env("BENCHER_PROJECT", "bench")
    .output()
    .await
    .expect("run bencher");
    assert!(!text(&output.stdout).contains(SECRET));
    let job = json(&output);
    assert_eq!(job["status"], "pending");
    assert_eq!(job["spec"]["slug"], "intel-v1");
    let config = &job["config"];
    assert_eq!(config["image"], "bench:v1");
    assert!(
        config["digest"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sha256:")
    );
    assert_eq!(config["entrypoint"], json!(["/bin/sh", "-c"]));
    assert_eq!(config["cmd"], json!(["echo $MODE", "--flag"]));
    assert_eq!(config["env"], json!({"API_KEY": "***", "MODE": "***"}));
    assert_eq!(config["timeout"], 120);
    assert_eq!(config["iter"], 3);
    assert_eq!(config["file_paths"], json!(["/out/a.json", "/out/b.json"]));
    assert_eq!(config["allow_failure"], true);
    assert_eq!(config["build_time"], true);
    assert_eq!(config["file_size"], true);
    assert_eq!(rest_job(&server, &uuid_of(&job)).await, job);

    // An image pinned by digest, shown as submitted.
    let digest = config["digest"].as_str().expect("digest");
    let pinned = format!("bench@{digest}");
    let out = ok(&bencher(
        &server,
        &["run", "--image", &pinned, "--project", "bench", "--detach"],
    )
    .await);
    assert!(out.contains(&format!("image:  {pinned}\n")), "{out}");
}

async fn job_list_view_and_cancel(backend: Backend) {
    let (server, _layout) = ready(backend).await;
    let first = submit(&server, &["--env", &format!("API_KEY={SECRET}")]).await;
    let second = submit(
        &server,
        &["--iter", "2", "--", "sh", "-c", "echo 'hi there'"],
    )
    .await;
    let third = submit(&server, &[]).await;
    let (first, second, third) = (uuid_of(&first), uuid_of(&second), uuid_of(&third));

    // Cancel: the job as canceled; again is the server's 409, explained.
    let out = ok(&bencher(&server, &["job", "cancel", "bench", &third]).await);
    assert!(out.starts_with(&format!("Canceled job {third}.")), "{out}");
    assert!(out.contains("status:         canceled"), "{out}");
    fails(
        &bencher(&server, &["job", "cancel", "bench", &third]).await,
        1,
        "only pending, claimed or running jobs can be canceled (HTTP 409",
    );
    let canceled = json(
        &bencher(
            &server,
            &["--format", "json", "job", "view", "bench", &third],
        )
        .await,
    );
    assert_eq!(canceled["status"], "canceled");
    assert!(canceled["ended"].is_string(), "{canceled}");

    // List: table with footer, filters, pages, JSON.
    let table = ok(&bencher(&server, &["job", "list", "bench"]).await);
    for uuid in [&first, &second, &third] {
        assert!(table.contains(uuid.as_str()), "{table}");
    }
    assert!(
        table.contains("STATUS") && table.contains("canceled"),
        "{table}"
    );
    assert!(table.trim_end().ends_with("3 of 3 jobs"), "{table}");
    let pending = json(
        &bencher(
            &server,
            &[
                "--format", "json", "job", "list", "bench", "--status", "pending",
            ],
        )
        .await,
    );
    let uuids: Vec<String> = pending
        .as_array()
        .expect("a list")
        .iter()
        .map(uuid_of)
        .collect();
    assert_eq!(uuids, [first.clone(), second.clone()]);
    let out = ok(&bencher(&server, &["job", "list", "bench", "--status", "canceled"]).await);
    assert!(out.trim_end().ends_with("1 of 1 job"), "{out}");
    let out = ok(&bencher(&server, &["job", "list", "bench", "--status", "failed"]).await);
    assert_eq!(out.trim_end(), "No jobs.");
    let newest = json(
        &bencher(
            &server,
            &[
                "--format",
                "json",
                "job",
                "list",
                "bench",
                "--per-page",
                "1",
                "--direction",
                "desc",
            ],
        )
        .await,
    );
    assert_eq!(newest.as_array().map(Vec::len), Some(1));
    assert_eq!(uuid_of(&newest[0]), third);
    let out = ok(&bencher(
        &server,
        &["job", "list", "bench", "--per-page", "1", "--page", "2"],
    )
    .await);
    assert!(
        out.contains(second.as_str()) && out.trim_end().ends_with("1 of 3 jobs"),
        "{out}"
    );
    fails(
        &bencher(&server, &["job", "list", "bench", "--status", "done"]).await,
        2,
        "unknown job status `done`; expected one of: pending, claimed",
    );
    fails(
        &bencher(&server, &["job", "list", "bench", "--sort", "name"]).await,
        2,
        "unexpected argument '--sort'",
    );
    fails(
        &bencher(&server, &["job", "list", "nope"]).await,
        1,
        "HTTP 404",
    );

    // View: every field, the environment redacted by the server, no output yet.
    let out = ok(&bencher(&server, &["job", "view", "bench", &first]).await);
    assert!(out.contains("env:            API_KEY=***"), "{out}");
    assert!(!out.contains(SECRET), "{out}");
    assert!(out.contains("status:         pending"), "{out}");
    assert!(out.contains("runner:         none yet"), "{out}");
    assert!(
        out.contains("spec:           intel-v1 (linux x86_64, firecracker"),
        "{out}"
    );
    let out = ok(&bencher(&server, &["job", "view", "bench", &second]).await);
    assert!(
        out.contains(r#"cmd:            sh -c 'echo '\''hi there'\'''"#),
        "{out}"
    );
    assert!(out.contains("iterations:     2"), "{out}");
    let out = ok(&bencher(&server, &["job", "view", "bench", &third]).await);
    assert!(out.trim_end().ends_with("No output recorded."), "{out}");
    let viewed = json(
        &bencher(
            &server,
            &["--format", "json", "job", "view", "bench", &first],
        )
        .await,
    );
    assert_eq!(viewed["config"]["env"], json!({"API_KEY": "***"}));
    assert_eq!(viewed, rest_job(&server, &first).await);
    let unknown = "00000000-0000-4000-8000-000000000000";
    fails(
        &bencher(&server, &["job", "view", "bench", unknown]).await,
        1,
        "HTTP 404",
    );
    fails(
        &bencher(&server, &["job", "view", "bench", "my-job"]).await,
        2,
        "invalid value 'my-job'",
    );

    // The admin list of every project's jobs has no command yet; the client's method.
    let admin = Client::new(server.url.clone(), Some(server.admin_token.clone())).expect("client");
    let query = JobQuery {
        status: Some(JobStatus::Pending),
    };
    let page = admin
        .list_all_jobs(&query, &Pagination::default())
        .await
        .expect("admin list");
    assert_eq!(page.total, 2);
    let listed: Vec<String> = page.items.iter().map(|job| job.uuid.to_string()).collect();
    assert_eq!(listed, [first, second]);
    let created = json(
        &bencher(
            &server,
            &["--format", "json", "token", "create", "--name", "dev"],
        )
        .await,
    );
    let user_token: ApiToken = created["token"]
        .as_str()
        .expect("token secret")
        .parse()
        .expect("valid token");
    let user = Client::new(server.url.clone(), Some(user_token)).expect("client");
    let err = user
        .list_all_jobs(&JobQuery::default(), &Pagination::default())
        .await
        .expect_err("admins only");
    assert_eq!(err.status(), Some(403), "{err}");
    // Project jobs are open to every user, like projects.
    let page = user
        .list_jobs(
            &"bench".parse().expect("slug"),
            &JobQuery::default(),
            &Pagination::default(),
        )
        .await
        .expect("user list");
    assert_eq!(page.total, 3);
}

/// Collects a child's output as it comes, so a test can wait for a line and still read
/// everything at the end.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn start(stream: impl AsyncRead + Unpin + Send + 'static) -> Self {
        let captured = Self::default();
        let sink = captured.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = sink.0.lock().expect("capture lock");
                text.push_str(&line);
                text.push('\n');
            }
        });
        captured
    }

    fn text(&self) -> String {
        self.0.lock().expect("capture lock").clone()
    }

    /// The job uuid from `Submitted job <uuid>`, once it has been printed.
    async fn submitted(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text();
            if let Some(uuid) = text
                .split("Submitted job ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
            {
                return uuid.to_owned();
            }
            assert!(Instant::now() < deadline, "nothing submitted yet: {text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `bencher run` following a job, with its streams captured.
struct Following {
    child: Child,
    stdout: Captured,
    stderr: Captured,
}

impl Following {
    fn start(server: &TestServer, host: &str, args: &[&str]) -> Self {
        let mut child = command(server, host, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bencher");
        let stdout = Captured::start(child.stdout.take().expect("piped stdout"));
        let stderr = Captured::start(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for the exit; the exit code and both streams.
    async fn finish(mut self) -> (Option<i32>, String, String) {
        let status = tokio::time::timeout(FOLLOW_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "bencher run did not end\nstdout: {}\nstderr: {}",
                    self.stdout.text(),
                    self.stderr.text()
                )
            })
            .expect("wait for bencher");
        // The readers finish at EOF, right after the exit.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status.code(), self.stdout.text(), self.stderr.text())
    }
}

const FOLLOW: [&str; 5] = ["run", "--image", "bench:v1", "--project", "bench"];

async fn following_notices_a_cancel(backend: Backend) {
    let (server, _layout) = ready(backend).await;

    let following = Following::start(&server, server.url.as_str(), &FOLLOW);
    let uuid = following.stdout.submitted().await;
    assert_eq!(rest_job(&server, &uuid).await["status"], "pending");
    // Let it poll a few times before the job moves.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rest_cancel(&server, &uuid).await;
    let (code, stdout, stderr) = following.finish().await;
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains(&format!("Submitted job {uuid} (pending).")),
        "{stdout}"
    );
    assert!(stdout.contains("status: canceled"), "{stdout}");
    assert!(stdout.contains("No output recorded."), "{stdout}");
    assert!(
        stderr.contains(&format!("error: job {uuid} was canceled")),
        "{stderr}"
    );

    // JSON: stdout is the final job and nothing else; progress goes to stderr.
    let mut args = vec!["--format", "json"];
    args.extend(FOLLOW);
    let following = Following::start(&server, server.url.as_str(), &args);
    let uuid = following.stderr.submitted().await;
    rest_cancel(&server, &uuid).await;
    let (code, stdout, stderr) = following.finish().await;
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let job: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(job["uuid"], uuid.as_str());
    assert_eq!(job["status"], "canceled");
    assert!(stderr.contains("status: canceled"), "{stderr}");
    assert!(stderr.contains("was canceled"), "{stderr}");
}

async fn ctrl_c_cancels_the_followed_job(backend: Backend) {
    let (server, _layout) = ready(backend).await;
    let following = Following::start(&server, server.url.as_str(), &FOLLOW);
    let uuid = following.stdout.submitted().await;
    let pid = following.child.id().expect("bencher is running");
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let (code, stdout, stderr) = following.finish().await;
    assert_eq!(code, Some(130), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains(&format!("Interrupted: canceling job {uuid}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("error: interrupted: job {uuid} was canceled")),
        "{stderr}"
    );
    assert!(stdout.contains("status: canceled"), "{stdout}");
    assert_eq!(rest_job(&server, &uuid).await["status"], "canceled");
}

/// What the proxy saw: when, what, and what it answered.
type ProxyLog = Arc<Mutex<Vec<(Instant, String, u16)>>>;

/// A one-request-per-connection HTTP proxy in front of `server` that answers the first
/// `busy` polls of a job with 503 and `Retry-After: 3`, as an overloaded gateway would.
async fn flaky_proxy(server: &TestServer, busy: usize) -> (String, ProxyLog) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let url = format!("http://{}", listener.local_addr().expect("proxy address"));
    let log = ProxyLog::default();
    let upstream = server.url.clone();
    let sink = log.clone();
    tokio::spawn(async move {
        let client = bencher_test_support::reqwest::Client::new();
        let busy = Arc::new(Mutex::new(busy));
        while let Ok((stream, _)) = listener.accept().await {
            let (client, upstream, log, busy) =
                (client.clone(), upstream.clone(), sink.clone(), busy.clone());
            tokio::spawn(async move {
                proxy_one(stream, &client, &upstream, &log, &busy).await;
            });
        }
    });
    (url, log)
}

async fn proxy_one(
    mut stream: TcpStream,
    client: &bencher_test_support::reqwest::Client,
    upstream: &bencher_test_support::reqwest::Url,
    log: &ProxyLog,
    busy: &Mutex<usize>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read_exact(&mut byte).await.is_err() {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    let mut length = 0;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            }
            if ["authorization", "content-type"].contains(&name.as_str()) {
                headers.push((name, value));
            }
        }
    }
    let mut body = vec![0; length];
    if stream.read_exact(&mut body).await.is_err() {
        return;
    }
    let poll = method == "GET" && target.contains("/jobs/");
    let refuse = poll && {
        let mut left = busy.lock().expect("busy lock");
        let refuse = *left > 0;
        *left = left.saturating_sub(1);
        refuse
    };
    let (status, extra, body) = if refuse {
        let body = br#"{"status":503,"code":"service_unavailable","message":"busy"}"#.to_vec();
        (503, "Retry-After: 3\r\n".to_owned(), body)
    } else {
        let mut request = client.request(
            method.parse().expect("method"),
            upstream.join(&target).expect("upstream URL"),
        );
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.expect("upstream answers");
        let status = response.status().as_u16();
        let total = response
            .headers()
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!("X-Total-Count: {v}\r\n"))
            .unwrap_or_default();
        (
            status,
            total,
            response.bytes().await.expect("body").to_vec(),
        )
    };
    log.lock()
        .expect("log lock")
        .push((Instant::now(), format!("{method} {target}"), status));
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

async fn polls_honour_retry_after_and_never_hammer(backend: Backend) {
    let (server, _layout) = ready(backend).await;
    let (proxy, log) = flaky_proxy(&server, 2).await;
    let following = Following::start(&server, &proxy, &FOLLOW);
    let uuid = following.stdout.submitted().await;
    // Two refused polls (3 s, then 4 s of backoff) and a few accepted ones.
    tokio::time::sleep(Duration::from_secs(11)).await;
    rest_cancel(&server, &uuid).await;
    let (code, stdout, stderr) = following.finish().await;
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("status: canceled"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "warning: cannot get the status of job {uuid}: busy"
        )),
        "{stderr}"
    );

    let polls: Vec<(Instant, u16)> = log
        .lock()
        .expect("log lock")
        .iter()
        .filter(|(_, what, _)| what.starts_with("GET") && what.contains(&uuid))
        .map(|(at, _, status)| (*at, *status))
        .collect();
    let statuses: Vec<u16> = polls.iter().map(|(_, status)| *status).collect();
    assert!(
        statuses.len() >= 4 && statuses[..3] == [503, 503, 200],
        "{statuses:?}"
    );
    for (pair, (earlier, later)) in polls.iter().zip(&polls[1..]).enumerate() {
        let gap = later.0 - earlier.0;
        // After a 503 the proxy asked for 3 s, more than the 2 s the first backoff would
        // wait; otherwise the 1 s interval is the floor.
        let floor = if earlier.1 == 503 { 3000 } else { 1000 };
        assert!(
            gap >= Duration::from_millis(floor - 50),
            "polls {pair} and {} only {gap:?} apart",
            pair + 1
        );
    }
}
