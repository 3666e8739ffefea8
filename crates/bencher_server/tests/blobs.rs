//! Blob storage (`bencher_server::blobs`) against real storage: every test runs on the
//! local filesystem (a temporary directory) and on an S3-compatible server (a fresh
//! bucket per test). IO: temporary directories, and HTTP to the S3 server.
//!
//! The S3 variants need `BENCHER_TEST_S3_ENDPOINT` (e.g. `http://127.0.0.1:PORT` of a
//! moto server; `.ci/run` starts one). Without it they print `SKIPPED` and the reason,
//! and under `CI` they fail instead.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bencher_oci::digest::{Digest, DigestAlgorithm};
use bencher_server::blobs::{BlobConfig, BlobError, BlobStore};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use tempfile::TempDir;
use uuid::Uuid;

const MIB: usize = 1 << 20;
const NO_LIMIT: u64 = u64::MAX;

/// A store under test, and how to open another instance on the same storage.
struct Backend {
    store: BlobStore,
    config: BlobConfig,
    s3_settings: Vec<(&'static str, String)>,
    /// Keeps the local directory alive for the test.
    dir: Option<TempDir>,
}

impl Backend {
    async fn local() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = BlobConfig::Local {
            dir: dir.path().join("blobs"),
        };
        let store = BlobStore::open(&config).await.unwrap();
        Self {
            store,
            config,
            s3_settings: Vec::new(),
            dir: Some(dir),
        }
    }

    /// A fresh bucket on the test S3 server, or `None` (after saying so) without one.
    async fn s3(test: &str) -> Option<Self> {
        let Some(endpoint) = std::env::var("BENCHER_TEST_S3_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
        else {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: BENCHER_TEST_S3_ENDPOINT is not set, and CI must not skip");
            }
            println!("SKIPPED {test}: BENCHER_TEST_S3_ENDPOINT is not set");
            return None;
        };
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let bucket = format!("bencher-test-{}", Uuid::new_v4().simple());
        // moto in server mode creates buckets on an unsigned `PUT /<bucket>`.
        let response = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("cannot reach the S3 server at {endpoint}: {e}"));
        assert!(
            response.status().is_success(),
            "creating bucket {bucket}: {}",
            response.status()
        );
        let config = BlobConfig::ObjectStore {
            url: format!("s3://{bucket}/registry/blobs"),
        };
        let s3_settings = vec![
            ("aws_endpoint", endpoint),
            ("aws_allow_http", "true".to_owned()),
            ("aws_access_key_id", "bencher-key".to_owned()),
            ("aws_secret_access_key", "bencher-secret".to_owned()),
            ("aws_region", "us-east-1".to_owned()),
        ];
        let store = open(&config, &s3_settings).await.unwrap();
        Some(Self {
            store,
            config,
            s3_settings,
            dir: None,
        })
    }

    /// A new instance on the same storage, as after a server restart.
    async fn reopen(&self) -> BlobStore {
        open(&self.config, &self.s3_settings).await.unwrap()
    }

    fn local_dir(&self) -> Option<PathBuf> {
        match &self.config {
            BlobConfig::Local { dir } => Some(dir.clone()),
            BlobConfig::ObjectStore { .. } => None,
        }
    }
}

async fn open(config: &BlobConfig, settings: &[(&str, String)]) -> Result<BlobStore, BlobError> {
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    BlobStore::open_with_s3_settings(config, &settings).await
}

/// Each test runs against both backends: `local::<name>` and `s3::<name>`.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::local().await).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = super::Backend::s3(concat!("s3::", stringify!($name))).await {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}

backend_tests!(
    round_trip_streamed,
    range_get,
    wrong_digest_leaves_nothing,
    too_large_and_failed_bodies_leave_nothing,
    put_is_idempotent,
    empty_and_sha512_blobs,
    upload_session_in_chunks,
    upload_offset_mismatch_and_failed_appends,
    upload_finish_wrong_digest,
    upload_cancel,
    upload_survives_restart,
    concurrent_appends_are_serialized,
    stale_uploads,
    list_and_delete,
);

/// Deterministic, incompressible-looking bytes (xorshift), different per `seed`.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `bytes` as a body of uneven chunks, the way a network delivers it.
fn body(bytes: &[u8]) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + Unpin + 'static {
    let sizes = [1, 4096, 65_536, 7, 300_000, 16_384, MIB];
    let mut chunks = Vec::new();
    let mut rest = Bytes::copy_from_slice(bytes);
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        chunks.push(Ok(rest.split_to(n)));
        i += 1;
    }
    stream::iter(chunks)
}

/// A body that yields `bytes` and then fails, like a client that disconnects.
fn failing_body(bytes: &[u8]) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    body(bytes).chain(stream::once(async {
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        ))
    }))
}

async fn read_all(
    store: &BlobStore,
    digest: &Digest,
    range: Option<(u64, u64)>,
) -> Option<(u64, Vec<u8>)> {
    let blob = store.get(digest, range).await.unwrap()?;
    let chunks: Vec<Bytes> = blob.stream.try_collect().await.unwrap();
    Some((blob.size, chunks.concat()))
}

async fn assert_absent(store: &BlobStore, digest: &Digest) {
    assert_eq!(store.size(digest).await.unwrap(), None, "{digest}");
    assert!(store.get(digest, None).await.unwrap().is_none(), "{digest}");
    assert!(
        !store.list().await.unwrap().iter().any(|(d, _)| d == digest),
        "{digest} is listed"
    );
}

/// No session data left behind (temporary uploads included).
async fn assert_no_sessions(store: &BlobStore) {
    assert_eq!(
        store.stale_uploads(Duration::ZERO).await.unwrap(),
        Vec::<Uuid>::new()
    );
}

async fn round_trip_streamed(b: Backend) {
    let bytes = data(5 * MIB + 12_345, 1);
    let digest = Digest::sha256_of(&bytes);
    let size = b.store.put(&digest, body(&bytes), NO_LIMIT).await.unwrap();
    assert_eq!(size, bytes.len() as u64);
    assert_eq!(b.store.size(&digest).await.unwrap(), Some(size));
    let (total, read) = read_all(&b.store, &digest, None).await.unwrap();
    assert_eq!(total, size);
    assert!(read == bytes, "content differs");
    assert_no_sessions(&b.store).await;

    assert!(b.store.delete(&digest).await.unwrap());
    assert_absent(&b.store, &digest).await;
    assert!(!b.store.delete(&digest).await.unwrap());
}

async fn range_get(b: Backend) {
    let bytes = data(3 * MIB + 17, 2);
    let digest = Digest::sha256_of(&bytes);
    b.store.put(&digest, body(&bytes), NO_LIMIT).await.unwrap();
    let last = bytes.len() as u64 - 1;
    for (start, end) in [
        (0, 0),
        (0, last),
        (1000, 2000),
        (MIB as u64 - 1, 2 * MIB as u64 + 1),
        (last, last),
    ] {
        let (total, read) = read_all(&b.store, &digest, Some((start, end)))
            .await
            .unwrap();
        assert_eq!(total, bytes.len() as u64, "size is the whole blob's");
        assert!(
            read == bytes[start as usize..=end as usize],
            "range {start}-{end}"
        );
    }
    for (start, end) in [(0, last + 1), (last + 1, last + 1), (5, 4)] {
        let err = b.store.get(&digest, Some((start, end))).await.unwrap_err();
        assert!(
            matches!(err, BlobError::InvalidRange { .. }),
            "{start}-{end}: {err:?}"
        );
    }
    let missing = Digest::sha256_of(b"missing");
    assert!(b.store.get(&missing, Some((0, 0))).await.unwrap().is_none());
}

async fn wrong_digest_leaves_nothing(b: Backend) {
    // Larger than one multipart part on S3, so a real multipart upload is aborted.
    let bytes = data(9 * MIB, 3);
    let claimed = Digest::sha256_of(b"something else");
    let err = b
        .store
        .put(&claimed, body(&bytes), NO_LIMIT)
        .await
        .unwrap_err();
    match &err {
        BlobError::DigestMismatch { expected, actual } => {
            assert_eq!(expected, &claimed);
            assert_eq!(actual, &Digest::sha256_of(&bytes));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(claimed.as_str()), "{err}");
    assert_absent(&b.store, &claimed).await;
    assert_absent(&b.store, &Digest::sha256_of(&bytes)).await;
    assert_eq!(b.store.list().await.unwrap(), vec![]);
    assert_no_sessions(&b.store).await;
}

async fn too_large_and_failed_bodies_leave_nothing(b: Backend) {
    let bytes = data(9 * MIB, 4);
    let digest = Digest::sha256_of(&bytes);
    let limit = 9 * MIB as u64 - 1;
    let err = b.store.put(&digest, body(&bytes), limit).await.unwrap_err();
    assert!(
        matches!(err, BlobError::TooLarge { limit: l } if l == limit),
        "{err:?}"
    );
    assert_absent(&b.store, &digest).await;

    let err = b
        .store
        .put(&digest, failing_body(&bytes), NO_LIMIT)
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Body(_)), "{err:?}");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("client went away")
    );
    assert_absent(&b.store, &digest).await;
    assert_no_sessions(&b.store).await;

    // Exactly at the limit is fine.
    let size = b
        .store
        .put(&digest, body(&bytes), 9 * MIB as u64)
        .await
        .unwrap();
    assert_eq!(size, 9 * MIB as u64);
}

async fn put_is_idempotent(b: Backend) {
    let bytes = data(MIB + 1, 5);
    let digest = Digest::sha256_of(&bytes);
    assert_eq!(
        b.store.put(&digest, body(&bytes), NO_LIMIT).await.unwrap(),
        bytes.len() as u64
    );
    assert_eq!(
        b.store.put(&digest, body(&bytes), NO_LIMIT).await.unwrap(),
        bytes.len() as u64
    );
    assert_eq!(
        b.store.list().await.unwrap(),
        vec![(digest.clone(), bytes.len() as u64)]
    );
    // The stored blob is kept when someone sends other bytes under its digest.
    let err = b
        .store
        .put(&digest, body(b"not it"), NO_LIMIT)
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err:?}");
    let (_, read) = read_all(&b.store, &digest, None).await.unwrap();
    assert!(read == bytes);
    assert_no_sessions(&b.store).await;
}

async fn empty_and_sha512_blobs(b: Backend) {
    let empty = Digest::sha256_of(b"");
    assert_eq!(b.store.put(&empty, body(b""), 0).await.unwrap(), 0);
    assert_eq!(read_all(&b.store, &empty, None).await.unwrap(), (0, vec![]));

    let bytes = data(2 * MIB, 6);
    let sha512 = Digest::of(DigestAlgorithm::Sha512, &bytes);
    assert_eq!(
        b.store.put(&sha512, body(&bytes), NO_LIMIT).await.unwrap(),
        bytes.len() as u64
    );
    assert!(read_all(&b.store, &sha512, None).await.unwrap().1 == bytes);

    // A session finished with an empty body, and one verified with SHA-512 (the cached
    // SHA-256 state does not apply; the data is re-read).
    let session = Uuid::new_v4();
    b.store.upload_start(session).await.unwrap();
    assert_eq!(b.store.upload_finish(session, &empty).await.unwrap(), 0);
    let session = Uuid::new_v4();
    b.store.upload_start(session).await.unwrap();
    let other = data(MIB, 7);
    b.store
        .upload_append(session, 0, body(&other), NO_LIMIT)
        .await
        .unwrap();
    let other512 = Digest::of(DigestAlgorithm::Sha512, &other);
    assert_eq!(
        b.store.upload_finish(session, &other512).await.unwrap(),
        MIB as u64
    );
    assert!(read_all(&b.store, &other512, None).await.unwrap().1 == other);
    assert_no_sessions(&b.store).await;
}

async fn upload_session_in_chunks(b: Backend) {
    let bytes = data(11 * MIB + 3, 8);
    let digest = Digest::sha256_of(&bytes);
    let session = Uuid::new_v4();
    assert_eq!(b.store.upload_size(session).await.unwrap(), None);
    b.store.upload_start(session).await.unwrap();
    assert_eq!(b.store.upload_size(session).await.unwrap(), Some(0));
    // Chunks of the sizes clients use, one of them larger than a multipart part.
    let mut offset = 0;
    for len in [MIB, 3, 9 * MIB, MIB] {
        let chunk = &bytes[offset..offset + len];
        let size = b
            .store
            .upload_append(session, offset as u64, body(chunk), NO_LIMIT)
            .await
            .unwrap();
        offset += len;
        assert_eq!(size, offset as u64);
        assert_eq!(b.store.upload_size(session).await.unwrap(), Some(size));
    }
    // An empty append changes nothing.
    let size = b
        .store
        .upload_append(session, offset as u64, body(b""), NO_LIMIT)
        .await
        .unwrap();
    assert_eq!(size, offset as u64);
    assert!(
        b.store.size(&digest).await.unwrap().is_none(),
        "visible before finishing"
    );
    assert_eq!(
        b.store.upload_finish(session, &digest).await.unwrap(),
        bytes.len() as u64
    );
    assert!(read_all(&b.store, &digest, None).await.unwrap().1 == bytes);

    // The session is gone.
    assert_eq!(b.store.upload_size(session).await.unwrap(), None);
    let err = b
        .store
        .upload_append(session, bytes.len() as u64, body(b"x"), NO_LIMIT)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BlobError::UnknownSession(s) if s == session),
        "{err:?}"
    );
    let err = b.store.upload_finish(session, &digest).await.unwrap_err();
    assert!(matches!(err, BlobError::UnknownSession(_)), "{err:?}");
    assert_no_sessions(&b.store).await;

    // A single-chunk session (the common push) of a blob that is already stored.
    let session = Uuid::new_v4();
    b.store.upload_start(session).await.unwrap();
    b.store
        .upload_append(session, 0, body(&bytes), NO_LIMIT)
        .await
        .unwrap();
    assert_eq!(
        b.store.upload_finish(session, &digest).await.unwrap(),
        bytes.len() as u64
    );
    assert_eq!(b.store.list().await.unwrap().len(), 1);
}

async fn upload_offset_mismatch_and_failed_appends(b: Backend) {
    let bytes = data(2 * MIB, 9);
    let session = Uuid::new_v4();
    b.store.upload_start(session).await.unwrap();
    b.store
        .upload_append(session, 0, body(&bytes[..MIB]), NO_LIMIT)
        .await
        .unwrap();
    for wrong in [0, MIB as u64 - 1, MIB as u64 + 1] {
        let err = b
            .store
            .upload_append(session, wrong, body(b"x"), NO_LIMIT)
            .await
            .unwrap_err();
        match err {
            BlobError::OffsetMismatch { expected, actual } => {
                assert_eq!((expected, actual), (MIB as u64, wrong));
            }
            other => panic!("{other:?}"),
        }
    }
    // Over the session limit: refused, nothing appended.
    let err = b
        .store
        .upload_append(session, MIB as u64, body(&bytes[MIB..]), 2 * MIB as u64 - 1)
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::TooLarge { .. }), "{err:?}");
    assert_eq!(
        b.store.upload_size(session).await.unwrap(),
        Some(MIB as u64)
    );
    // A body that fails half way: nothing appended either.
    let err = b
        .store
        .upload_append(
            session,
            MIB as u64,
            failing_body(&bytes[MIB..MIB + 1000]),
            NO_LIMIT,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Body(_)), "{err:?}");
    assert_eq!(
        b.store.upload_size(session).await.unwrap(),
        Some(MIB as u64)
    );
    // And the session goes on.
    let size = b
        .store
        .upload_append(session, MIB as u64, body(&bytes[MIB..]), 2 * MIB as u64)
        .await
        .unwrap();
    assert_eq!(size, 2 * MIB as u64);
    let digest = Digest::sha256_of(&bytes);
    assert_eq!(b.store.upload_finish(session, &digest).await.unwrap(), size);
    assert!(read_all(&b.store, &digest, None).await.unwrap().1 == bytes);
}

async fn upload_finish_wrong_digest(b: Backend) {
    for chunks in [1usize, 2] {
        let bytes = data(3 * MIB, 10 + chunks as u64);
        let session = Uuid::new_v4();
        b.store.upload_start(session).await.unwrap();
        let half = bytes.len() / chunks;
        let mut offset = 0;
        while offset < bytes.len() {
            let end = (offset + half).min(bytes.len());
            b.store
                .upload_append(session, offset as u64, body(&bytes[offset..end]), NO_LIMIT)
                .await
                .unwrap();
            offset = end;
        }
        let claimed = Digest::sha256_of(b"not the data");
        let err = b.store.upload_finish(session, &claimed).await.unwrap_err();
        match &err {
            BlobError::DigestMismatch { expected, actual } => {
                assert_eq!(expected, &claimed);
                assert_eq!(actual, &Digest::sha256_of(&bytes));
            }
            other => panic!("{other:?}"),
        }
        assert_absent(&b.store, &claimed).await;
        assert_absent(&b.store, &Digest::sha256_of(&bytes)).await;
        // The session is gone, also after a mismatch.
        assert_eq!(b.store.upload_size(session).await.unwrap(), None);
    }
    // Also when the digest is checked by re-reading (a restarted server).
    let bytes = data(MIB, 13);
    let session = Uuid::new_v4();
    b.store.upload_start(session).await.unwrap();
    b.store
        .upload_append(session, 0, body(&bytes), NO_LIMIT)
        .await
        .unwrap();
    let restarted = b.reopen().await;
    let err = restarted
        .upload_finish(session, &Digest::sha256_of(b"no"))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err:?}");
    assert_eq!(restarted.upload_size(session).await.unwrap(), None);
    assert_eq!(b.store.list().await.unwrap(), vec![]);
    assert_no_sessions(&b.store).await;
}

async fn upload_cancel(b: Backend) {
    let bytes = data(MIB, 14);
    let session = Uuid::new_v4();
    b.store.upload_start(session).await.unwrap();
    b.store
        .upload_append(session, 0, body(&bytes), NO_LIMIT)
        .await
        .unwrap();
    b.store.upload_cancel(session).await.unwrap();
    assert_eq!(b.store.upload_size(session).await.unwrap(), None);
    let err = b
        .store
        .upload_append(session, MIB as u64, body(b"x"), NO_LIMIT)
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::UnknownSession(_)), "{err:?}");
    let err = b
        .store
        .upload_finish(session, &Digest::sha256_of(&bytes))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::UnknownSession(_)), "{err:?}");
    // Cancelling is idempotent, for sweepers.
    b.store.upload_cancel(session).await.unwrap();
    b.store.upload_cancel(Uuid::new_v4()).await.unwrap();
    assert_absent(&b.store, &Digest::sha256_of(&bytes)).await;
    assert_no_sessions(&b.store).await;
}

async fn upload_survives_restart(b: Backend) {
    let bytes = data(6 * MIB + 5, 15);
    let digest = Digest::sha256_of(&bytes);
    let session = Uuid::new_v4();
    b.store.upload_start(session).await.unwrap();
    b.store
        .upload_append(session, 0, body(&bytes[..2 * MIB]), NO_LIMIT)
        .await
        .unwrap();
    let Backend {
        store,
        config,
        s3_settings,
        dir,
    } = b;
    drop(store);

    let restarted = open(&config, &s3_settings).await.unwrap();
    assert_eq!(
        restarted.upload_size(session).await.unwrap(),
        Some(2 * MIB as u64)
    );
    let size = restarted
        .upload_append(session, 2 * MIB as u64, body(&bytes[2 * MIB..]), NO_LIMIT)
        .await
        .unwrap();
    assert_eq!(size, bytes.len() as u64);
    // This instance never saw the first chunk: finishing re-reads the data.
    assert_eq!(
        restarted.upload_finish(session, &digest).await.unwrap(),
        size
    );
    assert!(read_all(&restarted, &digest, None).await.unwrap().1 == bytes);
    drop(dir);
}

async fn concurrent_appends_are_serialized(b: Backend) {
    let session = Uuid::new_v4();
    b.store.upload_start(session).await.unwrap();
    let first = data(MIB, 16);
    let second = data(MIB, 17);
    // The first body says when it is first read (the append holds the session then)
    // and then waits, so the second append arrives while the first is in flight.
    let (started, first_read) = tokio::sync::oneshot::channel::<()>();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let slow = {
        let (head, tail) = (
            Bytes::copy_from_slice(&first[..1000]),
            Bytes::copy_from_slice(&first[1000..]),
        );
        stream::once(async move {
            started.send(()).ok();
            Ok::<_, io::Error>(head)
        })
        .chain(stream::once(async move {
            released.await.ok();
            Ok(tail)
        }))
    };
    let store = b.store.clone();
    let first_append =
        tokio::spawn(async move { store.upload_append(session, 0, slow, NO_LIMIT).await });
    first_read.await.unwrap();
    let store = b.store.clone();
    let second_append = tokio::spawn(async move {
        store
            .upload_append(session, 0, body(&second), NO_LIMIT)
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second_append.is_finished(),
        "the second append must wait for the first"
    );
    release.send(()).unwrap();
    assert_eq!(first_append.await.unwrap().unwrap(), MIB as u64);
    match second_append.await.unwrap() {
        Err(BlobError::OffsetMismatch { expected, actual }) => {
            assert_eq!((expected, actual), (MIB as u64, 0))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        b.store
            .upload_finish(session, &Digest::sha256_of(&first))
            .await
            .unwrap(),
        MIB as u64
    );
}

async fn stale_uploads(b: Backend) {
    let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
    b.store.upload_start(one).await.unwrap();
    b.store.upload_start(two).await.unwrap();
    b.store
        .upload_append(two, 0, body(b"abc"), NO_LIMIT)
        .await
        .unwrap();
    assert_eq!(
        b.store
            .stale_uploads(Duration::from_secs(3600))
            .await
            .unwrap(),
        Vec::<Uuid>::new()
    );
    let mut both = vec![one, two];
    both.sort();
    assert_eq!(b.store.stale_uploads(Duration::ZERO).await.unwrap(), both);
    // A restarted server sees them too.
    assert_eq!(
        b.reopen()
            .await
            .stale_uploads(Duration::ZERO)
            .await
            .unwrap(),
        both
    );

    if let Some(dir) = b.local_dir() {
        // Local files can be aged: only the idle session is stale.
        let data = dir.join("uploads").join(one.to_string()).join("data");
        let file = std::fs::File::options().write(true).open(data).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        assert_eq!(
            b.store
                .stale_uploads(Duration::from_secs(3600))
                .await
                .unwrap(),
            vec![one]
        );
    }
    for session in b.store.stale_uploads(Duration::ZERO).await.unwrap() {
        b.store.upload_cancel(session).await.unwrap();
    }
    assert_no_sessions(&b.store).await;
}

async fn list_and_delete(b: Backend) {
    assert_eq!(b.store.list().await.unwrap(), vec![]);
    let mut expected = Vec::new();
    for (i, len) in [10, MIB, 0].into_iter().enumerate() {
        let bytes = data(len, 20 + i as u64);
        let digest = Digest::sha256_of(&bytes);
        b.store.put(&digest, body(&bytes), NO_LIMIT).await.unwrap();
        expected.push((digest, len as u64));
    }
    // A session's data is not a blob.
    let session = Uuid::new_v4();
    b.store.upload_start(session).await.unwrap();
    b.store
        .upload_append(session, 0, body(b"pending"), NO_LIMIT)
        .await
        .unwrap();
    expected.sort();
    assert_eq!(b.store.list().await.unwrap(), expected);
    assert_eq!(b.reopen().await.list().await.unwrap(), expected);
    let (gone, _) = expected.remove(1);
    assert!(b.store.delete(&gone).await.unwrap());
    assert_eq!(b.store.list().await.unwrap(), expected);
}

/// A writer killed half way leaves only session data: never a blob, and swept as a
/// stale session.
#[tokio::test]
async fn local_crash_leftovers_are_invisible_and_swept() {
    let b = Backend::local().await;
    let dir = b.local_dir().unwrap();
    let bytes = data(MIB, 30);
    let digest = Digest::sha256_of(&bytes);
    // What a killed `put` or append leaves: a session directory with part of the data.
    let killed = Uuid::new_v4();
    let session_dir = dir.join("uploads").join(killed.to_string());
    std::fs::create_dir_all(&session_dir).unwrap();
    std::fs::write(session_dir.join("data"), &bytes[..MIB / 2]).unwrap();
    // And one killed right after creating its directory.
    let empty = Uuid::new_v4();
    std::fs::create_dir_all(dir.join("uploads").join(empty.to_string())).unwrap();
    // And a stray file among the blobs, e.g. an operator's backup.
    let fanout = dir.join("blobs/sha256").join(&digest.hex()[..2]);
    std::fs::create_dir_all(&fanout).unwrap();
    std::fs::write(fanout.join(format!("{}.tmp", digest.hex())), &bytes).unwrap();

    for store in [b.store.clone(), b.reopen().await] {
        assert_absent(&store, &digest).await;
        assert_eq!(store.list().await.unwrap(), vec![]);
    }
    let mut stale = vec![killed, empty];
    stale.sort();
    assert_eq!(b.store.stale_uploads(Duration::ZERO).await.unwrap(), stale);
    // The interrupted session is resumable as received so far (the digest check at the
    // end decides), or swept.
    assert_eq!(
        b.store.upload_size(killed).await.unwrap(),
        Some(MIB as u64 / 2)
    );
    for session in stale {
        b.store.upload_cancel(session).await.unwrap();
    }
    assert_no_sessions(&b.store).await;
    assert_eq!(std::fs::read_dir(dir.join("uploads")).unwrap().count(), 0);
}

/// A request dropped half way (the client's connection task ended) leaves the session
/// as it was before the append, and a dropped `put` leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_dropped_requests_roll_back() {
    let b = Backend::local().await;
    let bytes = data(4 * MIB, 31);
    let session = Uuid::new_v4();
    b.store.upload_start(session).await.unwrap();
    b.store
        .upload_append(session, 0, body(&bytes[..MIB]), NO_LIMIT)
        .await
        .unwrap();

    let stalled = || body(&bytes[MIB..3 * MIB]).chain(stream::pending());
    let append = b
        .store
        .upload_append(session, MIB as u64, Box::pin(stalled()), NO_LIMIT);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), append)
            .await
            .is_err()
    );
    assert_eq!(
        b.store.upload_size(session).await.unwrap(),
        Some(MIB as u64)
    );
    let size = b
        .store
        .upload_append(session, MIB as u64, body(&bytes[MIB..]), NO_LIMIT)
        .await
        .unwrap();
    assert_eq!(size, bytes.len() as u64);
    let digest = Digest::sha256_of(&bytes);
    assert_eq!(b.store.upload_finish(session, &digest).await.unwrap(), size);

    let other = data(3 * MIB, 32);
    let other = Digest::sha256_of(&other);
    let put = b.store.put(&other, Box::pin(stalled()), NO_LIMIT);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), put)
            .await
            .is_err()
    );
    // The temporary session is removed by a blocking task; give it a moment.
    for _ in 0..50 {
        if b.store
            .stale_uploads(Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_no_sessions(&b.store).await;
    assert_eq!(
        b.store.list().await.unwrap(),
        vec![(digest, bytes.len() as u64)]
    );
}

#[tokio::test]
async fn s3_open_fails_for_a_missing_bucket() {
    let Some(b) = Backend::s3("s3_open_fails_for_a_missing_bucket").await else {
        return;
    };
    let config = BlobConfig::ObjectStore {
        url: format!("s3://bencher-missing-{}", Uuid::new_v4().simple()),
    };
    let err = open(&config, &b.s3_settings).await.unwrap_err();
    assert!(matches!(err, BlobError::ObjectStore(_)), "{err:?}");
    assert!(
        b.store.describe().contains("registry/blobs"),
        "{}",
        b.store.describe()
    );
    assert!(
        !b.store.describe().contains("bencher-secret"),
        "{}",
        b.store.describe()
    );
}
