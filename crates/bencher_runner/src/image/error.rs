//! Errors of the image cache: `ImageError` for its operations (open, pull, rootfs,
//! usage), each message about its own step and naming the repository, digest or path it
//! is about; `BlobError` for streaming one blob into the cache. Pure; no IO.

use std::io;
use std::path::PathBuf;

use bencher_client::registry::RegistryError;
use bencher_oci::config::ConfigError;
use bencher_oci::digest::{Digest, DigestMismatch};
use bencher_oci::layer::LayerError;
use bencher_oci::manifest::ManifestError;
use bencher_oci::platform::{Platform, PlatformError};

/// Large sources are boxed to keep `Result<_, ImageError>` small on the success path.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The cache directory cannot be created or cleaned.
    #[error("cannot open the image cache at {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The registry did not give us the manifest.
    #[error("cannot fetch manifest {reference} of {repository}")]
    FetchManifest {
        repository: String,
        reference: String,
        #[source]
        source: Box<RegistryError>,
    },

    /// The registry's manifest bytes do not hash to the digest asked for or announced.
    #[error("manifest {reference} of {repository} does not match its digest")]
    ManifestDigest {
        repository: String,
        reference: String,
        #[source]
        source: DigestMismatch,
    },

    #[error("manifest {digest} of {repository} is {size} bytes; the limit is {max}")]
    ManifestTooLarge {
        repository: String,
        digest: Digest,
        size: u64,
        max: u64,
    },

    /// The index entry's descriptor and the manifest it names disagree on the size.
    #[error("manifest {digest} of {repository} is {actual} bytes but the index says {expected}")]
    ManifestSize {
        repository: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },

    #[error("manifest {digest} of {repository} is not a manifest we can run")]
    ParseManifest {
        repository: String,
        digest: Digest,
        #[source]
        source: ManifestError,
    },

    /// No entry of the index runs on the requested platform.
    #[error("image index {digest} of {repository} has no image for this runner")]
    Platform {
        repository: String,
        digest: Digest,
        #[source]
        source: PlatformError,
    },

    /// The index entry chosen for the platform is itself an index, or not an image.
    #[error(
        "index entry {digest} of {repository} is of type `{media_type}`; expected an image manifest"
    )]
    NotAnImageManifest {
        repository: String,
        digest: Digest,
        media_type: String,
    },

    /// The image (its config) is built for another platform than the one requested.
    #[error("image {digest} of {repository} is built for {image}, which does not run on {wanted}")]
    WrongPlatform {
        repository: String,
        digest: Digest,
        image: Box<Platform>,
        wanted: Box<Platform>,
    },

    /// A manifest lists something other than a filesystem layer among its layers.
    #[error(
        "layer {digest} of image {manifest} has media type `{media_type}`, which is not a filesystem layer"
    )]
    NotALayer {
        manifest: Digest,
        digest: Digest,
        media_type: String,
    },

    /// One digest listed twice with different sizes.
    #[error("image {manifest} lists blob {digest} with two different sizes, {first} and {second}")]
    InconsistentSize {
        manifest: Digest,
        digest: Digest,
        first: u64,
        second: u64,
    },

    #[error("config {digest} of image {manifest} is {size} bytes; the limit is {max}")]
    ConfigTooLarge {
        manifest: Digest,
        digest: Digest,
        size: u64,
        max: u64,
    },

    #[error("config {digest} of image {manifest} is not a valid image config")]
    ParseConfig {
        manifest: Digest,
        digest: Digest,
        #[source]
        source: ConfigError,
    },

    /// Fetching one blob into the cache failed; nothing of it was cached.
    #[error("cannot fetch blob {digest} of {repository}")]
    Blob {
        repository: String,
        digest: Digest,
        #[source]
        source: Box<BlobError>,
    },

    /// A blob of a pulled image is no longer in the cache (deleted behind the cache's
    /// back: pulled images are pinned against eviction).
    #[error("blob {digest} of image {manifest} is missing from the cache at {}; pull the image again", path.display())]
    MissingBlob {
        manifest: Digest,
        digest: Digest,
        path: PathBuf,
    },

    #[error("image {manifest} has {layers} layers but its config lists {diff_ids} diff IDs")]
    DiffIdCount {
        manifest: Digest,
        layers: usize,
        diff_ids: usize,
    },

    /// The unpacker refused the fresh tree (e.g. a kernel without openat2).
    #[error("cannot start unpacking image {manifest}")]
    StartUnpack {
        manifest: Digest,
        #[source]
        source: LayerError,
    },

    /// Applying a layer to the root filesystem failed; the partial tree was discarded.
    #[error("cannot unpack layer {layer} of image {manifest}")]
    Unpack {
        manifest: Digest,
        layer: Digest,
        #[source]
        source: LayerError,
    },

    /// A layer's uncompressed content is not what the image config says it is.
    #[error("layer {layer} of image {manifest} unpacks to content that does not match its diff ID")]
    DiffId {
        manifest: Digest,
        layer: Digest,
        #[source]
        source: Box<DigestMismatch>,
    },

    /// A filesystem operation on the cache failed.
    #[error("cannot {action} {}", path.display())]
    Cache {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A background task of the cache (filesystem work off the async runtime) panicked
    /// or the runtime is shutting down.
    #[error("an image cache task did not complete")]
    Task(#[source] tokio::task::JoinError),
}

impl ImageError {
    pub(super) fn cache(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Cache {
            action,
            path,
            source,
        }
    }
}

impl BlobError {
    /// Whether trying again may succeed: the connection failed (including a stale
    /// pooled connection the server had just closed) or the registry had a temporary
    /// problem. Content that is wrong, or a refusal, stays wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Request(source) | Self::Stream { source, .. } => transient(source),
            _ => false,
        }
    }
}

/// Transport failures, 5xx answers and 429.
pub(super) fn transient(error: &RegistryError) -> bool {
    match error {
        RegistryError::Transport { .. } => true,
        RegistryError::Api { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

/// Why one blob could not be streamed into the cache. Whatever the reason, the partial
/// download is deleted and the blob's content address stays empty.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the registry refused or failed the request")]
    Request(#[source] RegistryError),

    /// The registry announced (Content-Length) another size than the descriptor's;
    /// refused before reading anything.
    #[error("the registry announces {announced} bytes but the descriptor says {expected}")]
    AnnouncedSize { expected: u64, announced: u64 },

    #[error("the download failed after {received} bytes")]
    Stream {
        received: u64,
        #[source]
        source: RegistryError,
    },

    /// More bytes than the descriptor's size arrived; reading stopped there.
    #[error(
        "the blob is larger than the {expected} bytes its descriptor says; stopped reading after {received} bytes"
    )]
    TooLarge { expected: u64, received: u64 },

    #[error("the blob ended after {received} of the {expected} bytes its descriptor says")]
    TooSmall { expected: u64, received: u64 },

    #[error("the downloaded content does not match the blob's digest")]
    Digest(#[source] DigestMismatch),

    /// The temporary file or the commit into the cache failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> RegistryError {
        RegistryError::Api {
            status,
            code: "X".into(),
            message: "x".into(),
        }
    }

    #[test]
    fn only_temporary_failures_are_retried() {
        assert!(BlobError::Request(api(503)).is_transient());
        assert!(BlobError::Request(api(429)).is_transient());
        assert!(
            BlobError::Stream {
                received: 5,
                source: api(502)
            }
            .is_transient()
        );
        assert!(!BlobError::Request(api(401)).is_transient());
        assert!(!BlobError::Request(api(404)).is_transient());
        let mismatch = DigestMismatch {
            expected: Digest::sha256_of(b"a"),
            actual: Digest::sha256_of(b"b"),
        };
        assert!(!BlobError::Digest(mismatch).is_transient());
        assert!(
            !BlobError::TooLarge {
                expected: 1,
                received: 2
            }
            .is_transient()
        );
    }
}
