//! The runner's image pull against a real server: a `bencher_test_support::TestServer`
//! on 127.0.0.1:0, images built in code (tar layers with whiteouts, gzip, zstd and
//! uncompressed) and pushed over plain HTTP, or with skopeo. IO: the test server, a
//! temporary cache directory per test, and skopeo when installed.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bencher_client::registry::{RegistryClient, RegistryCredential};
use bencher_oci::digest::Digest;
use bencher_oci::layer::UnpackLimits;
use bencher_oci::manifest::{
    OCI_IMAGE_CONFIG, OCI_IMAGE_INDEX, OCI_IMAGE_MANIFEST, OCI_LAYER_TAR, OCI_LAYER_TAR_GZIP,
    OCI_LAYER_TAR_ZSTD,
};
use bencher_oci::platform::Platform;
use bencher_oci::reference::ManifestRef;
use bencher_runner::image::{BlobError, ImageCache, ImageError, PulledImage};
use bencher_test_support::reqwest::Method;
use bencher_test_support::{Backend, TestServer};
use bencher_types::JobUuid;
use serde_json::json;

const REPO: &str = "bench";
const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------
// Images built in code.

/// One entry of a test layer.
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    /// `.wh.<name>`: deletes `path` of a lower layer.
    Whiteout(&'a str),
    /// `.wh..wh..opq` in the directory: hides its lower-layer content.
    Opaque(&'a str),
}

#[derive(Clone, Copy)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

struct Layer {
    media_type: &'static str,
    blob: Vec<u8>,
    diff_id: Digest,
}

fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header
    };
    let whiteout = |path: &str, name: &str| match path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name.to_owned(),
    };
    for entry in entries {
        match entry {
            Entry::File(path, contents) => {
                let mut h = header(tar::EntryType::Regular, 0o644, contents.len() as u64);
                builder.append_data(&mut h, path, *contents).unwrap();
            }
            Entry::Dir(path) => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                builder.append_data(&mut h, path, &[][..]).unwrap();
            }
            Entry::Symlink(path, target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                builder.append_link(&mut h, path, target).unwrap();
            }
            Entry::Whiteout(path) => {
                let name = path.rsplit('/').next().unwrap();
                let mut h = header(tar::EntryType::Regular, 0o644, 0);
                let wh = whiteout(path, &format!(".wh.{name}"));
                builder.append_data(&mut h, wh, &[][..]).unwrap();
            }
            Entry::Opaque(dir) => {
                let mut h = header(tar::EntryType::Regular, 0o644, 0);
                builder
                    .append_data(&mut h, format!("{dir}/.wh..wh..opq"), &[][..])
                    .unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// Incompressible bytes (xorshift), the same for the same length.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ len as u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn layer(compression: Compression, entries: &[Entry<'_>]) -> Layer {
    raw_layer(compression, tar(entries))
}

fn raw_layer(compression: Compression, tar: Vec<u8>) -> Layer {
    let diff_id = Digest::sha256_of(&tar);
    let (media_type, blob) = match compression {
        Compression::None => (OCI_LAYER_TAR, tar),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut encoder, &tar).unwrap();
            (OCI_LAYER_TAR_GZIP, encoder.finish().unwrap())
        }
        Compression::Zstd => (OCI_LAYER_TAR_ZSTD, zstd::encode_all(&tar[..], 1).unwrap()),
    };
    Layer {
        media_type,
        blob,
        diff_id,
    }
}

struct Image {
    config: Vec<u8>,
    layers: Vec<Layer>,
    manifest: Vec<u8>,
    digest: Digest,
}

impl Image {
    fn new(architecture: &str, layers: Vec<Layer>) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": architecture,
            "os": "linux",
            "config": { "Cmd": ["/bench"], "Env": ["PATH=/bin"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .unwrap();
        let descriptors: Vec<_> = layers
            .iter()
            .map(|l| {
                json!({
                    "mediaType": l.media_type,
                    "digest": Digest::sha256_of(&l.blob).to_string(),
                    "size": l.blob.len(),
                })
            })
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MANIFEST,
            "config": {
                "mediaType": OCI_IMAGE_CONFIG,
                "digest": Digest::sha256_of(&config).to_string(),
                "size": config.len(),
            },
            "layers": descriptors,
        }))
        .unwrap();
        let digest = Digest::sha256_of(&manifest);
        Image {
            config,
            layers,
            manifest,
            digest,
        }
    }

    /// Every blob digest, config first, each once.
    fn blob_digests(&self) -> Vec<Digest> {
        let mut digests = vec![Digest::sha256_of(&self.config)];
        for layer in &self.layers {
            let digest = Digest::sha256_of(&layer.blob);
            if !digests.contains(&digest) {
                digests.push(digest);
            }
        }
        digests
    }

    fn bytes(&self) -> u64 {
        (self.config.len() + self.layers.iter().map(|l| l.blob.len()).sum::<usize>()) as u64
    }

    fn by_digest(&self) -> ManifestRef {
        ManifestRef::Digest(self.digest.clone())
    }
}

/// An OCI index of `(image, architecture, variant)` entries.
fn index(entries: &[(&Image, &str, Option<&str>)]) -> (Vec<u8>, Digest) {
    let manifests: Vec<_> = entries
        .iter()
        .map(|(image, architecture, variant)| {
            let mut platform = json!({ "architecture": architecture, "os": "linux" });
            if let Some(variant) = variant {
                platform["variant"] = json!(variant);
            }
            json!({
                "mediaType": OCI_IMAGE_MANIFEST,
                "digest": image.digest.to_string(),
                "size": image.manifest.len(),
                "platform": platform,
            })
        })
        .collect();
    let bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_INDEX,
        "manifests": manifests,
    }))
    .unwrap();
    let digest = Digest::sha256_of(&bytes);
    (bytes, digest)
}

/// A single small image for the host with a gzip, a zstd and an uncompressed layer.
fn small_image(tag: &str) -> Image {
    let host = Platform::host();
    Image::new(
        &host.architecture,
        vec![
            layer(
                Compression::Gzip,
                &[Entry::Dir("bin"), Entry::File("bin/bench", tag.as_bytes())],
            ),
            layer(Compression::Zstd, &[Entry::File("etc/zstd", b"zstd layer")]),
            layer(
                Compression::None,
                &[Entry::File("etc/plain", b"plain layer")],
            ),
        ],
    )
}

// ---------------------------------------------------------------------------------
// Pushing over plain HTTP, independent of the client under test.

async fn push_blob(server: &TestServer, bytes: &[u8]) {
    let digest = Digest::sha256_of(bytes);
    let response = server
        .request(
            Method::POST,
            &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
        )
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
}

async fn push_manifest(server: &TestServer, reference: &str, media_type: &str, bytes: &[u8]) {
    let response = server
        .request(Method::PUT, &format!("/v2/{REPO}/manifests/{reference}"))
        .header("content-type", media_type)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
}

async fn push_image(server: &TestServer, tag: &str, image: &Image) {
    push_blob(server, &image.config).await;
    for layer in &image.layers {
        push_blob(server, &layer.blob).await;
    }
    push_manifest(server, tag, OCI_IMAGE_MANIFEST, &image.manifest).await;
}

fn admin_client(server: &TestServer) -> RegistryClient {
    RegistryClient::new(
        server.url.clone(),
        RegistryCredential::ApiToken(server.admin_token.clone()),
    )
    .unwrap()
}

fn blob_gets(server: &TestServer) -> usize {
    server.count_requests("GET", "/blobs/")
}

/// Every path below `root` with what it is: file contents, `-> target`, or `dir`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else {
                String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned()
            };
            out.insert(name, what);
        }
    }
    out
}

fn tmp_is_empty(cache: &ImageCache) -> bool {
    fs::read_dir(cache.root().join("tmp"))
        .unwrap()
        .next()
        .is_none()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn assert_layers_cached(image: &PulledImage) {
    for (descriptor, path) in &image.layers {
        let bytes = fs::read(path).unwrap();
        assert_eq!(bytes.len() as u64, descriptor.size);
        descriptor.digest.verify(&bytes).unwrap();
    }
}

// ---------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pull_fetches_no_blob() {
    let server = TestServer::start(Backend::Sqlite).await;
    let image = small_image("v1");
    push_image(&server, "v1", &image).await;
    let client = admin_client(&server);
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(dir.path(), 100 * MIB).unwrap();

    let pulled = cache
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest, image.digest);
    assert_eq!(pulled.layers.len(), 3);
    assert_eq!(pulled.config.cmd(), ["/bench"]);
    assert_layers_cached(&pulled);
    assert_eq!(
        blob_gets(&server),
        image.blob_digests().len(),
        "each blob once"
    );
    for digest in image.blob_digests() {
        assert_eq!(server.count_requests("GET", digest.as_str()), 1, "{digest}");
    }
    let usage = cache.usage().unwrap();
    assert_eq!(
        (usage.blobs, usage.rootfs, usage.bytes),
        (4, 0, image.bytes())
    );
    drop(pulled);

    // The same cache, and the cache opened anew (a restarted runner): no blob fetched.
    let again = cache
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap();
    assert_eq!(again.manifest_digest, image.digest);
    let reopened = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    reopened
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap();
    assert_eq!(
        blob_gets(&server),
        image.blob_digests().len(),
        "zero blob requests"
    );
    assert!(tmp_is_empty(&cache));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_with_a_per_job_pull_token() {
    let server = TestServer::start(Backend::Sqlite).await;
    let image = small_image("job");
    push_image(&server, "job", &image).await;
    let project = server.store().repository(REPO).await.unwrap().unwrap();
    let token = server.registry_tokens().job_pull_token(
        JobUuid::new_v4(),
        project.uuid,
        Duration::from_secs(600),
        server.clock.now(),
    );
    let client =
        RegistryClient::new(server.url.clone(), RegistryCredential::Bearer(token)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    let pulled = cache
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap();
    assert_layers_cached(&pulled);

    // A token of another project's job pulls nothing from this one.
    let other = bencher_types::ProjectUuid::new_v4();
    let token = server.registry_tokens().job_pull_token(
        JobUuid::new_v4(),
        other,
        Duration::from_secs(600),
        server.clock.now(),
    );
    let client =
        RegistryClient::new(server.url.clone(), RegistryCredential::Bearer(token)).unwrap();
    let other_cache = ImageCache::open(&dir.path().join("other"), 100 * MIB).unwrap();
    let err = other_cache
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::FetchManifest { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_selects_the_host_platform() {
    let server = TestServer::start(Backend::Sqlite).await;
    let amd64 = Image::new(
        "amd64",
        vec![layer(Compression::Gzip, &[Entry::File("arch", b"amd64")])],
    );
    let arm64 = Image::new(
        "arm64",
        vec![layer(Compression::Zstd, &[Entry::File("arch", b"arm64")])],
    );
    push_image(&server, "amd64", &amd64).await;
    push_image(&server, "arm64", &arm64).await;
    let (index, index_digest) = index(&[(&amd64, "amd64", None), (&arm64, "arm64", Some("v8"))]);
    push_manifest(&server, "multi", OCI_IMAGE_INDEX, &index).await;
    let client = admin_client(&server);
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    let by_index = ManifestRef::Digest(index_digest);

    let host = Platform::host();
    let (mine, theirs, other_platform) = match host.architecture.as_str() {
        "amd64" => (&amd64, &arm64, Platform::linux("aarch64")),
        "arm64" => (&arm64, &amd64, Platform::linux("x86_64")),
        other => panic!("no test image for host architecture {other}"),
    };
    let pulled = cache.pull(&client, REPO, &by_index, &host).await.unwrap();
    assert_eq!(pulled.manifest_digest, mine.digest, "the host's image");
    assert_eq!(pulled.config.architecture, host.architecture);
    let root = cache
        .rootfs(&pulled, UnpackLimits::default())
        .await
        .unwrap();
    assert_eq!(
        fs::read(root.join("arch")).unwrap(),
        host.architecture.as_bytes()
    );
    // Nothing of the other image was fetched.
    for digest in theirs.blob_digests() {
        assert_eq!(server.count_requests("GET", digest.as_str()), 0);
    }

    // Asked for the other platform, the same index gives the other image.
    let other = cache
        .pull(&client, REPO, &by_index, &other_platform)
        .await
        .unwrap();
    assert_eq!(other.manifest_digest, theirs.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_the_wrong_architecture() {
    let server = TestServer::start(Backend::Sqlite).await;
    let s390x = Image::new(
        "s390x",
        vec![layer(Compression::Gzip, &[Entry::File("a", b"s")])],
    );
    let riscv = Image::new(
        "riscv64",
        vec![layer(Compression::Gzip, &[Entry::File("a", b"r")])],
    );
    push_image(&server, "s390x", &s390x).await;
    push_image(&server, "riscv", &riscv).await;
    let (index, index_digest) = index(&[(&s390x, "s390x", None), (&riscv, "riscv64", None)]);
    push_manifest(&server, "foreign", OCI_IMAGE_INDEX, &index).await;
    let client = admin_client(&server);
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    let host = Platform::host();

    // An index without the host platform.
    let err = cache
        .pull(&client, REPO, &ManifestRef::Digest(index_digest), &host)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Platform { .. }), "{err:?}");
    let chain = error_chain(&err);
    assert!(
        chain.contains(&format!("no manifest for platform {host}"))
            && chain.contains("linux/s390x, linux/riscv64"),
        "{chain}"
    );
    assert_eq!(blob_gets(&server), 0);

    // A single-platform image of another architecture: refused on its config, before
    // any layer is fetched.
    let err = cache
        .pull(&client, REPO, &s390x.by_digest(), &host)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::WrongPlatform { .. }), "{err:?}");
    assert!(err.to_string().contains("built for linux/s390x"), "{err}");
    assert_eq!(blob_gets(&server), 1, "only the config");
}

/// Overwrites the server's stored copy of `digest` with `bytes` (the server verified the
/// upload; this is damage on its disk, which only the pulling side can catch).
fn damage_server_blob(server: &TestServer, digest: &Digest, bytes: &[u8]) {
    fn find(dir: &Path, name: &str) -> Option<PathBuf> {
        for entry in fs::read_dir(dir).ok()? {
            let path = entry.ok()?.path();
            if path.is_dir() {
                if let Some(found) = find(&path, name) {
                    return Some(found);
                }
            } else if path.file_name().is_some_and(|n| n == name) {
                return Some(path);
            }
        }
        None
    }
    let path = find(&server.data_dir(), digest.hex()).expect("the server's blob file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_that_does_not_match_is_never_cached() {
    let server = TestServer::start(Backend::Sqlite).await;
    let image = small_image("bad");
    push_image(&server, "bad", &image).await;
    let client = admin_client(&server);
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    let layer = &image.layers[0].blob;
    let digest = Digest::sha256_of(layer);

    // Same size, other bytes: the digest check fails.
    let mut flipped = layer.clone();
    flipped[layer.len() / 2] ^= 0xff;
    damage_server_blob(&server, &digest, &flipped);
    let err = cache
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap_err();
    match &err {
        ImageError::Blob {
            digest: d, source, ..
        } if matches!(**source, BlobError::Digest(_)) => {
            assert_eq!(d, &digest)
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains(digest.as_str()),
        "names the digest: {err}"
    );
    assert!(
        !cache
            .root()
            .join("blobs/sha256")
            .join(digest.hex())
            .exists()
    );
    assert!(tmp_is_empty(&cache));

    // Cut short: the server announces the full size and drops the connection early,
    // before or after the headers went out (so the request or the stream fails). The
    // pull tries again, as for any transient failure, and then gives up.
    damage_server_blob(&server, &digest, &layer[..layer.len() / 2]);
    let err = cache
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ImageError::Blob { digest: d, source, .. }
                if d == &digest && matches!(**source, BlobError::Request(_) | BlobError::Stream { .. } | BlobError::TooSmall { .. })
        ),
        "{err:?}"
    );
    assert_eq!(
        server.count_requests("GET", digest.as_str()),
        1 + 3,
        "the first pull's one try, then three"
    );
    assert!(
        !cache
            .root()
            .join("blobs/sha256")
            .join(digest.hex())
            .exists()
    );
    assert!(tmp_is_empty(&cache));

    // Repaired, the pull succeeds; the other blobs fetched before were kept.
    damage_server_blob(&server, &digest, layer);
    let pulled = cache
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap();
    assert_layers_cached(&pulled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_downloads_never_become_blobs() {
    let server = TestServer::start(Backend::Sqlite).await;
    let image = small_image("partial");
    push_image(&server, "partial", &image).await;
    let client = admin_client(&server);
    let dir = tempfile::tempdir().unwrap();
    let layer = &image.layers[0].blob;
    let digest = Digest::sha256_of(layer);

    // What a killed runner leaves: a partial download, a partial unpack, and a
    // damaged file at a content address.
    drop(ImageCache::open(dir.path(), 100 * MIB).unwrap());
    let tmp = dir.path().join("tmp");
    let partial = tmp.join(format!("blob-sha256-{}.fetch.Ab12Cd", digest.hex()));
    fs::write(&partial, &layer[..layer.len() / 2]).unwrap();
    let unpack = tmp.join(format!("rootfs-sha256-{}.build.Ef34Gh", image.digest.hex()));
    fs::create_dir_all(unpack.join("root/bin")).unwrap();
    let config_digest = Digest::sha256_of(&image.config);
    let config_path = dir.path().join("blobs/sha256").join(config_digest.hex());
    fs::create_dir_all(config_path.parent().unwrap()).unwrap();
    fs::write(&config_path, &image.config[..5]).unwrap();

    let cache = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    assert!(tmp_is_empty(&cache), "open removes interrupted work");
    assert!(!dir.path().join("blobs/sha256").join(digest.hex()).exists());
    assert!(
        !dir.path()
            .join("rootfs/sha256")
            .join(image.digest.hex())
            .exists()
    );

    let pulled = cache
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap();
    assert_layers_cached(&pulled);
    // The damaged config was fetched again and replaced.
    assert_eq!(fs::read(&config_path).unwrap(), image.config);
    assert_eq!(blob_gets(&server), image.blob_digests().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicts_least_recently_used_within_a_tiny_bound() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (a_data, b_data) = (noise(64 * 1024), noise(64 * 1024 + 1));
    let a = Image::new(
        &Platform::host().architecture,
        vec![layer(Compression::None, &[Entry::File("a", &a_data)])],
    );
    let b = Image::new(
        &Platform::host().architecture,
        vec![layer(Compression::None, &[Entry::File("b", &b_data)])],
    );
    push_image(&server, "a", &a).await;
    push_image(&server, "b", &b).await;
    let client = admin_client(&server);
    let dir = tempfile::tempdir().unwrap();
    // Room for one image's blobs, not two.
    let bound = a.bytes().max(b.bytes()) + a.bytes().min(b.bytes()) / 2;
    let cache = ImageCache::open(dir.path(), bound).unwrap();
    let host = Platform::host();
    let cached = |image: &Image| {
        image
            .blob_digests()
            .iter()
            .filter(|d| dir.path().join("blobs/sha256").join(d.hex()).exists())
            .count()
    };

    let a_layer = dir
        .path()
        .join("blobs/sha256")
        .join(Digest::sha256_of(&a.layers[0].blob).hex());

    drop(
        cache
            .pull(&client, REPO, &a.by_digest(), &host)
            .await
            .unwrap(),
    );
    assert_eq!(cached(&a), 2);
    let pulled_b = cache
        .pull(&client, REPO, &b.by_digest(), &host)
        .await
        .unwrap();
    // Eviction stops as soon as b fits, so a's small config may stay; its layer went.
    assert!(!a_layer.exists(), "a was least recently used");
    assert_eq!(cached(&b), 2);
    assert!(cache.usage().unwrap().bytes <= bound);

    // While b is held (a job runs it), pulling a cannot evict b: over the bound.
    let pulled_a = cache
        .pull(&client, REPO, &a.by_digest(), &host)
        .await
        .unwrap();
    assert_eq!((cached(&a), cached(&b)), (2, 2));
    assert!(cache.usage().unwrap().bytes > bound);
    drop(pulled_b);
    // The next use of the cache brings it back under, evicting b (now unpinned).
    cache
        .rootfs(&pulled_a, UnpackLimits::default())
        .await
        .unwrap();
    assert_eq!(cached(&b), 0);
    assert_eq!(cache.usage().unwrap().rootfs, 1);
    drop(pulled_a);

    // Rootfs trees count and are evicted too: pulling b again pushes out a's blobs
    // and a's rootfs.
    let _b = cache
        .pull(&client, REPO, &b.by_digest(), &host)
        .await
        .unwrap();
    let usage = cache.usage().unwrap();
    assert_eq!((usage.blobs, usage.rootfs), (2, 0), "{usage:?}");
    assert!(usage.bytes <= bound);
    assert!(tmp_is_empty(&cache));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_share_one_download() {
    let server = TestServer::start(Backend::Sqlite).await;
    // Incompressible and large enough that the first download is still running when
    // the other pulls ask for the same blob.
    let big = noise(8 * MIB as usize);
    let image = Image::new(
        &Platform::host().architecture,
        vec![
            layer(Compression::None, &[Entry::File("big", &big)]),
            layer(Compression::Zstd, &[Entry::File("small", b"small")]),
        ],
    );
    push_image(&server, "shared", &image).await;
    let client = admin_client(&server);
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    // A second instance on the same directory stands for another runner process: it
    // shares nothing in memory, only the flocks.
    let other = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    let host = Platform::host();
    let reference = image.by_digest();

    let clone = cache.clone();
    let (one, two, three) = tokio::join!(
        cache.pull(&client, REPO, &reference, &host),
        clone.pull(&client, REPO, &reference, &host),
        other.pull(&client, REPO, &reference, &host),
    );
    let (one, two, three) = (one.unwrap(), two.unwrap(), three.unwrap());
    for pulled in [&one, &two, &three] {
        assert_eq!(pulled.manifest_digest, image.digest);
        assert_layers_cached(pulled);
    }
    for digest in image.blob_digests() {
        assert_eq!(
            server.count_requests("GET", digest.as_str()),
            1,
            "{digest} once"
        );
    }

    // Three rootfs requests at once (two instances): one tree for all, nothing left
    // behind in tmp/.
    let (r1, r2, r3) = tokio::join!(
        cache.rootfs(&one, UnpackLimits::default()),
        cache.rootfs(&two, UnpackLimits::default()),
        other.rootfs(&three, UnpackLimits::default()),
    );
    let (r1, r2, r3) = (r1.unwrap(), r2.unwrap(), r3.unwrap());
    assert!(r1 == r2 && r2 == r3);
    assert_eq!(fs::read(r1.join("big")).unwrap(), big);
    assert!(tmp_is_empty(&cache));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootfs_is_the_layers_applied_in_order() {
    let server = TestServer::start(Backend::Sqlite).await;
    let image = Image::new(
        &Platform::host().architecture,
        vec![
            layer(
                Compression::Gzip,
                &[
                    Entry::Dir("etc"),
                    Entry::File("etc/a", b"a1"),
                    Entry::File("etc/b", b"b1"),
                    Entry::Dir("data"),
                    Entry::File("data/x", b"x1"),
                    Entry::File("data/y", b"y1"),
                    Entry::File("keep", b"old"),
                    Entry::File("gone", b"soon"),
                ],
            ),
            layer(
                Compression::Zstd,
                &[
                    Entry::Whiteout("etc/a"),
                    Entry::Opaque("data"),
                    Entry::File("data/z", b"z2"),
                    Entry::File("keep", b"new"),
                    Entry::Whiteout("gone"),
                ],
            ),
            layer(
                Compression::None,
                &[Entry::Symlink("link", "keep"), Entry::File("gone", b"back")],
            ),
        ],
    );
    push_image(&server, "order", &image).await;
    let client = admin_client(&server);
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    let pulled = cache
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap();
    let root = cache
        .rootfs(&pulled, UnpackLimits::default())
        .await
        .unwrap();
    let expected: BTreeMap<String, String> = [
        ("data", "dir"),
        ("data/z", "z2"),
        ("etc", "dir"),
        ("etc/b", "b1"),
        ("gone", "back"),
        ("keep", "new"),
        ("link", "-> keep"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(tree(&root), expected);
    // The guest's `/` is a normal root directory; the entry around it is the barrier.
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let entry = root.parent().unwrap();
    assert_eq!(
        fs::metadata(entry).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootfs_is_unpacked_once_and_reused() {
    let server = TestServer::start(Backend::Sqlite).await;
    let image = small_image("once");
    push_image(&server, "once", &image).await;
    let client = admin_client(&server);
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    let pulled = cache
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap();
    let first = cache
        .rootfs(&pulled, UnpackLimits::default())
        .await
        .unwrap();
    assert_eq!(fs::read(first.join("bin/bench")).unwrap(), b"once");
    assert_eq!(
        first,
        dir.path()
            .join("rootfs/sha256")
            .join(image.digest.hex())
            .join("root")
    );
    let inode = fs::metadata(&first).unwrap().ino();
    let bench = fs::metadata(first.join("bin/bench")).unwrap();
    // A marker no unpack would create: it survives only if the tree is reused.
    fs::write(first.join("marker"), b"reused").unwrap();

    let second = cache
        .rootfs(&pulled, UnpackLimits::default())
        .await
        .unwrap();
    assert_eq!(second, first);
    assert_eq!(fs::metadata(&second).unwrap().ino(), inode);
    assert_eq!(fs::read(second.join("marker")).unwrap(), b"reused");
    let again = fs::metadata(second.join("bin/bench")).unwrap();
    assert_eq!((again.ino(), again.mtime()), (bench.ino(), bench.mtime()));

    // After a restart too.
    let reopened = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    let pulled = reopened
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap();
    let third = reopened
        .rootfs(&pulled, UnpackLimits::default())
        .await
        .unwrap();
    assert_eq!(fs::read(third.join("marker")).unwrap(), b"reused");
    assert_eq!(reopened.usage().unwrap().rootfs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_unpack_leaves_no_rootfs() {
    let server = TestServer::start(Backend::Sqlite).await;
    let image = small_image("limits");
    push_image(&server, "limits", &image).await;
    let client = admin_client(&server);
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    let pulled = cache
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap();
    let tight = UnpackLimits {
        max_total_bytes: 1 << 20,
        max_entries: 2,
    };
    let err = cache.rootfs(&pulled, tight).await.unwrap_err();
    assert!(matches!(err, ImageError::Unpack { .. }), "{err:?}");
    assert!(
        !dir.path()
            .join("rootfs/sha256")
            .join(image.digest.hex())
            .exists()
    );
    assert!(tmp_is_empty(&cache));
    assert_eq!(cache.usage().unwrap().rootfs, 0);

    let root = cache
        .rootfs(&pulled, UnpackLimits::default())
        .await
        .unwrap();
    assert_eq!(fs::read(root.join("etc/zstd")).unwrap(), b"zstd layer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_lies_about_its_layers_is_refused() {
    let server = TestServer::start(Backend::Sqlite).await;
    let mut image = small_image("liar");
    // The config claims other uncompressed content for the zstd layer.
    image.layers[1].diff_id = Digest::sha256_of(b"something else");
    let image = Image::new(&Platform::host().architecture, image.layers);
    push_image(&server, "liar", &image).await;
    let client = admin_client(&server);
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(dir.path(), 100 * MIB).unwrap();
    let pulled = cache
        .pull(&client, REPO, &image.by_digest(), &Platform::host())
        .await
        .unwrap();
    let err = cache
        .rootfs(&pulled, UnpackLimits::default())
        .await
        .unwrap_err();
    match &err {
        ImageError::DiffId { layer, .. } => {
            assert_eq!(layer, &Digest::sha256_of(&image.layers[1].blob));
        }
        other => panic!("{other:?}"),
    }
    assert!(tmp_is_empty(&cache));
    assert_eq!(cache.usage().unwrap().rootfs, 0);
}

/// skopeo, a client nobody here wrote, pushes an OCI layout; the runner pulls it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_what_skopeo_pushed() {
    if !skopeo_available("pulls_what_skopeo_pushed") {
        return;
    }
    use bencher_test_support::image::{File, write_layout};
    let server = TestServer::start(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_layout(
        &layout,
        "v1",
        &[
            vec![File {
                path: "bin/bench",
                contents: b"#!/bin/sh\necho hi\n",
                mode: 0o755,
            }],
            vec![File {
                path: "etc/conf",
                contents: b"x=1\n",
                mode: 0o644,
            }],
        ],
        &["/bin/bench"],
    );
    let host = server.url.host_str().unwrap();
    let port = server.url.port().unwrap();
    let output = tokio::process::Command::new("skopeo")
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("x:{}", server.admin_token.expose_secret()),
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{host}:{port}/{REPO}:v1"),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let client = admin_client(&server);
    let cache = ImageCache::open(&dir.path().join("cache"), 100 * MIB).unwrap();
    // write_layout builds linux/amd64 images.
    let amd64 = Platform::linux("x86_64");
    let by_tag = cache
        .pull(&client, REPO, &"v1".parse().unwrap(), &amd64)
        .await
        .unwrap();
    let by_digest = cache
        .pull(
            &client,
            REPO,
            &ManifestRef::Digest(by_tag.manifest_digest.clone()),
            &amd64,
        )
        .await
        .unwrap();
    assert_eq!(by_digest.config.cmd(), ["/bin/bench"]);
    let root = cache
        .rootfs(&by_digest, UnpackLimits::default())
        .await
        .unwrap();
    assert_eq!(fs::read(root.join("etc/conf")).unwrap(), b"x=1\n");
    let mode = fs::metadata(root.join("bin/bench"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

fn skopeo_available(test: &str) -> bool {
    let found = std::process::Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: skopeo must be installed in CI");
        }
        eprintln!("SKIPPED {test}: skopeo is not installed");
    }
    found
}
