//! Dispatch benchmark: how long a job takes from `POST /v0/run` until a waiting test
//! runner holds its `job` message, with 1 and with 100 idle runners connected, and how
//! many trivial jobs per second go through submit → job → running → completed → ack.
//! A real server on 127.0.0.1 (SQLite; PostgreSQL too when BENCHER_TEST_POSTGRES_URL is
//! set) and test runners over real WebSockets (`tests/channel/client.rs`). Prints p50 and
//! p99; the goal is p99 under 20 ms with 100 idle runners.
//!
//! `cargo bench -p bencher_server --bench dispatch` (release build). Bounded: a few
//! hundred jobs per configuration, every wait capped.

#[path = "../tests/channel/client.rs"]
mod client;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bencher_oci::digest::Digest;
use bencher_test_support::reqwest::{Method, StatusCode};
use bencher_test_support::{Backend, POSTGRES_URL_VAR, TestServer};
use client::{Incoming, TestRunner};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const LATENCY_SAMPLES: usize = 300;
const THROUGHPUT_JOBS: usize = 500;
const SUBMITTERS: usize = 8;
const WAIT: Duration = Duration::from_secs(60);

enum Event {
    Ready,
    Held { job: String, at: Instant },
    Done,
}

async fn admin(server: &TestServer, method: Method, path: &str, payload: Value) -> Value {
    let response = server
        .request(method, path)
        .json(&payload)
        .send()
        .await
        .expect("request");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

async fn push_blob(server: &TestServer, token: &str, bytes: &[u8]) -> String {
    let digest = Digest::sha256_of(bytes).to_string();
    let response = server
        .request_as(
            Method::POST,
            &format!("/v2/bench/blobs/uploads/?digest={digest}"),
            Some(token),
        )
        .body(bytes.to_vec())
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), StatusCode::CREATED);
    digest
}

/// A user token, a fallback Spec and image `bench:v1`.
async fn setup(server: &TestServer) -> (String, String) {
    let token = admin(
        server,
        Method::POST,
        "/v0/tokens",
        json!({ "name": "bench" }),
    )
    .await;
    let user = token["token"].as_str().expect("token").to_owned();
    let spec = admin(
        server,
        Method::POST,
        "/v0/specs",
        json!({
            "name": "Bench", "os": "linux", "architecture": "x86_64", "sandbox": "firecracker",
            "cpu": 4, "memory": 1073741824u64, "disk": 1073741824u64, "fallback": true,
        }),
    )
    .await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = push_blob(server, &user, config).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [],
    }))
    .expect("manifest");
    let response = server
        .request_as(Method::PUT, "/v2/bench/manifests/v1", Some(&user))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await
        .expect("manifest push");
    assert_eq!(response.status(), StatusCode::CREATED);
    (user, spec["uuid"].as_str().expect("spec").to_owned())
}

/// A test runner that takes every job it is given and finishes it at once.
async fn run_runner(mut channel: TestRunner, events: mpsc::UnboundedSender<Event>) {
    loop {
        channel
            .send(json!({ "event": "ready", "poll_timeout": 900 }))
            .await;
        let _ = events.send(Event::Ready);
        let job = loop {
            match channel.recv_within(Duration::from_secs(3600)).await {
                Some(Incoming::Message(message)) if message["event"] == "job" => break message,
                Some(Incoming::Message(_) | Incoming::Pong) => {}
                Some(Incoming::Closed(_)) | None => return,
            }
        };
        let at = Instant::now();
        let uuid = job["uuid"].as_str().unwrap_or_default().to_owned();
        let _ = events.send(Event::Held {
            job: uuid.clone(),
            at,
        });
        channel
            .send(json!({ "event": "running", "job": uuid }))
            .await;
        channel.expect("ack").await;
        channel
            .send(json!({ "event": "completed", "job": uuid, "results": [{ "exit_code": 0 }] }))
            .await;
        channel.expect("ack").await;
        let _ = events.send(Event::Done);
    }
}

async fn submit(server: &TestServer, user: &str) -> String {
    let response = server
        .request_as(Method::POST, "/v0/run", Some(user))
        .json(&json!({ "project": "bench", "job": { "image": "bench:v1" } }))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), StatusCode::CREATED);
    let job: Value = response.json().await.expect("job");
    job["uuid"].as_str().expect("uuid").to_owned()
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("the runners went quiet")
        .expect("the runners are gone")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

async fn measure(backend: Backend, runners: usize) {
    let server = TestServer::start(backend).await;
    let (user, spec) = setup(&server).await;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    for n in 0..runners {
        let created = admin(
            &server,
            Method::POST,
            "/v0/runners",
            json!({ "name": format!("runner {n}") }),
        )
        .await;
        let uuid = created["uuid"].as_str().expect("uuid");
        admin(
            &server,
            Method::POST,
            &format!("/v0/runners/{uuid}/specs"),
            json!({ "spec": spec }),
        )
        .await;
        let channel = client::connect(&server, uuid, created["key"].as_str())
            .await
            .unwrap_or_else(|(status, body)| panic!("channel refused: {status} {body}"));
        tokio::spawn(run_runner(channel, events_tx.clone()));
    }
    for _ in 0..runners {
        assert!(matches!(next_event(&mut events).await, Event::Ready));
    }
    // Let every `ready` reach its wait.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Latency: one job at a time, every runner idle when it is submitted.
    let mut held = Vec::with_capacity(LATENCY_SAMPLES);
    let mut responded = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let start = Instant::now();
        let job = submit(&server, &user).await;
        responded.push(start.elapsed());
        let mut got = None;
        let mut ready = false;
        while got.is_none() || !ready {
            match next_event(&mut events).await {
                Event::Held { job: uuid, at } => {
                    assert_eq!(uuid, job, "jobs arrive in order");
                    got = Some(at - start);
                }
                Event::Ready => ready = true,
                Event::Done => {}
            }
        }
        held.extend(got);
        // The runner's `ready` has to reach its wait before the next sample.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    held.sort();
    responded.sort();

    // Throughput: many submitters at once, runners finishing each job immediately.
    let start = Instant::now();
    let mut submitters = Vec::new();
    for s in 0..SUBMITTERS {
        let count = THROUGHPUT_JOBS / SUBMITTERS + usize::from(s < THROUGHPUT_JOBS % SUBMITTERS);
        let url = server.url.clone();
        let user = user.clone();
        submitters.push(tokio::spawn(async move {
            let http = bencher_test_support::reqwest::Client::new();
            for _ in 0..count {
                let response = http
                    .post(url.join("/v0/run").expect("url"))
                    .bearer_auth(&user)
                    .json(&json!({ "project": "bench", "job": { "image": "bench:v1" } }))
                    .send()
                    .await
                    .expect("submit");
                assert_eq!(response.status(), StatusCode::CREATED);
            }
        }));
    }
    let mut done = 0;
    let mut seen = HashMap::new();
    while done < THROUGHPUT_JOBS {
        match next_event(&mut events).await {
            Event::Done => done += 1,
            Event::Held { job, .. } => *seen.entry(job).or_insert(0) += 1,
            Event::Ready => {}
        }
    }
    let elapsed = start.elapsed();
    for submitter in submitters {
        submitter.await.expect("submitter");
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "every job held exactly once"
    );

    println!(
        "{backend:?}, {runners:>3} idle runners: submit → runner holds job: p50 {}, p99 {}, max {} \
         (POST /v0/run alone: p50 {}, p99 {}); throughput {THROUGHPUT_JOBS} trivial jobs in {:.2} s = {:.0} jobs/s",
        ms(percentile(&held, 0.5)),
        ms(percentile(&held, 0.99)),
        ms(percentile(&held, 1.0)),
        ms(percentile(&responded, 0.5)),
        ms(percentile(&responded, 0.99)),
        elapsed.as_secs_f64(),
        THROUGHPUT_JOBS as f64 / elapsed.as_secs_f64(),
    );
    drop(server);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this binary too, and a
    // test run should not take the minutes a benchmark does.
    if !std::env::args().any(|a| a == "--bench") {
        println!("dispatch: run with `cargo bench -p bencher_server --bench dispatch`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut backends = vec![Backend::Sqlite];
        if std::env::var_os(POSTGRES_URL_VAR).is_some() {
            backends.push(Backend::Postgres);
        } else {
            println!("PostgreSQL skipped: {POSTGRES_URL_VAR} is not set");
        }
        for backend in backends {
            for runners in [1, 100] {
                measure(backend, runners).await;
            }
        }
    });
}
