//! Runner channel integration tests: a real server (`bencher_test_support::TestServer`)
//! and test runners speaking the protocol over real WebSockets (`channel/client.rs`),
//! on SQLite and PostgreSQL. Time-based rules move the server's injected clock instead
//! of sleeping; nothing here asserts how fast anything is (see `benches/dispatch.rs`).
//! Runner self-update's channel and download tests are the module `update`.

#[path = "channel/client.rs"]
mod client;
#[path = "channel/update.rs"]
mod update;

use std::time::Duration;

use bencher_oci::digest::Digest;
use bencher_test_support::reqwest::{Method, Response, StatusCode};
use bencher_test_support::{Backend, TestServer, backend_tests};
use client::{Incoming, TestRunner, connect};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn body(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("response body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, value)
}

async fn call(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    payload: Option<Value>,
) -> (StatusCode, Value) {
    call_as(server, Some(token), method, path, payload).await
}

/// [`call`] with a token or none.
async fn call_as(
    server: &TestServer,
    token: Option<&str>,
    method: Method,
    path: &str,
    payload: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server.request_as(method, path, token);
    if let Some(payload) = payload {
        request = request.json(&payload);
    }
    body(request.send().await.expect("request")).await
}

async fn admin(server: &TestServer, method: Method, path: &str, payload: Option<Value>) -> Value {
    let (status, value) = call(
        server,
        server.admin_token.expose_secret(),
        method,
        path,
        payload,
    )
    .await;
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

async fn push_blob(server: &TestServer, token: &str, repository: &str, bytes: &[u8]) -> String {
    let digest = Digest::sha256_of(bytes).to_string();
    let response = server
        .request_as(
            Method::POST,
            &format!("/v2/{repository}/blobs/uploads/?digest={digest}"),
            Some(token),
        )
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    digest
}

/// Pushes a one-layer image to `repository:v1` (creating the project) and returns its
/// manifest digest.
async fn push_image(server: &TestServer, token: &str, repository: &str) -> String {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [] },
    }))
    .unwrap();
    let layer = b"a layer".to_vec();
    let config_digest = push_blob(server, token, repository, &config).await;
    let layer_digest = push_blob(server, token, repository, &layer).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len() }],
    }))
    .unwrap();
    let response = server
        .request_as(
            Method::PUT,
            &format!("/v2/{repository}/manifests/v1"),
            Some(token),
        )
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    Digest::sha256_of(&manifest).to_string()
}

/// A user, a fallback Spec and an image in project `bench`.
struct Fixture {
    user: String,
    spec: String,
    digest: String,
}

async fn create_spec(server: &TestServer, name: &str, fallback: bool) -> String {
    let spec = admin(
        server,
        Method::POST,
        "/v0/specs",
        Some(json!({
            "name": name, "os": "linux", "architecture": "x86_64", "sandbox": "firecracker",
            "cpu": 4, "memory": 51539607552u64, "disk": 137438953472u64, "fallback": fallback,
        })),
    )
    .await;
    spec["uuid"].as_str().unwrap().to_owned()
}

async fn fixture(server: &TestServer) -> Fixture {
    let token = admin(
        server,
        Method::POST,
        "/v0/tokens",
        Some(json!({ "name": "dev" })),
    )
    .await;
    let user = token["token"].as_str().unwrap().to_owned();
    let spec = create_spec(server, "Intel v1", true).await;
    let digest = push_image(server, &user, "bench").await;
    Fixture { user, spec, digest }
}

/// A runner serving `specs`: its UUID and key.
async fn create_runner(server: &TestServer, name: &str, specs: &[&str]) -> (String, String) {
    let created = admin(
        server,
        Method::POST,
        "/v0/runners",
        Some(json!({ "name": name })),
    )
    .await;
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    for spec in specs {
        admin(
            server,
            Method::POST,
            &format!("/v0/runners/{uuid}/specs"),
            Some(json!({ "spec": spec })),
        )
        .await;
    }
    (uuid, created["key"].as_str().unwrap().to_owned())
}

async fn open(server: &TestServer, runner: &str, key: &str) -> TestRunner {
    connect(server, runner, Some(key))
        .await
        .unwrap_or_else(|(status, body)| panic!("channel refused: {status} {body}"))
}

/// Submits a job to `bench` (on `spec`, if given) and returns it.
async fn submit(server: &TestServer, fixture: &Fixture, job: Value) -> Value {
    let mut job = job;
    job["image"] = json!("bench:v1");
    let (status, created) = call(
        server,
        &fixture.user,
        Method::POST,
        "/v0/run",
        Some(json!({ "project": "bench", "job": job })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

async fn view(server: &TestServer, job: &str) -> Value {
    admin(
        server,
        Method::GET,
        &format!("/v0/projects/bench/jobs/{job}"),
        None,
    )
    .await
}

/// Polls the job until it has `status` (the timeout task and the channel work in the
/// background).
async fn wait_for_status(server: &TestServer, job: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + client::PATIENCE;
    loop {
        let current = view(server, job).await;
        if current["status"] == status {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never became {status}: {current}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn runner_view(server: &TestServer, runner: &str) -> Value {
    admin(server, Method::GET, &format!("/v0/runners/{runner}"), None).await
}

/// Polls the runner until its state is `state`.
async fn wait_for_state(server: &TestServer, runner: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + client::PATIENCE;
    loop {
        let current = runner_view(server, runner).await;
        if current["state"] == state {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runner never became {state}: {current}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn results() -> Value {
    json!([
        { "exit_code": 0, "stdout": "{\"bench\": {\"latency\": {\"value\": 1}}}", "stderr": "", "output": { "/tmp/out.json": "{}" } },
        { "exit_code": 0, "stdout": "{\"bench\": {\"latency\": {\"value\": 2}}}" },
    ])
}

/// Runs a job through `ready`, `job` and `running` on an open channel.
async fn start_job(runner: &mut TestRunner) -> Value {
    runner
        .send(json!({ "event": "ready", "poll_timeout": 60 }))
        .await;
    let job = runner.expect("job").await;
    runner
        .send(json!({ "event": "running", "job": job["uuid"] }))
        .await;
    let ack = runner.expect("ack").await;
    assert!(ack.get("job").is_none(), "`running` gets a bare ack: {ack}");
    job
}

fn close_code(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> u16 {
    frame.map(|f| u16::from(f.code)).unwrap_or_default()
}

backend_tests!(
    refused_before_the_upgrade,
    one_live_channel_per_runner,
    rotation_and_archive_close_the_channel,
    ready_without_jobs_gets_no_job,
    a_submitted_job_is_pushed_to_a_waiting_runner,
    a_job_runs_to_completion,
    a_job_fails,
    cancel_reaches_the_runner,
    heartbeat_timeout_then_late_completion,
    hard_timeout_cancels_the_job,
    unknown_and_malformed_messages_are_not_fatal,
    oversized_messages_are_refused,
    another_runners_job_is_left_alone,
    timeouts_survive_a_restart,
    two_processes_share_the_queue,
    uploaded_output,
    capabilities_gate_dispatch,
    an_undeliverable_job_is_unclaimed,
);

async fn refused_before_the_upgrade(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (alpha, alpha_key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let (beta, beta_key) = create_runner(&server, "beta", &[&fixture.spec]).await;
    let (archived, archived_key) = create_runner(&server, "gone", &[]).await;
    admin(
        &server,
        Method::PATCH,
        &format!("/v0/runners/{archived}"),
        Some(json!({ "archived": true })),
    )
    .await;
    let wrong_key = format!("bencher_runner_{}", "x".repeat(30));
    let unknown = uuid::Uuid::new_v4().to_string();
    let refusals = [
        (alpha.as_str(), Some(wrong_key.as_str())),
        (alpha.as_str(), Some(beta_key.as_str())),
        (beta.as_str(), Some(alpha_key.as_str())),
        (archived.as_str(), Some(archived_key.as_str())),
        (unknown.as_str(), Some(alpha_key.as_str())),
        ("nobody", Some(alpha_key.as_str())),
        (alpha.as_str(), Some("bencher_runner_short")),
        (alpha.as_str(), Some(server.admin_token.expose_secret())),
        (alpha.as_str(), None),
    ];
    let mut messages = Vec::new();
    for (runner, key) in refusals {
        let Err((status, body)) = connect(&server, runner, key).await else {
            panic!("{runner} with {key:?} was let in");
        };
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["code"], "unauthorized");
        messages.push(body["message"].as_str().unwrap().to_owned());
    }
    // No hint of which part was wrong.
    messages.dedup();
    assert_eq!(messages, ["invalid runner credentials"]);

    // By UUID or slug, with the runner's own key.
    open(&server, &alpha, &alpha_key).await.close().await;
    open(&server, "alpha", &alpha_key).await.close().await;

    // A plain GET with a good key is not an upgrade.
    let (status, body) = call(
        &server,
        &alpha_key,
        Method::GET,
        &format!("/v0/runners/{alpha}/channel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

async fn one_live_channel_per_runner(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    assert_eq!(runner_view(&server, &runner).await["state"], "offline");
    let mut first = open(&server, &runner, &key).await;
    wait_for_state(&server, &runner, "idle").await;
    let mut second = open(&server, &runner, &key).await;
    let frame = first.expect_close().await;
    assert_eq!(close_code(frame.clone()), 4000, "{frame:?}");
    assert!(frame.unwrap().reason.contains("replaced"));
    // The newer one works.
    second
        .send(json!({ "event": "ready", "poll_timeout": 1 }))
        .await;
    second.expect("no_job").await;
    let seen = runner_view(&server, &runner).await;
    assert_eq!(seen["state"], "idle", "{seen}");
    assert!(seen["last_seen"].is_string(), "{seen}");
    second.close().await;
    wait_for_state(&server, &runner, "offline").await;
}

async fn rotation_and_archive_close_the_channel(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (runner, old_key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let mut channel = open(&server, &runner, &old_key).await;
    let rotated = admin(
        &server,
        Method::POST,
        &format!("/v0/runners/{runner}/key"),
        None,
    )
    .await;
    assert_eq!(close_code(channel.expect_close().await), 4001);
    let (status, _) = connect(&server, &runner, Some(&old_key))
        .await
        .err()
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let new_key = rotated["key"].as_str().unwrap();
    let mut channel = open(&server, &runner, new_key).await;
    wait_for_state(&server, &runner, "idle").await;
    let archived = admin(
        &server,
        Method::PATCH,
        &format!("/v0/runners/{runner}"),
        Some(json!({ "archived": true })),
    )
    .await;
    assert_eq!(archived["state"], "offline", "{archived}");
    assert_eq!(close_code(channel.expect_close().await), 4001);
    let (status, _) = connect(&server, &runner, Some(new_key))
        .await
        .err()
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn ready_without_jobs_gets_no_job(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let mut channel = open(&server, &runner, &key).await;
    channel
        .send(json!({ "event": "ready", "poll_timeout": 1 }))
        .await;
    channel.expect("no_job").await;
    // Out-of-range poll timeouts are clamped, not refused.
    channel
        .send(json!({ "event": "ready", "poll_timeout": 0 }))
        .await;
    channel.expect("no_job").await;
    // A runner without Specs waits for nothing, and says so after its timeout.
    let (lonely, lonely_key) = create_runner(&server, "lonely", &[]).await;
    submit(&server, &fixture, json!({})).await;
    let mut channel = open(&server, &lonely, &lonely_key).await;
    channel
        .send(json!({ "event": "ready", "poll_timeout": 1 }))
        .await;
    channel.expect("no_job").await;
}

async fn a_submitted_job_is_pushed_to_a_waiting_runner(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let mut channel = open(&server, &runner, &key).await;
    // A poll timeout far longer than the test's patience: the job must be pushed.
    channel
        .send(json!({ "event": "ready", "poll_timeout": 900 }))
        .await;
    // Let the runner settle into waiting (nothing is pending).
    assert!(
        channel
            .recv_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    let submitted = submit(
        &server,
        &fixture,
        json!({ "cmd": ["bench"], "env": { "SECRET": "s3cret" }, "timeout": 120 }),
    )
    .await;
    let job = channel.expect("job").await;
    assert_eq!(job["uuid"], submitted["uuid"]);
    assert_eq!(job["spec"]["uuid"].as_str(), Some(fixture.spec.as_str()));
    assert_eq!(job["timeout"], 120);
    assert_eq!(job["created"], submitted["created"]);
    let config = &job["config"];
    assert_eq!(config["digest"].as_str(), Some(fixture.digest.as_str()));
    assert_eq!(config["cmd"], json!(["bench"]));
    assert_eq!(
        config["env"]["SECRET"], "s3cret",
        "the runner gets the real values"
    );
    assert_eq!(config["project"], submitted["project"]);
    assert_eq!(
        config["registry"].as_str(),
        Some(server.url.as_str().trim_end_matches('/')),
        "the registry as the runner reached the server"
    );
    // A pull-only token for the job's project, valid past the job's hard limit.
    let token = job["oci_token"].as_str().unwrap();
    let claims = server
        .registry_tokens()
        .verify(token, server.clock.now())
        .expect("a valid registry token");
    let project = config["project"].as_str().unwrap().parse().unwrap();
    assert!(claims.allows(project, false) && !claims.allows(project, true));
    assert!(claims.exp >= server.clock.now().timestamp() + 120 + 60);

    let claimed = view(&server, submitted["uuid"].as_str().unwrap()).await;
    assert_eq!(claimed["status"], "claimed");
    assert_eq!(claimed["runner"].as_str(), Some(runner.as_str()));
    let state = runner_view(&server, &runner).await;
    assert_eq!(state["state"], "busy", "{state}");
    assert_eq!(state["current_job"], submitted["uuid"]);
}

async fn a_job_runs_to_completion(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let submitted = submit(&server, &fixture, json!({})).await;
    let uuid = submitted["uuid"].as_str().unwrap();
    let mut channel = open(&server, &runner, &key).await;
    start_job(&mut channel).await;
    let running = view(&server, uuid).await;
    assert_eq!(running["status"], "running");

    // Heartbeats are liveness, not conversation: no answer, a newer last_heartbeat.
    server.clock.advance(Duration::from_secs(5));
    channel.send(json!({ "event": "heartbeat" })).await;
    // Re-sending `running` (a resume) is acknowledged and refreshes liveness too.
    channel.send(json!({ "event": "running" })).await;
    assert!(channel.expect("ack").await.get("job").is_none());
    let beating = view(&server, uuid).await;
    let time = |job: &Value| {
        chrono::DateTime::parse_from_rfc3339(job["last_heartbeat"].as_str().unwrap()).unwrap()
    };
    assert!(time(&beating) > time(&running), "{beating}");

    channel
        .send(json!({ "event": "completed", "job": uuid, "results": results() }))
        .await;
    let ack = channel.expect("ack").await;
    assert_eq!(ack["job"].as_str(), Some(uuid));
    // Completed, then its output becomes a report.
    let done = wait_for_status(&server, uuid, "processed").await;
    assert_eq!(done["output"], results());
    assert!(done.get("error").is_none());
    // Lists leave the output out.
    let list = admin(&server, Method::GET, "/v0/projects/bench/jobs", None).await;
    assert!(list[0].get("output").is_none());

    // A re-sent terminal message is acknowledged and changes nothing.
    let other_results = json!([{ "exit_code": 3 }]);
    channel
        .send(json!({ "event": "completed", "job": uuid, "results": other_results }))
        .await;
    assert_eq!(channel.expect("ack").await["job"].as_str(), Some(uuid));
    assert_eq!(view(&server, uuid).await, done);

    // Idle again after `ready`.
    channel
        .send(json!({ "event": "ready", "poll_timeout": 1 }))
        .await;
    channel.expect("no_job").await;
    let state = runner_view(&server, &runner).await;
    assert_eq!(state["state"], "idle", "{state}");
    assert!(state.get("current_job").is_none());
}

async fn a_job_fails(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let submitted = submit(&server, &fixture, json!({})).await;
    let uuid = submitted["uuid"].as_str().unwrap();
    let mut channel = open(&server, &runner, &key).await;
    channel.send(json!({ "event": "ready" })).await;
    channel.expect("job").await;
    // Setup can fail before `running`.
    let failure = json!([{ "exit_code": 127, "stderr": "bench: not found" }]);
    channel
        .send(json!({ "event": "failed", "job": uuid, "results": failure, "error": "command not found" }))
        .await;
    assert_eq!(channel.expect("ack").await["job"].as_str(), Some(uuid));
    let failed = view(&server, uuid).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"], "command not found");
    assert_eq!(failed["output"], failure);
    // Re-sent: acknowledged, unchanged.
    channel
        .send(json!({ "event": "failed", "job": uuid, "error": "again" }))
        .await;
    assert_eq!(channel.expect("ack").await["job"].as_str(), Some(uuid));
    assert_eq!(view(&server, uuid).await, failed);
    // A `completed` after the runner's own failure cannot undo it, and is not lost
    // either: acknowledged, nothing changes.
    channel
        .send(json!({ "event": "completed", "job": uuid, "results": [] }))
        .await;
    assert_eq!(channel.expect("ack").await["job"].as_str(), Some(uuid));
    assert_eq!(view(&server, uuid).await["status"], "failed");
    // A `running` for it is told to stop.
    channel
        .send(json!({ "event": "running", "job": uuid }))
        .await;
    channel.expect("cancel").await;
}

async fn cancel_reaches_the_runner(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let submitted = submit(&server, &fixture, json!({})).await;
    let uuid = submitted["uuid"].as_str().unwrap();
    let mut channel = open(&server, &runner, &key).await;
    start_job(&mut channel).await;
    let canceled = call(
        &server,
        &fixture.user,
        Method::POST,
        &format!("/v0/projects/bench/jobs/{uuid}/cancel"),
        None,
    )
    .await;
    assert_eq!(canceled.0, StatusCode::OK, "{}", canceled.1);
    channel.expect("cancel").await;
    channel
        .send(json!({ "event": "canceled", "job": uuid }))
        .await;
    assert_eq!(channel.expect("ack").await["job"].as_str(), Some(uuid));
    assert_eq!(view(&server, uuid).await["status"], "canceled");

    // A pending job's cancel reaches nobody: the idle runner only hears `no_job`.
    let pending = submit(&server, &fixture, json!({ "spec": fixture.spec })).await;
    call(
        &server,
        &fixture.user,
        Method::POST,
        &format!(
            "/v0/projects/bench/jobs/{}/cancel",
            pending["uuid"].as_str().unwrap()
        ),
        None,
    )
    .await;
    channel
        .send(json!({ "event": "ready", "poll_timeout": 1 }))
        .await;
    channel.expect("no_job").await;
}

async fn heartbeat_timeout_then_late_completion(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let submitted = submit(&server, &fixture, json!({ "timeout": 3600 })).await;
    let uuid = submitted["uuid"].as_str().unwrap();
    let mut channel = open(&server, &runner, &key).await;
    start_job(&mut channel).await;
    // Pings are answered but are no sign of life for the job.
    server.clock.advance(Duration::from_secs(60));
    channel.send_raw(Message::Ping("x".into())).await.unwrap();
    assert!(matches!(channel.recv().await, Incoming::Pong));
    server.clock.advance(Duration::from_secs(31));
    let failed = wait_for_status(&server, uuid, "failed").await;
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("heartbeat timeout"),
        "{failed}"
    );
    // The runner kept going: its `running` is acknowledged without reviving the job,
    // and its late `completed` wins.
    channel.send(json!({ "event": "running" })).await;
    channel.expect("ack").await;
    channel
        .send(json!({ "event": "completed", "job": uuid, "results": results() }))
        .await;
    assert_eq!(channel.expect("ack").await["job"].as_str(), Some(uuid));
    let completed = wait_for_status(&server, uuid, "processed").await;
    assert!(completed.get("error").is_none(), "{completed}");
    assert_eq!(completed["output"], results());
}

async fn hard_timeout_cancels_the_job(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.job_grace_period = Duration::from_secs(5);
    })
    .await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let submitted = submit(&server, &fixture, json!({ "timeout": 10 })).await;
    let uuid = submitted["uuid"].as_str().unwrap();
    let mut channel = open(&server, &runner, &key).await;
    start_job(&mut channel).await;
    // Heartbeats keep coming, but 10 s + 5 s grace is the limit.
    server.clock.advance(Duration::from_secs(8));
    channel.send(json!({ "event": "heartbeat" })).await;
    server.clock.advance(Duration::from_secs(8));
    channel.send(json!({ "event": "heartbeat" })).await;
    channel.expect("cancel").await;
    let canceled = view(&server, uuid).await;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert!(
        canceled["error"]
            .as_str()
            .unwrap()
            .contains("timeout of 10 s plus 5 s grace")
    );
    channel
        .send(json!({ "event": "canceled", "job": uuid }))
        .await;
    assert_eq!(channel.expect("ack").await["job"].as_str(), Some(uuid));
}

async fn unknown_and_malformed_messages_are_not_fatal(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let mut channel = open(&server, &runner, &key).await;
    channel.send(json!({ "event": "dance", "steps": 3 })).await;
    channel.send_text("not json at all").await;
    channel.send_text("[1, 2, 3]").await;
    channel.send(json!({ "no": "event" })).await;
    channel.send(json!({ "event": "completed" })).await;
    channel
        .send(json!({ "event": "ready", "poll_timeout": "soon" }))
        .await;
    channel
        .send_raw(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    // Extra fields from a newer runner are fine.
    channel
        .send(json!({ "event": "ready", "poll_timeout": 1, "mood": "eager" }))
        .await;
    channel.expect("no_job").await;
}

async fn oversized_messages_are_refused(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.request_limit = "64KiB".parse().unwrap();
    })
    .await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let mut channel = open(&server, &runner, &key).await;
    let huge = json!({ "event": "heartbeat", "padding": "x".repeat(100 * 1024) });
    // The server may close before the whole frame is written.
    let _ = channel.send_raw(Message::text(huge.to_string())).await;
    let frame = channel.expect_close().await;
    assert_eq!(close_code(frame.clone()), 1009, "{frame:?}");
    // The runner can come back with messages that fit.
    let mut channel = open(&server, &runner, &key).await;
    channel
        .send(json!({ "event": "ready", "poll_timeout": 1 }))
        .await;
    channel.expect("no_job").await;
}

async fn another_runners_job_is_left_alone(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (alpha, alpha_key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let (beta, beta_key) = create_runner(&server, "beta", &[&fixture.spec]).await;
    let submitted = submit(&server, &fixture, json!({})).await;
    let uuid = submitted["uuid"].as_str().unwrap();
    let mut holder = open(&server, &alpha, &alpha_key).await;
    start_job(&mut holder).await;
    let before = view(&server, uuid).await;

    // Terminal messages about a job the runner does not hold change nothing; they are
    // acknowledged without effect, so the runner stops re-sending them.
    let mut intruder = open(&server, &beta, &beta_key).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for (message, job) in [
        (
            json!({ "event": "completed", "job": uuid, "results": results() }),
            uuid,
        ),
        (
            json!({ "event": "failed", "job": uuid, "error": "no" }),
            uuid,
        ),
        (
            json!({ "event": "completed", "job": unknown, "results": [] }),
            unknown.as_str(),
        ),
    ] {
        intruder.send(message).await;
        assert_eq!(intruder.expect("ack").await["job"].as_str(), Some(job));
    }
    // A `running` for it is told to stop.
    intruder
        .send(json!({ "event": "running", "job": uuid }))
        .await;
    intruder.expect("cancel").await;
    intruder.send(json!({ "event": "heartbeat" })).await;
    assert_eq!(view(&server, uuid).await, before);
    // Its cancel is not sent to the intruder either.
    call(
        &server,
        &fixture.user,
        Method::POST,
        &format!("/v0/projects/bench/jobs/{uuid}/cancel"),
        None,
    )
    .await;
    holder.expect("cancel").await;
    intruder
        .send(json!({ "event": "ready", "poll_timeout": 1 }))
        .await;
    intruder.expect("no_job").await;
}

async fn timeouts_survive_a_restart(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let claimed = submit(&server, &fixture, json!({ "timeout": 3600 })).await;
    let running = submit(&server, &fixture, json!({ "timeout": 3600 })).await;
    let mut channel = open(&server, &runner, &key).await;
    channel.send(json!({ "event": "ready" })).await;
    assert_eq!(channel.expect("job").await["uuid"], claimed["uuid"]);
    // (One identity holding two jobs: the first was abandoned, as after a runner crash.)
    let started = start_job(&mut channel).await;
    assert_eq!(started["uuid"], running["uuid"]);
    drop(channel);

    // The server restarts; the runner never comes back.
    let server = server.restart().await;
    server.clock.advance(Duration::from_secs(91));
    for job in [&claimed, &running] {
        let failed = wait_for_status(&server, job["uuid"].as_str().unwrap(), "failed").await;
        assert!(
            failed["error"].as_str().unwrap().contains("heartbeat"),
            "{failed}"
        );
    }
    assert_eq!(runner_view(&server, &runner).await["state"], "offline");
}

async fn two_processes_share_the_queue(backend: Backend) {
    if backend == Backend::Sqlite {
        // With SQLite one process serves the database; wake-ups stay in memory.
        eprintln!("SKIPPED two_processes_share_the_queue::sqlite: PostgreSQL only");
        return;
    }
    let a = TestServer::start(backend).await;
    let b = TestServer::start_sharing(&a).await;
    let fixture = fixture(&a).await;
    let other_spec = create_spec(&a, "ARM v1", false).await;
    let (on_a, on_a_key) = create_runner(&a, "on-a", &[&other_spec]).await;
    let (on_b, on_b_key) = create_runner(&a, "on-b", &[&fixture.spec]).await;
    let mut runner_a = open(&a, &on_a, &on_a_key).await;
    let mut runner_b = open(&b, &on_b, &on_b_key).await;
    runner_a
        .send(json!({ "event": "ready", "poll_timeout": 900 }))
        .await;
    runner_b
        .send(json!({ "event": "ready", "poll_timeout": 900 }))
        .await;
    assert!(
        runner_b
            .recv_within(Duration::from_millis(300))
            .await
            .is_none()
    );

    // Submitted on A, pushed to the runner on B through LISTEN/NOTIFY.
    let submitted = submit(&a, &fixture, json!({ "spec": fixture.spec })).await;
    let job = runner_b.expect("job").await;
    assert_eq!(job["uuid"], submitted["uuid"]);
    let uuid = submitted["uuid"].as_str().unwrap();
    runner_b
        .send(json!({ "event": "running", "job": uuid }))
        .await;
    runner_b.expect("ack").await;
    // Each process sees the other's runner.
    let seen = runner_view(&a, &on_b).await;
    assert_eq!(seen["state"], "busy", "{seen}");
    assert_eq!(seen["current_job"].as_str(), Some(uuid));
    assert_eq!(runner_view(&b, &on_a).await["state"], "idle");

    // Canceled on A, stopped on B.
    call(
        &a,
        &fixture.user,
        Method::POST,
        &format!("/v0/projects/bench/jobs/{uuid}/cancel"),
        None,
    )
    .await;
    runner_b.expect("cancel").await;
    runner_b
        .send(json!({ "event": "canceled", "job": uuid }))
        .await;
    runner_b.expect("ack").await;

    // Both runners on one Spec, one on each process: a job goes to exactly one.
    admin(
        &a,
        Method::POST,
        &format!("/v0/runners/{on_a}/specs"),
        Some(json!({ "spec": fixture.spec })),
    )
    .await;
    runner_a
        .send(json!({ "event": "ready", "poll_timeout": 3 }))
        .await;
    runner_b
        .send(json!({ "event": "ready", "poll_timeout": 3 }))
        .await;
    assert!(
        runner_a
            .recv_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    let submitted = submit(&b, &fixture, json!({ "spec": fixture.spec })).await;
    let mut jobs = 0;
    for runner in [&mut runner_a, &mut runner_b] {
        match runner.recv().await {
            Incoming::Message(message) if message["event"] == "job" => {
                assert_eq!(message["uuid"], submitted["uuid"]);
                jobs += 1;
            }
            Incoming::Message(message) if message["event"] == "no_job" => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(jobs, 1, "claimed exactly once");

    // A connection on B replaces the runner's connection on A.
    let mut again = open(&b, &on_a, &on_a_key).await;
    loop {
        match runner_a.recv().await {
            Incoming::Closed(frame) => {
                assert_eq!(close_code(frame), 4000);
                break;
            }
            // A `no_job` may still have been on its way.
            Incoming::Message(message) if message["event"] == "no_job" => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Rotating on A closes the channel on B.
    admin(&a, Method::POST, &format!("/v0/runners/{on_a}/key"), None).await;
    assert_eq!(close_code(again.expect_close().await), 4001);
    drop(b);
}

/// `PUT /v0/runners/{runner}/jobs/{job}/output` with `key` and a raw body.
async fn upload(
    server: &TestServer,
    key: Option<&str>,
    runner: &str,
    job: &str,
    document: String,
) -> (StatusCode, Value) {
    let request = server
        .request_as(
            Method::PUT,
            &format!("/v0/runners/{runner}/jobs/{job}/output"),
            key,
        )
        .header("content-type", "application/json")
        .body(document);
    body(request.send().await.expect("request")).await
}

/// Protocol extension `upload`: output larger than a message is uploaded by the runner
/// holding the job, then referenced by its terminal message.
async fn uploaded_output(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.request_limit = "16KiB".parse().unwrap();
        config.max_output_size = "64KiB".parse().unwrap();
    })
    .await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let (other, other_key) = create_runner(&server, "beta", &[&fixture.spec]).await;
    let submitted = submit(&server, &fixture, json!({})).await;
    let uuid = submitted["uuid"].as_str().unwrap();
    let mut channel = open(&server, &runner, &key).await;
    start_job(&mut channel).await;

    // Larger than a channel message may be.
    // Benchmark output (BMF) padded past the request limit.
    let stdout = format!(
        "{}{}",
        r#"{"bench": {"latency": {"value": 1}}}"#,
        " ".repeat(32 * 1024)
    );
    let results = json!([{ "exit_code": 0, "stdout": stdout }]);
    let document = json!({ "results": results }).to_string();

    // The runner's key, and only for the job it holds. (Small bodies: a refusal may
    // come before the body is read.)
    let small = json!({ "results": [] }).to_string();
    let (status, _) = upload(&server, None, &runner, uuid, small.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = upload(&server, Some(&other_key), &runner, uuid, small.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = upload(&server, Some(&other_key), &other, uuid, small.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let unknown = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let (status, _) = upload(&server, Some(&key), &runner, unknown, small.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Bounded by `max_output_size`, and it must be an output document.
    let huge = json!({ "results": [{ "exit_code": 0, "stdout": "a".repeat(65 * 1024) }] });
    let (status, _) = upload(&server, Some(&key), &runner, uuid, huge.to_string()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = upload(&server, Some(&key), &runner, uuid, "{\"x\":1}".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, stored) = upload(&server, Some(&key), &runner, uuid, document.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let digest = stored["digest"].as_str().unwrap().to_owned();
    // The same document again: the same digest.
    let (status, again) = upload(&server, Some(&key), &runner, uuid, document.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["digest"].as_str(), Some(digest.as_str()));

    // A reference to nothing closes the channel (the runner re-sends after reconnecting).
    let missing = format!("sha256:{}", "0".repeat(64));
    channel
        .send(json!({ "event": "completed", "job": uuid, "output": missing }))
        .await;
    let frame = channel.expect_close().await;
    assert_eq!(close_code(frame.clone()), 1011, "{frame:?}");
    assert_eq!(view(&server, uuid).await["status"], "running");
    // A `failed` cannot reference a document without an error.
    let mut channel = open(&server, &runner, &key).await;
    channel
        .send(json!({ "event": "failed", "job": uuid, "error": "x", "output": digest }))
        .await;
    let frame = channel.expect_close().await;
    assert_eq!(close_code(frame.clone()), 1011, "{frame:?}");

    let mut channel = open(&server, &runner, &key).await;
    channel
        .send(json!({ "event": "completed", "job": uuid, "output": digest }))
        .await;
    assert_eq!(channel.expect("ack").await["job"].as_str(), Some(uuid));
    let done = wait_for_status(&server, uuid, "processed").await;
    assert_eq!(done["output"], results);
    assert!(done.get("error").is_none());

    // Not once the job has ended with its output recorded; a re-sent message is
    // acknowledged whatever it references, and changes nothing.
    let (status, _) = upload(&server, Some(&key), &runner, uuid, document).await;
    assert_eq!(status, StatusCode::CONFLICT);
    channel
        .send(json!({ "event": "completed", "job": uuid, "output": missing }))
        .await;
    assert_eq!(channel.expect("ack").await["job"].as_str(), Some(uuid));
    assert_eq!(view(&server, uuid).await, done);
}

/// A runner's `capabilities` in `ready`.
fn capabilities(sandboxes: &[&str], cpus: u32) -> Value {
    json!({
        "os": "linux", "arch": "x86_64", "no_sandbox": false, "sandboxes": sandboxes,
        "cpus": cpus, "memory": 64u64 << 30, "disk": 1u64 << 40,
    })
}

/// A `ready` with the `capabilities` extension.
fn ready_with(poll_timeout: u32, capabilities: Value) -> Value {
    json!({
        "event": "ready", "poll_timeout": poll_timeout, "features": ["capabilities"],
        "capabilities": capabilities,
    })
}

async fn capabilities_gate_dispatch(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;

    // The runner reads its own Specs with its key (and only its own).
    let url = format!("{}v0/runners/{runner}/specs", server.url);
    let http = reqwest::Client::new();
    let specs: Value = http
        .get(&url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(specs[0]["uuid"].as_str(), Some(fixture.spec.as_str()));
    let (other, _) = create_runner(&server, "beta", &[&fixture.spec]).await;
    let refused = http
        .get(format!("{}v0/runners/{other}/specs", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let submitted = submit(&server, &fixture, json!({})).await;
    let mut channel = open(&server, &runner, &key).await;
    // The Spec needs firecracker and 4 CPUs: a runner without either gets nothing.
    for capabilities in [
        capabilities(&["gvisor"], 8),
        capabilities(&["firecracker"], 2),
    ] {
        channel.send(ready_with(1, capabilities)).await;
        channel.expect("no_job").await;
    }
    assert_eq!(
        view(&server, submitted["uuid"].as_str().unwrap()).await["status"],
        "pending"
    );
    // Capable, it gets the job.
    channel
        .send(ready_with(60, capabilities(&["firecracker"], 4)))
        .await;
    let job = channel.expect("job").await;
    assert_eq!(job["uuid"], submitted["uuid"]);

    // A Spec allowing network is not for a runner whose firecracker gives jobs none.
    let networked = admin(
        &server,
        Method::POST,
        "/v0/specs",
        Some(json!({
            "name": "Networked", "os": "linux", "architecture": "x86_64",
            "sandbox": "firecracker", "cpu": 4, "memory": 51539607552u64,
            "disk": 137438953472u64, "network": true,
        })),
    )
    .await;
    let networked = networked["uuid"].as_str().unwrap();
    let online = submit(&server, &fixture, json!({ "spec": networked })).await;
    let (other, other_key) = create_runner(&server, "gamma", &[networked]).await;
    let mut channel = open(&server, &other, &other_key).await;
    let mut offline = capabilities(&["firecracker"], 4);
    offline["sandboxes_without_network"] = json!(["firecracker"]);
    channel.send(ready_with(1, offline)).await;
    channel.expect("no_job").await;
    channel
        .send(ready_with(60, capabilities(&["firecracker"], 4)))
        .await;
    let job = channel.expect("job").await;
    assert_eq!(job["uuid"], online["uuid"]);
    assert_eq!(job["spec"]["network"], true);
}

/// A runner that stops reading cannot take a `job`: the send times out (half the
/// heartbeat timeout), the claim is undone and the job goes to the next runner. The
/// job's environment is larger than what the kernel buffers on both ends of the
/// connection (the runner's receive buffer is fixed small; the server's send buffer
/// grows at most to the last value of `net.ipv4.tcp_wmem`), so the send cannot complete.
async fn an_undeliverable_job_is_unclaimed(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.heartbeat_timeout = Duration::from_secs(6);
        config.request_limit = "256MiB".parse().unwrap();
    })
    .await;
    let fixture = fixture(&server).await;
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let mut stalled = client::connect_small_buffer(&server, &runner, &key).await;
    stalled
        .send(json!({ "event": "ready", "poll_timeout": 60 }))
        .await;
    let send_buffer: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|text| text.split_whitespace().last()?.parse().ok())
        .unwrap_or(4 << 20);
    let value_size = (2 * send_buffer + (8 << 20)) / 200;
    let env: serde_json::Map<String, Value> = (0..200)
        .map(|i| (format!("VAR_{i}"), json!("x".repeat(value_size))))
        .collect();
    let submitted = submit(&server, &fixture, json!({ "env": env })).await;
    let job = submitted["uuid"].as_str().unwrap();
    // Claimed for the stalled runner, then unclaimed when the send gives up.
    let deadline = tokio::time::Instant::now() + client::PATIENCE;
    loop {
        let (status, view) = call(
            &server,
            &fixture.user,
            Method::GET,
            &format!("/v0/projects/bench/jobs/{job}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        if view["status"] == "claimed" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never claimed: {}",
            view["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pending = wait_for_status(&server, job, "pending").await;
    assert!(pending["runner"].is_null(), "{}", pending["runner"]);
    // The channel is gone; a runner that reads gets the job.
    drop(stalled);
    let mut channel = open(&server, &runner, &key).await;
    channel
        .send(json!({ "event": "ready", "poll_timeout": 60 }))
        .await;
    let sent = channel.expect("job").await;
    assert_eq!(sent["uuid"].as_str(), Some(job));
}
