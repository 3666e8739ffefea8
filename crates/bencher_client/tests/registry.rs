//! `RegistryClient` against a real server on 127.0.0.1:0 (SQLite and PostgreSQL): push
//! and pull of multi-layer images, deduplicated re-pushes, the token flow with API
//! tokens and registry tokens, mounts, bad credentials, and skopeo (a client we did
//! not write) reading what we pushed. Protocol corners a real server cannot be made to
//! show (bytes that do not match their digest, `Link` pages, a second 401) run against
//! a canned one-request-per-connection server on loopback.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use bencher_client::{BlobSource, PushOutcome, RegistryClient, RegistryCredential, RegistryError};
use bencher_oci::digest::Digest;
use bencher_oci::manifest::{Manifest, OCI_IMAGE_MANIFEST};
use bencher_oci::reference::ManifestRef;
use bencher_test_support::image::{BuiltImage, File, write_layout};
use bencher_test_support::reqwest::Method;
use bencher_test_support::{Backend, TestServer, backend_tests};
use bencher_types::{ApiToken, JobUuid, JsonProject};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use url::Url;

const TOKEN_PATH: &str = "/v0/auth/oci/token";
const UPLOADS: &str = "/blobs/uploads";

/// Incompressible bytes, so gzip layers keep their size and uploads really stream.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A three-layer image, one layer large enough to stream in several chunks.
fn layout(dir: &Path, tag: &str, seed: u64) -> BuiltImage {
    let big = noise(3 << 20, seed);
    let small = noise(10_000, seed + 1);
    let script = format!("#!/bin/sh\necho bench {seed}\n");
    write_layout(
        dir,
        tag,
        &[
            vec![File {
                path: "bin/bench",
                contents: script.as_bytes(),
                mode: 0o755,
            }],
            vec![File {
                path: "data/big.bin",
                contents: &big,
                mode: 0o644,
            }],
            vec![File {
                path: "data/small.bin",
                contents: &small,
                mode: 0o644,
            }],
        ],
        &["/bin/bench"],
    )
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("digest has a colon");
    layout.join("blobs").join(algorithm).join(hex)
}

async fn api_token(server: &TestServer) -> ApiToken {
    let response = server
        .request(Method::POST, "/v0/tokens")
        .json(&serde_json::json!({ "name": "registry client test" }))
        .send()
        .await
        .expect("create token");
    assert!(response.status().is_success(), "{}", response.status());
    let value: serde_json::Value = response.json().await.expect("token JSON");
    value["token"]
        .as_str()
        .expect("token field")
        .parse()
        .expect("valid API token")
}

fn client(server: &TestServer, credential: RegistryCredential) -> RegistryClient {
    RegistryClient::new(server.url.clone(), credential).expect("registry client")
}

/// Pushes the blobs of `image` (from the layout, in parallel) and its manifest by tag.
async fn push(
    client: &RegistryClient,
    repository: &str,
    layout: &Path,
    image: &BuiltImage,
    tag: &str,
) -> (Vec<PushOutcome>, Digest) {
    let manifest = Manifest::parse(None, &image.manifest).expect("built manifest parses");
    let pushes = manifest.blobs().into_iter().map(|descriptor| {
        let path = blob_path(layout, descriptor.digest.as_str());
        let seen = Mutex::new(Vec::new());
        async move {
            let outcome = client
                .push_blob(
                    repository,
                    &descriptor.digest,
                    descriptor.size,
                    BlobSource::File(path),
                    None,
                    &|sent| seen.lock().expect("progress log").push(sent),
                )
                .await
                .expect("push blob");
            let seen = seen.into_inner().expect("progress log");
            if outcome == PushOutcome::Uploaded {
                assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
                assert_eq!(seen.last(), Some(&descriptor.size), "{seen:?}");
            }
            outcome
        }
    });
    let outcomes = futures_util::future::join_all(pushes).await;
    let digest = client
        .put_manifest(
            repository,
            &ManifestRef::Tag(tag.parse().expect("tag")),
            OCI_IMAGE_MANIFEST,
            Bytes::from(image.manifest.clone()),
        )
        .await
        .expect("put manifest");
    (outcomes, digest)
}

/// Pulls `reference` and checks every byte against its digest.
async fn pull_and_verify(
    client: &RegistryClient,
    repository: &str,
    reference: &ManifestRef,
    image: &BuiltImage,
) {
    let fetched = client
        .manifest(repository, reference)
        .await
        .expect("manifest");
    assert_eq!(fetched.digest.as_str(), image.manifest_digest);
    assert_eq!(fetched.bytes.as_ref(), image.manifest.as_slice());
    assert_eq!(fetched.media_type, OCI_IMAGE_MANIFEST);
    let manifest = Manifest::parse(Some(&fetched.media_type), &fetched.bytes).expect("parses");
    for descriptor in manifest.blobs() {
        let download = client
            .blob(repository, &descriptor.digest)
            .await
            .expect("blob");
        assert_eq!(download.size, Some(descriptor.size));
        let mut verifier = descriptor.digest.verifier();
        let mut stream = download.stream;
        while let Some(chunk) = stream.next().await {
            verifier.update(&chunk.expect("blob chunk"));
        }
        assert_eq!(verifier.bytes_hashed(), descriptor.size);
        verifier.verify().expect("blob matches its digest");
        assert_eq!(
            client
                .blob_size(repository, &descriptor.digest)
                .await
                .expect("HEAD blob"),
            Some(descriptor.size)
        );
    }
}

backend_tests!(
    push_pull_and_push_again,
    registry_tokens_and_bad_credentials,
    mounts_and_in_memory_blobs,
    skopeo_sees_what_we_pushed,
);

async fn push_pull_and_push_again(backend: Backend) {
    let server = TestServer::start(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let image = layout(dir.path(), "v1", 1);
    let token = api_token(&server).await;
    let pusher = client(&server, RegistryCredential::ApiToken(token.clone()));

    // `new-project` does not exist yet: the first push creates it.
    let (outcomes, digest) = push(&pusher, "new-project", dir.path(), &image, "v1").await;
    assert_eq!(outcomes, vec![PushOutcome::Uploaded; 4]);
    assert_eq!(digest.as_str(), image.manifest_digest);
    // One token for the whole push, fetched once and shared by the parallel uploads.
    assert_eq!(server.count_requests("GET", TOKEN_PATH), 1);
    assert_eq!(server.count_requests("POST", UPLOADS), 4);

    pull_and_verify(
        &pusher,
        "new-project",
        &ManifestRef::Tag("v1".parse().expect("tag")),
        &image,
    )
    .await;
    pull_and_verify(
        &pusher,
        "new-project",
        &ManifestRef::Digest(digest.clone()),
        &image,
    )
    .await;
    // Pulling asked for one more token (pull scope), then used the cache.
    assert_eq!(server.count_requests("GET", TOKEN_PATH), 2);

    assert_eq!(pusher.tags("new-project").await.expect("tags"), ["v1"]);
    let info = pusher
        .manifest_info("new-project", &ManifestRef::Tag("v1".parse().expect("tag")))
        .await
        .expect("HEAD manifest")
        .expect("manifest exists");
    assert_eq!(info.digest, digest);
    assert_eq!(info.media_type, OCI_IMAGE_MANIFEST);
    assert_eq!(info.size, Some(image.manifest.len() as u64));
    let absent = ManifestRef::Tag("absent".parse().expect("tag"));
    assert_eq!(
        pusher
            .manifest_info("new-project", &absent)
            .await
            .expect("HEAD"),
        None
    );
    assert_eq!(
        pusher
            .blob_size("new-project", &Digest::sha256_of(b"never pushed"))
            .await
            .expect("HEAD blob"),
        None
    );

    // A second push, by a fresh client, under another tag: every blob is already there.
    let again = client(&server, RegistryCredential::ApiToken(token));
    let (outcomes, digest2) = push(&again, "new-project", dir.path(), &image, "v2").await;
    assert_eq!(outcomes, vec![PushOutcome::AlreadyPresent; 4]);
    assert_eq!(digest2, digest);
    assert_eq!(
        server.count_requests("POST", UPLOADS),
        4,
        "no new upload sessions"
    );
    let mut tags = again.tags("new-project").await.expect("tags");
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);
}

async fn project(server: &TestServer, slug: &str) -> JsonProject {
    let response = server
        .request(Method::GET, &format!("/v0/projects/{slug}"))
        .send()
        .await
        .expect("get project");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("project JSON")
}

async fn registry_tokens_and_bad_credentials(backend: Backend) {
    let server = TestServer::start(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let image = layout(dir.path(), "v1", 2);
    let admin = client(
        &server,
        RegistryCredential::ApiToken(server.admin_token.clone()),
    );
    push(&admin, "proj", dir.path(), &image, "v1").await;
    let tag = ManifestRef::Tag("v1".parse().expect("tag"));

    // A runner's per-job pull token is sent as it is and never exchanged.
    let proj = project(&server, "proj").await;
    let job_token = server.registry_tokens().job_pull_token(
        JobUuid::new_v4(),
        proj.uuid,
        Duration::from_secs(300),
        server.clock.now(),
    );
    let exchanges = server.count_requests("GET", TOKEN_PATH);
    let runner = client(&server, RegistryCredential::Bearer(job_token.clone()));
    pull_and_verify(&runner, "proj", &tag, &image).await;
    // The project's UUID names the same repository.
    pull_and_verify(&runner, &proj.uuid.to_string(), &tag, &image).await;
    assert_eq!(server.count_requests("GET", TOKEN_PATH), exchanges);
    // Pull-only: pushing with it is refused, and the token is not in the error.
    let err = runner
        .push_blob(
            "proj",
            &Digest::sha256_of(b"x"),
            1,
            BlobSource::Bytes(Bytes::from_static(b"x")),
            None,
            &|_| {},
        )
        .await
        .expect_err("a pull token cannot push");
    assert_eq!(err.status(), Some(401), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(&job_token), "{err:?}");
    // Scoped to its project.
    push(&admin, "other", dir.path(), &image, "v1").await;
    let err = runner
        .manifest("other", &tag)
        .await
        .expect_err("other project");
    assert_eq!(err.status(), Some(401), "{err}");

    // A well-formed API token the server never issued: the realm's answer, clearly.
    let unknown: ApiToken = "bencher_user_000000000000000000000000000000"
        .parse()
        .expect("well-formed token");
    let err = client(&server, RegistryCredential::ApiToken(unknown))
        .manifest("proj", &tag)
        .await
        .expect_err("unknown token");
    let RegistryError::Auth {
        status,
        message,
        realm,
    } = &err
    else {
        panic!("expected an Auth error, got {err:?}");
    };
    assert_eq!(*status, Some(401));
    assert!(
        message.contains("invalid, expired or revoked API token"),
        "{message}"
    );
    assert!(realm.ends_with(TOKEN_PATH), "{realm}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("000000000000000000000000000000"), "{shown}");

    // A registry token that is not one.
    let err = client(
        &server,
        RegistryCredential::Bearer("forged.token".to_owned()),
    )
    .manifest("proj", &tag)
    .await
    .expect_err("forged token");
    assert_eq!(
        (err.status(), err.code()),
        (Some(401), Some("UNAUTHORIZED")),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("invalid or expired registry token"),
        "{err}"
    );
    assert!(!format!("{err:?}").contains("forged.token"), "{err:?}");

    // No credentials: the realm wants some, and says so.
    let err = client(&server, RegistryCredential::Anonymous)
        .manifest("proj", &tag)
        .await
        .expect_err("anonymous");
    assert!(
        matches!(
            err,
            RegistryError::Auth {
                status: Some(401),
                ..
            }
        ),
        "{err:?}"
    );

    // Valid credentials, unknown things: the OCI codes come through.
    let err = admin
        .manifest("nope", &tag)
        .await
        .expect_err("unknown project");
    assert_eq!(
        (err.status(), err.code()),
        (Some(404), Some("NAME_UNKNOWN")),
        "{err}"
    );
    let absent = ManifestRef::Tag("absent".parse().expect("tag"));
    let err = admin
        .manifest("proj", &absent)
        .await
        .expect_err("unknown tag");
    assert_eq!(
        (err.status(), err.code()),
        (Some(404), Some("MANIFEST_UNKNOWN")),
        "{err}"
    );
    let err = admin
        .blob("proj", &Digest::sha256_of(b"absent"))
        .await
        .expect_err("unknown blob");
    assert_eq!(err.code(), Some("BLOB_UNKNOWN"), "{err}");
}

async fn mounts_and_in_memory_blobs(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = client(
        &server,
        RegistryCredential::ApiToken(server.admin_token.clone()),
    );
    let data = Bytes::from(noise((5 << 20) / 2, 3));
    let digest = Digest::sha256_of(&data);
    let size = data.len() as u64;
    let last = Mutex::new(0);
    let outcome = c
        .push_blob(
            "source",
            &digest,
            size,
            BlobSource::Bytes(data.clone()),
            None,
            &|sent| {
                *last.lock().expect("progress") = sent;
            },
        )
        .await
        .expect("push bytes");
    assert_eq!(outcome, PushOutcome::Uploaded);
    assert_eq!(*last.lock().expect("progress"), size);

    let uploads = server.count_requests("POST", UPLOADS);
    let outcome = c
        .push_blob(
            "target",
            &digest,
            size,
            BlobSource::Bytes(data.clone()),
            Some("source"),
            &|_| {},
        )
        .await
        .expect("mount");
    assert_eq!(outcome, PushOutcome::Mounted);
    assert_eq!(
        c.blob_size("target", &digest).await.expect("HEAD"),
        Some(size)
    );
    assert_eq!(
        server.count_requests("PUT", UPLOADS),
        1,
        "the mount sent no bytes"
    );
    assert_eq!(server.count_requests("POST", UPLOADS), uploads + 1);

    // Nothing to mount from: the registry opens a session and the bytes go up after all.
    let other = Bytes::from_static(b"another blob");
    let outcome = c
        .push_blob(
            "target",
            &Digest::sha256_of(&other),
            other.len() as u64,
            BlobSource::Bytes(other.clone()),
            Some("missing-project"),
            &|_| {},
        )
        .await
        .expect("mount falls back to upload");
    assert_eq!(outcome, PushOutcome::Uploaded);

    // Bytes that do not hash to the digest they are pushed under: the server refuses.
    let err = c
        .push_blob(
            "target",
            &Digest::sha256_of(b"claimed"),
            5,
            BlobSource::Bytes(Bytes::from_static(b"other")),
            None,
            &|_| {},
        )
        .await
        .expect_err("wrong digest");
    assert_eq!(err.code(), Some("DIGEST_INVALID"), "{err}");
    // A size that disagrees with the source is refused before anything is sent.
    let err = c
        .push_blob(
            "target",
            &Digest::sha256_of(b"x"),
            2,
            BlobSource::Bytes(Bytes::from_static(b"x")),
            None,
            &|_| {},
        )
        .await
        .expect_err("wrong size");
    assert!(
        matches!(
            err,
            RegistryError::SourceSize {
                expected: 2,
                actual: 1,
                ..
            }
        ),
        "{err:?}"
    );
    // A manifest pushed by a digest it does not have is refused locally.
    let err = c
        .put_manifest(
            "target",
            &ManifestRef::Digest(digest.clone()),
            OCI_IMAGE_MANIFEST,
            Bytes::from_static(b"{}"),
        )
        .await
        .expect_err("digest mismatch");
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
}

/// Whether skopeo can run; prints why not, and fails under CI.
pub fn skopeo_available(test: &str) -> bool {
    if Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: skopeo must be installed in CI"
    );
    eprintln!("SKIPPED {test}: skopeo is not installed");
    false
}

async fn skopeo_sees_what_we_pushed(backend: Backend) {
    if !skopeo_available("skopeo_sees_what_we_pushed") {
        return;
    }
    let server = TestServer::start(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let image = layout(dir.path(), "v1", 4);
    let token = api_token(&server).await;
    let c = client(&server, RegistryCredential::ApiToken(token.clone()));
    let (_, digest) = push(&c, "seen", dir.path(), &image, "v1").await;

    let host = format!(
        "{}:{}",
        server.url.host_str().expect("host"),
        server.url.port().expect("port")
    );
    let creds = format!("x:{}", token.expose_secret());
    let output = tokio::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", &creds])
        .arg(format!("docker://{host}/seen:v1"))
        .output()
        .await
        .expect("run skopeo");
    assert!(
        output.status.success(),
        "skopeo failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(Digest::sha256_of(&output.stdout), digest);
}

// ---- a canned registry for what a real server never does ----

/// One canned answer: status line, headers, body.
struct Canned {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn canned(status: &'static str, headers: &[(&str, &str)], body: &[u8]) -> Canned {
    Canned {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.to_vec(),
    }
}

/// A loopback listener, bound first so answers can name its address (a realm).
async fn listen() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("address");
    (listener, address)
}

/// Serves `answers` in order, one per connection (`Connection: close`), and hands back
/// the head of every request received.
fn serve(
    listener: TcpListener,
    answers: Vec<Canned>,
) -> (Url, tokio::task::JoinHandle<Vec<String>>) {
    let url = Url::parse(&format!(
        "http://{}",
        listener.local_addr().expect("address")
    ))
    .expect("URL");
    let handle = tokio::spawn(async move {
        let mut requests = Vec::new();
        for answer in answers {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // The head is enough; bodies here are empty or ignored.
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            requests.push(String::from_utf8_lossy(&request).into_owned());
            let mut head = format!("HTTP/1.1 {}\r\nConnection: close\r\n", answer.status);
            // A HEAD answer states the length of a body it does not carry.
            if !answer
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            {
                head.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
            }
            for (name, value) in &answer.headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).await.expect("write head");
            stream.write_all(&answer.body).await.expect("write body");
            let _ = stream.shutdown().await;
        }
        requests
    });
    (url, handle)
}

fn header(request: &str, name: &str) -> Option<String> {
    request.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

const UNAUTHORIZED: &[u8] =
    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;

fn canned_client(url: &Url) -> RegistryClient {
    let token: ApiToken = "bencher_user_0123456789abcdefghijABCDEFGHIJ"
        .parse()
        .expect("test token");
    RegistryClient::new(url.clone(), RegistryCredential::ApiToken(token)).expect("client")
}

#[tokio::test]
async fn manifests_that_do_not_match_their_digest_are_refused() {
    let served = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    let asked = Digest::sha256_of(b"the manifest we wanted");
    let oci = ("Content-Type", OCI_IMAGE_MANIFEST);
    let claimed = format!("{}", Digest::sha256_of(b"what the registry claims"));
    let (listener, _) = listen().await;
    let (url, server) = serve(
        listener,
        vec![
            // By digest: the bytes must hash to the digest asked for.
            canned("200 OK", &[oci], served),
            // By tag: the bytes must hash to the registry's own Docker-Content-Digest.
            canned(
                "200 OK",
                &[oci, ("Docker-Content-Digest", &claimed)],
                served,
            ),
            // By tag without a digest header: the digest is computed.
            canned("200 OK", &[("Content-Type", "application/json")], served),
        ],
    );
    let c = canned_client(&url);
    let err = c
        .manifest("proj", &ManifestRef::Digest(asked.clone()))
        .await
        .expect_err("mismatch by digest");
    let RegistryError::DigestMismatch { source, .. } = &err else {
        panic!("expected a digest mismatch, got {err:?}");
    };
    assert_eq!(source.expected, asked);
    assert_eq!(source.actual, Digest::sha256_of(served));

    let tag = ManifestRef::Tag("v1".parse().expect("tag"));
    let err = c.manifest("proj", &tag).await.expect_err("mismatch by tag");
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );

    let fetched = c.manifest("proj", &tag).await.expect("no header to check");
    assert_eq!(fetched.digest, Digest::sha256_of(served));
    // A generic Content-Type defers to the body's mediaType.
    assert_eq!(fetched.media_type, OCI_IMAGE_MANIFEST);

    let requests = server.await.expect("server");
    assert!(
        requests[0].starts_with(&format!("GET /v2/proj/manifests/{asked} ")),
        "{}",
        requests[0]
    );
    let accept = requests[0]
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("accept:"))
        .expect("Accept header");
    for media_type in [
        "oci.image.manifest",
        "oci.image.index",
        "manifest.v2",
        "manifest.list.v2",
    ] {
        assert!(accept.contains(media_type), "{accept}");
    }
}

#[tokio::test]
async fn token_flow_and_tag_pages_on_the_wire() {
    let (listener, address) = listen().await;
    let challenge = format!(
        r#"Bearer realm="http://{address}/token",service="svc",scope="repository:proj:pull""#
    );
    let json = ("Content-Type", "application/json");
    let next = ("Link", r#"</v2/proj/tags/list?n=2&last=b>; rel="next""#);
    let (url, server) = serve(
        listener,
        vec![
            canned(
                "401 Unauthorized",
                &[("WWW-Authenticate", &challenge)],
                UNAUTHORIZED,
            ),
            canned("200 OK", &[json], br#"{"token":"tok1","expires_in":300}"#),
            canned(
                "200 OK",
                &[json, next],
                br#"{"name":"proj","tags":["a","b"]}"#,
            ),
            canned("200 OK", &[json], br#"{"name":"proj","tags":["c"]}"#),
            canned(
                "200 OK",
                &[json, next],
                br#"{"name":"proj","tags":["a","b"]}"#,
            ),
            canned("200 OK", &[json], br#"{"name":"proj","tags":null}"#),
        ],
    );
    let c = canned_client(&url);
    assert_eq!(c.tags("proj").await.expect("tags"), ["a", "b", "c"]);
    // Again: the cached token goes along at once, no 401 and no token request.
    assert_eq!(c.tags("proj").await.expect("tags again"), ["a", "b"]);

    let requests = server.await.expect("server");
    assert_eq!(requests.len(), 6);
    assert!(
        requests[0].starts_with("GET /v2/proj/tags/list "),
        "{}",
        requests[0]
    );
    assert_eq!(header(&requests[0], "authorization"), None);
    // The token request: the challenge's service, our scope, the API token as Basic.
    assert!(
        requests[1].starts_with("GET /token?service=svc&scope=repository%3Aproj%3Apull "),
        "{}",
        requests[1]
    );
    // base64("bencher:bencher_user_0123456789abcdefghijABCDEFGHIJ")
    assert_eq!(
        header(&requests[1], "authorization").as_deref(),
        Some("Basic YmVuY2hlcjpiZW5jaGVyX3VzZXJfMDEyMzQ1Njc4OWFiY2RlZmdoaWpBQkNERUZHSElK")
    );
    assert!(
        requests[3].starts_with("GET /v2/proj/tags/list?n=2&last=b "),
        "{}",
        requests[3]
    );
    for request in &requests[2..] {
        assert_eq!(
            header(request, "authorization").as_deref(),
            Some("Bearer tok1")
        );
    }
}

#[tokio::test]
async fn a_second_401_is_an_error() {
    let (listener, address) = listen().await;
    let challenge = format!(r#"Bearer realm="http://{address}/token",service="svc""#);
    let denied = br#"{"errors":[{"code":"UNAUTHORIZED","message":"this token does not allow pull on `proj`"}]}"#;
    let (url, server) = serve(
        listener,
        vec![
            canned(
                "401 Unauthorized",
                &[("WWW-Authenticate", &challenge)],
                UNAUTHORIZED,
            ),
            canned("200 OK", &[], br#"{"access_token":"tok2"}"#),
            canned(
                "401 Unauthorized",
                &[("WWW-Authenticate", &challenge)],
                denied,
            ),
        ],
    );
    let err = canned_client(&url)
        .tags("proj")
        .await
        .expect_err("second 401");
    assert_eq!(
        (err.status(), err.code()),
        (Some(401), Some("UNAUTHORIZED")),
        "{err}"
    );
    assert!(err.to_string().contains("does not allow pull"), "{err}");
    let requests = server.await.expect("server");
    // `access_token` alone is a token too.
    assert_eq!(
        header(&requests[2], "authorization").as_deref(),
        Some("Bearer tok2")
    );
}

#[tokio::test]
async fn api_tokens_never_go_to_a_foreign_realm_and_direct_auth_works() {
    // A realm on another host: refused before any request goes there.
    let (listener, _) = listen().await;
    let challenge = r#"Bearer realm="http://collector.example.com/token",service="svc""#;
    let (url, server) = serve(
        listener,
        vec![canned(
            "401 Unauthorized",
            &[("WWW-Authenticate", challenge)],
            UNAUTHORIZED,
        )],
    );
    let err = canned_client(&url)
        .tags("proj")
        .await
        .expect_err("foreign realm");
    let RegistryError::Auth {
        status: None,
        message,
        ..
    } = &err
    else {
        panic!("expected a refused realm, got {err:?}");
    };
    assert!(message.contains("not on the registry's host"), "{message}");
    server.await.expect("server");

    // No token flow on offer: the API token goes directly, as a Bearer token.
    let (listener, _) = listen().await;
    let (url, server) = serve(
        listener,
        vec![
            canned("401 Unauthorized", &[], UNAUTHORIZED),
            canned("200 OK", &[("Content-Length", "7")], b""),
        ],
    );
    let size = canned_client(&url)
        .blob_size("proj", &Digest::sha256_of(b"x"))
        .await
        .expect("direct auth");
    let requests = server.await.expect("server");
    assert_eq!(
        header(&requests[1], "authorization").as_deref(),
        Some("Bearer bencher_user_0123456789abcdefghijABCDEFGHIJ")
    );
    assert_eq!(size, Some(7));
}
