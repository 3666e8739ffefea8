//! Safe application of OCI image layers to a root filesystem directory: decompression
//! by media type and the `Unpacker` that applies layers in order. IO: reads the layer
//! streams it is given and writes only below the root directory, through `root`.
//!
//! # What is guaranteed
//!
//! No entry, in any combination of layers, creates, modifies, chmods, chowns or
//! deletes anything outside the root directory, and the root directory's own metadata
//! is left alone. This does not rest on lexical checks: every path is resolved by the
//! kernel from an `O_PATH` fd of the root with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)`, so a symlink placed by the image (`etc -> /host-etc`,
//! `a -> ../../..`) resolves as if the root were `/`, and every final component is
//! handled by a `*at` call relative to its parent's fd that does not follow it. Hard
//! link targets are resolved the same way, so a link can only name a file in the root.
//! Tar paths are cleaned first (a leading `/` or `./` stripped, `..` never above the
//! root), which gives entries one spelling but is not what keeps them inside.
//!
//! # Semantics (OCI image-spec layer changesets)
//!
//! - Regular files, directories, symlinks and hard links are created with the mode
//!   (including setuid, setgid, sticky), mtime (atime set to it) and, when running as
//!   root, the uid/gid of the header (PAX overrides honoured); not as root, files are
//!   owned by the caller. Directory modes and mtimes are applied when the layer ends.
//! - `.wh.<name>` deletes `<name>` from lower layers; `.wh..wh..opq` empties its
//!   directory of lower-layer content but keeps what the same layer wrote in it,
//!   whatever the order of the entries. Whiteouts are never materialized.
//! - An entry replaces an existing path of another type (the old tree is removed);
//!   a directory over a directory merges. A file never overwrites an inode in place.
//! - Character and block devices and FIFOs are never created: skipped and counted in
//!   `skipped_special`. Entries of unknown type, and aufs `.wh..wh.*` bookkeeping,
//!   are skipped and counted in `skipped_unknown`. GNU sparse files are an error.
//! - Parent directories an entry needs but the archive did not list are created 0755.
//! - Extended attributes (`SCHILY.xattr.*`) are not applied.
//!
//! # Limits
//!
//! [`UnpackLimits`] are cumulative over the layers of one `Unpacker`. The byte limit
//! counts every uncompressed tar byte read (headers, data of every entry, bytes after
//! the end marker), so it also bounds decompression work; an entry's data is charged
//! from its declared size before anything is written, and copying reads no more than
//! was declared. GNU long names and PAX headers are capped at 1 MiB each.
//!
//! # The root directory's own mode is the caller's barrier
//!
//! Images legitimately contain setuid-root binaries and world-writable directories,
//! and they are created as such on the host. Keep the root (or a directory above it)
//! `0700` (`tempfile` creates it so) so that no unprivileged host user can reach them.
//! The unpacker never changes the root's own metadata, whatever the archive's `./`
//! entry says.
//!
//! # Failure
//!
//! On any error the root is left partially unpacked, and the `Unpacker` refuses
//! further layers ([`LayerError::Poisoned`]). The caller must discard the root: unpack
//! into a fresh temporary directory and move it into place only on success.
//!
//! Requires Linux 5.6 or newer (`openat2`).

mod apply;
mod archive;
mod error;
mod path;
mod root;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

use crate::manifest::LayerCompression;

pub use error::{LayerError, Limit};

/// The largest zstd window we accept (2^27 = 128 MiB, zstd's default limit), so a
/// frame cannot make the decoder allocate without bound.
const ZSTD_MAX_WINDOW_LOG: u32 = 27;

/// Wraps a layer blob in the decompressor its media type names. Gzip accepts several
/// concatenated members, as Go's reader does.
pub fn decompress<'a>(
    media_type: &str,
    reader: impl Read + 'a,
) -> Result<Box<dyn Read + 'a>, LayerError> {
    // One list of layer media types for the whole crate: `manifest::LayerCompression`.
    match LayerCompression::from_media_type(media_type) {
        Some(LayerCompression::Uncompressed) => Ok(Box::new(reader)),
        Some(LayerCompression::Gzip) => Ok(Box::new(MultiGzDecoder::new(reader))),
        Some(LayerCompression::Zstd) => {
            let decompress_error = |source| LayerError::Decompress {
                media_type: media_type.to_owned(),
                source,
            };
            let mut decoder = zstd::stream::read::Decoder::new(reader).map_err(decompress_error)?;
            decoder
                .window_log_max(ZSTD_MAX_WINDOW_LOG)
                .map_err(decompress_error)?;
            Ok(Box::new(decoder))
        }
        None => Err(LayerError::UnsupportedMediaType {
            media_type: media_type.to_owned(),
        }),
    }
}

/// Cumulative caps for one image (all its layers together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Uncompressed tar bytes read across the layers (headers, entry data, trailing
    /// bytes); bounds both the disk written and the decompression work.
    pub max_total_bytes: u64,
    /// Tar entries across the layers, including whiteouts and skipped entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    /// 64 GiB and a million entries: far above real images, well below harm.
    fn default() -> Self {
        Self {
            max_total_bytes: 64 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// What one layer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Regular files written.
    pub files: u64,
    /// Directory entries applied (created or merged); implied parents not counted.
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// `.wh.<name>` entries applied (whether or not something was there to delete).
    pub whiteouts: u64,
    /// `.wh..wh..opq` entries applied.
    pub opaque_whiteouts: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Device nodes and FIFOs skipped.
    pub skipped_special: u64,
    /// Entries of unknown type and aufs bookkeeping skipped.
    pub skipped_unknown: u64,
}

impl LayerStats {
    fn add(&mut self, other: &LayerStats) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.symlinks += other.symlinks;
        self.hardlinks += other.hardlinks;
        self.whiteouts += other.whiteouts;
        self.opaque_whiteouts += other.opaque_whiteouts;
        self.bytes += other.bytes;
        self.skipped_special += other.skipped_special;
        self.skipped_unknown += other.skipped_unknown;
    }
}

/// What an `Unpacker` did over all its layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Layers applied successfully.
    pub layers: u64,
    /// The sum of the layers' stats.
    pub total: LayerStats,
}

/// Applies the layers of one image, in order, to a root directory.
#[derive(Debug)]
pub struct Unpacker {
    /// `O_PATH | O_DIRECTORY` fd of the root: every path is resolved from it.
    root: Arc<root::DirHandle>,
    /// Apply header uid/gid: only root may give files away.
    chown: bool,
    budget: archive::Budget,
    stats: UnpackStats,
    poisoned: bool,
}

impl Unpacker {
    /// Opens `root`, which must be an existing directory (normally fresh and empty).
    pub fn new(root: &Path, limits: UnpackLimits) -> Result<Unpacker, LayerError> {
        let handle = root::open_root(root).map_err(|source| LayerError::Root {
            path: root.to_owned(),
            source,
        })?;
        Ok(Unpacker {
            root: Arc::new(handle),
            chown: rustix::process::geteuid().is_root(),
            budget: archive::Budget::new(limits),
            stats: UnpackStats::default(),
            poisoned: false,
        })
    }

    /// Applies one uncompressed layer tar (see [`decompress`]) on top of the previous
    /// ones. On error the root is partially unpacked and must be discarded.
    pub fn apply_layer(&mut self, tar: impl Read) -> Result<LayerStats, LayerError> {
        if self.poisoned {
            return Err(LayerError::Poisoned);
        }
        // Poisoned until this layer completes, so a panic in a caller's reader
        // cannot leave the Unpacker looking usable either.
        self.poisoned = true;
        let stats = apply::apply_layer(&self.root, self.chown, &mut self.budget, tar)?;
        self.poisoned = false;
        self.stats.layers += 1;
        self.stats.total.add(&stats);
        Ok(stats)
    }

    /// The stats so far.
    pub fn stats(&self) -> UnpackStats {
        self.stats
    }

    /// Ends the unpack and returns the stats of all applied layers.
    pub fn finish(self) -> UnpackStats {
        self.stats
    }
}
