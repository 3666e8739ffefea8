//! End-to-end tests of `bencher image push` and `bencher image list`: the real binary
//! against a real server on 127.0.0.1:0 (SQLite and PostgreSQL), pushing OCI layouts
//! built in code and `docker save` archives built with the `tar` crate, checked by
//! pulling back with `RegistryClient` and by skopeo (a client we did not write).

use std::io::Write as _;
use std::path::Path;
use std::process::Output;

use bencher_client::{RegistryClient, RegistryCredential};
use bencher_oci::digest::Digest;
use bencher_oci::manifest::{
    Manifest, OCI_IMAGE_INDEX, OCI_IMAGE_MANIFEST, OCI_LAYER_TAR, OCI_LAYER_TAR_GZIP,
};
use bencher_oci::reference::ManifestRef;
use bencher_test_support::image::{BuiltImage, File, gzip_layer, write_layout};
use bencher_test_support::{Backend, TestServer, backend_tests};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

const UPLOADS: &str = "/blobs/uploads";

/// Runs `bencher` with `args` against `server` with `token` (or none) and a clean
/// environment; the host comes from BENCHER_HOST.
async fn bencher_as(server: &TestServer, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bencher"));
    command
        .args(args)
        .env_remove("BENCHER_API_TOKEN")
        .env_remove("BENCHER_FORMAT")
        .env("BENCHER_HOST", server.url.as_str())
        .env("NO_COLOR", "1");
    if let Some(token) = token {
        command.env("BENCHER_API_TOKEN", token);
    }
    command.output().await.expect("run bencher")
}

async fn bencher(server: &TestServer, args: &[&str]) -> Output {
    bencher_as(server, Some(server.admin_token.expose_secret()), args).await
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

fn host(server: &TestServer) -> String {
    format!(
        "{}:{}",
        server.url.host_str().expect("host"),
        server.url.port().expect("port")
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// Incompressible bytes, so layers keep their size.
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

fn three_layers(dir: &Path, tag: &str, seed: u64) -> BuiltImage {
    let big = noise(2 << 20, seed);
    let small = noise(5_000, seed + 1);
    write_layout(
        dir,
        tag,
        &[
            vec![File {
                path: "bin/bench",
                contents: b"#!/bin/sh\necho 1\n",
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

fn registry(server: &TestServer) -> RegistryClient {
    RegistryClient::new(
        server.url.clone(),
        RegistryCredential::ApiToken(server.admin_token.clone()),
    )
    .expect("registry client")
}

/// Pulls `reference` with the library client, verifies every blob, and returns the
/// manifest's digest and parsed form.
async fn pull(server: &TestServer, project: &str, reference: &str) -> (Digest, Manifest) {
    let client = registry(server);
    let reference: ManifestRef = reference.parse().expect("manifest reference");
    let fetched = client
        .manifest(project, &reference)
        .await
        .expect("manifest");
    let manifest = Manifest::parse(Some(&fetched.media_type), &fetched.bytes).expect("parses");
    for descriptor in manifest.blobs() {
        let download = client
            .blob(project, &descriptor.digest)
            .await
            .expect("blob");
        let mut verifier = descriptor.digest.verifier();
        let mut stream = download.stream;
        while let Some(chunk) = stream.next().await {
            verifier.update(&chunk.expect("chunk"));
        }
        assert_eq!(verifier.bytes_hashed(), descriptor.size);
        verifier.verify().expect("blob matches its digest");
    }
    (fetched.digest, manifest)
}

/// Whether skopeo can run; prints why not, and fails under CI.
fn skopeo_available(test: &str) -> bool {
    if std::process::Command::new("skopeo")
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

/// The digest of the manifest skopeo reads at `reference` (`project:tag`).
async fn skopeo_digest(server: &TestServer, reference: &str) -> Digest {
    let creds = format!("x:{}", server.admin_token.expose_secret());
    let output = tokio::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", &creds])
        .arg(format!("docker://{}/{reference}", host(server)))
        .output()
        .await
        .expect("run skopeo");
    assert!(
        output.status.success(),
        "skopeo failed: {}",
        text(&output.stderr)
    );
    Digest::sha256_of(&output.stdout)
}

backend_tests!(push_a_layout_list_and_push_again);

async fn push_a_layout_list_and_push_again(backend: Backend) {
    let server = TestServer::start(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let image = three_layers(dir.path(), "v1", 1);

    let pushed = json(
        &bencher(
            &server,
            &[
                "--format",
                "json",
                "image",
                "push",
                path(dir.path()),
                "bench:v1",
            ],
        )
        .await,
    );
    assert_eq!(
        pushed,
        json!({
            "reference": format!("{}/bench:v1", host(&server)),
            "digest": image.manifest_digest,
            "project": "bench",
        })
    );
    assert_eq!(server.count_requests("POST", UPLOADS), 4);
    let (digest, _) = pull(&server, "bench", "v1").await;
    assert_eq!(digest.as_str(), image.manifest_digest);
    // The push created the project.
    let project = json(&bencher(&server, &["--format", "json", "project", "view", "bench"]).await);
    assert_eq!(project["slug"], "bench");

    // Again, naming the registry in REF, under a new tag: nothing to upload.
    let stdout = ok(&bencher(
        &server,
        &[
            "image",
            "push",
            path(dir.path()),
            &format!("{}/bench:v2", host(&server)),
        ],
    )
    .await);
    assert!(stdout.contains("Uploaded 0 of 4 blobs"), "{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "Pushed {}/bench:v2@{}",
            host(&server),
            image.manifest_digest
        )
    );
    assert_eq!(
        server.count_requests("POST", UPLOADS),
        4,
        "a second push starts no upload"
    );

    let listed = json(&bencher(&server, &["--format", "json", "image", "list", "bench"]).await);
    // The image's size: its config and layers as stored.
    let size: u64 = Manifest::parse(None, &image.manifest)
        .expect("built manifest parses")
        .blobs()
        .iter()
        .map(|blob| blob.size)
        .sum();
    let row = |tag: &str| {
        json!({
            "tag": tag,
            "digest": image.manifest_digest,
            "media_type": OCI_IMAGE_MANIFEST,
            "size": size,
        })
    };
    assert_eq!(listed, json!([row("v1"), row("v2")]));
    let table = ok(&bencher(&server, &["image", "list", "bench"]).await);
    assert!(table.contains("OCI image"), "{table}");
    assert!(table.contains(&image.manifest_digest), "{table}");
    assert!(table.trim_end().ends_with("2 of 2 tags"), "{table}");

    if skopeo_available("push_a_layout_list_and_push_again") {
        assert_eq!(
            skopeo_digest(&server, "bench:v1").await.as_str(),
            image.manifest_digest
        );
    }
}

/// What an archive holds for one image: its config's digest and its layers' bytes.
struct ArchivedImage {
    config: Digest,
    layers: Vec<Vec<u8>>,
}

/// A `docker save` archive: the old layout (`<id>/layer.tar`), Docker 25's
/// (`blobs/sha256/<hex>`, here reached through a symlink), and a gzip layer, as
/// `docker save` of a containerd-store image writes.
fn docker_archive(images: &[(&str, u64)]) -> (Vec<u8>, Vec<ArchivedImage>) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut entries = Vec::new();
    let mut expected = Vec::new();
    let append = |builder: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder
            .append_data(&mut header, name, bytes)
            .expect("append");
    };
    for (repo_tag, seed) in images {
        let tar_of = |name: &str, contents: &[u8]| {
            let mut layer = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            layer
                .append_data(&mut header, name, contents)
                .expect("layer entry");
            layer.into_inner().expect("layer tar")
        };
        let plain = tar_of("bench.bin", &noise(1 << 20, *seed));
        let in_blobs = tar_of("data.bin", &noise(300_000, seed + 1));
        let (gzipped, gzipped_diff_id) = gzip_layer(&[File {
            path: "etc/config",
            contents: format!("seed {seed}\n").as_bytes(),
            mode: 0o644,
        }]);
        let sha = |bytes: &[u8]| Digest::sha256_of(bytes);
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Cmd": ["/bench.bin"] },
            "rootfs": { "type": "layers", "diff_ids": [
                sha(&plain).to_string(), sha(&in_blobs).to_string(), gzipped_diff_id,
            ] },
        }))
        .expect("config JSON");
        let id = sha(&config).hex().to_owned();
        let blob_hex = sha(&in_blobs).hex().to_owned();
        append(&mut builder, &format!("{id}.json"), &config);
        append(&mut builder, &format!("{seed}a/layer.tar"), &plain);
        append(&mut builder, &format!("blobs/sha256/{blob_hex}"), &in_blobs);
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        builder
            .append_link(
                &mut link,
                format!("{seed}b/layer.tar"),
                format!("../blobs/sha256/{blob_hex}"),
            )
            .expect("symlink");
        append(&mut builder, &format!("./{seed}c/layer.tar"), &gzipped);
        entries.push(json!({
            "Config": format!("{id}.json"),
            "RepoTags": [repo_tag],
            "Layers": [
                format!("{seed}a/layer.tar"),
                format!("{seed}b/layer.tar"),
                format!("{seed}c/layer.tar"),
            ],
        }));
        expected.push(ArchivedImage {
            config: sha(&config),
            layers: vec![plain, in_blobs, gzipped],
        });
    }
    // Last, as `docker save` writes it: the reader must not depend on the order.
    append(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&entries).expect("manifest.json"),
    );
    (builder.into_inner().expect("archive"), expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_docker_archives_plain_and_compressed() {
    let server = TestServer::start(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (archive, expected) = docker_archive(&[("bench:v1", 7)]);
    let plain = dir.path().join("image.tar");
    std::fs::write(&plain, &archive).expect("write archive");
    let compressed = dir.path().join("image.tar.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&archive).expect("gzip");
    std::fs::write(&compressed, encoder.finish().expect("gzip")).expect("write");

    let pushed = json(
        &bencher(
            &server,
            &[
                "--format",
                "json",
                "image",
                "push",
                path(&plain),
                "archive:v1",
            ],
        )
        .await,
    );
    let digest = pushed["digest"].as_str().expect("digest").to_owned();
    let (pulled, manifest) = pull(&server, "archive", "v1").await;
    assert_eq!(pulled.as_str(), digest);
    let Manifest::Image(image) = manifest else {
        panic!("expected an image manifest");
    };
    assert_eq!(image.media_type, OCI_IMAGE_MANIFEST);
    assert_eq!(image.config.digest, expected[0].config);
    let got: Vec<(&str, String, u64)> = image
        .layers
        .iter()
        .map(|l| (l.media_type.as_str(), l.digest.to_string(), l.size))
        .collect();
    let want: Vec<(&str, String, u64)> = expected[0]
        .layers
        .iter()
        .zip([OCI_LAYER_TAR, OCI_LAYER_TAR, OCI_LAYER_TAR_GZIP])
        .map(|(bytes, media_type)| {
            (
                media_type,
                Digest::sha256_of(bytes).to_string(),
                bytes.len() as u64,
            )
        })
        .collect();
    assert_eq!(got, want);

    // The same archive gzip-compressed converts to the very same manifest.
    let pushed = json(
        &bencher(
            &server,
            &[
                "--format",
                "json",
                "image",
                "push",
                path(&compressed),
                "archive:gz",
                "--source-tag",
                "bench:v1",
            ],
        )
        .await,
    );
    assert_eq!(pushed["digest"], digest.as_str());

    if skopeo_available("push_docker_archives_plain_and_compressed") {
        assert_eq!(skopeo_digest(&server, "archive:gz").await.as_str(), digest);
    }

    // Several images: choose by RepoTag, or be told to.
    let (archive, expected) = docker_archive(&[("bench:a", 1), ("bench:b", 2)]);
    let two = dir.path().join("two.tar");
    std::fs::write(&two, &archive).expect("write archive");
    fails(
        &bencher(&server, &["image", "push", path(&two), "archive:x"]).await,
        1,
        "choose one with --source-tag",
    );
    ok(&bencher(
        &server,
        &[
            "image",
            "push",
            path(&two),
            "archive:b",
            "--source-tag",
            "b",
        ],
    )
    .await);
    let (_, manifest) = pull(&server, "archive", "b").await;
    assert_eq!(manifest.blobs()[0].digest, expected[1].config);
}

/// A layout whose `index.json` names an image index of two platform images.
fn multi_platform_layout(dir: &Path) -> (Digest, BuiltImage, BuiltImage) {
    let amd = three_layers(dir, "amd", 11);
    let arm = three_layers(dir, "arm", 12);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_INDEX,
        "manifests": [
            { "mediaType": OCI_IMAGE_MANIFEST, "digest": amd.manifest_digest, "size": amd.manifest.len(),
              "platform": { "architecture": "amd64", "os": "linux" } },
            { "mediaType": OCI_IMAGE_MANIFEST, "digest": arm.manifest_digest, "size": arm.manifest.len(),
              "platform": { "architecture": "arm64", "os": "linux", "variant": "v8" } },
        ],
    }))
    .expect("index JSON");
    let digest = Digest::sha256_of(&index);
    std::fs::write(dir.join("blobs/sha256").join(digest.hex()), &index).expect("index blob");
    let top = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_IMAGE_INDEX, "digest": digest, "size": index.len(),
            "annotations": { "org.opencontainers.image.ref.name": "multi" },
        }],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&top).expect("JSON"),
    )
    .expect("index.json");
    (digest, amd, arm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_a_multi_platform_index() {
    let server = TestServer::start(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (index_digest, amd, arm) = multi_platform_layout(dir.path());
    let pushed = json(
        &bencher(
            &server,
            &[
                "--format",
                "json",
                "image",
                "push",
                path(dir.path()),
                "multi:latest",
            ],
        )
        .await,
    );
    assert_eq!(pushed["digest"], index_digest.as_str());
    let (digest, manifest) = pull(&server, "multi", "latest").await;
    assert_eq!(digest, index_digest);
    assert_eq!(manifest.media_type(), OCI_IMAGE_INDEX);
    for child in [&amd, &arm] {
        let (digest, _) = pull(&server, "multi", &child.manifest_digest).await;
        assert_eq!(digest.as_str(), child.manifest_digest);
    }
    // Only the index is tagged; its children are there by digest.
    let listed = json(&bencher(&server, &["--format", "json", "image", "list", "multi"]).await);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["media_type"], OCI_IMAGE_INDEX);
    assert_eq!(listed[0]["size"], Value::Null);
    if skopeo_available("push_a_multi_platform_index") {
        assert_eq!(skopeo_digest(&server, "multi:latest").await, index_digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear() {
    let server = TestServer::start(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let layout = dir.path().join("layout");
    three_layers(&layout, "v1", 21);
    let source = path(&layout);

    // A token the server never issued: the token endpoint's answer, and never the token.
    let unknown = "bencher_user_000000000000000000000000000000";
    let output = bencher_as(&server, Some(unknown), &["image", "push", source, "p:v1"]).await;
    let err = fails(&output, 1, "invalid, expired or revoked API token");
    assert!(
        err.contains("hint: the server refused the API token"),
        "{err}"
    );
    assert!(!err.contains(unknown) && !text(&output.stdout).contains(unknown));
    // No token at all.
    let err = fails(
        &bencher_as(&server, None, &["image", "push", source, "p:v1"]).await,
        1,
        "registry authentication",
    );
    assert!(err.contains("hint: pass an API token"), "{err}");
    assert_eq!(server.count_requests("POST", UPLOADS), 0);

    // Usage errors, before anything is read or sent.
    fails(
        &bencher(&server, &["image", "push", source, "team/p:v1"]).await,
        2,
        "must be a project",
    );
    fails(
        &bencher(&server, &["image", "push", source, "p:-bad"]).await,
        2,
        "tag",
    );
    // Sources that are not images.
    let missing = dir.path().join("missing");
    fails(
        &bencher(&server, &["image", "push", path(&missing), "p:v1"]).await,
        1,
        "does not exist",
    );
    fails(
        &bencher(&server, &["image", "push", path(dir.path()), "p:v1"]).await,
        1,
        "not an OCI image layout",
    );
    let not_tar = dir.path().join("notes.txt");
    std::fs::write(&not_tar, "hello").expect("write");
    fails(
        &bencher(&server, &["image", "push", path(&not_tar), "p:v1"]).await,
        1,
        "cannot read the image",
    );
    fails(
        &bencher(
            &server,
            &["image", "push", source, "p:v1", "--source-tag", "v9"],
        )
        .await,
        1,
        "no image tagged `v9`",
    );
    // A blob missing from the layout is found before anything is sent.
    let image = three_layers(&dir.path().join("broken"), "v1", 22);
    let (_, hex) = image.layer_digests[1]
        .split_once(':')
        .expect("digest has a colon");
    std::fs::remove_file(dir.path().join("broken/blobs/sha256").join(hex)).expect("remove");
    fails(
        &bencher(
            &server,
            &["image", "push", path(&dir.path().join("broken")), "p:v1"],
        )
        .await,
        1,
        "the layout lacks blob",
    );
    assert_eq!(server.count_requests("POST", UPLOADS), 0);

    // Listing a project that does not exist.
    let err = fails(
        &bencher(&server, &["image", "list", "nothing-here"]).await,
        1,
        "NAME_UNKNOWN",
    );
    assert!(err.contains("hint: no such project"), "{err}");
}
