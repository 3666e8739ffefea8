//! The runner agent against a fake server written here: a tokio-tungstenite WebSocket
//! server on 127.0.0.1:0 that speaks the Runner Protocol as each test scripts it. The
//! agent runs in process with a fake job backend (no images, no executor), and the real
//! `runner` binary runs for what only a process shows: exit codes, signals, restarts;
//! one test runs it end to end, pulling from a real registry (`TestServer`) and running
//! the job with the real executor (needs root; skipped with a note otherwise, failed
//! under `CI`). IO: loopback sockets, a temporary spool and cache per test, child
//! processes, the test server.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use bencher_runner::agent::core::{self, Assignment, Exit, JobOutcome, NoSandbox};
use bencher_runner::agent::driver::{self, JobBackend};
use bencher_runner::agent::link::{self, LinkConfig};
use bencher_runner::spool::Spool;
use bencher_types::protocol::{IterationResult, RunnerMessage};
use bencher_types::{Architecture, JobUuid, Os, RunnerKey, Sandbox};
use common::push_host_image;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_util::sync::CancellationToken;

const KEY: &str = "bencher_runner_0123456789abcdefghijABCDEFGHIJ";
const RUNNER: &str = "my-runner";
/// Bound on every wait for the runner; never a timing assertion.
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------
// The fake server.

/// How the fake server answers upgrades.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// Accept the right key on the right path, refuse the rest with 401.
    Check,
    /// Refuse everything with 401, as for a rotated key.
    Refuse,
}

/// Upgrade requests seen: (path, Authorization header).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct FakeServer {
    addr: SocketAddr,
    peers: mpsc::UnboundedReceiver<Peer>,
    requests: Seen,
    accept: JoinHandle<()>,
}

/// One accepted WebSocket, served by its own task so pings are answered while the test
/// is busy elsewhere.
struct Peer {
    messages: mpsc::UnboundedReceiver<String>,
    commands: mpsc::UnboundedSender<PeerCommand>,
}

enum PeerCommand {
    Send(String),
    /// Drop the TCP connection without a close handshake.
    Drop,
}

impl FakeServer {
    async fn start(auth: Auth) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (peers_tx, peers) = mpsc::unbounded_channel();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let peers_tx = peers_tx.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    if let Some(peer) = upgrade(stream, auth, seen).await {
                        let _ = peers_tx.send(peer);
                    }
                });
            }
        });
        Self {
            addr,
            peers,
            requests,
            accept,
        }
    }

    fn host(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn next_peer(&mut self) -> Peer {
        timeout(WAIT, self.peers.recv())
            .await
            .expect("the runner did not connect")
            .expect("the server stopped")
    }

    fn requests(&self) -> Vec<(String, Option<String>)> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn upgrade(stream: TcpStream, auth: Auth, seen: Seen) -> Option<Peer> {
    #[expect(
        clippy::result_large_err,
        reason = "tungstenite's callback type; a test refuses a handful of upgrades"
    )]
    let callback = move |request: &Request, response: Response| {
        let path = request.uri().path().to_owned();
        let authorization = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ok = auth == Auth::Check
            && path == format!("/v0/runners/{RUNNER}/channel")
            && authorization.as_deref() == Some(&format!("Bearer {KEY}"));
        seen.lock().unwrap().push((path, authorization));
        if ok {
            Ok(response)
        } else {
            let mut refusal = ErrorResponse::new(Some("unauthorized".to_owned()));
            *refusal.status_mut() = StatusCode::UNAUTHORIZED;
            Err(refusal)
        }
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback)
        .await
        .ok()?;
    let (messages_tx, messages) = mpsc::unbounded_channel();
    let (commands, mut commands_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let _ = messages_tx.send(text.as_str().to_owned());
                    }
                    Some(Ok(_)) => {}
                    // Closed (the library answered a Close) or broken.
                    Some(Err(_)) | None => return,
                },
                command = commands_rx.recv() => match command {
                    Some(PeerCommand::Send(text)) => {
                        if ws.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                    Some(PeerCommand::Drop) | None => return,
                },
            }
        }
    });
    Some(Peer { messages, commands })
}

impl Peer {
    /// The next message from the runner, heartbeats included.
    async fn recv_any(&mut self) -> RunnerMessage {
        let text = timeout(WAIT, self.messages.recv())
            .await
            .expect("no message from the runner")
            .expect("the connection closed instead");
        RunnerMessage::parse(&text).unwrap_or_else(|e| panic!("bad message {text}: {e}"))
    }

    /// The next message that is not a heartbeat.
    async fn recv(&mut self) -> RunnerMessage {
        loop {
            let message = self.recv_any().await;
            if message != RunnerMessage::Heartbeat {
                return message;
            }
        }
    }

    /// Waits until the runner closes the connection; fails on any message but
    /// heartbeats.
    async fn closed(&mut self) {
        loop {
            let next = timeout(WAIT, self.messages.recv())
                .await
                .expect("the runner did not close the connection");
            match next {
                None => return,
                Some(text) => assert_eq!(
                    RunnerMessage::parse(&text).unwrap(),
                    RunnerMessage::Heartbeat,
                    "unexpected message while waiting for the close"
                ),
            }
        }
    }

    fn send(&self, message: Value) {
        self.commands
            .send(PeerCommand::Send(message.to_string()))
            .expect("peer task gone");
    }

    fn drop_connection(&self) {
        let _ = self.commands.send(PeerCommand::Drop);
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "aarch64",
        _ => "x86_64",
    }
}

/// A `job` message; `sandbox: None` is a Spec without one.
fn job(uuid: JobUuid, sandbox: Option<&str>) -> Value {
    let mut spec = json!({
        "uuid": "6f1c2a57-6a43-4c4c-9a39-6b7d8f1e2a10",
        "name": "Intel v1",
        "slug": "intel-v1",
        "os": "linux",
        "architecture": host_arch(),
        // Small enough for any test machine: the real binary refuses a Spec larger
        // than its host.
        "cpu": 1,
        "memory": 1u64 << 30,
        "disk": 1u64 << 30,
        "network": false,
        "fallback": false,
        "created": "2026-01-01T00:00:00Z",
        "modified": "2026-01-01T00:00:00Z",
    });
    if let Some(sandbox) = sandbox {
        spec["sandbox"] = json!(sandbox);
    }
    json!({
        "event": "job",
        "uuid": uuid,
        "spec": spec,
        "config": {
            "registry": "http://127.0.0.1:1",
            "project": "0b7c2d1e-5f6a-4b3c-8d9e-0f1a2b3c4d5e",
            "digest": format!("sha256:{}", "a".repeat(64)),
            "cmd": ["bench"],
            "timeout": 60,
        },
        "oci_token": "pull-token",
        "timeout": 60,
        "created": "2026-01-01T00:00:00Z",
    })
}

fn ack(job: Option<JobUuid>) -> Value {
    match job {
        Some(job) => json!({"event": "ack", "job": job}),
        None => json!({"event": "ack"}),
    }
}

fn assert_ready(message: &RunnerMessage) {
    let RunnerMessage::Ready {
        poll_timeout,
        runner,
        ..
    } = message
    else {
        panic!("expected ready, got {message:?}");
    };
    assert_eq!(*poll_timeout, Some(55));
    let runner = runner.as_ref().expect("runner metadata");
    assert_eq!(runner.os, std::env::consts::OS);
    assert_eq!(runner.arch, std::env::consts::ARCH);
    assert!(!runner.version.is_empty());
}

// ---------------------------------------------------------------------------------
// The agent in process, with a fake backend.

#[derive(Default)]
struct FakeBackend {
    prepared: AtomicUsize,
    /// Each permit lets one executing job complete.
    release: Notify,
}

fn results() -> Vec<IterationResult> {
    vec![IterationResult {
        exit_code: 0,
        stdout: Some("bench 42 ns/iter".into()),
        ..Default::default()
    }]
}

impl JobBackend for FakeBackend {
    type Prepared = Assignment;

    async fn prepare(
        &self,
        assignment: Assignment,
        _cancel: CancellationToken,
    ) -> Result<Assignment, String> {
        self.prepared.fetch_add(1, Ordering::SeqCst);
        assert_eq!(assignment.oci_token.expose_secret(), "pull-token");
        Ok(assignment)
    }

    async fn execute(&self, _prepared: Assignment, cancel: CancellationToken) -> JobOutcome {
        tokio::select! {
            () = self.release.notified() => JobOutcome::Completed { results: results(), environment: None },
            () = cancel.cancelled() => JobOutcome::Canceled { results: vec![] },
        }
    }
}

struct Agent {
    task: JoinHandle<Result<Exit, driver::AgentError>>,
    signals: mpsc::UnboundedSender<()>,
    backend: Arc<FakeBackend>,
}

impl Agent {
    fn start(server: &FakeServer, spool_dir: &std::path::Path, allow_no_sandbox: bool) -> Self {
        let config = core::Config {
            poll_timeout: 55,
            metadata: bencher_runner::agent::metadata(),
            features: vec![],
            auto_update: false,
            os: Some(Os::Linux),
            architecture: Some(if host_arch() == "aarch64" {
                Architecture::Aarch64
            } else {
                Architecture::X86_64
            }),
            no_sandbox: if allow_no_sandbox {
                NoSandbox::Allowed
            } else {
                NoSandbox::Refused
            },
            sandboxes: vec![Sandbox::Firecracker],
            sandboxes_without_network: vec![],
            machine: core::Machine {
                cpus: 64,
                memory: 1 << 40,
                disk: 1 << 44,
            },
            timing: core::Timing::default(),
        };
        let key: RunnerKey = KEY.parse().unwrap();
        let link = LinkConfig {
            url: link::channel_url(&server.host().parse().unwrap(), &RUNNER.parse().unwrap())
                .unwrap(),
            key,
            tls: link::tls_config().unwrap(),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(1),
            silence_limit: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
        };
        let spool = Spool::open(spool_dir).unwrap();
        let backend = Arc::new(FakeBackend::default());
        let (signals, signals_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(driver::run(
            config,
            link,
            backend.clone(),
            spool,
            None,
            signals_rx,
        ));
        Self {
            task,
            signals,
            backend,
        }
    }

    fn signal(&self) {
        self.signals.send(()).unwrap();
    }

    async fn exit(self) -> Exit {
        timeout(WAIT, self.task)
            .await
            .expect("the agent did not exit")
            .unwrap()
            .unwrap()
    }
}

fn spooled_jobs(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn handshake_job_and_drain() {
    let mut server = FakeServer::start(Auth::Check).await;
    let spool = tempfile::tempdir().unwrap();
    let agent = Agent::start(&server, spool.path(), false);

    let mut peer = server.next_peer().await;
    assert_eq!(
        server.requests(),
        vec![(
            format!("/v0/runners/{RUNNER}/channel"),
            Some(format!("Bearer {KEY}"))
        )]
    );
    assert_ready(&peer.recv().await);
    peer.send(json!({"event": "no_job"}));
    assert_ready(&peer.recv().await);
    // Unknown events are ignored, never fatal.
    peer.send(json!({"event": "dance", "steps": 3}));
    // An update offer answers `ready` like `no_job`; with self-update off it is
    // declined, and the runner asks again.
    peer.send(json!({"event": "update", "version": "9.9.9", "url": "http://x", "checksum": "00"}));
    assert_ready(&peer.recv().await);

    let uuid = JobUuid::new_v4();
    peer.send(job(uuid, Some("firecracker")));
    assert_eq!(
        peer.recv().await,
        RunnerMessage::Running { job: Some(uuid) }
    );
    peer.send(ack(None));
    // Heartbeats while it runs.
    assert_eq!(peer.recv_any().await, RunnerMessage::Heartbeat);
    assert_eq!(peer.recv_any().await, RunnerMessage::Heartbeat);
    agent.backend.release.notify_one();
    let completed = peer.recv().await;
    assert_eq!(
        completed,
        RunnerMessage::Completed {
            job: uuid,
            results: results(),
            output: None,
            environment: None,
        }
    );
    // On disk until acknowledged.
    assert_eq!(spooled_jobs(spool.path()), vec![format!("{uuid}.json")]);
    peer.send(ack(Some(uuid)));
    assert_ready(&peer.recv().await);
    assert!(spooled_jobs(spool.path()).is_empty());
    assert_eq!(agent.backend.prepared.load(Ordering::SeqCst), 1);

    // Drain while polling: the runner closes, and exits without another `ready`.
    agent.signal();
    peer.closed().await;
    assert_eq!(agent.exit().await, Exit::Drained);
}

#[tokio::test]
async fn unauthorized_stops_the_agent() {
    let mut server = FakeServer::start(Auth::Refuse).await;
    let spool = tempfile::tempdir().unwrap();
    let agent = Agent::start(&server, spool.path(), false);
    assert_eq!(agent.exit().await, Exit::Unauthorized);
    // One attempt, no retry loop.
    assert_eq!(server.requests().len(), 1);
    assert!(server.peers.try_recv().is_err());
}

#[tokio::test]
async fn a_result_unacknowledged_when_the_connection_drops_is_resent_first() {
    let mut server = FakeServer::start(Auth::Check).await;
    let spool = tempfile::tempdir().unwrap();
    let agent = Agent::start(&server, spool.path(), false);

    let mut peer = server.next_peer().await;
    assert_ready(&peer.recv().await);
    let uuid = JobUuid::new_v4();
    peer.send(job(uuid, Some("firecracker")));
    assert_eq!(
        peer.recv().await,
        RunnerMessage::Running { job: Some(uuid) }
    );
    peer.send(ack(None));
    agent.backend.release.notify_one();
    let completed = peer.recv().await;
    assert!(matches!(completed, RunnerMessage::Completed { .. }));
    // Gone before the ack.
    peer.drop_connection();

    let mut peer = server.next_peer().await;
    assert_eq!(
        peer.recv().await,
        completed,
        "the result comes first, before ready"
    );
    assert_eq!(spooled_jobs(spool.path()), vec![format!("{uuid}.json")]);
    peer.send(ack(Some(uuid)));
    assert_ready(&peer.recv().await);
    assert!(spooled_jobs(spool.path()).is_empty());

    agent.signal();
    peer.closed().await;
    assert_eq!(agent.exit().await, Exit::Drained);
}

#[tokio::test]
async fn a_job_outlives_a_dropped_connection() {
    let mut server = FakeServer::start(Auth::Check).await;
    let spool = tempfile::tempdir().unwrap();
    let agent = Agent::start(&server, spool.path(), false);

    let mut peer = server.next_peer().await;
    assert_ready(&peer.recv().await);
    let uuid = JobUuid::new_v4();
    peer.send(job(uuid, Some("firecracker")));
    assert_eq!(
        peer.recv().await,
        RunnerMessage::Running { job: Some(uuid) }
    );
    peer.drop_connection();

    // Back: `running` again for the job still executing, not `ready`.
    let mut peer = server.next_peer().await;
    assert_eq!(
        peer.recv().await,
        RunnerMessage::Running { job: Some(uuid) }
    );
    peer.send(ack(None));
    agent.backend.release.notify_one();
    assert!(matches!(peer.recv().await, RunnerMessage::Completed { job, .. } if job == uuid));
    peer.send(ack(Some(uuid)));
    assert_ready(&peer.recv().await);
    agent.signal();
    peer.closed().await;
    assert_eq!(agent.exit().await, Exit::Drained);
}

#[tokio::test]
async fn cancel_answers_canceled() {
    let mut server = FakeServer::start(Auth::Check).await;
    let spool = tempfile::tempdir().unwrap();
    let agent = Agent::start(&server, spool.path(), false);

    let mut peer = server.next_peer().await;
    assert_ready(&peer.recv().await);
    let uuid = JobUuid::new_v4();
    peer.send(job(uuid, Some("firecracker")));
    assert_eq!(
        peer.recv().await,
        RunnerMessage::Running { job: Some(uuid) }
    );
    peer.send(ack(None));
    peer.send(json!({"event": "cancel"}));
    assert_eq!(peer.recv().await, RunnerMessage::Canceled { job: uuid });
    peer.send(ack(Some(uuid)));
    assert_ready(&peer.recv().await);
    agent.signal();
    peer.closed().await;
    assert_eq!(agent.exit().await, Exit::Drained);
}

#[tokio::test]
async fn a_job_without_sandbox_is_refused_without_the_flag() {
    let mut server = FakeServer::start(Auth::Check).await;
    let spool = tempfile::tempdir().unwrap();
    let agent = Agent::start(&server, spool.path(), false);

    let mut peer = server.next_peer().await;
    assert_ready(&peer.recv().await);
    let uuid = JobUuid::new_v4();
    peer.send(job(uuid, None));
    let RunnerMessage::Failed {
        job,
        results,
        error,
        ..
    } = peer.recv().await
    else {
        panic!("expected failed");
    };
    assert_eq!(job, uuid);
    assert!(results.is_empty());
    assert!(error.contains("--danger-allow-no-sandbox"), "{error}");
    assert_eq!(
        agent.backend.prepared.load(Ordering::SeqCst),
        0,
        "nothing was pulled or run"
    );
    peer.send(ack(Some(uuid)));
    assert_ready(&peer.recv().await);
    agent.signal();
    peer.closed().await;
    assert_eq!(agent.exit().await, Exit::Drained);
}

#[tokio::test]
async fn drain_lets_the_job_finish_then_exits() {
    let mut server = FakeServer::start(Auth::Check).await;
    let spool = tempfile::tempdir().unwrap();
    let agent = Agent::start(&server, spool.path(), true);

    let mut peer = server.next_peer().await;
    assert_ready(&peer.recv().await);
    let uuid = JobUuid::new_v4();
    peer.send(job(uuid, None));
    assert_eq!(
        peer.recv().await,
        RunnerMessage::Running { job: Some(uuid) }
    );
    peer.send(ack(None));
    agent.signal();
    // Still running, still heartbeating.
    assert_eq!(peer.recv_any().await, RunnerMessage::Heartbeat);
    agent.backend.release.notify_one();
    assert!(matches!(peer.recv().await, RunnerMessage::Completed { job, .. } if job == uuid));
    peer.send(ack(Some(uuid)));
    // No `ready` after the ack: the runner leaves.
    peer.closed().await;
    assert_eq!(agent.exit().await, Exit::Drained);
    assert!(spooled_jobs(spool.path()).is_empty());
}

#[tokio::test]
async fn a_second_signal_cancels_the_job_and_still_reports_it() {
    let mut server = FakeServer::start(Auth::Check).await;
    let spool = tempfile::tempdir().unwrap();
    let agent = Agent::start(&server, spool.path(), false);

    let mut peer = server.next_peer().await;
    assert_ready(&peer.recv().await);
    let uuid = JobUuid::new_v4();
    peer.send(job(uuid, Some("firecracker")));
    assert_eq!(
        peer.recv().await,
        RunnerMessage::Running { job: Some(uuid) }
    );
    peer.send(ack(None));
    agent.signal();
    agent.signal();
    let RunnerMessage::Failed { job, error, .. } = peer.recv().await else {
        panic!("expected failed");
    };
    assert_eq!(job, uuid);
    assert!(error.contains("stopped"), "{error}");
    peer.send(ack(Some(uuid)));
    peer.closed().await;
    assert_eq!(agent.exit().await, Exit::Drained);
}

// ---------------------------------------------------------------------------------
// The real binary.

struct Binary {
    child: tokio::process::Child,
}

impl Binary {
    fn start(server: &FakeServer, spool: &std::path::Path, cache: &std::path::Path) -> Self {
        Self::start_with(server, spool, cache, &[])
    }

    fn start_with(
        server: &FakeServer,
        spool: &std::path::Path,
        cache: &std::path::Path,
        extra: &[&str],
    ) -> Self {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["up", "--host", &server.host(), "--runner", RUNNER])
            .arg("--cache-dir")
            .arg(cache)
            .arg("--spool-dir")
            .arg(spool)
            .env("BENCHER_RUNNER_KEY", KEY)
            // Must not count as --no-auto-update next to --max-download-size.
            .env("BENCHER_NO_AUTO_UPDATE", "false")
            .args(["--max-download-size", "1MiB"])
            // Never the real host's knobs.
            .arg("--no-tuning")
            .args(extra)
            .env_remove("BENCHER_HOST")
            .env_remove("BENCHER_RUNNER")
            .env_remove("BENCHER_DANGER_ALLOW_NO_SANDBOX")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the runner binary");
        Self { child }
    }

    fn sigterm(&self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Exit status and stderr.
    async fn wait(self) -> (std::process::ExitStatus, String) {
        let output = timeout(WAIT, self.child.wait_with_output())
            .await
            .expect("the runner did not exit")
            .unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

#[tokio::test]
async fn binary_resends_a_spooled_result_after_a_restart_and_drains_on_sigterm() {
    let mut server = FakeServer::start(Auth::Check).await;
    let spool_dir = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    // What a runner that crashed before the ack left behind.
    let uuid = JobUuid::new_v4();
    let completed = RunnerMessage::Completed {
        job: uuid,
        results: results(),
        output: None,
        environment: None,
    };
    Spool::open(spool_dir.path())
        .unwrap()
        .write(&completed)
        .unwrap();

    let binary = Binary::start(&server, spool_dir.path(), cache_dir.path());
    let mut peer = server.next_peer().await;
    assert_eq!(peer.recv().await, completed, "re-sent before ready");
    peer.send(ack(Some(uuid)));
    assert_ready(&peer.recv().await);
    assert!(spooled_jobs(spool_dir.path()).is_empty());

    binary.sigterm();
    peer.closed().await;
    let (status, stderr) = binary.wait().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains(KEY), "the key was logged: {stderr}");
}

#[tokio::test]
async fn binary_exits_nonzero_on_401() {
    let server = FakeServer::start(Auth::Refuse).await;
    let spool_dir = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let binary = Binary::start(&server, spool_dir.path(), cache_dir.path());
    let (status, stderr) = binary.wait().await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(stderr.contains("refused the runner key"), "{stderr}");
    assert!(!stderr.contains(KEY), "the key was logged: {stderr}");
    assert_eq!(server.requests().len(), 1, "no retry loop");
}

// ---------------------------------------------------------------------------------
// End to end: the real binary pulls a real image from a real registry (a
// `bencher_test_support::TestServer`) and runs it with the real executor (sandbox
// `none`, so root), while the fake server scripts the channel.

/// Whether the end-to-end tests can run; prints why not. Under CI, not being root is a
/// failure: CI must run them.
fn privileged() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the end-to-end agent tests need root (the executor's namespaces and mounts)"
    );
    eprintln!(
        "SKIPPED: the end-to-end agent tests need root (the executor's namespaces and mounts)"
    );
    false
}

/// A job without a sandbox that runs `script` from the pushed image.
fn e2e_job(
    uuid: JobUuid,
    registry: &bencher_test_support::TestServer,
    project: &str,
    digest: &str,
    script: &str,
) -> Value {
    let mut message = job(uuid, None);
    message["config"] = json!({
        "registry": registry.url.as_str().trim_end_matches('/'),
        "project": project,
        "digest": digest,
        "cmd": ["/bin/sh", "-c", script],
        "timeout": 60,
    });
    // The registry also takes an API token as a bearer token; a server would send a
    // short-lived pull token instead.
    message["oci_token"] = json!(registry.admin_token.expose_secret());
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_pulls_runs_reports_and_drains_a_job_in_flight() {
    if !privileged() {
        return;
    }
    let registry =
        bencher_test_support::TestServer::start(bencher_test_support::Backend::Sqlite).await;
    let (project, digest) = push_host_image(&registry).await;
    let mut server = FakeServer::start(Auth::Check).await;
    let spool_dir = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let binary = Binary::start_with(
        &server,
        spool_dir.path(),
        cache_dir.path(),
        &["--danger-allow-no-sandbox"],
    );
    let mut peer = server.next_peer().await;
    assert_ready(&peer.recv().await);

    // A job from pull to result.
    let first = JobUuid::new_v4();
    peer.send(e2e_job(
        first,
        &registry,
        &project,
        &digest,
        "echo hello from the job",
    ));
    let running = peer.recv().await;
    assert_eq!(
        running,
        RunnerMessage::Running { job: Some(first) },
        "{running:?}"
    );
    peer.send(ack(None));
    let RunnerMessage::Completed { job, results, .. } = peer.recv().await else {
        panic!("expected completed");
    };
    assert_eq!(job, first);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].exit_code, 0);
    assert_eq!(results[0].stdout.as_deref(), Some("hello from the job\n"));
    peer.send(ack(Some(first)));
    assert_ready(&peer.recv().await);

    // SIGTERM while a job runs: it finishes, is reported, and the runner leaves without
    // asking for another.
    let second = JobUuid::new_v4();
    peer.send(e2e_job(
        second,
        &registry,
        &project,
        &digest,
        "sleep 3; echo drained",
    ));
    assert_eq!(
        peer.recv().await,
        RunnerMessage::Running { job: Some(second) }
    );
    peer.send(ack(None));
    binary.sigterm();
    let RunnerMessage::Completed { job, results, .. } = peer.recv().await else {
        panic!("expected completed");
    };
    assert_eq!(job, second);
    assert_eq!(results[0].stdout.as_deref(), Some("drained\n"));
    peer.send(ack(Some(second)));
    peer.closed().await;
    let (status, stderr) = binary.wait().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains(KEY), "the key was logged");
    assert!(
        !stderr.contains(registry.admin_token.expose_secret()),
        "the pull token was logged"
    );
}
