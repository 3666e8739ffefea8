//! Job images on the runner: pulling an OCI image by digest into a content-addressed
//! on-disk cache shared by all jobs, and preparing its root filesystem. IO: the cache
//! directory (see `layout`) and, in `pull`, the registry through `RegistryClient`.
//!
//! # What holds
//!
//! - Content appears at its address only complete and verified: every blob is checked
//!   against its descriptor's size (reading stops at the first byte too many) and
//!   digest while it streams into `tmp/`, and renamed into place after an fsync. A
//!   rootfs is unpacked into `tmp/` and renamed into place only on success.
//! - A second pull of a cached image fetches no blob (only its manifest).
//! - Transient failures (transport errors, 5xx, 429) are tried again, up to three
//!   times, each from a fresh temporary file; wrong content or a refusal never is.
//! - Concurrent pulls share downloads: tasks of one process wait on an in-process lock
//!   per blob, processes on an exclusive `flock` per blob; whoever comes second finds
//!   the blob cached. The same holds for unpacking a rootfs.
//! - The cache stays within `max_bytes` by evicting the least recently used blobs and
//!   rootfs trees, except what a live [`PulledImage`] pins (in any process). When
//!   pinned content alone exceeds the bound, the cache goes over it rather than fail a
//!   job; the next eviction brings it back.
//! - Whatever an interrupted download or unpack left in `tmp/` is removed by the next
//!   `open` (unless a live process still owns it).

mod download;
mod error;
mod evict;
mod layout;
mod lock;
mod pull;
mod rootfs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bencher_oci::config::ImageConfig;
use bencher_oci::digest::Digest;
use bencher_oci::manifest::{Descriptor, ImageManifest};

pub use error::{BlobError, ImageError};

use layout::{Layout, LockKind};
use lock::{FileLock, InFlight, LockMode, PinSet};

/// The image cache of one runner: cheap to clone, shared by all its jobs.
#[derive(Debug, Clone)]
pub struct ImageCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    max_bytes: u64,
    in_flight: InFlight,
    /// One eviction pass at a time in this process: passes running side by side would
    /// each see the same excess and evict twice as much.
    evicting: tokio::sync::Mutex<()>,
}

/// A pulled image: what the job executor needs to run it. While this value (or a
/// clone) lives, its blobs and its rootfs are pinned against eviction.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The digest of the image manifest (for an index, of the entry chosen for the
    /// platform): the identity of the image and the key of its rootfs.
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub config: ImageConfig,
    /// The layers in order, each with the path of its cached blob.
    pub layers: Vec<(Descriptor, PathBuf)>,
    /// Never read: holding the pins keeps the content from being evicted.
    _pins: Arc<PinSet>,
}

/// What the cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    /// Bytes of blobs plus bytes on disk of rootfs trees.
    pub bytes: u64,
    pub blobs: u64,
    pub rootfs: u64,
}

impl ImageCache {
    /// Opens (creating if needed) the cache at `root`, bounded to `max_bytes`, and
    /// removes what interrupted downloads and unpacks left behind.
    pub fn open(root: &Path, max_bytes: u64) -> Result<ImageCache, ImageError> {
        let open_error = |source| ImageError::Open {
            path: root.to_owned(),
            source,
        };
        let layout = Layout::create(root).map_err(open_error)?;
        let removed = layout.clean_tmp().map_err(open_error)?;
        if removed > 0 {
            tracing::info!(removed, cache = %root.display(), "removed interrupted downloads and unpacks from the image cache");
        }
        Ok(ImageCache {
            inner: Arc::new(Inner {
                layout,
                max_bytes,
                in_flight: InFlight::default(),
                evicting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The directory the cache lives in.
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// What the cache holds now (a scan of the directory).
    pub fn usage(&self) -> Result<CacheUsage, ImageError> {
        evict::usage(&self.inner.layout)
            .map_err(ImageError::cache("scan", self.inner.layout.root()))
    }

    /// Runs filesystem work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
    ) -> Result<T, ImageError> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(ImageError::Task)?
    }

    /// Waits for the exclusive lock of a download or unpack.
    async fn exclusive(&self, kind: LockKind, digest: &Digest) -> Result<FileLock, ImageError> {
        let path = self.inner.layout.lock(kind, digest);
        self.blocking(move || {
            FileLock::acquire(&path, LockMode::Exclusive).map_err(ImageError::cache("lock", path))
        })
        .await
    }

    /// Pins the blobs and the rootfs of an image against eviction.
    async fn pin(&self, manifest: &Digest, blobs: &[&Descriptor]) -> Result<PinSet, ImageError> {
        let layout = &self.inner.layout;
        let files: Vec<PathBuf> = blobs
            .iter()
            .map(|d| layout.lock(LockKind::BlobPin, &d.digest))
            .chain([layout.lock(LockKind::RootfsPin, manifest)])
            .collect();
        let locks = layout.locks();
        self.blocking(move || {
            PinSet::acquire(&files).map_err(ImageError::cache("pin content with locks in", locks))
        })
        .await
    }

    /// Evicts until what is cached plus `reserve` bytes fits the bound.
    async fn evict(&self, reserve: u64) -> Result<(), ImageError> {
        let _one_pass = self.inner.evicting.lock().await;
        let layout = self.inner.layout.clone();
        let max_bytes = self.inner.max_bytes;
        let evicted = self
            .blocking(move || {
                evict::evict(&layout, max_bytes, reserve)
                    .map_err(ImageError::cache("evict from", layout.root()))
            })
            .await?;
        if evicted.blobs + evicted.rootfs > 0 {
            tracing::info!(
                blobs = evicted.blobs,
                rootfs = evicted.rootfs,
                bytes = evicted.bytes_freed,
                "evicted least recently used images from the cache"
            );
        }
        if evicted.bytes_left.saturating_add(reserve) > max_bytes {
            tracing::warn!(
                cached = evicted.bytes_left,
                incoming = reserve,
                max_bytes,
                "the image cache is over its size bound: the rest is in use by pulled images"
            );
        }
        Ok(())
    }
}
