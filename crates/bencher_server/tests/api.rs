//! REST API integration tests: a real server on 127.0.0.1:0 driven over HTTP, each test
//! on SQLite and on PostgreSQL (see `bencher_test_support`).

use bencher_test_support::reqwest::{Method, Response, StatusCode};
use bencher_test_support::{Backend, TestServer, backend_tests};
use bencher_types::{ResourceId, RunnerKey};
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

async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    payload: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server.request(method, path);
    if let Some(payload) = payload {
        request = request.json(&payload);
    }
    body(request.send().await.expect("request")).await
}

async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    call(server, Method::GET, path, None).await
}

async fn post(server: &TestServer, path: &str, payload: Value) -> (StatusCode, Value) {
    call(server, Method::POST, path, Some(payload)).await
}

async fn patch(server: &TestServer, path: &str, payload: Value) -> (StatusCode, Value) {
    call(server, Method::PATCH, path, Some(payload)).await
}

async fn delete(server: &TestServer, path: &str) -> (StatusCode, Value) {
    call(server, Method::DELETE, path, None).await
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

fn spec_body(name: &str) -> Value {
    json!({
        "name": name, "os": "linux", "architecture": "x86_64", "sandbox": "firecracker",
        "cpu": 4, "memory": 51539607552u64, "disk": 137438953472u64,
    })
}

async fn create_spec(server: &TestServer, name: &str) -> Value {
    let (status, spec) = post(server, "/v0/specs", spec_body(name)).await;
    assert_eq!(status, StatusCode::CREATED, "{spec}");
    spec
}

async fn create_runner(server: &TestServer, name: &str) -> Value {
    let (status, runner) = post(server, "/v0/runners", json!({ "name": name })).await;
    assert_eq!(status, StatusCode::CREATED, "{runner}");
    runner
}

async fn count(server: &TestServer, path: &str) -> u64 {
    let response = server
        .request(Method::GET, path)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    response.headers()["x-total-count"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

backend_tests!(
    version_and_health_need_no_token,
    tokens_authenticate_and_authorize,
    runner_lifecycle,
    runner_key_check,
    spec_lifecycle,
    fallback_is_swapped_atomically,
    concurrent_fallback_swaps_leave_one,
    runner_specs,
    pagination,
    bad_input_is_rejected_and_changes_nothing,
    openapi_documents_every_route,
    bootstrap_survives_restart,
    projects_are_open_to_users,
);

async fn version_and_health_need_no_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, version) = body(
        server
            .request_as(Method::GET, "/v0/server/version", None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    let (status, health) = body(
        server
            .request_as(Method::GET, "/v0/server/health", None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health, json!({ "status": "ok", "database": "ok" }));
    server.stop().await;
}

async fn tokens_authenticate_and_authorize(backend: Backend) {
    let server = TestServer::start(backend).await;

    // No token, a malformed one, an unknown one: 401 with a Bearer challenge.
    let response = server
        .request_as(Method::GET, "/v0/runners", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_error(&body(response).await, StatusCode::UNAUTHORIZED, "missing");
    let response = server
        .request_as(Method::GET, "/v0/runners", Some("hunter2"))
        .send()
        .await
        .unwrap();
    assert_error(
        &body(response).await,
        StatusCode::UNAUTHORIZED,
        "malformed API token",
    );
    let unknown = format!("bencher_user_{}", "a".repeat(30));
    let response = server
        .request_as(Method::GET, "/v0/runners", Some(&unknown))
        .send()
        .await
        .unwrap();
    assert_error(
        &body(response).await,
        StatusCode::UNAUTHORIZED,
        "invalid, expired or revoked",
    );
    // A runner key is not an API token.
    let runner = create_runner(&server, "Impostor").await;
    let key = runner["key"].as_str().unwrap();
    let response = server
        .request_as(Method::GET, "/v0/runners", Some(key))
        .send()
        .await
        .unwrap();
    assert_error(
        &body(response).await,
        StatusCode::UNAUTHORIZED,
        "malformed API token",
    );

    // A non-admin token authenticates but gets 403 on admin endpoints.
    let (status, user) = post(&server, "/v0/tokens", json!({ "name": "ci" })).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["admin"], false);
    let user_token = user["token"].as_str().unwrap().to_owned();
    assert!(user_token.starts_with("bencher_user_") && user_token.len() == 43);
    for path in ["/v0/runners", "/v0/specs", "/v0/tokens"] {
        let response = server
            .request_as(Method::GET, path, Some(&user_token))
            .send()
            .await
            .unwrap();
        assert_error(&body(response).await, StatusCode::FORBIDDEN, "admin token");
    }
    let response = server
        .request_as(Method::POST, "/v0/runners", Some(&user_token))
        .json(&json!({ "name": "sneaky" }))
        .send()
        .await
        .unwrap();
    assert_error(&body(response).await, StatusCode::FORBIDDEN, "admin token");
    assert_eq!(count(&server, "/v0/runners?search=sneaky").await, 0);

    // A second admin token works; the list never shows secrets.
    let (_, admin2) = post(
        &server,
        "/v0/tokens",
        json!({ "name": "ops", "admin": true }),
    )
    .await;
    let admin2_token = admin2["token"].as_str().unwrap().to_owned();
    let response = server
        .request_as(Method::GET, "/v0/tokens", Some(&admin2_token))
        .send()
        .await
        .unwrap();
    let (status, tokens) = body(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tokens.as_array().unwrap().len(), 3);
    assert!(!tokens.to_string().contains("bencher_user_"), "{tokens}");

    // Revocation takes effect at once; revoking twice is fine.
    let (status, _) = delete(
        &server,
        &format!("/v0/tokens/{}", user["uuid"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = delete(
        &server,
        &format!("/v0/tokens/{}", user["uuid"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let response = server
        .request_as(Method::GET, "/v0/server/version", Some(&user_token))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "public endpoints ignore tokens"
    );
    let response = server
        .request_as(Method::GET, "/v0/runners", Some(&user_token))
        .send()
        .await
        .unwrap();
    assert_error(&body(response).await, StatusCode::UNAUTHORIZED, "revoked");

    // Expiry follows the server's clock.
    let (_, short) = post(
        &server,
        "/v0/tokens",
        json!({ "name": "short", "admin": true, "ttl": 60 }),
    )
    .await;
    assert!(short["expires"].is_string());
    let short_token = short["token"].as_str().unwrap().to_owned();
    let response = server
        .request_as(Method::GET, "/v0/specs", Some(&short_token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.clock.advance(std::time::Duration::from_secs(61));
    let response = server
        .request_as(Method::GET, "/v0/specs", Some(&short_token))
        .send()
        .await
        .unwrap();
    assert_error(&body(response).await, StatusCode::UNAUTHORIZED, "expired");
    assert_error(
        &post(&server, "/v0/tokens", json!({ "name": "zero", "ttl": 0 })).await,
        StatusCode::BAD_REQUEST,
        "ttl",
    );

    // The last active admin token cannot be revoked; with another admin it can.
    let (_, tokens) = get(&server, "/v0/tokens?sort=created").await;
    let bootstrap = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "admin")
        .unwrap()
        .clone();
    let (status, _) = delete(
        &server,
        &format!("/v0/tokens/{}", admin2["uuid"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &delete(
            &server,
            &format!("/v0/tokens/{}", bootstrap["uuid"].as_str().unwrap()),
        )
        .await,
        StatusCode::CONFLICT,
        "last active admin token",
    );
    assert_error(
        &delete(&server, &format!("/v0/tokens/{}", uuid::Uuid::new_v4())).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    assert_error(
        &delete(&server, "/v0/tokens/not-a-uuid").await,
        StatusCode::BAD_REQUEST,
        "",
    );
    server.stop().await;
}

async fn runner_lifecycle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = create_runner(&server, "My Runner").await;
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    assert_eq!(created["slug"], "my-runner");
    let key = created["key"].as_str().unwrap();
    assert!(key.parse::<RunnerKey>().is_ok(), "{key}");

    // The key is shown once: never in view or list.
    let (status, by_slug) = get(&server, "/v0/runners/my-runner").await;
    assert_eq!(status, StatusCode::OK);
    let (_, by_uuid) = get(&server, &format!("/v0/runners/{uuid}")).await;
    assert_eq!(by_slug, by_uuid);
    assert_eq!(by_slug["name"], "My Runner");
    assert_eq!(by_slug["state"], "offline");
    assert_eq!(by_slug["specs"], json!([]));
    assert!(by_slug.get("key").is_none() && !by_slug.to_string().contains("bencher_runner_"));
    let (_, list) = get(&server, "/v0/runners").await;
    assert!(!list.to_string().contains("bencher_runner_"));

    // A second runner with the same name gets a unique derived slug; an explicit taken
    // slug is a conflict.
    let twin = create_runner(&server, "My Runner").await;
    let twin_slug = twin["slug"].as_str().unwrap();
    assert!(
        twin_slug.starts_with("my-runner-") && twin_slug != "my-runner",
        "{twin_slug}"
    );
    assert_error(
        &post(
            &server,
            "/v0/runners",
            json!({ "name": "Other", "slug": "my-runner" }),
        )
        .await,
        StatusCode::CONFLICT,
        "slug `my-runner` already exists",
    );
    let (status, explicit) = post(
        &server,
        "/v0/runners",
        json!({ "name": "Other", "slug": "rack-7" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(explicit["slug"], "rack-7");
    let (_, unicode) = post(&server, "/v0/runners", json!({ "name": "日本" })).await;
    assert!(
        unicode["slug"].as_str().unwrap().starts_with("runner-"),
        "{unicode}"
    );

    // Rename and change the slug; the old slug no longer resolves.
    let (status, renamed) = patch(
        &server,
        &format!("/v0/runners/{uuid}"),
        json!({ "name": "Rack 1", "slug": "rack-1" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(
        (renamed["name"].as_str(), renamed["slug"].as_str()),
        (Some("Rack 1"), Some("rack-1"))
    );
    assert_error(
        &get(&server, "/v0/runners/my-runner").await,
        StatusCode::NOT_FOUND,
        "runner `my-runner`",
    );
    assert_error(
        &patch(&server, "/v0/runners/rack-1", json!({ "slug": "rack-7" })).await,
        StatusCode::CONFLICT,
        "already exists",
    );

    // Archive: gone from the default list, present with `archived=true`, and back.
    let before = count(&server, "/v0/runners").await;
    let (_, archived) = patch(&server, "/v0/runners/rack-1", json!({ "archived": true })).await;
    assert!(archived["archived"].is_string(), "{archived}");
    assert_eq!(count(&server, "/v0/runners").await, before - 1);
    let (_, list) = get(&server, "/v0/runners?archived=true").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["slug"], "rack-1");
    let (_, restored) = patch(&server, "/v0/runners/rack-1", json!({ "archived": false })).await;
    assert!(restored.get("archived").is_none(), "{restored}");

    // Rotation returns a new key for the same runner.
    let (status, rotated) = post(&server, "/v0/runners/rack-1/key", json!(null)).await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    assert_eq!(rotated["uuid"], uuid.as_str());
    assert_ne!(rotated["key"], created["key"]);
    assert_error(
        &post(&server, "/v0/runners/nobody/key", json!(null)).await,
        StatusCode::NOT_FOUND,
        "runner `nobody`",
    );
    server.stop().await;
}

async fn runner_key_check(backend: Backend) {
    let server = TestServer::start(backend).await;
    let store = server.store();
    let created = create_runner(&server, "Keyed").await;
    let other = create_runner(&server, "Other").await;
    let key: RunnerKey = created["key"].as_str().unwrap().parse().unwrap();
    let other_key: RunnerKey = other["key"].as_str().unwrap().parse().unwrap();
    let by_slug: ResourceId = "keyed".parse().unwrap();
    let by_uuid: ResourceId = created["uuid"].as_str().unwrap().parse().unwrap();
    let hash = |k: &RunnerKey| bencher_server::hash_secret(k.expose_secret());

    let authenticated = store
        .authenticate_runner(&by_slug, &hash(&key))
        .await
        .unwrap()
        .expect("valid key");
    assert_eq!(
        authenticated.uuid.to_string(),
        created["uuid"].as_str().unwrap()
    );
    assert!(
        store
            .authenticate_runner(&by_uuid, &hash(&key))
            .await
            .unwrap()
            .is_some()
    );
    // Another runner's valid key does not open this runner, nor an unknown runner.
    assert!(
        store
            .authenticate_runner(&by_slug, &hash(&other_key))
            .await
            .unwrap()
            .is_none()
    );
    let nobody: ResourceId = "nobody".parse().unwrap();
    assert!(
        store
            .authenticate_runner(&nobody, &hash(&key))
            .await
            .unwrap()
            .is_none()
    );

    // Rotation invalidates the old key at once.
    let (_, rotated) = post(&server, "/v0/runners/keyed/key", json!(null)).await;
    let new_key: RunnerKey = rotated["key"].as_str().unwrap().parse().unwrap();
    assert!(
        store
            .authenticate_runner(&by_slug, &hash(&key))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .authenticate_runner(&by_slug, &hash(&new_key))
            .await
            .unwrap()
            .is_some()
    );

    // An archived runner cannot authenticate, even with its current key.
    patch(&server, "/v0/runners/keyed", json!({ "archived": true })).await;
    assert!(
        store
            .authenticate_runner(&by_slug, &hash(&new_key))
            .await
            .unwrap()
            .is_none()
    );
    patch(&server, "/v0/runners/keyed", json!({ "archived": false })).await;
    assert!(
        store
            .authenticate_runner(&by_slug, &hash(&new_key))
            .await
            .unwrap()
            .is_some()
    );
    server.stop().await;
}

async fn spec_lifecycle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let spec = create_spec(&server, "Intel v1").await;
    assert_eq!(spec["slug"], "intel-v1");
    assert_eq!(spec["sandbox"], "firecracker");
    assert_eq!(spec["memory"], 51539607552u64);
    assert_eq!(
        (spec["network"].as_bool(), spec["fallback"].as_bool()),
        (Some(false), Some(false))
    );

    // No sandbox: the field is absent.
    let mut bare = spec_body("Bare metal");
    bare.as_object_mut().unwrap().remove("sandbox");
    bare["network"] = json!(true);
    let (status, bare) = post(&server, "/v0/specs", bare).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(bare.get("sandbox").is_none(), "{bare}");
    assert_eq!(bare["network"], true);

    let (status, viewed) = get(
        &server,
        &format!("/v0/specs/{}", spec["uuid"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(viewed, spec);

    // Rename; hardware is immutable (a different machine is a different Spec).
    let (status, renamed) = patch(
        &server,
        "/v0/specs/intel-v1",
        json!({ "name": "Intel v1 (rack 2)" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(renamed["slug"], "intel-v1");
    assert_error(
        &patch(&server, "/v0/specs/intel-v1", json!({ "cpu": 8 })).await,
        StatusCode::BAD_REQUEST,
        "unknown field `cpu`",
    );

    // Delete: unused specs go; a second delete is 404.
    let (status, _) = delete(&server, "/v0/specs/bare-metal").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &delete(&server, "/v0/specs/bare-metal").await,
        StatusCode::NOT_FOUND,
        "spec `bare-metal`",
    );

    // A spec a runner serves cannot be deleted.
    create_runner(&server, "My Runner").await;
    let (status, _) = post(
        &server,
        "/v0/runners/my-runner/specs",
        json!({ "spec": "intel-v1" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_error(
        &delete(&server, "/v0/specs/intel-v1").await,
        StatusCode::CONFLICT,
        "in use by 1 runner",
    );
    let (status, _) = get(&server, "/v0/specs/intel-v1").await;
    assert_eq!(status, StatusCode::OK, "a refused delete leaves the spec");
    server.stop().await;
}

async fn fallback_is_swapped_atomically(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fallbacks = |specs: &Value| -> Vec<String> {
        specs
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["fallback"] == true)
            .map(|s| s["slug"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut first = spec_body("First");
    first["fallback"] = json!(true);
    post(&server, "/v0/specs", first).await;
    let mut second = spec_body("Second");
    second["fallback"] = json!(true);
    post(&server, "/v0/specs", second).await;
    let (_, specs) = get(&server, "/v0/specs").await;
    assert_eq!(fallbacks(&specs), ["second"]);

    let (_, first) = patch(&server, "/v0/specs/first", json!({ "fallback": true })).await;
    assert_eq!(first["fallback"], true);
    let (_, specs) = get(&server, "/v0/specs").await;
    assert_eq!(fallbacks(&specs), ["first"]);

    // Archiving the fallback leaves none; an archived spec cannot become the fallback.
    let (_, archived) = patch(&server, "/v0/specs/first", json!({ "archived": true })).await;
    assert_eq!(archived["fallback"], false);
    let (_, all) = get(&server, "/v0/specs?archived=true").await;
    let (_, active) = get(&server, "/v0/specs").await;
    assert!(fallbacks(&all).is_empty() && fallbacks(&active).is_empty());
    assert_error(
        &patch(&server, "/v0/specs/first", json!({ "fallback": true })).await,
        StatusCode::CONFLICT,
        "archived",
    );
    let (status, restored) = patch(
        &server,
        "/v0/specs/first",
        json!({ "archived": false, "fallback": true }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(restored["fallback"], true);
    let (_, specs) = get(&server, "/v0/specs").await;
    assert_eq!(fallbacks(&specs), ["first"]);
    let (_, unset) = patch(&server, "/v0/specs/first", json!({ "fallback": false })).await;
    assert_eq!(unset["fallback"], false);
    server.stop().await;
}

async fn concurrent_fallback_swaps_leave_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    for i in 0..6 {
        create_spec(&server, &format!("Spec {i}")).await;
    }
    let swaps = (0..6).map(|i| {
        let request = server
            .request(Method::PATCH, &format!("/v0/specs/spec-{i}"))
            .json(&json!({ "fallback": true }));
        async move { request.send().await.expect("request").status() }
    });
    let statuses = futures_join_all(swaps).await;
    // Every swap either won or lost the race with a clear 409; never a 500.
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::OK));
    let (_, specs) = get(&server, "/v0/specs").await;
    let fallbacks = specs
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["fallback"] == true)
        .count();
    assert_eq!(fallbacks, 1, "{specs}");
    server.stop().await;
}

/// Runs futures concurrently on the test runtime and collects their outputs in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

async fn runner_specs(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_runner(&server, "My Runner").await;
    let intel = create_spec(&server, "Intel v1").await;
    create_spec(&server, "Arm v1").await;

    // The seed's command: add by slug; UUIDs work too.
    let (status, added) = post(
        &server,
        "/v0/runners/my-runner/specs",
        json!({ "spec": "intel-v1" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(added, intel);
    let (status, _) = post(
        &server,
        "/v0/runners/my-runner/specs",
        json!({ "spec": "arm-v1" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_error(
        &post(
            &server,
            "/v0/runners/my-runner/specs",
            json!({ "spec": intel["uuid"] }),
        )
        .await,
        StatusCode::CONFLICT,
        "already serves",
    );

    let response = server
        .request(Method::GET, "/v0/runners/my-runner/specs")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-total-count"], "2");
    let (_, specs) = body(response).await;
    let slugs: Vec<_> = specs
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["arm-v1", "intel-v1"]);
    let (_, runner) = get(&server, "/v0/runners/my-runner").await;
    assert_eq!(runner["specs"], specs);

    // Unknown runner or spec: 404 naming which.
    assert_error(
        &post(
            &server,
            "/v0/runners/nobody/specs",
            json!({ "spec": "intel-v1" }),
        )
        .await,
        StatusCode::NOT_FOUND,
        "runner `nobody`",
    );
    assert_error(
        &post(
            &server,
            "/v0/runners/my-runner/specs",
            json!({ "spec": "nothing" }),
        )
        .await,
        StatusCode::NOT_FOUND,
        "spec `nothing`",
    );
    assert_error(
        &post(
            &server,
            "/v0/runners/my-runner/specs",
            json!({ "spec": "Not A Slug" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "neither a UUID nor a valid slug",
    );

    // Archived specs cannot be added.
    create_spec(&server, "Old").await;
    patch(&server, "/v0/specs/old", json!({ "archived": true })).await;
    assert_error(
        &post(
            &server,
            "/v0/runners/my-runner/specs",
            json!({ "spec": "old" }),
        )
        .await,
        StatusCode::CONFLICT,
        "archived",
    );

    // Remove, then removing again is 404; the spec can then be deleted.
    let (status, _) = delete(&server, "/v0/runners/my-runner/specs/intel-v1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &delete(&server, "/v0/runners/my-runner/specs/intel-v1").await,
        StatusCode::NOT_FOUND,
        "spec `intel-v1` on runner `my-runner`",
    );
    assert_eq!(count(&server, "/v0/runners/my-runner/specs").await, 1);
    let (status, _) = delete(&server, "/v0/specs/intel-v1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // The runner list carries each runner's specs.
    let (_, runners) = get(&server, "/v0/runners").await;
    assert_eq!(runners[0]["specs"].as_array().unwrap().len(), 1);
    server.stop().await;
}

async fn pagination(backend: Backend) {
    let server = TestServer::start(backend).await;
    for name in [
        "delta", "alpha", "echo", "charlie", "bravo", "golf", "foxtrot",
    ] {
        create_spec(&server, name).await;
    }
    let slugs = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["slug"].as_str().unwrap().to_owned())
            .collect()
    };

    let response = server
        .request(Method::GET, "/v0/specs?per_page=3&page=1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-total-count"], "7");
    assert_eq!(
        slugs(&body(response).await.1),
        ["alpha", "bravo", "charlie"]
    );
    let (_, page3) = get(&server, "/v0/specs?per_page=3&page=3").await;
    assert_eq!(slugs(&page3), ["golf"]);
    let (_, page4) = get(&server, "/v0/specs?per_page=3&page=4").await;
    assert_eq!(slugs(&page4), Vec::<String>::new());
    let (_, desc) = get(&server, "/v0/specs?per_page=2&direction=desc").await;
    assert_eq!(slugs(&desc), ["golf", "foxtrot"]);
    let (_, created) = get(&server, "/v0/specs?sort=created&per_page=2").await;
    assert_eq!(slugs(&created), ["delta", "alpha"]);
    let (_, searched) = get(&server, "/v0/specs?search=O").await;
    assert_eq!(slugs(&searched), ["bravo", "echo", "foxtrot", "golf"]);
    // LIKE wildcards in a search match literally.
    let (_, wild) = get(&server, "/v0/specs?search=%25").await;
    assert_eq!(slugs(&wild), Vec::<String>::new());
    let (_, named) = get(&server, "/v0/specs?name=echo").await;
    assert_eq!(slugs(&named), ["echo"]);
    assert_eq!(count(&server, "/v0/specs?search=a&per_page=1").await, 4);

    assert_error(
        &get(&server, "/v0/specs?per_page=0").await,
        StatusCode::BAD_REQUEST,
        "per_page",
    );
    assert_error(
        &get(&server, "/v0/specs?per_page=256").await,
        StatusCode::BAD_REQUEST,
        "per_page",
    );
    assert_error(
        &get(&server, "/v0/specs?page=0").await,
        StatusCode::BAD_REQUEST,
        "page",
    );
    assert_error(
        &get(&server, "/v0/specs?sort=cpu").await,
        StatusCode::BAD_REQUEST,
        "unknown variant",
    );
    assert_error(
        &get(&server, "/v0/specs?page=-1").await,
        StatusCode::BAD_REQUEST,
        "page",
    );
    server.stop().await;
}

async fn bad_input_is_rejected_and_changes_nothing(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.request_limit = bencher_types::ByteSize::new(4096).unwrap();
    })
    .await;
    create_runner(&server, "Existing").await;
    create_spec(&server, "Existing").await;

    let long_name = "x".repeat(65);
    let spec_cases: Vec<(Value, &str)> = vec![
        (json!({}), "missing field `name`"),
        (json!({ "name": long_name }), "at most 64 characters"),
        (json!({ "name": "" }), "must not be empty"),
        (json!({ "slug": "Bad Slug" }), "slug may only contain"),
        (
            json!({ "slug": "67e55044-10b1-426f-9247-bb680e5fe0c8" }),
            "must not be a UUID",
        ),
        (json!({ "cpu": 0 }), "cpu must be between 1 and 4096"),
        (json!({ "cpu": 4097 }), "cpu must be between 1 and 4096"),
        (json!({ "cpu": -1 }), "invalid value"),
        (json!({ "memory": 0 }), "at least 1 byte"),
        (json!({ "disk": 0 }), "at least 1 byte"),
        (json!({ "disk": 9007199254740992u64 }), "at most"),
        (json!({ "memory": "48GiB" }), "invalid type"),
        (json!({ "os": "plan9" }), "unknown variant `plan9`"),
        (
            json!({ "architecture": "amd64" }),
            "unknown variant `amd64`",
        ),
        (json!({ "sandbox": "docker" }), "unknown variant `docker`"),
        (json!({ "gpu": 1 }), "unknown field `gpu`"),
        (json!({ "network": "yes" }), "invalid type"),
    ];
    for (change, needle) in spec_cases {
        let mut spec = spec_body("Valid name");
        if change.as_object().unwrap().is_empty() {
            spec = json!({ "os": "linux" });
        }
        for (field, value) in change.as_object().unwrap() {
            spec[field] = value.clone();
        }
        assert_error(
            &post(&server, "/v0/specs", spec).await,
            StatusCode::BAD_REQUEST,
            needle,
        );
    }
    for (runner, needle) in [
        (json!({ "name": "x".repeat(65) }), "at most 64 characters"),
        (json!({ "name": "tab\there" }), "control characters"),
        (
            json!({ "name": "ok", "slug": "-bad" }),
            "slug may only contain",
        ),
        (
            json!({ "name": "ok", "key": "bencher_runner_x" }),
            "unknown field `key`",
        ),
        (json!(["name"]), "must be a JSON object"),
    ] {
        assert_error(
            &post(&server, "/v0/runners", runner).await,
            StatusCode::BAD_REQUEST,
            needle,
        );
    }

    // Syntax errors, wrong content type, oversized bodies.
    let raw = |body: &'static str| {
        server
            .request(Method::POST, "/v0/runners")
            .header("content-type", "application/json")
            .body(body)
    };
    assert_error(
        &body(raw("{\"name\": ").send().await.unwrap()).await,
        StatusCode::BAD_REQUEST,
        "parse",
    );
    assert_error(
        &body(raw("").send().await.unwrap()).await,
        StatusCode::BAD_REQUEST,
        "",
    );
    let text = server
        .request(Method::POST, "/v0/runners")
        .header("content-type", "text/plain")
        .body("{\"name\":\"x\"}");
    assert_error(
        &body(text.send().await.unwrap()).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/json",
    );
    let huge = json!({ "name": "x", "slug": "y".repeat(10_000) });
    assert_error(
        &post(&server, "/v0/runners", huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "",
    );

    // Bad paths and updates.
    assert_error(
        &get(&server, "/v0/runners/Not_A_Slug").await,
        StatusCode::BAD_REQUEST,
        "neither a UUID nor a valid slug",
    );
    assert_error(
        &get(&server, "/v0/runners/unknown").await,
        StatusCode::NOT_FOUND,
        "runner `unknown`",
    );
    assert_error(
        &get(&server, &format!("/v0/specs/{}", uuid::Uuid::new_v4())).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    assert_error(
        &patch(
            &server,
            "/v0/runners/existing",
            json!({ "archived": "yes" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid type",
    );
    assert_error(
        &patch(&server, "/v0/specs/existing", json!({ "slug": "" })).await,
        StatusCode::BAD_REQUEST,
        "must not be empty",
    );
    assert_error(
        &get(&server, "/v0/nothing-here").await,
        StatusCode::NOT_FOUND,
        "no such endpoint",
    );
    assert_error(
        &call(&server, Method::PUT, "/v0/runners", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
    );

    // Nothing was half-written.
    assert_eq!(count(&server, "/v0/runners").await, 1);
    assert_eq!(count(&server, "/v0/specs").await, 1);
    let (_, runner) = get(&server, "/v0/runners/existing").await;
    assert_eq!(runner["name"], "Existing");
    assert!(runner.get("archived").is_none());
    server.stop().await;
}

/// Every route of the contract, with the status it answers to an admin when the resource
/// does not exist (so the route itself answered, not the 404 fallback).
const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/v0/server/version", "/v0/server/version"),
    ("get", "/v0/server/health", "/v0/server/health"),
    ("get", "/v0/openapi.json", "/v0/openapi.json"),
    ("get", "/v0/runners", "/v0/runners"),
    ("post", "/v0/runners", "/v0/runners"),
    ("get", "/v0/runners/{runner}", "/v0/runners/nobody"),
    ("patch", "/v0/runners/{runner}", "/v0/runners/nobody"),
    ("post", "/v0/runners/{runner}/key", "/v0/runners/nobody/key"),
    (
        "get",
        "/v0/runners/{runner}/channel",
        "/v0/runners/nobody/channel",
    ),
    (
        "put",
        "/v0/runners/{runner}/jobs/{job}/output",
        "/v0/runners/nobody/jobs/67e55044-10b1-426f-9247-bb680e5fe0c8/output",
    ),
    (
        "get",
        "/v0/runners/{runner}/specs",
        "/v0/runners/nobody/specs",
    ),
    (
        "get",
        "/v0/runners/{runner}/update/{os}/{arch}",
        "/v0/runners/nobody/update/linux/x86_64",
    ),
    (
        "post",
        "/v0/runners/{runner}/specs",
        "/v0/runners/nobody/specs",
    ),
    (
        "delete",
        "/v0/runners/{runner}/specs/{spec}",
        "/v0/runners/nobody/specs/nothing",
    ),
    ("get", "/v0/specs", "/v0/specs"),
    ("post", "/v0/specs", "/v0/specs"),
    ("get", "/v0/specs/{spec}", "/v0/specs/nothing"),
    ("patch", "/v0/specs/{spec}", "/v0/specs/nothing"),
    ("delete", "/v0/specs/{spec}", "/v0/specs/nothing"),
    ("get", "/v0/tokens", "/v0/tokens"),
    ("post", "/v0/tokens", "/v0/tokens"),
    (
        "delete",
        "/v0/tokens/{token}",
        "/v0/tokens/67e55044-10b1-426f-9247-bb680e5fe0c8",
    ),
    ("get", "/v0/projects", "/v0/projects"),
    ("post", "/v0/projects", "/v0/projects"),
    ("get", "/v0/projects/{project}", "/v0/projects/nothing"),
    ("post", "/v0/run", "/v0/run"),
    (
        "post",
        "/v0/projects/{project}/results",
        "/v0/projects/nothing/results",
    ),
    (
        "get",
        "/v0/projects/{project}/jobs",
        "/v0/projects/nothing/jobs",
    ),
    (
        "get",
        "/v0/projects/{project}/jobs/{job}",
        "/v0/projects/nothing/jobs/67e55044-10b1-426f-9247-bb680e5fe0c8",
    ),
    (
        "post",
        "/v0/projects/{project}/jobs/{job}/cancel",
        "/v0/projects/nothing/jobs/67e55044-10b1-426f-9247-bb680e5fe0c8/cancel",
    ),
    ("get", "/v0/jobs", "/v0/jobs"),
    (
        "get",
        "/v0/projects/{project}/reports",
        "/v0/projects/nothing/reports",
    ),
    (
        "get",
        "/v0/projects/{project}/reports/{report}",
        "/v0/projects/nothing/reports/67e55044-10b1-426f-9247-bb680e5fe0c8",
    ),
    (
        "get",
        "/v0/projects/{project}/perf",
        "/v0/projects/nothing/perf",
    ),
    (
        "get",
        "/v0/projects/{project}/measures",
        "/v0/projects/nothing/measures",
    ),
    (
        "get",
        "/v0/projects/{project}/benchmarks",
        "/v0/projects/nothing/benchmarks",
    ),
    (
        "get",
        "/v0/projects/{project}/thresholds",
        "/v0/projects/nothing/thresholds",
    ),
    (
        "post",
        "/v0/projects/{project}/thresholds",
        "/v0/projects/nothing/thresholds",
    ),
    (
        "get",
        "/v0/projects/{project}/thresholds/{threshold}",
        "/v0/projects/nothing/thresholds/67e55044-10b1-426f-9247-bb680e5fe0c8",
    ),
    (
        "put",
        "/v0/projects/{project}/thresholds/{threshold}",
        "/v0/projects/nothing/thresholds/67e55044-10b1-426f-9247-bb680e5fe0c8",
    ),
    (
        "delete",
        "/v0/projects/{project}/thresholds/{threshold}",
        "/v0/projects/nothing/thresholds/67e55044-10b1-426f-9247-bb680e5fe0c8",
    ),
    (
        "get",
        "/v0/projects/{project}/alerts",
        "/v0/projects/nothing/alerts",
    ),
    (
        "get",
        "/v0/projects/{project}/alerts/{alert}",
        "/v0/projects/nothing/alerts/67e55044-10b1-426f-9247-bb680e5fe0c8",
    ),
    (
        "patch",
        "/v0/projects/{project}/alerts/{alert}",
        "/v0/projects/nothing/alerts/67e55044-10b1-426f-9247-bb680e5fe0c8",
    ),
    ("get", "/v0/auth/oci/token", "/v0/auth/oci/token"),
    ("post", "/v0/registry/gc", "/v0/registry/gc"),
];

async fn openapi_documents_every_route(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, doc) = body(
        server
            .request_as(Method::GET, "/v0/openapi.json", None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = 0;
    for (method, template, concrete) in ROUTES {
        let operation = &paths
            .get(*template)
            .unwrap_or_else(|| panic!("{template} missing from the OpenAPI document"))[*method];
        assert!(
            operation.is_object(),
            "{} {template} missing from the OpenAPI document",
            method.to_uppercase()
        );
        documented += 1;
        // The route answers: anything but the router's own 404/405 fallbacks.
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (_, answer) = call(&server, method.clone(), concrete, Some(json!({}))).await;
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            !message.contains("no such endpoint") && !message.contains("method not allowed"),
            "{method} {concrete}: {answer}"
        );
    }
    // And the document has nothing the contract does not list.
    let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        operations, documented,
        "the OpenAPI document has operations this test does not know"
    );
    server.stop().await;
}

async fn bootstrap_survives_restart(backend: Backend) {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start(backend).await;
    let path = server.data_dir().join("admin-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin-token must be private");
    let token = std::fs::read_to_string(&path).unwrap();
    assert_eq!(token.trim(), server.admin_token.expose_secret());

    // A second start on the same database keeps the token and the file as they are.
    let config = {
        let mut config = bencher_server::Config::new(server.data_dir());
        config.database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(server_database_url(&server).await),
        };
        config
    };
    let again = bencher_server::App::open(config, bencher_server::Clock::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), token);
    let hash = bencher_server::hash_secret(server.admin_token.expose_secret());
    let found = again
        .store()
        .find_active_token(&hash, chrono::Utc::now())
        .await
        .unwrap();
    assert!(found.expect("bootstrap token still valid").admin);
    let (_, tokens) = get(&server, "/v0/tokens").await;
    assert_eq!(tokens.as_array().unwrap().len(), 1, "no second admin token");
    again.store().close().await;
    server.stop().await;

    // BENCHER_ADMIN_TOKEN on a fresh server is the admin token, and no file is written.
    let chosen: bencher_types::ApiToken =
        format!("bencher_user_{}", "Z".repeat(30)).parse().unwrap();
    let server =
        TestServer::start_with(backend, |config| config.admin_token = Some(chosen.clone())).await;
    assert!(!server.data_dir().join("admin-token").exists());
    let response = server
        .request_as(Method::GET, "/v0/tokens", Some(chosen.expose_secret()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

/// The PostgreSQL URL the test server runs on, read back from the running server's
/// database name.
async fn server_database_url(server: &TestServer) -> String {
    server
        .database_url()
        .expect("PostgreSQL test server")
        .to_owned()
}

async fn projects_are_open_to_users(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, user) = post(&server, "/v0/tokens", json!({ "name": "dev" })).await;
    let user_token = user["token"].as_str().unwrap().to_owned();
    let as_user = |method: Method, path: &str| server.request_as(method, path, Some(&user_token));

    let (status, project) = body(
        as_user(Method::POST, "/v0/projects")
            .json(&json!({ "name": "My Project" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    assert_eq!(project["slug"], "my-project");
    let (status, by_uuid) = body(
        as_user(
            Method::GET,
            &format!("/v0/projects/{}", project["uuid"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_uuid, project);
    let (_, by_slug) = get(&server, "/v0/projects/my-project").await;
    assert_eq!(by_slug, project);

    let (status, twin) = post(&server, "/v0/projects", json!({ "name": "My Project" })).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(twin["slug"], "my-project");
    assert_error(
        &post(
            &server,
            "/v0/projects",
            json!({ "name": "X", "slug": "my-project" }),
        )
        .await,
        StatusCode::CONFLICT,
        "already exists",
    );
    assert_error(
        &post(&server, "/v0/projects", json!({ "name": "" })).await,
        StatusCode::BAD_REQUEST,
        "empty",
    );
    assert_eq!(count(&server, "/v0/projects").await, 2);
    assert_eq!(
        count(&server, "/v0/projects?search=project&per_page=1").await,
        2
    );
    assert_error(
        &get(&server, "/v0/projects/nothing").await,
        StatusCode::NOT_FOUND,
        "project `nothing`",
    );
    let response = server
        .request_as(Method::GET, "/v0/projects", None)
        .send()
        .await
        .unwrap();
    assert_error(&body(response).await, StatusCode::UNAUTHORIZED, "missing");
    server.stop().await;
}
