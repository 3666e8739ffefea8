//! Runner self-update against a real server: `[update]` with a directory of signed
//! artifacts, `update` answering a `ready` that lists the feature (and no job claimed for
//! it), the artifact download with the runner's key, and the canary channel; on SQLite
//! and PostgreSQL. A module of the channel tests, whose fixtures and test runners it
//! uses.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bencher_server::update::{UpdateChannel, UpdateConfig};
use bencher_test_support::reqwest::{Method, StatusCode};
use bencher_test_support::{Backend, TestServer, backend_tests};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{call_as, create_runner, fixture, open, submit, view};

fn ready(features: &[&str], version: &str, checksum: Option<&str>) -> Value {
    let mut runner = json!({ "os": "linux", "arch": "x86_64", "version": version });
    if let Some(checksum) = checksum {
        runner["checksum"] = json!(checksum);
    }
    json!({ "event": "ready", "poll_timeout": 1, "runner": runner, "features": features })
}

/// A signed `runner-linux-x86_64` in `dir`: its bytes, SHA-256 hex, base64 signature,
/// and the base64 public key.
fn signed_artifact(dir: &Path) -> (Vec<u8>, String, String, String) {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    // Several read chunks' worth, so the download streams.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(dir.join("runner-linux-x86_64"), &bytes).unwrap();
    let signature = key.sign(&bytes).to_bytes();
    // Raw, as `openssl pkeyutl -sign -rawin` writes it.
    std::fs::write(dir.join("runner-linux-x86_64.sig"), signature).unwrap();
    let checksum: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (
        bytes,
        checksum,
        BASE64.encode(signature),
        BASE64.encode(key.verifying_key().to_bytes()),
    )
}

fn update_config(dir: &Path, channel: UpdateChannel, public_key: String) -> UpdateConfig {
    UpdateConfig {
        version: "0.2.0".into(),
        channel,
        directory: Some(dir.to_owned()),
        artifacts: vec![],
        public_key: Some(public_key),
    }
}

backend_tests!(
    stable_update_answers_ready_and_claims_nothing,
    canary_offers_by_checksum,
    no_update_configured_offers_nothing,
);

async fn stable_update_answers_ready_and_claims_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, checksum, signature, public_key) = signed_artifact(dir.path());
    let config = update_config(dir.path(), UpdateChannel::Stable, public_key);
    let server = TestServer::start_with(backend, |c| c.update = Some(config)).await;
    let fixture = fixture(&server).await;
    let user = fixture.user.clone();
    let (runner, key) = create_runner(&server, "alpha", &[&fixture.spec]).await;
    let submitted = submit(&server, &fixture, json!({})).await;
    let job = submitted["uuid"].as_str().unwrap().to_owned();

    let mut channel = open(&server, &runner, &key).await;
    channel
        .send(ready(&["update", "upload"], "0.1.0", None))
        .await;
    let update = channel.expect("update").await;
    let url = format!("/v0/runners/{runner}/update/linux/x86_64");
    assert_eq!(
        update,
        json!({
            "event": "update", "version": "0.2.0", "url": url,
            "checksum": checksum, "signature": signature,
        })
    );
    // The update answered the ready: nothing was claimed, nothing else arrives.
    assert!(
        channel
            .recv_within(std::time::Duration::from_millis(1500))
            .await
            .is_none(),
        "the update answers the ready alone"
    );
    assert_eq!(view(&server, &job).await["status"], "pending");

    // The download, with the runner's key, streams the same bytes.
    let response = server
        .request_as(Method::GET, &url, Some(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(
        response.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice());
    // An admin may download it too.
    let admin_token = server.admin_token.expose_secret().to_owned();
    let response = server
        .request_as(Method::GET, &url, Some(&admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len(), bytes.len());
    // Without credentials, with another runner's key, with a user token: refused.
    let (other, other_key) = create_runner(&server, "beta", &[]).await;
    assert_ne!(other, runner);
    for (token, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(other_key.as_str()), StatusCode::UNAUTHORIZED),
        (Some(user.as_str()), StatusCode::FORBIDDEN),
    ] {
        let (status, body) = call_as(&server, token, Method::GET, &url, None).await;
        assert_eq!(status, expected, "{body}");
    }
    // An unknown platform is a JSON 404.
    let (status, body) = call_as(
        &server,
        Some(&key),
        Method::GET,
        &format!("/v0/runners/{runner}/update/linux/riscv64"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "not_found");

    // Declining (a ready without the feature) gets the job; so does the new version.
    channel.send(ready(&[], "0.1.0", None)).await;
    let offered = channel.expect("job").await;
    assert_eq!(offered["uuid"], job);
    channel.close().await;

    let mut updated = open(&server, &runner, &key).await;
    updated.send(ready(&["update"], "0.2.0", None)).await;
    updated.expect("no_job").await;
    updated.close().await;
    server.stop().await;
}

async fn canary_offers_by_checksum(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_, checksum, signature, public_key) = signed_artifact(dir.path());
    let config = update_config(dir.path(), UpdateChannel::Canary, public_key);
    let server = TestServer::start_with(backend, |c| c.update = Some(config)).await;
    let (runner, key) = create_runner(&server, "alpha", &[]).await;
    let mut channel = open(&server, &runner, &key).await;
    // Same version, another build: offered.
    let other = "0".repeat(64);
    channel
        .send(ready(&["update"], "0.2.0", Some(&other)))
        .await;
    let update = channel.expect("update").await;
    assert_eq!(update["checksum"], checksum);
    assert_eq!(update["signature"], signature);
    // A runner that does not say its checksum is offered too.
    channel.send(ready(&["update"], "0.2.0", None)).await;
    channel.expect("update").await;
    // The same build: nothing to do.
    channel
        .send(ready(&["update"], "0.2.0", Some(&checksum)))
        .await;
    channel.expect("no_job").await;
    channel.close().await;
    server.stop().await;
}

async fn no_update_configured_offers_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (runner, key) = create_runner(&server, "alpha", &[]).await;
    let mut channel = open(&server, &runner, &key).await;
    channel.send(ready(&["update"], "0.0.1", None)).await;
    channel.expect("no_job").await;
    channel.close().await;
    let (status, body) = call_as(
        &server,
        Some(&key),
        Method::GET,
        &format!("/v0/runners/{runner}/update/linux/x86_64"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "not_found");
    server.stop().await;
}
