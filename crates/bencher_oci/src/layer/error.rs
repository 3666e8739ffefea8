//! The error of applying a layer: one enum for decompression, archive parsing, limits
//! and filesystem work, each message naming the entry it is about. Pure; no IO.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a layer could not be applied. After any error the root directory is left
/// partially unpacked and must be discarded by the caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// The media type is not one of the OCI or Docker layer types we unpack.
    #[error("unsupported layer media type {media_type:?}")]
    UnsupportedMediaType { media_type: String },

    /// The decompressor could not be set up (allocation of its state failed).
    #[error("cannot start decompressing a {media_type} layer")]
    Decompress {
        media_type: String,
        #[source]
        source: io::Error,
    },

    /// The unpack root does not exist, is not a directory, or the kernel lacks openat2.
    #[error("cannot use {} as the unpack root", path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An earlier layer failed; the root is in an unknown state and must be discarded.
    #[error("an earlier layer failed to apply; this unpack root must be discarded")]
    Poisoned,

    /// Reading the (decompressed) layer stream failed: corrupt compression or IO.
    #[error("cannot read the layer stream at byte {offset}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },

    /// The bytes are not a tar archive we accept (bad checksum, truncated header,
    /// malformed PAX records, dangling extension headers).
    #[error("malformed layer archive at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: String },

    /// The entry is well-formed tar but not something we apply (a bad path, a hard
    /// link without target, an unsupported sparse file, an invalid uid).
    #[error("entry {}: {reason}", path.display())]
    InvalidEntry { path: PathBuf, reason: String },

    /// The stream ended inside the data of an entry.
    #[error("entry {}: the layer ends after {read} of its {declared} bytes", path.display())]
    Truncated {
        path: PathBuf,
        declared: u64,
        read: u64,
    },

    /// Applying the entry would pass one of the image's cumulative limits.
    #[error("{}: the image exceeds its limit of {max} {limit}", EntryName(path.as_deref()))]
    LimitExceeded {
        /// The entry being read, `None` when the limit was hit on archive structure
        /// (a header or trailing bytes) rather than on an entry.
        path: Option<PathBuf>,
        limit: Limit,
        max: u64,
    },

    /// A filesystem operation on the entry failed (including refusals by the kernel
    /// such as ELOOP for a symlink loop or a hard link to a directory).
    #[error("entry {}: cannot {op}", path.display())]
    Fs {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Which cumulative limit of [`super::UnpackLimits`] was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_total_bytes`: uncompressed tar bytes read across the image's layers.
    TotalBytes,
    /// `max_entries`: tar entries across the image's layers.
    Entries,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TotalBytes => "uncompressed bytes",
            Self::Entries => "entries",
        })
    }
}

/// Displays an optional entry path for a limit error.
struct EntryName<'a>(Option<&'a Path>);

impl fmt::Display for EntryName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "entry {}", path.display()),
            None => f.write_str("archive structure"),
        }
    }
}
