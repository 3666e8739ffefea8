//! Jobs integration tests: `POST /v0/run` and the job endpoints over HTTP against a real
//! server, and the store's claims and transitions driven directly, every test on
//! SQLite and on PostgreSQL (see `bencher_test_support`). Images are pushed over the
//! registry's HTTP API.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bencher_oci::digest::Digest;
use bencher_server::queue::{self, JobEvent, Timeouts};
use bencher_server::store::Store;
use bencher_server::store::jobs::{Claimant, JobChange, NewRun, TransitionError, Transitioned};
use bencher_test_support::reqwest::{Method, Response, StatusCode};
use bencher_test_support::{Backend, TestServer, backend_tests};
use bencher_types::protocol::JobConfig;
use bencher_types::{
    JobStatus, JobUuid, JsonNewProject, JsonNewRunner, ProjectUuid, ResourceId, RunnerUuid,
    SpecUuid,
};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

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

async fn call_as(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    payload: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server.request_as(method, path, Some(token));
    if let Some(payload) = payload {
        request = request.json(&payload);
    }
    body(request.send().await.expect("request")).await
}

async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    call_as(
        server,
        server.admin_token.expose_secret(),
        Method::GET,
        path,
        None,
    )
    .await
}

async fn post(server: &TestServer, path: &str, payload: Value) -> (StatusCode, Value) {
    call_as(
        server,
        server.admin_token.expose_secret(),
        Method::POST,
        path,
        Some(payload),
    )
    .await
}

/// Asserts an error response: status, JSON envelope, and a message containing `needle`.
fn assert_error(response: &(StatusCode, Value), status: StatusCode, needle: &str) {
    let (actual, body) = response;
    assert_eq!(*actual, status, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "expected `{needle}` in `{message}`"
    );
}

/// A non-admin API token.
async fn user_token(server: &TestServer) -> String {
    let (status, token) = post(server, "/v0/tokens", json!({ "name": "dev" })).await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    token["token"].as_str().unwrap().to_owned()
}

async fn create_spec(server: &TestServer, name: &str, fallback: bool) -> Value {
    let (status, spec) = post(
        server,
        "/v0/specs",
        json!({
            "name": name, "os": "linux", "architecture": "x86_64", "sandbox": "firecracker",
            "cpu": 4, "memory": 51539607552u64, "disk": 137438953472u64, "fallback": fallback,
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{spec}");
    spec
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

/// Pushes a one-layer image tagged `tag` to `repository` (creating the project on the
/// first push) and returns its manifest digest. `seed` makes the content unique.
async fn push_image(
    server: &TestServer,
    token: &str,
    repository: &str,
    tag: &str,
    seed: &str,
) -> String {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": { "Labels": { "seed": seed } },
        "rootfs": { "type": "layers", "diff_ids": [] },
    }))
    .unwrap();
    let layer = format!("layer of {seed}").into_bytes();
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
            &format!("/v2/{repository}/manifests/{tag}"),
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

/// `host:port` of the test server, as an image reference names its registry.
fn registry_host(server: &TestServer) -> String {
    format!(
        "{}:{}",
        server.url.host_str().unwrap(),
        server.url.port().unwrap()
    )
}

async fn run(server: &TestServer, token: &str, payload: Value) -> (StatusCode, Value) {
    call_as(server, token, Method::POST, "/v0/run", Some(payload)).await
}

async fn submit(server: &TestServer, token: &str, payload: Value) -> Value {
    let (status, job) = run(server, token, payload).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    job
}

/// The `X-Total-Count` and the body of a list.
async fn list(server: &TestServer, token: &str, path: &str) -> (u64, Vec<Value>) {
    let response = server
        .request_as(Method::GET, path, Some(token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let total = response.headers()["x-total-count"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let items: Vec<Value> = response.json().await.unwrap();
    (total, items)
}

fn uuids(jobs: &[Value]) -> Vec<String> {
    jobs.iter()
        .map(|j| j["uuid"].as_str().unwrap().to_owned())
        .collect()
}

async fn project_uuid(server: &TestServer, project: &str) -> ProjectUuid {
    let (status, project) = get(server, &format!("/v0/projects/{project}")).await;
    assert_eq!(status, StatusCode::OK, "{project}");
    project["uuid"].as_str().unwrap().parse().unwrap()
}

/// What the project holds besides jobs: branch, testbed and report counts.
async fn rows(server: &TestServer, project: ProjectUuid) -> (usize, usize, usize) {
    let store = server.store();
    (
        store.branches(project).await.unwrap().len(),
        store.testbeds(project).await.unwrap().len(),
        store.reports(project).await.unwrap().len(),
    )
}

/// The key hash of every runner [`create_runner`] makes.
const KEY_HASH: &str = "not-a-real-key-hash";

/// A runner with its channel recorded as connected, as [`claimant`] claims through.
async fn create_runner(server: &TestServer, name: &str) -> RunnerUuid {
    let store = server.store();
    let runner = store
        .create_runner(
            &JsonNewRunner {
                name: name.parse().unwrap(),
                slug: None,
            },
            KEY_HASH,
            server.clock.now(),
        )
        .await
        .unwrap()
        .uuid;
    let connected = store
        .runner_connected(runner, runner.as_uuid(), KEY_HASH, server.clock.now())
        .await
        .unwrap();
    assert!(connected);
    runner
}

/// The channel [`create_runner`] connected.
fn claimant(runner: RunnerUuid) -> Claimant {
    Claimant {
        runner,
        connection: runner.as_uuid(),
        key_hash: KEY_HASH.to_owned(),
    }
}

/// `time` at the store's precision (milliseconds), so stored times compare equal.
fn millis(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap()
}

fn job_uuid(job: &Value) -> JobUuid {
    job["uuid"].as_str().unwrap().parse().unwrap()
}

fn spec_uuid(spec: &Value) -> SpecUuid {
    spec["uuid"].as_str().unwrap().parse().unwrap()
}

backend_tests!(
    submission_resolves_the_image_to_a_digest,
    unknown_images_are_refused_and_write_nothing,
    spec_selection,
    bad_bodies_are_refused_and_write_nothing,
    lists_filter_and_paginate,
    view_redacts_environment_values,
    cancel_rules,
    lifecycle_through_the_store,
    concurrent_changes_never_overwrite,
    claims_are_exactly_once,
    concurrent_runs_share_new_branches_and_testbeds,
    reprocessing_a_completed_job_gives_the_same_report,
);

async fn submission_resolves_the_image_to_a_digest(backend: Backend) {
    let server = TestServer::start(backend).await;
    let user = user_token(&server).await;
    let spec = create_spec(&server, "Intel v1", true).await;
    let digest = push_image(&server, &user, "bench", "v1", "one").await;
    let project = project_uuid(&server, "bench").await;
    let host = registry_host(&server);

    let references = [
        format!("{host}/bench:v1"),
        "bench:v1".to_owned(),
        format!("bench@{digest}"),
        format!("{host}/bench:v1@{digest}"),
        format!("{host}/{project}:v1"),
        // The registry host is whatever name the user reaches the server by.
        "localhost:6610/bench:v1".to_owned(),
    ];
    let mut jobs = Vec::new();
    for image in &references {
        let job = submit(
            &server,
            &user,
            json!({ "project": "bench", "job": { "image": image, "cmd": ["bench", "--json"] } }),
        )
        .await;
        assert_eq!(job["status"], "pending", "{job}");
        assert_eq!(job["config"]["digest"], digest, "{image}");
        assert_eq!(job["config"]["image"], image.as_str());
        assert_eq!(job["config"]["project"], project.to_string());
        assert_eq!(
            job["config"]["registry"],
            server.url.as_str().trim_end_matches('/')
        );
        assert_eq!(job["config"]["timeout"], 3600);
        assert_eq!(job["config"]["iter"], 1);
        assert_eq!(job["config"]["cmd"], json!(["bench", "--json"]));
        assert_eq!(job["spec"]["uuid"], spec["uuid"]);
        assert_eq!(job["priority"], 0);
        assert!(job.get("runner").is_none() && job.get("claimed").is_none());
        jobs.push(job);
    }

    // Moving the tag later does not change submitted jobs; new jobs get the new digest.
    let moved = push_image(&server, &user, "bench", "v1", "two").await;
    assert_ne!(moved, digest);
    let first = job_uuid(&jobs[0]);
    let (status, view) = call_as(
        &server,
        &user,
        Method::GET,
        &format!("/v0/projects/bench/jobs/{first}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["config"]["digest"], digest);
    let job = submit(
        &server,
        &user,
        json!({ "project": project.to_string(), "job": { "image": "bench:v1" } }),
    )
    .await;
    assert_eq!(job["config"]["digest"], moved);

    // One branch and one testbed (the defaults), one report per job, each naming its job
    // and the Spec.
    let branches = server.store().branches(project).await.unwrap();
    let testbeds = server.store().testbeds(project).await.unwrap();
    assert_eq!(
        branches
            .iter()
            .map(|b| b.name.to_string())
            .collect::<Vec<_>>(),
        ["main"]
    );
    assert_eq!(
        testbeds
            .iter()
            .map(|t| t.name.to_string())
            .collect::<Vec<_>>(),
        ["localhost"]
    );
    assert_eq!(testbeds[0].spec, Some(spec_uuid(&spec)));
    let reports = server.store().reports(project).await.unwrap();
    assert_eq!(reports.len(), references.len() + 1);
    for job in &jobs {
        let report = reports
            .iter()
            .find(|r| r.job == Some(job_uuid(job)))
            .unwrap();
        assert_eq!(report.uuid.to_string(), job["report"].as_str().unwrap());
        assert_eq!(report.spec, spec_uuid(&spec));
        assert_eq!(report.branch, branches[0].uuid);
        assert_eq!(report.testbed, testbeds[0].uuid);
    }

    // An adapter is recorded on the report.
    let job = submit(
        &server,
        &user,
        json!({ "project": "bench", "adapter": "rust_criterion", "job": { "image": "bench:v1" } }),
    )
    .await;
    let reports = server.store().reports(project).await.unwrap();
    let report = reports
        .iter()
        .find(|r| r.job == Some(job_uuid(&job)))
        .unwrap();
    assert_eq!(
        report.adapter.as_ref().map(|a| a.as_str()),
        Some("rust_criterion")
    );
    server.stop().await;
}

async fn unknown_images_are_refused_and_write_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let user = user_token(&server).await;
    create_spec(&server, "Intel v1", true).await;
    let digest = push_image(&server, &user, "bench", "v1", "one").await;
    let other_digest = push_image(&server, &user, "other", "v1", "other").await;
    let project = project_uuid(&server, "bench").await;
    let host = registry_host(&server);
    let zeros = format!("sha256:{}", "0".repeat(64));

    let cases = [
        (
            "bench:v2".to_owned(),
            "tag `v2` not found in repository `bench`",
        ),
        (format!("{host}/bench"), "tag `latest` not found"),
        (format!("bench@{zeros}"), "not found in repository `bench`"),
        (
            format!("bench@{other_digest}"),
            "not found in repository `bench`",
        ),
        (
            "other:v1".to_owned(),
            "is in repository `other`, not in project `bench`'s",
        ),
        (format!("{host}/other@{digest}"), "not in project `bench`'s"),
        (
            "docker.io/library/bench:v1".to_owned(),
            "is in repository `library/bench`",
        ),
        ("ubuntu".to_owned(), "is in repository `ubuntu`"),
        ("Bench:v1".to_owned(), "invalid image reference `Bench:v1`"),
        ("bench:".to_owned(), "invalid image reference"),
        ("bench@sha256:abc".to_owned(), "invalid image reference"),
        ("  ".to_owned(), "job.image must not be empty"),
    ];
    for (image, needle) in &cases {
        let response = run(
            &server,
            &user,
            json!({ "project": "bench", "branch": "new-branch", "testbed": "new-testbed",
                    "job": { "image": image } }),
        )
        .await;
        assert_error(&response, StatusCode::BAD_REQUEST, needle);
    }
    let (total, _) = list(&server, &user, "/v0/projects/bench/jobs").await;
    assert_eq!(total, 0);
    assert_eq!(rows(&server, project).await, (0, 0, 0));
    server.stop().await;
}

async fn spec_selection(backend: Backend) {
    let server = TestServer::start(backend).await;
    let user = user_token(&server).await;
    push_image(&server, &user, "bench", "v1", "one").await;
    let project = project_uuid(&server, "bench").await;
    let job = |testbed: &str, spec: Option<&str>| {
        let mut job = json!({ "image": "bench:v1" });
        if let Some(spec) = spec {
            job["spec"] = json!(spec);
        }
        json!({ "project": "bench", "branch": "feature", "testbed": testbed, "job": job })
    };

    // No Spec anywhere: a 400 that says so, and nothing written (not even the new branch
    // and testbed, which come first in the transaction).
    let response = run(&server, &user, job("t1", None)).await;
    assert_error(&response, StatusCode::BAD_REQUEST, "no Spec for this job");
    assert_error(&response, StatusCode::BAD_REQUEST, "testbed `t1` has none");
    assert_error(&response, StatusCode::BAD_REQUEST, "fallback");
    assert_eq!(rows(&server, project).await, (0, 0, 0));

    let a = create_spec(&server, "Spec A", false).await;
    let b = create_spec(&server, "Spec B", true).await;
    let testbed_spec = |name: &'static str| {
        let store = server.store().clone();
        async move {
            store
                .testbeds(project)
                .await
                .unwrap()
                .into_iter()
                .find(|t| t.name.as_str() == name)
                .unwrap()
                .spec
        }
    };
    let report_spec = |job: Value| {
        let store = server.store().clone();
        async move {
            store
                .reports(project)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.job == Some(job_uuid(&job)))
                .unwrap()
                .spec
        }
    };

    // The fallback, recorded on the testbed and the report.
    let first = submit(&server, &user, job("t1", None)).await;
    assert_eq!(first["spec"]["uuid"], b["uuid"]);
    assert_eq!(testbed_spec("t1").await, Some(spec_uuid(&b)));
    assert_eq!(report_spec(first).await, spec_uuid(&b));
    // An explicit Spec wins and becomes the testbed's.
    let explicit = submit(&server, &user, job("t1", Some("spec-a"))).await;
    assert_eq!(explicit["spec"]["uuid"], a["uuid"]);
    assert_eq!(testbed_spec("t1").await, Some(spec_uuid(&a)));
    assert_eq!(report_spec(explicit).await, spec_uuid(&a));
    // The testbed's Spec wins over the fallback.
    let inherited = submit(&server, &user, job("t1", None)).await;
    assert_eq!(inherited["spec"]["uuid"], a["uuid"]);
    assert_eq!(report_spec(inherited).await, spec_uuid(&a));
    // A new testbed gets the fallback; a Spec by UUID works too.
    let other = submit(&server, &user, job("t2", None)).await;
    assert_eq!(other["spec"]["uuid"], b["uuid"]);
    let by_uuid = submit(&server, &user, job("t3", a["uuid"].as_str())).await;
    assert_eq!(by_uuid["spec"]["uuid"], a["uuid"]);
    assert_eq!(rows(&server, project).await, (1, 3, 5));

    // Testbeds and branches are found by name, slug or UUID.
    submit(&server, &user, job("My Box", None)).await;
    submit(&server, &user, job("my-box", None)).await;
    let testbeds = server.store().testbeds(project).await.unwrap();
    let my_box = testbeds
        .iter()
        .find(|t| t.name.as_str() == "My Box")
        .unwrap();
    assert_eq!(my_box.slug.as_str(), "my-box");
    let mut by_id = job(&my_box.uuid.to_string(), None);
    by_id["branch"] = json!(server.store().branches(project).await.unwrap()[0].uuid);
    submit(&server, &user, by_id).await;
    assert_eq!(rows(&server, project).await, (1, 4, 8));
    // "Main" and "main" are two names; the second gets a unique slug.
    let mut upper = job("t1", None);
    upper["branch"] = json!("Feature");
    submit(&server, &user, upper).await;
    let branches = server.store().branches(project).await.unwrap();
    assert_eq!(branches.len(), 2);
    assert!(
        branches
            .iter()
            .any(|b| b.slug.as_str().starts_with("feature-"))
    );

    // Unknown and archived Specs, unknown UUIDs.
    let response = run(&server, &user, job("t1", Some("nope"))).await;
    assert_error(&response, StatusCode::NOT_FOUND, "spec `nope` not found");
    let response = run(
        &server,
        &user,
        job("67e55044-10b1-426f-9247-bb680e5fe0c8", None),
    )
    .await;
    assert_error(&response, StatusCode::NOT_FOUND, "testbed `67e55044");
    let (status, _) = call_as(
        &server,
        server.admin_token.expose_secret(),
        Method::PATCH,
        "/v0/specs/spec-a",
        Some(json!({ "archived": true })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let response = run(&server, &user, job("t1", Some("spec-a"))).await;
    assert_error(
        &response,
        StatusCode::BAD_REQUEST,
        "spec `spec-a` is archived",
    );
    let response = run(&server, &user, job("t1", None)).await;
    assert_error(
        &response,
        StatusCode::BAD_REQUEST,
        "spec `spec-a` of testbed `t1` is archived",
    );
    assert_eq!(rows(&server, project).await, (2, 4, 9));

    // Reports and jobs record their Spec: it cannot be deleted any more.
    let response = call_as(
        &server,
        server.admin_token.expose_secret(),
        Method::DELETE,
        "/v0/specs/spec-b",
        None,
    )
    .await;
    assert_error(&response, StatusCode::CONFLICT, "in use");
    server.stop().await;
}

async fn bad_bodies_are_refused_and_write_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let user = user_token(&server).await;
    create_spec(&server, "Intel v1", true).await;
    push_image(&server, &user, "bench", "v1", "one").await;
    let project = project_uuid(&server, "bench").await;
    let with = |field: &str, value: Value| {
        let mut body = json!({ "project": "bench", "branch": "b", "testbed": "t", "job": { "image": "bench:v1" } });
        body["job"][field] = value;
        body
    };
    let env = |n: usize| {
        Value::Object(
            (0..n)
                .map(|i| (format!("V{i}"), json!("x")))
                .collect::<serde_json::Map<_, _>>(),
        )
    };
    let cases = [
        (with("timeout", json!(0)), "between 1 and 86400, got 0"),
        (
            with("timeout", json!(86_401)),
            "between 1 and 86400, got 86401",
        ),
        (with("timeout", json!(-5)), "timeout"),
        (with("timeout", json!("60")), "timeout"),
        (with("iter", json!(0)), "iter must be between 1 and 255"),
        (with("iter", json!(256)), "iter must be between 1 and 255"),
        (with("cmd", json!(vec!["x"; 65])), "job.cmd has 65 items"),
        (
            with("entrypoint", json!(vec!["x"; 65])),
            "job.entrypoint has 65 items",
        ),
        (with("env", env(256)), "job.env has 256 variables"),
        (
            with("env", json!({ "A=B": "x" })),
            "not a valid variable name",
        ),
        (with("env", json!({ "A": 1 })), "env"),
        (
            with("file_paths", json!(vec!["out.json"; 256])),
            "job.file_paths has 256 paths",
        ),
        (
            with("spec", json!("Not A Slug")),
            "neither a UUID nor a valid slug",
        ),
        (with("tiemout", json!(5)), "unknown field `tiemout`"),
        (
            json!({ "project": "bench", "job": { "image": "bench:v1" }, "extra": 1 }),
            "unknown field `extra`",
        ),
        (json!({ "project": "bench" }), "missing field `job`"),
        (
            json!({ "job": { "image": "bench:v1" } }),
            "missing field `project`",
        ),
        (
            json!({ "project": "bench", "branch": "  ", "job": { "image": "bench:v1" } }),
            "name must not be empty",
        ),
        (
            json!({ "project": "bench", "adapter": "Rust Criterion", "job": { "image": "bench:v1" } }),
            "unknown variant `Rust Criterion`, expected one of `json`",
        ),
        (
            json!({ "project": "Not A Slug", "job": { "image": "bench:v1" } }),
            "neither a UUID nor a valid slug",
        ),
    ];
    for (payload, needle) in &cases {
        let response = run(&server, &user, payload.clone()).await;
        assert_error(&response, StatusCode::BAD_REQUEST, needle);
    }
    let response = run(
        &server,
        &user,
        json!({ "project": "nothing", "job": { "image": "nothing:v1" } }),
    )
    .await;
    assert_error(
        &response,
        StatusCode::NOT_FOUND,
        "project `nothing` not found",
    );
    let response = server
        .request_as(Method::POST, "/v0/run", Some(&user))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = server
        .request_as(Method::POST, "/v0/run", None)
        .json(&with("iter", json!(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (total, _) = list(&server, &user, "/v0/projects/bench/jobs").await;
    assert_eq!(total, 0);
    assert_eq!(rows(&server, project).await, (0, 0, 0));

    // The bounds themselves are accepted.
    let mut payload = with("timeout", json!(86_400));
    payload["job"]["iter"] = json!(255);
    payload["job"]["cmd"] = json!(vec!["x"; 64]);
    payload["job"]["env"] = env(255);
    let job = submit(&server, &user, payload).await;
    assert_eq!(job["config"]["timeout"], 86_400);
    assert_eq!(job["config"]["iter"], 255);
    server.stop().await;
}

async fn lists_filter_and_paginate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let user = user_token(&server).await;
    create_spec(&server, "Intel v1", true).await;
    push_image(&server, &user, "bench", "v1", "one").await;
    push_image(&server, &user, "other", "v1", "two").await;
    let store = server.store();
    let runner = create_runner(&server, "r1").await;
    let spec = spec_uuid(&get(&server, "/v0/specs/intel-v1").await.1);

    let mut jobs = Vec::new();
    for _ in 0..6 {
        let job = submit(
            &server,
            &user,
            json!({ "project": "bench", "job": { "image": "bench:v1" } }),
        )
        .await;
        jobs.push(job["uuid"].as_str().unwrap().to_owned());
        // Distinct submission times keep the order independent of UUIDs.
        server.clock.advance(Duration::from_millis(5));
    }
    submit(
        &server,
        &user,
        json!({ "project": "other", "job": { "image": "other:v1" } }),
    )
    .await;
    for job in &jobs[..2] {
        let (status, _) = call_as(
            &server,
            &user,
            Method::POST,
            &format!("/v0/projects/bench/jobs/{job}/cancel"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Claims take the oldest pending jobs: jobs[2] stays claimed, jobs[3] is driven
    // through to processed.
    let now = server.clock.now();
    let claimed = store
        .claim_next(&claimant(runner), &[spec], now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.uuid.to_string(), jobs[2]);
    let done = store
        .claim_next(&claimant(runner), &[spec], now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.uuid.to_string(), jobs[3]);
    let by_runner = JobChange {
        runner: Some(runner),
        ..JobChange::default()
    };
    for event in [JobEvent::Running, JobEvent::Completed] {
        store
            .transition_job(done.uuid, event, &by_runner, now)
            .await
            .unwrap();
    }
    store
        .transition_job(done.uuid, JobEvent::Processed, &JobChange::default(), now)
        .await
        .unwrap();

    let path = |query: &str| format!("/v0/projects/bench/jobs{query}");
    for (status, expected) in [
        ("pending", &jobs[4..6]),
        ("canceled", &jobs[0..2]),
        ("claimed", &jobs[2..3]),
        ("processed", &jobs[3..4]),
        ("running", &jobs[0..0]),
        ("failed", &jobs[0..0]),
        ("completed", &jobs[0..0]),
    ] {
        let (total, items) = list(&server, &user, &path(&format!("?status={status}"))).await;
        assert_eq!(total as usize, expected.len(), "{status}");
        assert_eq!(uuids(&items), expected, "{status}");
        assert!(items.iter().all(|j| j["status"] == status));
    }
    let (_, claimed) = list(&server, &user, &path("?status=claimed")).await;
    assert_eq!(claimed[0]["runner"], runner.to_string());

    let (total, all) = list(&server, &user, &path("")).await;
    assert_eq!((total, uuids(&all)), (6, jobs.clone()));
    let (total, page) = list(&server, &user, &path("?per_page=4&page=2")).await;
    assert_eq!((total, uuids(&page)), (6, jobs[4..].to_vec()));
    let (_, newest) = list(
        &server,
        &user,
        &path("?per_page=2&direction=desc&sort=created"),
    )
    .await;
    assert_eq!(uuids(&newest), [jobs[5].clone(), jobs[4].clone()]);
    let (total, page) = list(&server, &user, &path("?status=pending&per_page=1&page=2")).await;
    assert_eq!((total, uuids(&page)), (2, vec![jobs[5].clone()]));

    for (query, needle) in [
        ("?status=done", "unknown variant `done`"),
        ("?sort=name", "sort them by `created`"),
        ("?per_page=0", "per_page"),
    ] {
        let response = call_as(&server, &user, Method::GET, &path(query), None).await;
        assert_error(&response, StatusCode::BAD_REQUEST, needle);
    }
    let response = call_as(
        &server,
        &user,
        Method::GET,
        "/v0/projects/nothing/jobs",
        None,
    )
    .await;
    assert_error(
        &response,
        StatusCode::NOT_FOUND,
        "project `nothing` not found",
    );

    // Admins see every project's jobs; users may not.
    let admin = server.admin_token.expose_secret().to_owned();
    let (total, _) = list(&server, &admin, "/v0/jobs").await;
    assert_eq!(total, 7);
    let (total, pending) = list(&server, &admin, "/v0/jobs?status=pending").await;
    assert_eq!(total, 3);
    let other = project_uuid(&server, "other").await;
    assert_eq!(pending[2]["project"], other.to_string());
    let (total, _) = list(&server, &admin, "/v0/jobs?status=processed").await;
    assert_eq!(total, 1);
    let response = call_as(&server, &user, Method::GET, "/v0/jobs", None).await;
    assert_error(&response, StatusCode::FORBIDDEN, "admin");
    server.stop().await;
}

async fn view_redacts_environment_values(backend: Backend) {
    let server = TestServer::start(backend).await;
    let user = user_token(&server).await;
    let spec = create_spec(&server, "Intel v1", true).await;
    push_image(&server, &user, "bench", "v1", "one").await;
    push_image(&server, &user, "other", "v1", "two").await;
    let project = project_uuid(&server, "bench").await;
    let secret = "s3cr3t-value-do-not-show";
    let job = submit(
        &server,
        &user,
        json!({ "project": "bench", "job": { "image": "bench:v1",
                "env": { "API_TOKEN": secret, "MODE": "fast" },
                "file_paths": ["/out/results.json"], "allow_failure": true } }),
    )
    .await;
    let uuid = job_uuid(&job);
    assert_eq!(
        job["config"]["env"],
        json!({ "API_TOKEN": "***", "MODE": "***" })
    );

    for path in [
        format!("/v0/projects/bench/jobs/{uuid}"),
        format!("/v0/projects/{project}/jobs/{uuid}"),
        "/v0/projects/bench/jobs".to_owned(),
        "/v0/jobs".to_owned(),
    ] {
        let text = server
            .request(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains(secret), "{path} leaks the secret: {text}");
        assert!(text.contains("\"API_TOKEN\":\"***\""), "{path}: {text}");
    }
    let (status, view) = call_as(
        &server,
        &user,
        Method::GET,
        &format!("/v0/projects/bench/jobs/{uuid}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["status"], "pending");
    assert_eq!(view["spec"], spec);
    assert_eq!(view["config"]["file_paths"], json!(["/out/results.json"]));
    assert_eq!(view["config"]["allow_failure"], true);
    assert!(
        view.get("output").is_none(),
        "no output before it is stored"
    );
    assert!(view.get("runner").is_none() && view.get("started").is_none());

    // The runner gets the real values.
    let stored = server.store().get_job(uuid).await.unwrap();
    assert_eq!(stored.config.env.unwrap()["API_TOKEN"], secret);

    // Claimed and running: runner and timestamps appear.
    let runner = create_runner(&server, "r1").await;
    let now = server.clock.now();
    server
        .store()
        .claim_next(&claimant(runner), &[spec_uuid(&spec)], now)
        .await
        .unwrap()
        .unwrap();
    let change = JobChange {
        runner: Some(runner),
        ..JobChange::default()
    };
    server
        .store()
        .transition_job(uuid, JobEvent::Running, &change, now)
        .await
        .unwrap();
    let (_, view) = get(&server, &format!("/v0/projects/bench/jobs/{uuid}")).await;
    assert_eq!(view["status"], "running");
    assert_eq!(view["runner"], runner.to_string());
    for field in [
        "claimed",
        "started",
        "last_heartbeat",
        "created",
        "modified",
    ] {
        assert!(view[field].is_string(), "{field}: {view}");
    }

    // Another project's job, an unknown job and a malformed id.
    let response = get(&server, &format!("/v0/projects/other/jobs/{uuid}")).await;
    assert_error(&response, StatusCode::NOT_FOUND, "not found");
    let response = get(
        &server,
        "/v0/projects/bench/jobs/67e55044-10b1-426f-9247-bb680e5fe0c8",
    )
    .await;
    assert_error(&response, StatusCode::NOT_FOUND, "not found");
    let response = get(&server, "/v0/projects/bench/jobs/not-a-uuid").await;
    assert_eq!(response.0, StatusCode::BAD_REQUEST, "{}", response.1);
    server.stop().await;
}

async fn cancel_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let user = user_token(&server).await;
    let spec = spec_uuid(&create_spec(&server, "Intel v1", true).await);
    push_image(&server, &user, "bench", "v1", "one").await;
    push_image(&server, &user, "other", "v1", "two").await;
    let store = server.store();
    let runner = create_runner(&server, "r1").await;
    let by_runner = JobChange {
        runner: Some(runner),
        ..JobChange::default()
    };
    let now = server.clock.now();
    let cancel = |job: JobUuid| {
        let path = format!("/v0/projects/bench/jobs/{job}/cancel");
        let (server, user) = (&server, &user);
        async move { call_as(server, user, Method::POST, &path, None).await }
    };
    // A job driven by `events` after its claim (none: pending).
    let job_in = |events: &'static [JobEvent], claim: bool| {
        let (server, user, by_runner) = (&server, &user, &by_runner);
        async move {
            let job = submit(
                server,
                user,
                json!({ "project": "bench", "job": { "image": "bench:v1" } }),
            )
            .await;
            let uuid = job_uuid(&job);
            if claim {
                let claimed = store
                    .claim_next(&claimant(runner), &[spec], now)
                    .await
                    .unwrap();
                assert_eq!(claimed.unwrap().uuid, uuid);
            }
            for event in events {
                let change = if *event == JobEvent::Processed {
                    JobChange::default()
                } else {
                    by_runner.clone()
                };
                store
                    .transition_job(uuid, *event, &change, now)
                    .await
                    .unwrap();
            }
            uuid
        }
    };

    // Pending, claimed and running jobs can be canceled, once.
    let mut running_then_canceled = None;
    for (events, claim, from) in [
        (&[][..], false, "pending"),
        (&[][..], true, "claimed"),
        (&[JobEvent::Running][..], true, "running"),
    ] {
        let job = job_in(events, claim).await;
        assert_eq!(store.get_job(job).await.unwrap().status.as_str(), from);
        let (status, canceled) = cancel(job).await;
        assert_eq!(status, StatusCode::OK, "{from}: {canceled}");
        assert_eq!(canceled["status"], "canceled");
        assert!(canceled["ended"].is_string());
        let again = cancel(job).await;
        assert_error(
            &again,
            StatusCode::CONFLICT,
            "cannot cancel a job that is canceled",
        );
        running_then_canceled = Some(job);
    }
    // A runner's late messages for a canceled job are refused, not applied.
    let late = store
        .transition_job(
            running_then_canceled.unwrap(),
            JobEvent::Completed,
            &by_runner,
            now,
        )
        .await;
    assert!(matches!(late, Err(TransitionError::Invalid(_))), "{late:?}");

    // Finished jobs cannot be canceled.
    for (events, from) in [
        (&[JobEvent::Running, JobEvent::Completed][..], "completed"),
        (
            &[JobEvent::Running, JobEvent::Completed, JobEvent::Processed][..],
            "processed",
        ),
        (&[JobEvent::Running, JobEvent::Failed][..], "failed"),
    ] {
        let job = job_in(events, true).await;
        let response = cancel(job).await;
        assert_error(
            &response,
            StatusCode::CONFLICT,
            &format!("cannot cancel a job that is {from}"),
        );
        assert_eq!(store.get_job(job).await.unwrap().status.as_str(), from);
    }

    // Unknown jobs and other projects' jobs are not found.
    let response = cancel(JobUuid::new_v4()).await;
    assert_error(&response, StatusCode::NOT_FOUND, "not found");
    let theirs = submit(
        &server,
        &user,
        json!({ "project": "other", "job": { "image": "other:v1" } }),
    )
    .await;
    let response = cancel(job_uuid(&theirs)).await;
    assert_error(&response, StatusCode::NOT_FOUND, "not found");
    assert_eq!(
        store.get_job(job_uuid(&theirs)).await.unwrap().status,
        JobStatus::Pending
    );
    server.stop().await;
}

/// A project, a fallback Spec and a config for jobs stored directly, without HTTP.
async fn store_fixture(server: &TestServer) -> (ProjectUuid, SpecUuid) {
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
    let spec = spec_uuid(&create_spec(server, "Intel v1", true).await);
    (project, spec)
}

fn new_run(project: ProjectUuid, spec: Option<SpecUuid>, priority: i64) -> NewRun {
    NewRun {
        project,
        branch: "main".parse().unwrap(),
        testbed: "localhost".parse().unwrap(),
        spec: spec.map(|s| ResourceId::Uuid(s.as_uuid())),
        adapter: None,
        hash: None,
        fold: None,
        config: JobConfig {
            registry: "http://localhost:6610".into(),
            project,
            digest: format!("sha256:{}", "a".repeat(64)),
            image: None,
            entrypoint: None,
            cmd: None,
            env: Some(BTreeMap::from([("K".into(), "v".into())])),
            timeout: 60,
            file_paths: None,
            build_time: None,
            file_size: None,
            iter: Some(1),
            allow_failure: None,
        },
        thresholds: Vec::new(),
        priority,
    }
}

async fn lifecycle_through_the_store(backend: Backend) {
    let server = TestServer::start(backend).await;
    let store = server.store();
    let (project, spec) = store_fixture(&server).await;
    let (r1, r2) = (
        create_runner(&server, "r1").await,
        create_runner(&server, "r2").await,
    );
    let as_runner = |runner| JobChange {
        runner: Some(runner),
        ..JobChange::default()
    };
    let server_side = JobChange::default();
    let t0 = millis(server.clock.now());
    let at = |secs: i64| t0 + TimeDelta::seconds(secs);

    let job = store
        .create_run(&new_run(project, None, 0), t0)
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.spec.uuid, spec, "the fallback Spec");
    assert_eq!(
        store
            .claim_next(&claimant(r1), &[], t0)
            .await
            .unwrap()
            .map(|j| j.uuid),
        None
    );
    // A channel that no longer holds the runner claims nothing: a replaced connection,
    // a rotated key, an archived runner (checked in the claim itself, before any
    // notification of the change arrives).
    let replaced = Claimant {
        connection: uuid::Uuid::new_v4(),
        ..claimant(r1)
    };
    let rotated = Claimant {
        key_hash: "the-key-before-rotation".to_owned(),
        ..claimant(r1)
    };
    for stale in [&replaced, &rotated] {
        assert!(
            store
                .claim_next(stale, &[spec], t0)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(
        store.get_job(job.uuid).await.unwrap().status,
        JobStatus::Pending
    );
    let claimed = store
        .claim_next(&claimant(r1), &[spec], at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (claimed.uuid, claimed.status),
        (job.uuid, JobStatus::Claimed)
    );
    assert_eq!(
        (claimed.runner, claimed.claimed, claimed.last_event),
        (Some(r1), Some(at(1)), Some(JobEvent::Claim))
    );
    assert!(
        store
            .claim_next(&claimant(r2), &[spec], at(1))
            .await
            .unwrap()
            .is_none()
    );

    // Only the claiming runner moves the job.
    let wrong = store
        .transition_job(job.uuid, JobEvent::Running, &as_runner(r2), at(2))
        .await;
    assert!(
        matches!(wrong, Err(TransitionError::NotClaimedBy { .. })),
        "{wrong:?}"
    );
    let wrong = store.unclaim(job.uuid, r2, at(2)).await;
    assert!(
        matches!(wrong, Err(TransitionError::NotClaimedBy { .. })),
        "{wrong:?}"
    );
    // Sending failed: back to pending, for anyone.
    let unclaimed = store.unclaim(job.uuid, r1, at(2)).await.unwrap();
    let unclaimed = unclaimed.job();
    assert_eq!(
        (unclaimed.status, unclaimed.runner, unclaimed.claimed),
        (JobStatus::Pending, None, None)
    );
    assert!(matches!(
        store.unclaim(job.uuid, r1, at(2)).await,
        Err(TransitionError::NotClaimedBy { .. })
    ));
    let reclaimed = store
        .claim_next(&claimant(r2), &[spec], at(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((reclaimed.uuid, reclaimed.runner), (job.uuid, Some(r2)));

    // Running, and running again after a reconnect: the repeat changes nothing.
    let running = store
        .transition_job(job.uuid, JobEvent::Running, &as_runner(r2), at(4))
        .await
        .unwrap();
    assert!(matches!(running, Transitioned::Changed(_)));
    assert_eq!(running.job().started, Some(at(4)));
    let again = store
        .transition_job(job.uuid, JobEvent::Running, &as_runner(r2), at(5))
        .await
        .unwrap();
    assert!(matches!(again, Transitioned::Unchanged(_)));
    assert_eq!(again.job().started, Some(at(4)));
    assert!(store.touch_job(job.uuid, r2, at(10)).await.unwrap());
    assert!(!store.touch_job(job.uuid, r1, at(11)).await.unwrap());
    let in_flight = store.in_flight_jobs().await.unwrap();
    assert_eq!(
        in_flight.iter().map(|j| j.uuid).collect::<Vec<_>>(),
        [job.uuid]
    );

    // The timeout rules on the stored job: silent for a heartbeat timeout after the
    // last sign of life (10 s), far from the hard limit (60 s + 60 s from 4 s).
    let timeouts = Timeouts::default();
    let stored = store.get_job(job.uuid).await.unwrap();
    assert_eq!(stored.last_heartbeat, Some(at(10)));
    assert_eq!(
        queue::timeout_event(&stored.clock(), at(99), &timeouts),
        None
    );
    let event = queue::timeout_event(&stored.clock(), at(100), &timeouts).unwrap();
    assert_eq!(event, JobEvent::HeartbeatTimeout);
    let error = queue::timeout_message(event, &stored.clock(), &timeouts);
    let failed = store
        .transition_job(
            job.uuid,
            event,
            &JobChange {
                error: error.clone(),
                ..JobChange::default()
            },
            at(100),
        )
        .await
        .unwrap()
        .into_job();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error, error);
    assert!(store.in_flight_jobs().await.unwrap().is_empty());

    // The runner comes back: its `failed` is a repeat, its `completed` a late completion.
    let refailed = store
        .transition_job(job.uuid, JobEvent::Failed, &as_runner(r2), at(101))
        .await
        .unwrap();
    assert!(matches!(refailed, Transitioned::Unchanged(_)));
    let completed = store
        .transition_job(
            job.uuid,
            JobEvent::Completed,
            &JobChange {
                runner: Some(r2),
                output_digest: Some("sha256:output".into()),
                ..JobChange::default()
            },
            at(102),
        )
        .await
        .unwrap()
        .into_job();
    assert_eq!(
        (
            completed.status,
            completed.last_event,
            completed.error.as_deref(),
            completed.ended,
            completed.output_digest.as_deref(),
        ),
        (
            JobStatus::Completed,
            Some(JobEvent::LateCompleted),
            None,
            Some(at(102)),
            Some("sha256:output")
        )
    );
    let again = store
        .transition_job(job.uuid, JobEvent::Completed, &as_runner(r2), at(103))
        .await
        .unwrap();
    assert!(matches!(again, Transitioned::Unchanged(_)));
    let processed = store
        .transition_job(job.uuid, JobEvent::Processed, &server_side, at(104))
        .await
        .unwrap();
    assert_eq!(processed.job().status, JobStatus::Processed);
    let again = store
        .transition_job(job.uuid, JobEvent::Processed, &server_side, at(105))
        .await
        .unwrap();
    assert!(matches!(again, Transitioned::Unchanged(_)));
    assert!(matches!(
        store
            .transition_job(job.uuid, JobEvent::Cancel, &server_side, at(106))
            .await,
        Err(TransitionError::Invalid(_))
    ));

    // A job the runner itself failed stays failed.
    let second = store
        .create_run(&new_run(project, Some(spec), 0), at(200))
        .await
        .unwrap();
    store
        .claim_next(&claimant(r1), &[spec], at(201))
        .await
        .unwrap()
        .unwrap();
    for event in [JobEvent::Running, JobEvent::Failed] {
        store
            .transition_job(second.uuid, event, &as_runner(r1), at(202))
            .await
            .unwrap();
    }
    let late = store
        .transition_job(second.uuid, JobEvent::Completed, &as_runner(r1), at(203))
        .await;
    assert!(matches!(late, Err(TransitionError::Invalid(_))), "{late:?}");

    // A claimed job that never starts fails at its hard limit (timeout 60 s + grace).
    let third = store
        .create_run(&new_run(project, Some(spec), 0), at(300))
        .await
        .unwrap();
    let claimed = store
        .claim_next(&claimant(r1), &[spec], at(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.uuid, third.uuid);
    let timeouts = Timeouts {
        heartbeat: Duration::from_secs(3600),
        ..Timeouts::default()
    };
    assert_eq!(
        queue::next_deadline(&claimed.clock(), &timeouts),
        Some(at(420))
    );
    let event = queue::timeout_event(&claimed.clock(), at(420), &timeouts).unwrap();
    assert_eq!(event, JobEvent::ClaimTimeout);
    let failed = store
        .transition_job(third.uuid, event, &server_side, at(420))
        .await
        .unwrap();
    assert_eq!(failed.job().status, JobStatus::Failed);
    assert!(matches!(
        store
            .transition_job(JobUuid::new_v4(), JobEvent::Cancel, &server_side, at(421))
            .await,
        Err(TransitionError::NotFound(_))
    ));
    server.stop().await;
}

async fn concurrent_changes_never_overwrite(backend: Backend) {
    let server = TestServer::start(backend).await;
    let store = server.store().clone();
    let (project, spec) = store_fixture(&server).await;
    let runner = create_runner(&server, "r1").await;
    let now = server.clock.now();
    for round in 0..3 {
        let job = store
            .create_run(&new_run(project, None, 0), now)
            .await
            .unwrap();
        store
            .claim_next(&claimant(runner), &[spec], now)
            .await
            .unwrap()
            .unwrap();
        let change = JobChange {
            runner: Some(runner),
            ..JobChange::default()
        };
        store
            .transition_job(job.uuid, JobEvent::Running, &change, now)
            .await
            .unwrap();
        // Users cancel while the runner completes and the heartbeat timer fires.
        let mut tasks = Vec::new();
        for i in 0..12 {
            let store = store.clone();
            let (event, change) = match (i + round) % 3 {
                0 => (JobEvent::Cancel, JobChange::default()),
                1 => (JobEvent::Completed, change.clone()),
                _ => (JobEvent::HeartbeatTimeout, JobChange::default()),
            };
            tasks.push(tokio::spawn(async move {
                (
                    event,
                    store.transition_job(job.uuid, event, &change, now).await,
                )
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (event, Ok(Transitioned::Changed(job))) => winners.push((event, job.status)),
                (_, Ok(Transitioned::Unchanged(_)) | Err(TransitionError::Invalid(_))) => {}
                (event, Err(other)) => panic!("{event}: {other:?}"),
            }
        }
        let final_status = store.get_job(job.uuid).await.unwrap().status;
        // The first change wins; a late `completed` may follow a heartbeat timeout, as
        // the lifecycle allows, and nothing else ever moves the job twice.
        winners.sort_by_key(|(event, _)| event.as_str());
        match winners.as_slice() {
            [(_, status)] => assert_eq!(*status, final_status),
            [
                (JobEvent::Completed, JobStatus::Completed),
                (JobEvent::HeartbeatTimeout, JobStatus::Failed),
            ] => assert_eq!(final_status, JobStatus::Completed),
            other => panic!("unexpected winners {other:?}"),
        }
    }
    server.stop().await;
}

async fn claims_are_exactly_once(backend: Backend) {
    const JOBS: usize = 50;
    const CLAIMERS: usize = 8;
    let server = TestServer::start(backend).await;
    let store = server.store().clone();
    let (project, fallback) = store_fixture(&server).await;
    let other = spec_uuid(&create_spec(&server, "Other", false).await);
    let unserved = spec_uuid(&create_spec(&server, "Unserved", false).await);
    let mut runners = Vec::new();
    for i in 0..CLAIMERS {
        runners.push(create_runner(&server, &format!("runner {i}")).await);
    }
    // A second handle on the same database stands in for a second server process.
    let url = match server.database_url() {
        Some(url) => url.to_owned(),
        None => bencher_server::Config::new(server.data_dir()).database_url(),
    };
    let second = Store::open(&url).await.unwrap();

    let base = millis(server.clock.now());
    let mut submitted: HashMap<JobUuid, (i64, DateTime<Utc>)> = HashMap::new();
    for i in 0..JOBS {
        let spec = if i % 2 == 0 { fallback } else { other };
        let priority = [0, 5, 1][i % 3];
        // Submitted out of priority order, each at its own time.
        let created = base + TimeDelta::milliseconds(i as i64);
        let job = store
            .create_run(&new_run(project, Some(spec), priority), created)
            .await
            .unwrap();
        submitted.insert(job.uuid, (priority, created));
    }
    let bystander = store
        .create_run(&new_run(project, Some(unserved), 100), base)
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for (i, runner) in runners.iter().copied().enumerate() {
        let store = if i % 2 == 0 {
            store.clone()
        } else {
            second.clone()
        };
        let now = server.clock.now();
        tasks.push(tokio::spawn(async move {
            let mut claimed = Vec::new();
            while let Some(job) = store
                .claim_next(&claimant(runner), &[fallback, other], now)
                .await
                .unwrap()
            {
                assert_eq!(job.runner, Some(runner));
                assert_eq!(job.status, JobStatus::Claimed);
                claimed.push((job.uuid, job.priority, job.created));
            }
            (runner, claimed)
        }));
    }
    let mut owner: HashMap<JobUuid, RunnerUuid> = HashMap::new();
    for task in tasks {
        let (runner, claimed) = task.await.unwrap();
        // Each claimer takes jobs best first: priority, then oldest, then UUID.
        let keys: Vec<_> = claimed
            .iter()
            .map(|(uuid, priority, created)| (-priority, *created, *uuid))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "runner {runner} claimed out of order");
        for (uuid, priority, created) in claimed {
            assert_eq!(submitted.get(&uuid), Some(&(priority, created)));
            assert!(
                owner.insert(uuid, runner).is_none(),
                "job {uuid} claimed twice"
            );
        }
    }
    assert_eq!(owner.len(), JOBS, "every job claimed, none lost");
    for (uuid, runner) in &owner {
        let job = second.get_job(*uuid).await.unwrap();
        assert_eq!(
            (job.status, job.runner),
            (JobStatus::Claimed, Some(*runner))
        );
    }
    assert_eq!(
        store.get_job(bystander.uuid).await.unwrap().status,
        JobStatus::Pending,
        "a job for a Spec no claimer serves stays pending"
    );

    // One claimer alone takes them in exactly that order.
    let mut expected = Vec::new();
    for i in 0..12 {
        let priority = [2, 0, 7, 2][i % 4];
        let created = base + TimeDelta::seconds(10) + TimeDelta::milliseconds(i as i64);
        let job = second
            .create_run(&new_run(project, Some(fallback), priority), created)
            .await
            .unwrap();
        expected.push((-priority, created, job.uuid));
    }
    expected.sort();
    let mut order = Vec::new();
    while let Some(job) = store
        .claim_next(&claimant(runners[0]), &[fallback], server.clock.now())
        .await
        .unwrap()
    {
        order.push(job.uuid);
    }
    assert_eq!(
        order,
        expected
            .iter()
            .map(|(_, _, uuid)| *uuid)
            .collect::<Vec<_>>()
    );
    let distinct: HashSet<_> = order.iter().collect();
    assert_eq!(distinct.len(), order.len());
    second.close().await;
    server.stop().await;
}

async fn concurrent_runs_share_new_branches_and_testbeds(backend: Backend) {
    let server = TestServer::start(backend).await;
    let user = user_token(&server).await;
    create_spec(&server, "Intel v1", true).await;
    push_image(&server, &user, "bench", "v1", "one").await;
    let project = project_uuid(&server, "bench").await;
    // Every submission names the same new branch and testbed at once: each is created
    // once, and every run lands on it.
    let submissions = (0..8).map(|_| {
        run(
            &server,
            &user,
            json!({ "project": "bench", "branch": "release", "testbed": "big box",
                    "job": { "image": "bench:v1" } }),
        )
    });
    for (status, job) in futures::future::join_all(submissions).await {
        assert_eq!(status, StatusCode::CREATED, "{job}");
    }
    assert_eq!(rows(&server, project).await, (1, 1, 8));
    let (total, _) = list(&server, &user, "/v0/projects/bench/jobs?status=pending").await;
    assert_eq!(total, 8);
    server.stop().await;
}

/// A crash between storing a job's output and processing it leaves the job `completed`;
/// processing it again (after a restart, or by two server processes at once) makes one
/// report, the same whoever wins, and never duplicates a metric.
async fn reprocessing_a_completed_job_gives_the_same_report(backend: Backend) {
    use bencher_server::channel::output::{OutputDocument, store_output};
    use bencher_server::report::{self, Processed};
    use bencher_types::protocol::IterationResult;

    let server = TestServer::start(backend).await;
    let store = server.store().clone();
    let (project, spec) = store_fixture(&server).await;
    let runner = create_runner(&server, "r1").await;
    let bmf = |value: f64| IterationResult {
        exit_code: 0,
        stdout: Some(format!(
            r#"{{"fib": {{"latency": {{"value": {value}}}}}, "sort": {{"latency": {{"value": 7}}}}}}"#
        )),
        ..IterationResult::default()
    };
    let output = OutputDocument {
        results: vec![bmf(10.0), bmf(12.0)],
        error: None,
    };
    let digest = store_output(server.blobs(), &output).await.unwrap();
    let now = server.clock.now();
    let mut run = new_run(project, Some(spec), 0);
    run.config.iter = Some(2);
    let job = store.create_run(&run, now).await.unwrap();
    store
        .claim_next(&claimant(runner), &[spec], now)
        .await
        .unwrap()
        .expect("claimed");
    let by_runner = JobChange {
        runner: Some(runner),
        output_digest: Some(digest),
        ..JobChange::default()
    };
    for event in [JobEvent::Running, JobEvent::Completed] {
        store
            .transition_job(job.uuid, event, &by_runner, now)
            .await
            .unwrap();
    }

    // Three processors at once, then one more after they are done.
    let limit = 16 << 20;
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (store, blobs, clock) =
                (store.clone(), server.blobs().clone(), server.clock.clone());
            tokio::spawn(async move {
                report::process_job(&store, &blobs, &clock, job.uuid, limit).await
            })
        })
        .collect();
    let mut made = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Processed::Report { metrics, alerts } => {
                made += 1;
                assert_eq!((metrics, alerts), (4, 0));
            }
            Processed::Skipped => {}
            Processed::Failed(why) => panic!("processing failed: {why}"),
        }
    }
    // The background task may have been first; then every call here skipped.
    assert!(made <= 1, "the report was made {made} times");
    let path = format!("/v0/projects/{project}/reports/{}", job.report);
    let (status, first) = get(&server, &path).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        store.get_job(job.uuid).await.unwrap().status,
        JobStatus::Processed
    );
    assert!(matches!(
        report::process_job(&store, server.blobs(), &server.clock, job.uuid, limit)
            .await
            .unwrap(),
        Processed::Skipped
    ));
    let (_, again) = get(&server, &path).await;
    assert_eq!(first, again);
    let results = first["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{first}");
    let values: Vec<f64> = results
        .iter()
        .flat_map(|iteration| iteration.as_array().unwrap().iter())
        .flat_map(|benchmark| benchmark["measures"].as_array().unwrap().iter())
        .map(|measure| measure["metric"]["value"].as_f64().unwrap())
        .collect();
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(sorted, [7.0, 7.0, 10.0, 12.0], "{first}");
    let (_, benchmarks) = get(&server, &format!("/v0/projects/{project}/benchmarks")).await;
    assert_eq!(benchmarks.as_array().map(Vec::len), Some(2), "{benchmarks}");
    server.stop().await;
}
