//! The S3-compatible object storage backend, through `object_store`. Its IO (HTTP
//! requests to the bucket) happens here.
//!
//! Object stores cannot append or rename atomically, so: a blob is written as a
//! multipart upload straight to its content address and completed only after the data
//! hashed to the digest (an incomplete multipart upload is never visible; an aborted one
//! is discarded). An upload session is a marker object plus one object per append,
//! named by its offset; finishing copies a single chunk server-side, or streams the
//! chunks through a multipart upload, verifying on the way.

use std::sync::Arc;
use std::time::Duration;

use bencher_oci::digest::{Digest, DigestHasher};
use bytes::Bytes;
use futures::Stream;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
};
use uuid::Uuid;

use super::{BlobError, BlobStream, Intake, byte_range, check_digest, redact_userinfo};

/// Multipart part size: S3 wants at least 5 MiB (but for the last part); 8 MiB parts
/// allow objects up to 80 GB within S3's 10,000 parts.
const PART_SIZE: usize = 8 << 20;
/// Parts uploaded concurrently per upload; with `PART_SIZE` this bounds the memory of
/// one upload to about 40 MiB.
const PARTS_IN_FLIGHT: usize = 4;
/// Largest object S3 copies in one request (CopyObject); larger single chunks are
/// streamed through a multipart upload instead.
const COPY_LIMIT: u64 = 5 << 30;

pub(super) struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    description: String,
}

fn store_error(e: object_store::Error) -> BlobError {
    BlobError::ObjectStore(e)
}

impl ObjectBackend {
    pub(super) async fn open(url: &str, settings: &[(&str, &str)]) -> Result<Self, BlobError> {
        let rest = url
            .strip_prefix("s3://")
            .or_else(|| url.strip_prefix("s3a://"))
            .ok_or_else(|| {
                BlobError::Config(format!(
                    "`{}` is not an s3://BUCKET[/PREFIX] URL",
                    redact_userinfo(url)
                ))
            })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        let mut builder = AmazonS3Builder::from_env().with_url(url);
        for (key, value) in settings {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|_| BlobError::Config(format!("unknown S3 setting `{key}`")))?;
            builder = builder.with_config(key, *value);
        }
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .map(|e| format!(" at {}", redact_userinfo(&e)))
            .unwrap_or_default();
        let s3 = builder.build().map_err(store_error)?;
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, Path::from(prefix)))
        };
        // Fails now, not at the first push, when the bucket is missing or unreachable,
        // or the credentials are refused.
        store
            .list_with_delimiter(Some(&Path::from("blobs")))
            .await
            .map_err(store_error)?;
        Ok(Self {
            store,
            description: format!("S3 bucket {bucket}, prefix `{prefix}`{endpoint}"),
        })
    }

    pub(super) fn describe(&self) -> String {
        self.description.clone()
    }

    fn blob_path(digest: &Digest) -> Path {
        Path::from(format!("blobs/{}/{}", digest.algorithm(), digest.hex()))
    }

    fn session_prefix(session: Uuid) -> Path {
        Path::from(format!("uploads/{session}"))
    }

    fn marker_path(session: Uuid) -> Path {
        Path::from(format!("uploads/{session}/session"))
    }

    /// Zero-padded so that chunk names sort by offset.
    fn chunk_path(session: Uuid, offset: u64) -> Path {
        Path::from(format!("uploads/{session}/chunk-{offset:020}"))
    }

    async fn head(&self, path: &Path) -> Result<Option<ObjectMeta>, BlobError> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    pub(super) async fn size(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        Ok(self.head(&Self::blob_path(digest)).await?.map(|m| m.size))
    }

    pub(super) async fn get(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BlobStream>, BlobError> {
        let path = Self::blob_path(digest);
        // Check the range first: S3 answers some invalid ranges with the whole object.
        let size = match range {
            Some(_) => match self.head(&path).await? {
                Some(meta) => Some(meta.size),
                None => return Ok(None),
            },
            None => None,
        };
        let options = match (range, size) {
            (Some(range), Some(size)) => {
                let (start, len) = byte_range(Some(range), size)?;
                GetOptions::new().with_range(Some(start..start + len))
            }
            _ => GetOptions::new(),
        };
        let result = match self.store.get_opts(&path, options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error(e)),
        };
        Ok(Some(BlobStream {
            size: result.meta.size,
            stream: result.into_stream().map_err(store_error).boxed(),
        }))
    }

    pub(super) async fn put<S, E>(
        &self,
        expected: &Digest,
        mut intake: Intake<S>,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut sink = ObjectSink::new(self.store.clone(), Self::blob_path(expected));
        let received = async {
            while let Some(chunk) = intake.next().await? {
                sink.push(chunk).await?;
            }
            Ok(())
        }
        .await;
        let size = intake.total();
        match received.and_then(|()| intake.verify(expected)) {
            Ok(()) => {
                sink.finish().await?;
                Ok(size)
            }
            Err(e) => {
                sink.abort().await;
                Err(e)
            }
        }
    }

    pub(super) async fn delete(&self, digest: &Digest) -> Result<bool, BlobError> {
        let path = Self::blob_path(digest);
        // S3 deletes answer the same whether or not the object existed.
        if self.head(&path).await?.is_none() {
            return Ok(false);
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(store_error(e)),
        }
    }

    pub(super) async fn list(&self) -> Result<Vec<(Digest, u64)>, BlobError> {
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&Path::from("blobs")))
            .try_collect()
            .await
            .map_err(store_error)?;
        Ok(metas
            .into_iter()
            .filter_map(|meta| {
                let parts: Vec<_> = meta.location.parts().collect();
                match parts.as_slice() {
                    [_, algorithm, hex] => {
                        let digest = format!("{}:{}", algorithm.as_ref(), hex.as_ref())
                            .parse::<Digest>()
                            .ok()?;
                        Some((digest, meta.size))
                    }
                    _ => None,
                }
            })
            .collect())
    }

    pub(super) async fn upload_start(&self, session: Uuid) -> Result<(), BlobError> {
        self.store
            .put(&Self::marker_path(session), PutPayload::default())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// The session's objects; `None` without its marker (unknown, or cancelled while an
    /// append was in flight, leaving an orphan chunk for the sweeper).
    async fn session(&self, session: Uuid) -> Result<Option<Session>, BlobError> {
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&Self::session_prefix(session)))
            .try_collect()
            .await
            .map_err(store_error)?;
        let mut marker = false;
        let mut chunks = Vec::new();
        let mut all = Vec::with_capacity(metas.len());
        for meta in metas {
            match meta.location.filename() {
                Some("session") => marker = true,
                Some(name) => {
                    if let Some(offset) = name
                        .strip_prefix("chunk-")
                        .and_then(|o| o.parse::<u64>().ok())
                    {
                        chunks.push((offset, meta.clone()));
                    }
                }
                None => {}
            }
            all.push(meta.location);
        }
        if !marker {
            return Ok(None);
        }
        chunks.sort_by_key(|(offset, _)| *offset);
        // Every append writes one object at the size before it, so the chunks tile the
        // data exactly; anything else was written by something other than this store.
        let mut size = 0u64;
        for (offset, meta) in &chunks {
            if *offset != size {
                return Err(BlobError::InconsistentSession {
                    session,
                    reason: format!("chunk at byte {offset}, expected one at byte {size}"),
                });
            }
            size += meta.size;
        }
        Ok(Some(Session {
            size,
            chunks: chunks.into_iter().map(|(_, meta)| meta).collect(),
            all,
        }))
    }

    pub(super) async fn upload_size(&self, session: Uuid) -> Result<Option<u64>, BlobError> {
        Ok(self.session(session).await?.map(|s| s.size))
    }

    pub(super) async fn upload_append<S, E>(
        &self,
        session: Uuid,
        mut intake: Intake<S>,
    ) -> Result<(u64, Option<DigestHasher>), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let start = intake.total();
        let mut sink = ObjectSink::new(self.store.clone(), Self::chunk_path(session, start));
        let received = async {
            while let Some(chunk) = intake.next().await? {
                sink.push(chunk).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = received {
            sink.abort().await;
            return Err(e);
        }
        // An empty chunk changes nothing; writing an object for it would only leave a
        // zero-length chunk that the next append overwrites.
        if intake.total() > start {
            sink.finish().await?;
        }
        Ok((intake.total(), intake.into_hasher()))
    }

    /// Verifies and publishes the session's data. The session is removed after success
    /// and after a mismatch; after a storage failure it stays, so a retry can succeed.
    pub(super) async fn upload_finish(
        &self,
        session: Uuid,
        expected: &Digest,
        cached: Option<Digest>,
    ) -> Result<u64, BlobError> {
        let objects = self
            .session(session)
            .await?
            .ok_or(BlobError::UnknownSession(session))?;
        let outcome = self.publish_session(&objects, expected, cached).await;
        if matches!(outcome, Ok(()) | Err(BlobError::DigestMismatch { .. })) {
            self.delete_objects(objects.all).await?;
        }
        outcome.map(|()| objects.size)
    }

    async fn publish_session(
        &self,
        objects: &Session,
        expected: &Digest,
        cached: Option<Digest>,
    ) -> Result<(), BlobError> {
        let verified = cached.is_some();
        if let Some(actual) = cached {
            check_digest(expected, actual)?;
        }
        let dest = Self::blob_path(expected);
        if self.head(&dest).await?.is_some() {
            // Already stored: keep it, but still never accept data that does not match.
            if !verified {
                check_digest(expected, self.hash_chunks(&objects.chunks, expected).await?)?;
            }
            return Ok(());
        }
        match objects.chunks.as_slice() {
            [] => {
                check_digest(expected, Digest::of(expected.algorithm(), b""))?;
                self.store
                    .put(&dest, PutPayload::default())
                    .await
                    .map_err(store_error)?;
            }
            // One chunk (a monolithic or single-PATCH push, the common case): a
            // server-side copy moves no data through this process.
            [chunk] if chunk.size <= COPY_LIMIT => {
                if !verified {
                    check_digest(expected, self.hash_chunks(&objects.chunks, expected).await?)?;
                }
                self.store
                    .copy(&chunk.location, &dest)
                    .await
                    .map_err(store_error)?;
            }
            chunks => self.concatenate(chunks, expected, dest).await?,
        }
        Ok(())
    }

    /// Hashes the chunks as they stream from the store.
    async fn hash_chunks(
        &self,
        chunks: &[ObjectMeta],
        expected: &Digest,
    ) -> Result<Digest, BlobError> {
        let mut hasher = DigestHasher::new(expected.algorithm());
        for chunk in chunks {
            let mut data = self
                .store
                .get(&chunk.location)
                .await
                .map_err(store_error)?
                .into_stream();
            while let Some(bytes) = data.try_next().await.map_err(store_error)? {
                hasher.update(&bytes);
            }
        }
        Ok(hasher.finish())
    }

    /// Streams the chunks in order into one multipart upload at `dest`, hashing on the
    /// way, and completes it only if the digest matches.
    async fn concatenate(
        &self,
        chunks: &[ObjectMeta],
        expected: &Digest,
        dest: Path,
    ) -> Result<(), BlobError> {
        let mut sink = ObjectSink::new(self.store.clone(), dest);
        let mut hasher = DigestHasher::new(expected.algorithm());
        let copied = async {
            for chunk in chunks {
                let mut data = self
                    .store
                    .get(&chunk.location)
                    .await
                    .map_err(store_error)?
                    .into_stream();
                while let Some(bytes) = data.try_next().await.map_err(store_error)? {
                    hasher.update(&bytes);
                    sink.push(bytes).await?;
                }
            }
            Ok(())
        }
        .await;
        match copied.and_then(|()| check_digest(expected, hasher.finish())) {
            Ok(()) => sink.finish().await,
            Err(e) => {
                sink.abort().await;
                Err(e)
            }
        }
    }

    pub(super) async fn upload_cancel(&self, session: Uuid) -> Result<(), BlobError> {
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&Self::session_prefix(session)))
            .try_collect()
            .await
            .map_err(store_error)?;
        self.delete_objects(metas.into_iter().map(|m| m.location).collect())
            .await
    }

    pub(super) async fn stale_uploads(&self, age: Duration) -> Result<Vec<Uuid>, BlobError> {
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&Path::from("uploads")))
            .try_collect()
            .await
            .map_err(store_error)?;
        let mut last_write = std::collections::HashMap::new();
        for meta in metas {
            let Some(session) = meta
                .location
                .parts()
                .nth(1)
                .and_then(|p| p.as_ref().parse::<Uuid>().ok())
            else {
                continue;
            };
            let last = last_write.entry(session).or_insert(meta.last_modified);
            *last = (*last).max(meta.last_modified);
        }
        // An age beyond chrono's range: nothing is that old.
        let Ok(age) = chrono::Duration::from_std(age) else {
            return Ok(Vec::new());
        };
        let Some(cutoff) = chrono::Utc::now().checked_sub_signed(age) else {
            return Ok(Vec::new());
        };
        Ok(last_write
            .into_iter()
            .filter(|(_, last)| *last <= cutoff)
            .map(|(session, _)| session)
            .collect())
    }

    async fn delete_objects(&self, paths: Vec<Path>) -> Result<(), BlobError> {
        let locations = stream::iter(paths.into_iter().map(Ok)).boxed();
        self.store
            .delete_stream(locations)
            .try_for_each(|_| async { Ok(()) })
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(()),
                e => Err(store_error(e)),
            })
    }
}

/// An upload session as stored.
struct Session {
    size: u64,
    /// Data chunks in offset order.
    chunks: Vec<ObjectMeta>,
    /// Every object of the session, the marker included.
    all: Vec<Path>,
}

/// Writes one object from a stream of chunks: small objects in one request, large
/// ones as a multipart upload with parts in flight while the next arrives. Nothing is
/// visible until `finish`; `abort` (or dropping it) discards what was uploaded.
struct ObjectSink {
    store: Arc<dyn ObjectStore>,
    path: Path,
    state: SinkState,
}

enum SinkState {
    /// Less than one part so far, kept in memory.
    Buffering {
        chunks: Vec<Bytes>,
        len: usize,
    },
    Multipart(WriteMultipart),
    Done,
}

impl ObjectSink {
    fn new(store: Arc<dyn ObjectStore>, path: Path) -> Self {
        Self {
            store,
            path,
            state: SinkState::Buffering {
                chunks: Vec::new(),
                len: 0,
            },
        }
    }

    async fn push(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        match &mut self.state {
            SinkState::Buffering { chunks, len } => {
                *len += chunk.len();
                chunks.push(chunk);
                if *len >= PART_SIZE {
                    let upload = self
                        .store
                        .put_multipart(&self.path)
                        .await
                        .map_err(store_error)?;
                    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                    for chunk in std::mem::take(chunks) {
                        writer.put(chunk);
                    }
                    self.state = SinkState::Multipart(writer);
                }
            }
            SinkState::Multipart(writer) => {
                // Back pressure: the body waits while enough parts are in flight.
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(store_error)?;
                writer.put(chunk);
            }
            SinkState::Done => {}
        }
        Ok(())
    }

    /// Makes the object visible.
    async fn finish(mut self) -> Result<(), BlobError> {
        match std::mem::replace(&mut self.state, SinkState::Done) {
            SinkState::Buffering { chunks, .. } => {
                self.store
                    .put(&self.path, PutPayload::from_iter(chunks))
                    .await
                    .map_err(store_error)?;
            }
            SinkState::Multipart(writer) => {
                writer.finish().await.map_err(store_error)?;
            }
            SinkState::Done => {}
        }
        Ok(())
    }

    async fn abort(mut self) {
        if let SinkState::Multipart(writer) = std::mem::replace(&mut self.state, SinkState::Done)
            && let Err(e) = writer.abort().await
        {
            // The incomplete upload stays invisible; a bucket lifecycle rule for
            // incomplete multipart uploads reclaims its parts.
            tracing::warn!(path = %self.path, error = %e, "cannot abort a multipart upload");
        }
    }
}

impl Drop for ObjectSink {
    fn drop(&mut self) {
        // The request was dropped half way: abort in the background, there is no one
        // left to wait for it.
        if let SinkState::Multipart(writer) = std::mem::replace(&mut self.state, SinkState::Done)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = writer.abort().await;
            });
        }
    }
}
