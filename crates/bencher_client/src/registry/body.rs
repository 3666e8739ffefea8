//! Upload bodies and their watchdog: a blob source (a file, part of a file, or bytes)
//! as a counted stream that reqwest sends without holding it in memory, and the loop
//! that reports progress and gives up on a stalled upload. IO: opens and reads files.
//!
//! Why a watchdog instead of reqwest's timeouts: a whole-request timeout would kill a
//! large upload on a slow link, and reqwest's read timeout runs from the start of the
//! request until the response headers arrive, so it would too.

use std::future::Future;
use std::io::{self, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt as _, TryStreamExt as _};
use reqwest::{Method, Response};
use tokio::io::AsyncReadExt as _;
use tokio::time::Instant;
use tokio_util::io::ReaderStream;

use super::RegistryError;

/// Bytes read from disk per chunk: large enough that per-read overhead (a blocking-pool
/// hop for `tokio::fs`) vanishes, small enough that progress moves smoothly.
const READ_CHUNK: usize = 1 << 20;
/// How often progress is reported and the watchdog looks.
const TICK: Duration = Duration::from_millis(100);
/// An upload whose body has not moved for this long is stalled.
const BODY_STALL: Duration = Duration::from_secs(120);
/// After the whole body went out the registry verifies, fsyncs and records the blob,
/// which for a large blob on slow storage takes a while; beyond this it is stuck.
const ANSWER_WAIT: Duration = Duration::from_secs(600);

/// Where the bytes of a blob to push come from.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// A whole file, such as a blob of an OCI image layout.
    File(PathBuf),
    /// The pushed `size` bytes of a file starting at `offset`, such as a layer stored
    /// inside a `docker save` archive.
    FileRange { path: PathBuf, offset: u64 },
    /// Bytes already in memory (a config, a small generated blob).
    Bytes(Bytes),
}

impl BlobSource {
    fn name(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::FileRange { path, offset } => format!("{} at offset {offset}", path.display()),
            Self::Bytes(_) => "(bytes in memory)".to_owned(),
        }
    }

    /// The source as a stream of exactly `size` bytes, adding each chunk's length to
    /// `sent` as reqwest takes it. Fails before sending anything when the source is
    /// missing or of the wrong size; a file that shrinks while streaming ends the body
    /// early, which the HTTP layer reports against the declared Content-Length.
    pub(crate) fn stream(
        &self,
        size: u64,
        sent: Arc<AtomicU64>,
    ) -> Result<BoxStream<'static, io::Result<Bytes>>, RegistryError> {
        let wrong_size = |actual: u64| RegistryError::SourceSize {
            source_name: self.name(),
            expected: size,
            actual,
        };
        let stream = match self {
            Self::Bytes(bytes) => {
                let len = bytes.len() as u64;
                if len != size {
                    return Err(wrong_size(len));
                }
                let bytes = bytes.clone();
                let chunks = (0..bytes.len())
                    .step_by(READ_CHUNK)
                    .map(move |start| Ok(bytes.slice(start..bytes.len().min(start + READ_CHUNK))));
                stream::iter(chunks.collect::<Vec<_>>()).boxed()
            }
            Self::File(path) | Self::FileRange { path, .. } => {
                let offset = match self {
                    Self::FileRange { offset, .. } => *offset,
                    _ => 0,
                };
                let io_error = |source| RegistryError::Source {
                    path: path.clone(),
                    source,
                };
                // Opening and seeking are single quick syscalls; the reads, which can be
                // slow, go through tokio's blocking pool.
                let mut file = std::fs::File::open(path).map_err(io_error)?;
                let len = file.metadata().map_err(io_error)?.len();
                let available = len.saturating_sub(offset);
                let fits = match self {
                    Self::File(_) => len == size,
                    _ => available >= size,
                };
                if !fits {
                    return Err(wrong_size(available));
                }
                file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
                let reader = tokio::fs::File::from_std(file).take(size);
                ReaderStream::with_capacity(reader, READ_CHUNK).boxed()
            }
        };
        Ok(stream
            .inspect_ok(move |chunk| {
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            })
            .boxed())
    }
}

/// What the watchdog of one upload needs.
pub(crate) struct Upload<'a> {
    pub(crate) sent: Arc<AtomicU64>,
    pub(crate) size: u64,
    pub(crate) progress: &'a (dyn Fn(u64) + Send + Sync),
}

/// Drives `send` while reporting `upload.sent` to the progress callback whenever it
/// moved, and fails when the body stops moving, or the answer does not come, in time.
pub(crate) async fn watched(
    send: impl Future<Output = Result<Response, reqwest::Error>>,
    upload: &Upload<'_>,
    method: &Method,
    url: &str,
) -> Result<Response, RegistryError> {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut reported = None;
    let mut moved = Instant::now();
    tokio::pin!(send);
    loop {
        tokio::select! {
            result = &mut send => {
                let sent = upload.sent.load(Ordering::Relaxed);
                if reported != Some(sent) {
                    (upload.progress)(sent);
                }
                return result.map_err(|source| RegistryError::Transport {
                    method: method.to_string(),
                    url: url.to_owned(),
                    source: source.without_url(),
                });
            }
            _ = ticker.tick() => {
                let sent = upload.sent.load(Ordering::Relaxed);
                if reported != Some(sent) {
                    reported = Some(sent);
                    moved = Instant::now();
                    (upload.progress)(sent);
                    continue;
                }
                let limit = if sent >= upload.size { ANSWER_WAIT } else { BODY_STALL };
                if moved.elapsed() >= limit {
                    return Err(RegistryError::Stalled {
                        method: method.to_string(),
                        url: url.to_owned(),
                        waited: limit,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    async fn collect(source: &BlobSource, size: u64) -> Result<(Vec<u8>, u64), RegistryError> {
        let sent = Arc::new(AtomicU64::new(0));
        let chunks: Vec<Bytes> = source
            .stream(size, sent.clone())?
            .try_collect()
            .await
            .map_err(|source| RegistryError::Source {
                path: PathBuf::new(),
                source,
            })?;
        Ok((chunks.concat(), sent.load(Ordering::Relaxed)))
    }

    #[tokio::test]
    async fn streams_files_ranges_and_bytes_exactly() {
        let data: Vec<u8> = (0..(READ_CHUNK * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(&data).expect("write");
        let path = file.path().to_owned();
        let size = data.len() as u64;

        let (bytes, sent) = collect(&BlobSource::File(path.clone()), size)
            .await
            .expect("file");
        assert_eq!((bytes.as_slice(), sent), (data.as_slice(), size));

        let range = BlobSource::FileRange {
            path: path.clone(),
            offset: 5,
        };
        let (bytes, sent) = collect(&range, 1000).await.expect("range");
        assert_eq!((bytes.as_slice(), sent), (&data[5..1005], 1000));

        let in_memory = BlobSource::Bytes(Bytes::from(data.clone()));
        let (bytes, _) = collect(&in_memory, size).await.expect("bytes");
        assert_eq!(bytes, data);
    }

    #[tokio::test]
    async fn refuses_sources_of_the_wrong_size() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(b"0123456789").expect("write");
        let path = file.path().to_owned();
        for (source, size) in [
            (BlobSource::File(path.clone()), 11),
            (BlobSource::File(path.clone()), 9),
            (
                BlobSource::FileRange {
                    path: path.clone(),
                    offset: 8,
                },
                3,
            ),
            (BlobSource::Bytes(Bytes::from_static(b"abc")), 4),
        ] {
            let err = collect(&source, size).await.expect_err("wrong size");
            assert!(
                matches!(err, RegistryError::SourceSize { expected, .. } if expected == size),
                "{err:?}"
            );
        }
        let missing = BlobSource::File(path.with_extension("missing"));
        let err = collect(&missing, 1).await.expect_err("missing");
        assert!(matches!(err, RegistryError::Source { .. }), "{err:?}");
    }
}
