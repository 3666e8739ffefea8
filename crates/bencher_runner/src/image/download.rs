//! Streaming one blob into the cache: every chunk is counted against the descriptor's
//! size (reading stops at the first byte too many), hashed, and written to a temporary
//! file in `tmp/`; only complete, verified and fsynced content is renamed to its content
//! address. IO: the temporary file, the rename into `blobs/`, and the stream it is given.
//!
//! The caller holds the blob's fetch lock, which owns `tmp/<lock>.*`; the temporary
//! file deletes itself when dropped uncommitted, so an error or a cancelled pull leaves
//! nothing behind, and a crash leaves a file that the next `ImageCache::open` removes.

use std::fs::{self, DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bencher_client::registry::RegistryError;
use bencher_oci::digest::{Digest, DigestVerifier};
use bencher_oci::manifest::Descriptor;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use super::error::BlobError;
use super::layout::{Layout, LockKind, fsync_dir};

/// Write buffer of a download: large writes keep the number of blocking-pool round
/// trips of `tokio::fs` low.
const WRITE_BUFFER: usize = 1 << 20;

/// A writer that accepts exactly the content of one descriptor: its size, then its
/// digest, checked as the bytes pass.
pub(super) struct VerifiedWriter<W> {
    inner: W,
    verifier: DigestVerifier,
    expected: u64,
    received: u64,
    /// Where the bytes go, for error messages.
    path: PathBuf,
}

impl<W: AsyncWrite + Unpin> VerifiedWriter<W> {
    pub(super) fn new(inner: W, digest: &Digest, expected: u64, path: &Path) -> Self {
        Self {
            inner,
            verifier: digest.verifier(),
            expected,
            received: 0,
            path: path.to_owned(),
        }
    }

    pub(super) fn received(&self) -> u64 {
        self.received
    }

    /// Refuses the chunk, without writing any of it, when it would take the content past
    /// the descriptor's size.
    pub(super) async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        let received = self.received.saturating_add(chunk.len() as u64);
        if received > self.expected {
            return Err(BlobError::TooLarge {
                expected: self.expected,
                received,
            });
        }
        self.verifier.update(chunk);
        self.inner
            .write_all(chunk)
            .await
            .map_err(|source| BlobError::Io {
                action: "write",
                path: self.path.clone(),
                source,
            })?;
        self.received = received;
        Ok(())
    }

    /// Checks the size and digest of everything written and flushes.
    pub(super) async fn finish(mut self) -> Result<W, BlobError> {
        if self.received < self.expected {
            return Err(BlobError::TooSmall {
                expected: self.expected,
                received: self.received,
            });
        }
        self.verifier.verify().map_err(BlobError::Digest)?;
        self.inner.flush().await.map_err(|source| BlobError::Io {
            action: "flush",
            path: self.path.clone(),
            source,
        })?;
        Ok(self.inner)
    }
}

/// Copies `stream` through `writer`; stops reading at the first error.
pub(super) async fn copy_verified<S, W>(
    stream: S,
    writer: &mut VerifiedWriter<W>,
) -> Result<(), BlobError>
where
    S: Stream<Item = Result<Bytes, RegistryError>>,
    W: AsyncWrite + Unpin,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| BlobError::Stream {
            received: writer.received(),
            source,
        })?;
        writer.write(&chunk).await?;
    }
    Ok(())
}

/// Streams the blob of `descriptor` into the cache at its content address. `announced`
/// is the size the registry announced, checked before anything is read.
pub(super) async fn store_blob<S>(
    layout: &Layout,
    descriptor: &Descriptor,
    announced: Option<u64>,
    stream: S,
) -> Result<PathBuf, BlobError>
where
    S: Stream<Item = Result<Bytes, RegistryError>>,
{
    if let Some(announced) = announced
        && announced != descriptor.size
    {
        return Err(BlobError::AnnouncedSize {
            expected: descriptor.size,
            announced,
        });
    }
    let digest = &descriptor.digest;
    let dir = layout.blob_dir(digest.algorithm());
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| BlobError::Io {
            action,
            path,
            source,
        }
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io("create", &dir))?;
    let temp = tempfile::Builder::new()
        .prefix(&Layout::temp_prefix(LockKind::BlobFetch, digest))
        .tempfile_in(layout.tmp())
        .map_err(io("create a temporary file in", &layout.tmp()))?;
    let file = temp
        .as_file()
        .try_clone()
        .map_err(io("open", temp.path()))?;
    let file = BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file));
    let mut writer = VerifiedWriter::new(file, digest, descriptor.size, temp.path());
    copy_verified(stream, &mut writer).await?;
    let file = writer.finish().await?.into_inner();
    // Durable before it is visible: after a crash a blob at its address is complete.
    file.sync_all().await.map_err(io("fsync", temp.path()))?;
    drop(file);
    fs::set_permissions(temp.path(), Permissions::from_mode(0o444))
        .map_err(io("set permissions of", temp.path()))?;
    let path = layout.blob(digest);
    temp.persist(&path).map_err(|e| BlobError::Io {
        action: "rename a download to",
        path: path.clone(),
        source: e.error,
    })?;
    fsync_dir(&dir).map_err(io("fsync", &dir))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    type Chunk = Result<Bytes, RegistryError>;

    fn chunks(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, RegistryError>> + use<> {
        let parts: Vec<_> = parts
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        stream::iter(parts)
    }

    fn cut(after: &[u8]) -> impl Stream<Item = Result<Bytes, RegistryError>> + use<> {
        stream::iter(vec![
            Ok(Bytes::copy_from_slice(after)),
            Err(RegistryError::Api {
                status: 500,
                code: "UNKNOWN".into(),
                message: "connection reset".into(),
            }),
        ])
    }

    async fn copy(
        content: &[u8],
        stream: impl Stream<Item = Result<Bytes, RegistryError>>,
    ) -> Result<Vec<u8>, BlobError> {
        let digest = Digest::sha256_of(content);
        let mut writer =
            VerifiedWriter::new(Vec::new(), &digest, content.len() as u64, Path::new("mem"));
        copy_verified(stream, &mut writer).await?;
        writer.finish().await
    }

    #[tokio::test]
    async fn accepts_exact_content_in_any_chunking() {
        let out = copy(b"hello world", chunks(&[b"hel", b"", b"lo wor", b"ld"])).await;
        assert_eq!(out.unwrap(), b"hello world");
        assert_eq!(copy(b"", chunks(&[])).await.unwrap(), b"");
    }

    #[tokio::test]
    async fn stops_reading_at_the_first_byte_too_many() {
        // The third item would panic if polled: reading must stop at the second.
        let poisoned = stream::iter(vec![
            Ok(Bytes::from_static(b"hello")),
            Ok(Bytes::from_static(b"!!")),
        ])
        .chain(stream::poll_fn(
            |_| -> std::task::Poll<Option<Result<Bytes, RegistryError>>> {
                panic!("read past the descriptor's size")
            },
        ));
        match copy(b"hello", poisoned).await {
            Err(BlobError::TooLarge {
                expected: 5,
                received: 7,
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn refuses_short_and_wrong_content() {
        match copy(b"hello", chunks(&[b"hell"])).await {
            Err(BlobError::TooSmall {
                expected: 5,
                received: 4,
            }) => {}
            other => panic!("{other:?}"),
        }
        match copy(b"hello", chunks(&[b"jello"])).await {
            Err(BlobError::Digest(mismatch)) => {
                assert_eq!(mismatch.expected, Digest::sha256_of(b"hello"));
                assert_eq!(mismatch.actual, Digest::sha256_of(b"jello"));
            }
            other => panic!("{other:?}"),
        }
        match copy(b"hello", cut(b"he")).await {
            Err(BlobError::Stream { received: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    fn tmp_entries(layout: &Layout) -> usize {
        fs::read_dir(layout.tmp()).unwrap().count()
    }

    #[tokio::test]
    async fn stores_only_verified_content_at_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let content = b"layer bytes";
        let descriptor = Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar",
            Digest::sha256_of(content),
            content.len() as u64,
        );
        let path = layout.blob(&descriptor.digest);

        let failures: Vec<(Option<u64>, Vec<Chunk>)> = vec![
            (Some(3), vec![Ok(Bytes::from_static(content))]),
            (None, vec![Ok(Bytes::from_static(b"layer bytez"))]),
            (None, vec![Ok(Bytes::from_static(b"layer byte"))]),
            (None, vec![Ok(Bytes::from_static(b"layer bytes+"))]),
            (None, cut(b"layer").collect().await),
        ];
        for (announced, items) in failures {
            let result = store_blob(&layout, &descriptor, announced, stream::iter(items)).await;
            assert!(result.is_err(), "{result:?}");
            assert!(
                !path.exists(),
                "nothing at the content address after {result:?}"
            );
            assert_eq!(tmp_entries(&layout), 0, "no partial file left");
        }

        let stored = store_blob(
            &layout,
            &descriptor,
            Some(11),
            chunks(&[b"layer ", b"bytes"]),
        )
        .await
        .unwrap();
        assert_eq!(stored, path);
        assert_eq!(fs::read(&path).unwrap(), content);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444);
        assert_eq!(tmp_entries(&layout), 0);
    }
}
