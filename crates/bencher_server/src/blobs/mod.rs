//! Blob storage for the registry: content-addressed blobs and resumable upload sessions,
//! on the local filesystem (default) or on S3-compatible object storage, behind one
//! interface. All blob IO of the server happens here, in `local` and `object`.
//!
//! Invariants, for both backends:
//! - Nothing is ever visible at a content address unless its bytes were verified against
//!   that digest. Data is written somewhere else first (an upload session, or a multipart
//!   upload that is invisible until completed) and published in one atomic step, so a
//!   crash or a failed request leaves no partial blob behind.
//! - Bodies stream: memory per request is bounded by a few buffers, never the blob size.
//! - Upload sessions live in storage, so a restarted server resumes them. The hashing
//!   state of a session is cached in memory only to spare re-reading the data at the
//!   end; when it is missing (after a restart) or out of date, finishing re-hashes.
//! - A session is used by one request at a time: appends and finishing take a
//!   per-session lock, so a second append at the same offset sees the first one's
//!   result and gets `OffsetMismatch`.
//!
//! Layout (relative to the directory, or to the bucket prefix):
//!
//! | what | local | object store |
//! | --- | --- | --- |
//! | blob | `blobs/<alg>/<hex[..2]>/<hex>` | `blobs/<alg>/<hex>` |
//! | upload session | `uploads/<uuid>/data`, appended to | `uploads/<uuid>/session` (marker) and `uploads/<uuid>/chunk-<offset, 20 digits>`, one object per append |
//!
//! A local `put` streams into a session directory of its own too, so anything a killed
//! process leaves behind is a session that `stale_uploads` reports for sweeping.

mod local;
mod object;
mod sessions;

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bencher_oci::digest::{Digest, DigestAlgorithm, DigestHasher};
use bytes::Bytes;
use futures::Stream;
use futures::StreamExt;
use futures::stream::BoxStream;
use uuid::Uuid;

use local::LocalBackend;
use object::ObjectBackend;
use sessions::Sessions;

/// Where blobs are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobConfig {
    /// A directory on the local filesystem.
    Local { dir: PathBuf },
    /// An S3-compatible bucket, `s3://bucket/prefix`. Credentials, endpoint and region
    /// come from the standard `AWS_*` environment variables.
    ObjectStore { url: String },
}

/// A `--blob-store` value that is neither an `s3://` URL nor an absolute path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported blob store `{0}`: expected s3://BUCKET[/PREFIX], file:///PATH or an absolute path"
)]
pub struct BlobConfigError(String);

impl BlobConfig {
    /// Reads a `--blob-store` value: `s3://bucket/prefix` (or `s3a://`), `file:///path`,
    /// or an absolute path.
    pub fn parse(value: &str) -> Result<Self, BlobConfigError> {
        let unsupported = || BlobConfigError(redact_userinfo(value));
        if let Some(rest) = value
            .strip_prefix("s3://")
            .or_else(|| value.strip_prefix("s3a://"))
        {
            let bucket = rest.split('/').next().unwrap_or_default();
            if bucket.is_empty() || bucket.contains('@') {
                return Err(unsupported());
            }
            return Ok(Self::ObjectStore {
                url: value.to_owned(),
            });
        }
        let path = value.strip_prefix("file://").unwrap_or(value);
        if Path::new(path).is_absolute() {
            return Ok(Self::Local { dir: path.into() });
        }
        Err(unsupported())
    }
}

/// Blob storage; cheap to clone, all clones share one store and one session table.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    sessions: Sessions,
}

enum Backend {
    Local(LocalBackend),
    Object(ObjectBackend),
}

/// A blob (or a range of it) being read.
pub struct BlobStream {
    /// The size of the whole blob, also when a range was asked for.
    pub size: u64,
    pub stream: BoxStream<'static, Result<Bytes, BlobError>>,
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob not found")]
    NotFound,
    #[error("unknown upload session {0}")]
    UnknownSession(Uuid),
    #[error("content digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob exceeds the size limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("upload chunk starts at byte {actual}, but the session holds {expected} bytes")]
    OffsetMismatch { expected: u64, actual: u64 },
    #[error("byte range {start}-{end} is outside the blob of {size} bytes")]
    InvalidRange { start: u64, end: u64, size: u64 },
    #[error("upload session {session} is inconsistent: {reason}")]
    InconsistentSession { session: Uuid, reason: String },
    #[error("invalid blob store configuration: {0}")]
    Config(String),
    #[error("the request body failed")]
    Body(#[source] Box<dyn StdError + Send + Sync>),
    #[error("blob storage I/O failed")]
    Io(#[source] io::Error),
    #[error("object storage request failed")]
    ObjectStore(#[source] object_store::Error),
}

impl BlobStore {
    /// Opens the store: creates the directories, or checks that the bucket answers.
    pub async fn open(config: &BlobConfig) -> Result<Self, BlobError> {
        Self::open_with_s3_settings(config, &[]).await
    }

    /// `open`, with S3 settings that take precedence over the `AWS_*` environment, as
    /// `(key, value)` pairs named like the variables in lowercase (`aws_endpoint`,
    /// `aws_allow_http`, `aws_access_key_id`, …): for tests and embedders that cannot
    /// change the process environment. Ignored for a local store.
    pub async fn open_with_s3_settings(
        config: &BlobConfig,
        s3_settings: &[(&str, &str)],
    ) -> Result<Self, BlobError> {
        let backend = match config {
            BlobConfig::Local { dir } => Backend::Local(LocalBackend::open(dir).await?),
            BlobConfig::ObjectStore { url } => {
                Backend::Object(ObjectBackend::open(url, s3_settings).await?)
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                sessions: Sessions::default(),
            }),
        })
    }

    /// Where blobs go, for logs; never includes credentials.
    pub fn describe(&self) -> String {
        match &self.inner.backend {
            Backend::Local(local) => local.describe(),
            Backend::Object(object) => object.describe(),
        }
    }

    /// The size of a stored blob, `None` when it is not stored.
    pub async fn size(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        match &self.inner.backend {
            Backend::Local(local) => local.size(digest).await,
            Backend::Object(object) => object.size(digest).await,
        }
    }

    /// Reads a blob, or the inclusive byte range `(start, end)` of it (which the caller
    /// validated against its size; an out-of-range request is `InvalidRange`).
    pub async fn get(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BlobStream>, BlobError> {
        match &self.inner.backend {
            Backend::Local(local) => local.get(digest, range).await,
            Backend::Object(object) => object.get(digest, range).await,
        }
    }

    /// Streams `body` to a temporary location, verifies digest and size (more than
    /// `max_size` bytes is `TooLarge` as soon as they arrive), then makes it visible at
    /// its content address atomically. A blob already stored is kept (the body is still
    /// verified). Returns the size.
    pub async fn put<S, E>(
        &self,
        expected: &Digest,
        body: S,
        max_size: u64,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        let mut intake = Intake::new(
            body,
            Some(DigestHasher::new(expected.algorithm())),
            0,
            max_size,
        );
        if let Some(size) = self.size(expected).await? {
            // Content-addressed: the stored blob is this content if the body hashes to
            // its digest, so only check the body.
            while intake.next().await?.is_some() {}
            intake.verify(expected)?;
            return Ok(size);
        }
        match &self.inner.backend {
            Backend::Local(local) => local.put(expected, intake).await,
            Backend::Object(object) => object.put(expected, intake).await,
        }
    }

    /// Deletes a blob; `false` when it was not stored.
    pub async fn delete(&self, digest: &Digest) -> Result<bool, BlobError> {
        match &self.inner.backend {
            Backend::Local(local) => local.delete(digest).await,
            Backend::Object(object) => object.delete(digest).await,
        }
    }

    /// Every stored blob with its size, sorted by digest, for garbage collection.
    pub async fn list(&self) -> Result<Vec<(Digest, u64)>, BlobError> {
        let mut blobs = match &self.inner.backend {
            Backend::Local(local) => local.list().await?,
            Backend::Object(object) => object.list().await?,
        };
        blobs.sort();
        Ok(blobs)
    }

    /// Starts an empty upload session.
    pub async fn upload_start(&self, session: Uuid) -> Result<(), BlobError> {
        let mut lock = self.inner.sessions.lock(session).await;
        match &self.inner.backend {
            Backend::Local(local) => local.upload_start(session).await?,
            Backend::Object(object) => object.upload_start(session).await?,
        }
        lock.set_hasher(Some(DigestHasher::new(DigestAlgorithm::Sha256)));
        Ok(())
    }

    /// How many bytes a session holds; `None` for an unknown session. While an append
    /// is in flight on the local store, this may count part of its bytes already.
    pub async fn upload_size(&self, session: Uuid) -> Result<Option<u64>, BlobError> {
        match &self.inner.backend {
            Backend::Local(local) => local.upload_size(session).await,
            Backend::Object(object) => object.upload_size(session).await,
        }
    }

    /// Appends a chunk that must start at `offset` (the session's current size, else
    /// `OffsetMismatch`); the session may hold at most `max_size` bytes. All or nothing:
    /// a failed append leaves the session as it was. Returns the new size.
    pub async fn upload_append<S, E>(
        &self,
        session: Uuid,
        offset: u64,
        body: S,
        max_size: u64,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        let mut lock = self.inner.sessions.lock(session).await;
        let current = match self.upload_size(session).await? {
            Some(current) => current,
            None => {
                lock.forget();
                return Err(BlobError::UnknownSession(session));
            }
        };
        if current != offset {
            return Err(BlobError::OffsetMismatch {
                expected: current,
                actual: offset,
            });
        }
        // Keep hashing only if the cached state covers exactly the stored bytes; a copy
        // is updated, so a failed append leaves the cache matching the storage.
        let hasher = lock.hasher_at(current);
        let intake = Intake::new(body, hasher, current, max_size);
        let (size, hasher) = match &self.inner.backend {
            Backend::Local(local) => local.upload_append(session, intake).await?,
            Backend::Object(object) => object.upload_append(session, intake).await?,
        };
        lock.set_hasher(hasher);
        Ok(size)
    }

    /// Verifies the session's data against `expected` and publishes it at its content
    /// address (atomically; a blob already stored is kept). The session is gone
    /// afterwards, also after a `DigestMismatch`. Returns the size.
    pub async fn upload_finish(&self, session: Uuid, expected: &Digest) -> Result<u64, BlobError> {
        let lock = self.inner.sessions.lock(session).await;
        let Some(size) = self.upload_size(session).await? else {
            lock.forget();
            return Err(BlobError::UnknownSession(session));
        };
        let cached = lock
            .hasher_at(size)
            .filter(|h| h.algorithm() == expected.algorithm())
            .map(DigestHasher::finish);
        let result = match &self.inner.backend {
            Backend::Local(local) => local.upload_finish(session, expected, cached).await,
            Backend::Object(object) => object.upload_finish(session, expected, cached).await,
        };
        // The backend removed the session unless storage failed; a retry after a
        // storage failure re-hashes, which is always correct.
        lock.forget();
        result
    }

    /// Deletes a session and its data. Idempotent: cancelling an unknown session is not
    /// an error, so a sweeper can cancel whatever it finds. Does not wait for an append
    /// in flight, so the sweeper never hangs on a stalled client; such an append fails or
    /// leaves data that a later sweep removes.
    pub async fn upload_cancel(&self, session: Uuid) -> Result<(), BlobError> {
        self.inner.sessions.remove(session);
        match &self.inner.backend {
            Backend::Local(local) => local.upload_cancel(session).await,
            Backend::Object(object) => object.upload_cancel(session).await,
        }
    }

    /// Sessions whose last write is at least `age` old, for the stale-session sweeper.
    /// Includes what interrupted `put`s left behind. Storage timestamps are wall-clock
    /// time, so this compares with the system clock.
    pub async fn stale_uploads(&self, age: Duration) -> Result<Vec<Uuid>, BlobError> {
        let mut stale = match &self.inner.backend {
            Backend::Local(local) => local.stale_uploads(age).await?,
            Backend::Object(object) => object.stale_uploads(age).await?,
        };
        stale.sort();
        Ok(stale)
    }
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStore")
            .field("backend", &self.describe())
            .finish_non_exhaustive()
    }
}

/// A client's body as it streams in: counted against the size limit and hashed on the
/// way, so nothing reads the data twice.
struct Intake<S> {
    /// Pinned here so callers may pass any stream, `async` blocks included.
    body: Pin<Box<S>>,
    hasher: Option<DigestHasher>,
    /// Bytes in the session before this body, plus the body's bytes so far.
    total: u64,
    limit: u64,
}

impl<S, E> Intake<S>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    fn new(body: S, hasher: Option<DigestHasher>, start: u64, limit: u64) -> Self {
        Self {
            body: Box::pin(body),
            hasher,
            total: start,
            limit,
        }
    }

    /// The next non-empty chunk, `None` at the end of the body.
    async fn next(&mut self) -> Result<Option<Bytes>, BlobError> {
        loop {
            let chunk = match self.body.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(BlobError::Body(e.into())),
                Some(Ok(chunk)) => chunk,
            };
            if chunk.is_empty() {
                continue;
            }
            self.total = self.total.saturating_add(chunk.len() as u64);
            if self.total > self.limit {
                return Err(BlobError::TooLarge { limit: self.limit });
            }
            // SHA-256 runs at GB/s with SHA-NI; hashing a network-sized chunk inline
            // is cheaper than handing it to another thread.
            if let Some(hasher) = &mut self.hasher {
                hasher.update(&chunk);
            }
            return Ok(Some(chunk));
        }
    }

    fn total(&self) -> u64 {
        self.total
    }

    fn into_hasher(self) -> Option<DigestHasher> {
        self.hasher
    }

    /// Checks the whole body against `expected`; only for an intake that hashed from
    /// byte 0.
    fn verify(self, expected: &Digest) -> Result<(), BlobError> {
        let actual = self
            .hasher
            .map(DigestHasher::finish)
            .ok_or_else(|| BlobError::Io(io::Error::other("body was not hashed")))?;
        check_digest(expected, actual)
    }
}

/// The start and length of the inclusive `range` of a blob of `size` bytes (the whole
/// blob for `None`).
fn byte_range(range: Option<(u64, u64)>, size: u64) -> Result<(u64, u64), BlobError> {
    match range {
        None => Ok((0, size)),
        Some((start, end)) if start <= end && end < size => Ok((start, end - start + 1)),
        Some((start, end)) => Err(BlobError::InvalidRange { start, end, size }),
    }
}

fn check_digest(expected: &Digest, actual: Digest) -> Result<(), BlobError> {
    if &actual == expected {
        Ok(())
    } else {
        Err(BlobError::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }
}

/// Drops the `user:password@` part of a URL, so a value that carries credentials never
/// reaches an error message or a log line.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blob_store_values() {
        assert_eq!(
            BlobConfig::parse("s3://bucket/some/prefix"),
            Ok(BlobConfig::ObjectStore {
                url: "s3://bucket/some/prefix".into()
            })
        );
        assert!(matches!(
            BlobConfig::parse("s3a://bucket"),
            Ok(BlobConfig::ObjectStore { .. })
        ));
        assert_eq!(
            BlobConfig::parse("/srv/blobs"),
            Ok(BlobConfig::Local {
                dir: "/srv/blobs".into()
            })
        );
        assert_eq!(
            BlobConfig::parse("file:///srv/blobs"),
            Ok(BlobConfig::Local {
                dir: "/srv/blobs".into()
            })
        );
        for bad in ["s3://", "s3:///x", "gs://bucket", "relative/dir", ""] {
            assert!(BlobConfig::parse(bad).is_err(), "{bad}");
        }
        let err = BlobConfig::parse("https://key:secret@example.com/b").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let err = BlobConfig::parse("s3://key:secret@bucket/b").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn redacts_userinfo() {
        assert_eq!(redact_userinfo("s3://b/p"), "s3://b/p");
        assert_eq!(redact_userinfo("http://u:p@h:9/x@y"), "http://h:9/x@y");
        assert_eq!(redact_userinfo("no-scheme"), "no-scheme");
    }

    /// Handlers hold these futures across awaits, so they must be `Send`.
    #[allow(dead_code)]
    fn futures_are_send(store: &BlobStore, digest: &Digest, session: Uuid) {
        fn send<T: Send>(_: T) {}
        let body = || futures::stream::empty::<Result<Bytes, io::Error>>();
        send(store.put(digest, body(), 1));
        send(store.get(digest, None));
        send(store.size(digest));
        send(store.delete(digest));
        send(store.list());
        send(store.upload_start(session));
        send(store.upload_size(session));
        send(store.upload_append(session, 0, body(), 1));
        send(store.upload_append(session, 0, axum::body::Body::empty().into_data_stream(), 1));
        send(store.put(digest, axum::body::Body::empty().into_data_stream(), 1));
        send(store.put(
            digest,
            futures::stream::once(async { Ok::<_, io::Error>(Bytes::new()) }),
            1,
        ));
        send(store.upload_finish(session, digest));
        send(store.upload_cancel(session));
        send(store.stale_uploads(Duration::ZERO));
    }
}
