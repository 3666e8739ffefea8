//! The OCI registry under `/v2/` against a real server on 127.0.0.1:0, on SQLite and
//! PostgreSQL: skopeo (a client we did not write) pushing and pulling a multi-layer
//! image through the token flow, and the distribution spec's rules driven over HTTP.

use std::process::Command;

use bencher_test_support::image::{File, write_layout};
use bencher_test_support::reqwest::{Method, Response, StatusCode};
use bencher_test_support::{Backend, TestServer, backend_tests};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

async fn body(response: Response) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// The OCI error code of an error response.
fn oci_code(bytes: &[u8]) -> String {
    let value: Value = serde_json::from_slice(bytes)
        .unwrap_or_else(|_| panic!("not an OCI error: {}", String::from_utf8_lossy(bytes)));
    value["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Whether skopeo can run; prints why not, and fails under CI.
fn skopeo_available(test: &str) -> bool {
    if Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: skopeo must be installed in CI");
    }
    eprintln!("SKIPPED {test}: skopeo is not installed");
    false
}

fn skopeo(args: &[&str]) -> String {
    let output = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        output.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn user_token(server: &TestServer, admin: bool) -> String {
    let response = server
        .request(Method::POST, "/v0/tokens")
        .json(&json!({ "name": "registry user", "admin": admin }))
        .send()
        .await
        .unwrap();
    let value: Value = response.json().await.unwrap();
    value["token"].as_str().unwrap().to_owned()
}

fn layers() -> Vec<Vec<File<'static>>> {
    vec![
        vec![File {
            path: "bin/bench",
            contents: b"#!/bin/sh\necho '{}'\n",
            mode: 0o755,
        }],
        vec![File {
            path: "data/big",
            contents: &[7u8; 300_000],
            mode: 0o644,
        }],
        vec![File {
            path: "etc/motd",
            contents: b"hello\n",
            mode: 0o644,
        }],
    ]
}

backend_tests!(
    skopeo_round_trip,
    uploads_monolithic_and_chunked,
    manifest_rules,
    tokens_and_scopes,
    garbage_collection,
    uploads_survive_restart_and_interruption,
    blob_size_limit,
);

async fn skopeo_round_trip(backend: Backend) {
    if !skopeo_available("skopeo_round_trip") {
        return;
    }
    let server = TestServer::start(backend).await;
    let token = user_token(&server, false).await;
    let creds = format!("bencher:{token}");
    let dir = tempfile::tempdir().unwrap();
    let built = write_layout(&dir.path().join("in"), "v1", &layers(), &["/bin/bench"]);
    let host = format!(
        "{}:{}",
        server.url.host_str().unwrap(),
        server.url.port().unwrap()
    );

    // Push through the challenge and token flow; the first push creates the project.
    let source = format!("oci:{}:v1", dir.path().join("in").display());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &source,
        &format!("docker://{host}/my-bench:v1"),
    ]);
    let project: Value = server
        .request(Method::GET, "/v0/projects/my-bench")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(project["slug"], "my-bench", "{project}");

    // The registry serves exactly what was pushed.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{host}/my-bench:v1"),
    ]);
    assert_eq!(sha256(raw.as_bytes()), built.manifest_digest);

    // Pull back out by tag, and by project UUID and digest; digests are identical.
    let out = dir.path().join("out");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{host}/my-bench:v1"),
        &format!("oci:{}:v1", out.display()),
    ]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        built.manifest_digest.as_str()
    );
    for digest in built.layer_digests.iter().chain([&built.config_digest]) {
        let blob =
            std::fs::read(out.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap();
        assert_eq!(&sha256(&blob), digest);
    }
    let by_uuid = format!(
        "docker://{host}/{}@{}",
        project["uuid"].as_str().unwrap(),
        built.manifest_digest
    );
    let out2 = dir.path().join("out2");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &by_uuid,
        &format!("oci:{}:pinned", out2.display()),
    ]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(out2.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        built.manifest_digest.as_str()
    );

    // A second push of the same image to another project mounts or re-sends, and works.
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &source,
        &format!("docker://{host}/other-bench:v1"),
    ]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{host}/other-bench:v1"),
    ]);
    assert_eq!(sha256(raw.as_bytes()), built.manifest_digest);

    // Wrong credentials are refused.
    let bad = format!("bencher:bencher_user_{}", "x".repeat(30));
    let output = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &bad,
            &format!("docker://{host}/my-bench:v1"),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    server.stop().await;
}

async fn uploads_monolithic_and_chunked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = user_token(&server, false).await;
    let call = |method: Method, path: &str| server.request_as(method, path, Some(&token));

    // Monolithic: POST with ?digest= and the whole body.
    let blob = vec![42u8; 100_000];
    let digest = sha256(&blob);
    let (status, headers, _) = body(
        call(
            Method::POST,
            &format!("/v2/uploads/blobs/uploads/?digest={digest}"),
        )
        .body(blob.clone())
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        headers["location"],
        format!("/v2/uploads/blobs/{digest}").as_str()
    );
    assert_eq!(headers["docker-content-digest"], digest.as_str());
    let (status, headers, _) = body(
        call(Method::HEAD, &format!("/v2/uploads/blobs/{digest}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], "100000");
    // A monolithic body that does not match its digest is refused and stores nothing.
    let wrong = sha256(b"something else");
    let (status, _, error) = body(
        call(
            Method::POST,
            &format!("/v2/uploads/blobs/uploads/?digest={wrong}"),
        )
        .body(blob.clone())
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let (status, _, _) = body(
        call(Method::HEAD, &format!("/v2/uploads/blobs/{wrong}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Chunked: POST, PATCH with Content-Range, status, PUT with the digest.
    let blob: Vec<u8> = (0..250_000u32).map(|i| (i % 251) as u8).collect();
    let digest = sha256(&blob);
    let (status, headers, _) = body(
        call(Method::POST, "/v2/uploads/blobs/uploads/")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let location = headers["location"].to_str().unwrap().to_owned();
    assert_eq!(headers["range"], "0-0");
    let (first, rest) = blob.split_at(100_000);
    let (status, headers, _) = body(
        call(Method::PATCH, &location)
            .header("content-range", "0-99999")
            .body(first.to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers["range"], "0-99999");
    // A chunk that does not continue the upload: 416 with the current range.
    let (status, headers, _) = body(
        call(Method::PATCH, &location)
            .header("content-range", "0-9")
            .body(vec![0u8; 10])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers["range"], "0-99999");
    let (status, headers, _) = body(call(Method::GET, &location).send().await.unwrap()).await;
    assert_eq!(
        (status, headers["range"].to_str().unwrap()),
        (StatusCode::NO_CONTENT, "0-99999")
    );
    let (status, headers, _) = body(
        call(Method::PATCH, &location)
            .header("content-range", "100000-249999")
            .body(rest.to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, headers["range"].to_str().unwrap()),
        (StatusCode::ACCEPTED, "0-249999")
    );
    let (status, headers, _) = body(
        call(Method::PUT, &format!("{location}?digest={digest}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["docker-content-digest"], digest.as_str());
    let (status, _, pulled) = body(
        call(Method::GET, &format!("/v2/uploads/blobs/{digest}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pulled, blob);
    // Range requests.
    let (status, headers, part) = body(
        call(Method::GET, &format!("/v2/uploads/blobs/{digest}"))
            .header("range", "bytes=10-19")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers["content-range"], "bytes 10-19/250000");
    assert_eq!(part, &blob[10..20]);
    let (status, _, _) = body(
        call(Method::GET, &format!("/v2/uploads/blobs/{digest}"))
            .header("range", "bytes=300000-")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    // The finished session is gone.
    let (status, _, error) = body(call(Method::GET, &location).send().await.unwrap()).await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
    );

    // Finishing with the wrong digest: DIGEST_INVALID, nothing stored, session over.
    let (_, headers, _) = body(
        call(Method::POST, "/v2/uploads/blobs/uploads/")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let location = headers["location"].to_str().unwrap().to_owned();
    let (status, _, error) = body(
        call(Method::PUT, &format!("{location}?digest={wrong}"))
            .body(b"truncated".to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let (status, _, _) = body(
        call(Method::HEAD, &format!("/v2/uploads/blobs/{wrong}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Cancel.
    let (_, headers, _) = body(
        call(Method::POST, "/v2/uploads/blobs/uploads/")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let location = headers["location"].to_str().unwrap().to_owned();
    let (status, _, _) = body(call(Method::DELETE, &location).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = body(
        call(Method::PATCH, &location)
            .body(vec![1])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Cross-repository mount.
    let (status, headers, _) = body(
        call(
            Method::POST,
            &format!("/v2/mounted/blobs/uploads/?mount={digest}&from=uploads"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        headers["location"],
        format!("/v2/mounted/blobs/{digest}").as_str()
    );
    let (status, _, _) = body(
        call(Method::HEAD, &format!("/v2/mounted/blobs/{digest}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A blob the source does not have: a plain session instead.
    let (status, _, _) = body(
        call(
            Method::POST,
            &format!("/v2/mounted/blobs/uploads/?mount={wrong}&from=uploads"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    server.stop().await;
}

async fn push_blob(server: &TestServer, token: &str, name: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let response = server
        .request_as(
            Method::POST,
            &format!("/v2/{name}/blobs/uploads/?digest={digest}"),
            Some(token),
        )
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    digest
}

fn image_manifest(config: (&str, usize), layers: &[(&str, usize)], extra: Value) -> Vec<u8> {
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1 },
        "layers": layers.iter().map(|(d, s)| json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s })).collect::<Vec<_>>(),
    });
    for (key, value) in extra.as_object().unwrap() {
        manifest[key] = value.clone();
    }
    serde_json::to_vec(&manifest).unwrap()
}

async fn put_manifest(
    server: &TestServer,
    token: &str,
    name: &str,
    reference: &str,
    manifest: &[u8],
    media_type: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    body(
        server
            .request_as(
                Method::PUT,
                &format!("/v2/{name}/manifests/{reference}"),
                Some(token),
            )
            .header("content-type", media_type)
            .body(manifest.to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

async fn manifest_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = user_token(&server, false).await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = push_blob(&server, &token, "rules", config).await;
    let layer = b"not really a tar, but a blob";
    let layer_digest = push_blob(&server, &token, "rules", layer).await;

    // A manifest whose layer is missing is refused.
    let missing = sha256(b"missing");
    let manifest = image_manifest((&config_digest, config.len()), &[(&missing, 7)], json!({}));
    let (status, _, error) =
        put_manifest(&server, &token, "rules", "v1", &manifest, OCI_MANIFEST).await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );
    let (status, _, _) = body(
        server
            .request_as(Method::GET, "/v2/rules/manifests/v1", Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused manifest leaves nothing"
    );

    // A good one, by tag; the digest header names its content.
    let manifest = image_manifest(
        (&config_digest, config.len()),
        &[(&layer_digest, layer.len())],
        json!({}),
    );
    let manifest_digest = sha256(&manifest);
    let (status, headers, _) =
        put_manifest(&server, &token, "rules", "v1", &manifest, OCI_MANIFEST).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["docker-content-digest"], manifest_digest.as_str());
    for reference in ["v1", manifest_digest.as_str()] {
        let (status, headers, got) = body(
            server
                .request_as(
                    Method::GET,
                    &format!("/v2/rules/manifests/{reference}"),
                    Some(&token),
                )
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], OCI_MANIFEST);
        assert_eq!(got, manifest);
    }
    // By digest: the digest must match.
    let (status, _, error) = put_manifest(
        &server,
        &token,
        "rules",
        &sha256(b"other"),
        &manifest,
        OCI_MANIFEST,
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let (status, _, _) = put_manifest(
        &server,
        &token,
        "rules",
        &manifest_digest,
        &manifest,
        OCI_MANIFEST,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // Garbage and oversized manifests.
    let (status, _, error) =
        put_manifest(&server, &token, "rules", "bad", b"{not json", OCI_MANIFEST).await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID")
    );
    let huge = vec![b' '; 5 << 20];
    let (status, _, error) =
        put_manifest(&server, &token, "rules", "huge", &huge, OCI_MANIFEST).await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID")
    );

    // An index needs its child manifests.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{ "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(), "platform": { "os": "linux", "architecture": "amd64" } }],
    }))
    .unwrap();
    let (status, _, _) = put_manifest(
        &server,
        &token,
        "rules",
        "multi",
        &index,
        "application/vnd.oci.image.index.v1+json",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let orphan_index = String::from_utf8(index.clone())
        .unwrap()
        .replace(&manifest_digest, &missing);
    let (status, _, error) = put_manifest(
        &server,
        &token,
        "rules",
        "orphan",
        orphan_index.as_bytes(),
        "application/vnd.oci.image.index.v1+json",
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );

    // Tags list with n, last and Link.
    for tag in ["a", "b", "c"] {
        put_manifest(&server, &token, "rules", tag, &manifest, OCI_MANIFEST).await;
    }
    let (_, headers, list) = body(
        server
            .request_as(Method::GET, "/v2/rules/tags/list?n=2", Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let list: Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(list, json!({ "name": "rules", "tags": ["a", "b"] }));
    assert_eq!(
        headers["link"],
        "</v2/rules/tags/list?n=2&last=b>; rel=\"next\""
    );
    let (_, _, list) = body(
        server
            .request_as(Method::GET, "/v2/rules/tags/list?n=2&last=b", Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let list: Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(list["tags"], json!(["c", "multi"]));

    // Referrers: a signature-like artifact whose subject is the image.
    let empty = push_blob(&server, &token, "rules", b"{}").await;
    let artifact = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [],
        "subject": { "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len() },
        "annotations": { "org.example.signed-by": "ci" },
    }))
    .unwrap();
    let artifact_digest = sha256(&artifact);
    let (status, headers, _) = put_manifest(
        &server,
        &token,
        "rules",
        &artifact_digest,
        &artifact,
        OCI_MANIFEST,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["oci-subject"], manifest_digest.as_str());
    let (status, _, referrers) = body(
        server
            .request_as(
                Method::GET,
                &format!("/v2/rules/referrers/{manifest_digest}"),
                Some(&token),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let referrers: Value = serde_json::from_slice(&referrers).unwrap();
    assert_eq!(
        referrers["manifests"][0]["digest"],
        artifact_digest.as_str()
    );
    assert_eq!(
        referrers["manifests"][0]["artifactType"],
        "application/vnd.example.signature"
    );
    assert_eq!(
        referrers["manifests"][0]["annotations"]["org.example.signed-by"],
        "ci"
    );
    let (_, headers, filtered) = body(
        server
            .request_as(
                Method::GET,
                &format!("/v2/rules/referrers/{manifest_digest}?artifactType=other"),
                Some(&token),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(headers["oci-filters-applied"], "artifactType");
    assert_eq!(
        serde_json::from_slice::<Value>(&filtered).unwrap()["manifests"],
        json!([])
    );

    // Deleting a tag keeps the manifest; deleting the manifest removes its tags.
    let (status, _, _) = body(
        server
            .request_as(Method::DELETE, "/v2/rules/manifests/a", Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, _) = body(
        server
            .request_as(Method::GET, "/v2/rules/manifests/a", Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = body(
        server
            .request_as(
                Method::DELETE,
                &format!("/v2/rules/manifests/{artifact_digest}"),
                Some(&token),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, error) = body(
        server
            .request_as(
                Method::GET,
                &format!("/v2/rules/manifests/{artifact_digest}"),
                Some(&token),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );

    // Unknown repositories and bad digests.
    let (status, _, error) = body(
        server
            .request_as(Method::GET, "/v2/nothing-here/tags/list", Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    let (status, _, error) = body(
        server
            .request_as(Method::GET, "/v2/rules/blobs/sha256:abc", Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let (status, _, error) = body(
        server
            .request_as(
                Method::GET,
                &format!("/v2/rules/blobs/{missing}"),
                Some(&token),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
    server.stop().await;
}

async fn registry_token(server: &TestServer, api_token: &str, scopes: &[&str]) -> String {
    let query: String = scopes.iter().map(|s| format!("&scope={s}")).collect();
    let response = server
        .request_as(
            Method::GET,
            &format!("/v0/auth/oci/token?service=bencher{query}"),
            None,
        )
        .basic_auth("anyone", Some(api_token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let value: Value = response.json().await.unwrap();
    assert_eq!(value["token"], value["access_token"]);
    value["token"].as_str().unwrap().to_owned()
}

async fn tokens_and_scopes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let user = user_token(&server, false).await;
    let admin = user_token(&server, true).await;

    // No credentials: the challenge that starts the token flow.
    let (status, headers, error) = body(
        server
            .request_as(Method::GET, "/v2/", None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"http://127.0.0.1:")
            && challenge.contains("/v0/auth/oci/token\",service=\"bencher\""),
        "{challenge}"
    );
    let (status, headers, _) = body(
        server
            .request_as(Method::GET, "/v2/alpha/tags/list", None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"repository:alpha:pull\"")
    );
    // The token endpoint needs an API token.
    let response = server
        .request_as(
            Method::GET,
            "/v0/auth/oci/token?scope=repository:alpha:pull",
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = server
        .request_as(Method::GET, "/v0/auth/oci/token", None)
        .basic_auth("x", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A push scope on an unknown slug creates the project; the token works for it only.
    let alpha = registry_token(&server, &user, &["repository:alpha:pull,push"]).await;
    push_blob(&server, &alpha, "alpha", b"alpha blob").await;
    let (status, _, _) = body(
        server
            .request_as(Method::GET, "/v2/", Some(&alpha))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    registry_token(&server, &user, &["repository:beta:push"]).await;
    let digest = sha256(b"beta blob");
    let (status, headers, error) = body(
        server
            .request_as(
                Method::POST,
                &format!("/v2/beta/blobs/uploads/?digest={digest}"),
                Some(&alpha),
            )
            .body(b"beta blob".to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );

    // Pull-only tokens cannot push.
    let pull_only = registry_token(&server, &user, &["repository:alpha:pull"]).await;
    let (status, _, _) = body(
        server
            .request_as(
                Method::GET,
                &format!("/v2/alpha/blobs/{}", sha256(b"alpha blob")),
                Some(&pull_only),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = body(
        server
            .request_as(Method::POST, "/v2/alpha/blobs/uploads/", Some(&pull_only))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A pull scope on an unknown repository creates nothing and grants nothing.
    let nothing = registry_token(&server, &user, &["repository:gamma:pull"]).await;
    let (status, _, error) = body(
        server
            .request_as(Method::GET, "/v2/gamma/tags/list", Some(&nothing))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    // Tampered and expired tokens fail.
    let tampered = format!("{}x", alpha);
    let (status, _, _) = body(
        server
            .request_as(Method::GET, "/v2/", Some(&tampered))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.clock.advance(std::time::Duration::from_secs(601));
    let (status, _, _) = body(
        server
            .request_as(Method::GET, "/v2/alpha/tags/list", Some(&alpha))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The catalog is for admins.
    let (status, _, error) = body(
        server
            .request_as(Method::GET, "/v2/_catalog", Some(&user))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::FORBIDDEN, "DENIED")
    );
    let catalog_token = registry_token(&server, &admin, &["registry:catalog:*"]).await;
    let (status, headers, catalog) = body(
        server
            .request_as(Method::GET, "/v2/_catalog?n=1", Some(&catalog_token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&catalog).unwrap(),
        json!({ "repositories": ["alpha"] })
    );
    assert!(headers["link"].to_str().unwrap().contains("last=alpha"));

    // Per-job pull tokens: pull-only, one project, expiring.
    let project: Value = server
        .request(Method::GET, "/v0/projects/alpha")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let project_uuid: bencher_types::ProjectUuid =
        project["uuid"].as_str().unwrap().parse().unwrap();
    let job_token = server.registry_tokens().job_pull_token(
        bencher_types::JobUuid::new_v4(),
        project_uuid,
        std::time::Duration::from_secs(60),
        server.clock.now(),
    );
    let (status, _, _) = body(
        server
            .request_as(
                Method::GET,
                &format!("/v2/alpha/blobs/{}", sha256(b"alpha blob")),
                Some(&job_token),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = body(
        server
            .request_as(Method::POST, "/v2/alpha/blobs/uploads/", Some(&job_token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = body(
        server
            .request_as(Method::GET, "/v2/beta/tags/list", Some(&job_token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

async fn garbage_collection(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = user_token(&server, false).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = push_blob(&server, &token, "gc", config).await;
    let kept = push_blob(&server, &token, "gc", b"kept layer").await;
    let dropped = push_blob(&server, &token, "gc", b"dropped layer").await;
    let manifest = image_manifest((&config_digest, config.len()), &[(&kept, 10)], json!({}));
    let (status, _, _) = put_manifest(&server, &token, "gc", "v1", &manifest, OCI_MANIFEST).await;
    assert_eq!(status, StatusCode::CREATED);

    // Within the grace period nothing goes.
    let report: Value = server
        .request(Method::POST, "/v0/registry/gc")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["blobs_deleted"], 0, "{report}");
    server
        .clock
        .advance(std::time::Duration::from_secs(2 * 3600));
    let report: Value = server
        .request(Method::POST, "/v0/registry/gc")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["blobs_deleted"], 1, "{report}");
    assert_eq!(report["bytes_freed"], 13);
    let head = |digest: String| {
        let request = server.request_as(
            Method::HEAD,
            &format!("/v2/gc/blobs/{digest}"),
            Some(&token),
        );
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(head(dropped.clone()).await, StatusCode::NOT_FOUND);
    assert_eq!(head(kept).await, StatusCode::OK);
    assert_eq!(head(config_digest).await, StatusCode::OK);
    let (status, _, _) = body(
        server
            .request_as(Method::GET, "/v2/gc/manifests/v1", Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        server
            .blobs()
            .size(&dropped.parse().unwrap())
            .await
            .unwrap()
            .is_none(),
        "bytes deleted too"
    );
    // Admins only.
    let response = server
        .request_as(Method::POST, "/v0/registry/gc", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    server.stop().await;
}

/// A request body that sends `bytes` and then fails, as a client killed mid-upload does.
fn interrupted_body(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(bytes),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client killed",
        )),
    ];
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

async fn uploads_survive_restart_and_interruption(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = user_token(&server, false).await;
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let digest = sha256(&blob);

    // A session with a first chunk, then a server restart: the session resumes.
    let (_, headers, _) = body(
        server
            .request_as(Method::POST, "/v2/durable/blobs/uploads/", Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let location = headers["location"].to_str().unwrap().to_owned();
    let (status, _, _) = body(
        server
            .request_as(Method::PATCH, &location, Some(&token))
            .body(blob[..100_000].to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let server = server.restart().await;
    let (status, headers, _) = body(
        server
            .request_as(Method::GET, &location, Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, headers["range"].to_str().unwrap()),
        (StatusCode::NO_CONTENT, "0-99999")
    );

    // A client killed in the middle of a chunk: nothing becomes visible at the digest,
    // the chunk is rolled back whole, and the session goes on from where it stood.
    let killed = server
        .request_as(
            Method::PUT,
            &format!("{location}?digest={digest}"),
            Some(&token),
        )
        .body(interrupted_body(blob[100_000..200_000].to_vec()))
        .send()
        .await;
    if let Ok(response) = killed {
        assert_ne!(
            response.status(),
            StatusCode::CREATED,
            "an interrupted upload must not complete"
        );
    }
    let (status, _, _) = body(
        server
            .request_as(
                Method::HEAD,
                &format!("/v2/durable/blobs/{digest}"),
                Some(&token),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no partial blob is ever visible"
    );
    let (status, headers, _) = body(
        server
            .request_as(Method::GET, &location, Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, headers["range"].to_str().unwrap()),
        (StatusCode::NO_CONTENT, "0-99999")
    );
    let (status, _, _) = body(
        server
            .request_as(
                Method::PUT,
                &format!("{location}?digest={digest}"),
                Some(&token),
            )
            .header("content-range", format!("100000-{}", blob.len() - 1))
            .body(blob[100_000..].to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, _, pulled) = body(
        server
            .request_as(
                Method::GET,
                &format!("/v2/durable/blobs/{digest}"),
                Some(&token),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(pulled, blob);

    // Abandoned sessions are swept once idle for a day.
    let (_, headers, _) = body(
        server
            .request_as(Method::POST, "/v2/durable/blobs/uploads/", Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let abandoned = headers["location"].to_str().unwrap().to_owned();
    server
        .clock
        .advance(std::time::Duration::from_secs(25 * 3600));
    let report: Value = server
        .request(Method::POST, "/v0/registry/gc")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(report["uploads_swept"].as_u64().unwrap() >= 1, "{report}");
    let (status, _, _) = body(
        server
            .request_as(Method::GET, &abandoned, Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

async fn blob_size_limit(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.max_blob_size = bencher_types::ByteSize::new(1000).unwrap();
    })
    .await;
    let token = user_token(&server, false).await;
    let big = vec![1u8; 1001];
    let digest = sha256(&big);
    let (status, _, error) = body(
        server
            .request_as(
                Method::POST,
                &format!("/v2/limits/blobs/uploads/?digest={digest}"),
                Some(&token),
            )
            .body(big.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID")
    );
    let (_, headers, _) = body(
        server
            .request_as(Method::POST, "/v2/limits/blobs/uploads/", Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let location = headers["location"].to_str().unwrap().to_owned();
    let (status, _, _) = body(
        server
            .request_as(Method::PATCH, &location, Some(&token))
            .body(big[..600].to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, error) = body(
        server
            .request_as(Method::PATCH, &location, Some(&token))
            .body(big[600..].to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, oci_code(&error).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID")
    );
    let (status, headers, _) = body(
        server
            .request_as(Method::GET, &location, Some(&token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, headers["range"].to_str().unwrap()),
        (StatusCode::NO_CONTENT, "0-599"),
        "the refused chunk left nothing"
    );
    let (status, _, _) = body(
        server
            .request_as(
                Method::HEAD,
                &format!("/v2/limits/blobs/{digest}"),
                Some(&token),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}
