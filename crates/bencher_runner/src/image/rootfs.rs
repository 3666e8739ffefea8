//! An image's root filesystem, built once per manifest digest from the cached layer
//! blobs with `bencher_oci`'s escape-proof `Unpacker`, and reused by every later job of
//! that image. IO: reads layer blobs, writes a tree under `tmp/`, renames it into
//! `rootfs/`, touches it on use.
//!
//! The tree is unpacked into a fresh directory in `tmp/` (owned by the rootfs's build
//! lock), measured, synced, and only then renamed to its entry in `rootfs/`; on any
//! error it is deleted. So an entry that exists is complete, and an interrupted unpack
//! never leaves a usable-looking rootfs. Each layer's uncompressed stream is hashed on
//! its way into the unpacker and checked against the config's diff ID, as containerd
//! does, so the tree is exactly the layers the image config describes.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bencher_oci::digest::DigestVerifier;
use bencher_oci::layer::{UnpackLimits, Unpacker, decompress};

use super::error::ImageError;
use super::evict::touch;
use super::layout::{Layout, LockKind, ROOTFS_SIZE, ROOTFS_TREE, fsync_dir, remove_tree};
use super::{ImageCache, PulledImage};

/// Read buffer for layer blobs: decompressors read in small pieces.
const READ_BUFFER: usize = 256 * 1024;

impl ImageCache {
    /// The image's root filesystem directory, unpacked once per manifest digest and
    /// reused: a second call (from any task or process sharing the cache) returns the
    /// same path without unpacking. `limits` bound the unpack (bytes, entries).
    ///
    /// The tree is shared by every job of the image: treat it as read-only. It stays
    /// pinned against eviction as long as `image` (or a clone) is alive.
    pub async fn rootfs(
        &self,
        image: &PulledImage,
        limits: UnpackLimits,
    ) -> Result<PathBuf, ImageError> {
        let digest = &image.manifest_digest;
        let entry = self.inner.layout.rootfs_entry(digest);
        if !entry.is_dir() {
            let _in_process = self.inner.in_flight.lock(&format!("rootfs {digest}")).await;
            let lock = self.exclusive(LockKind::RootfsBuild, digest).await?;
            let layout = self.inner.layout.clone();
            // The clone carries the image's pins into the blocking task, so they hold
            // until the unpack ends even if this future is dropped.
            let image = image.clone();
            self.blocking(move || {
                // Held until the unpack ends: the lock owns the temporary tree.
                let _lock = lock;
                build(&layout, &image, limits)
            })
            .await?;
        }
        touch(&entry).map_err(ImageError::cache("mark as used", &entry))?;
        self.evict(0).await?;
        Ok(entry.join(ROOTFS_TREE))
    }
}

/// Unpacks the image into `tmp/` and publishes it at its entry, unless another task or
/// process did while we waited for the build lock. Call with the build lock held.
fn build(layout: &Layout, image: &PulledImage, limits: UnpackLimits) -> Result<(), ImageError> {
    let digest = &image.manifest_digest;
    let entry = layout.rootfs_entry(digest);
    if entry.is_dir() {
        return Ok(());
    }
    let diff_ids = image.config.diff_ids();
    if diff_ids.len() != image.layers.len() {
        return Err(ImageError::DiffIdCount {
            manifest: digest.clone(),
            layers: image.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    // 0700: the barrier between the image's setuid files and other host users. Given
    // explicitly: `tempfile` creates directories 0777 minus the umask.
    let temp = tempfile::Builder::new()
        .prefix(&Layout::temp_prefix(LockKind::RootfsBuild, digest))
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(layout.tmp())
        .map_err(ImageError::cache(
            "create a temporary directory in",
            layout.tmp(),
        ))?;
    let staged = temp.path().to_owned();
    let result = unpack(&staged, image, limits).and_then(|()| publish(layout, temp, &entry));
    if result.is_err() {
        // `TempDir` would try too, but cannot remove directories an image made
        // read-only unless we are root.
        if let Err(error) = remove_tree(&staged)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %staged.display(), %error, "cannot remove a failed unpack; the next open of the cache will");
        }
    }
    result
}

/// Applies the layers in order into `staged/root` and records the tree's size.
fn unpack(staged: &Path, image: &PulledImage, limits: UnpackLimits) -> Result<(), ImageError> {
    let manifest = &image.manifest_digest;
    let tree = staged.join(ROOTFS_TREE);
    DirBuilder::new()
        .mode(0o755)
        .create(&tree)
        .map_err(ImageError::cache("create", &tree))?;
    // The guest's `/`, whatever the umask; the entry directory around it is the barrier.
    fs::set_permissions(&tree, fs::Permissions::from_mode(0o755))
        .map_err(ImageError::cache("set permissions of", &tree))?;
    let mut unpacker = Unpacker::new(&tree, limits).map_err(|source| ImageError::StartUnpack {
        manifest: manifest.clone(),
        source,
    })?;
    for ((descriptor, path), diff_id) in image.layers.iter().zip(image.config.diff_ids()) {
        let unpack_error = |source| ImageError::Unpack {
            manifest: manifest.clone(),
            layer: descriptor.digest.clone(),
            source,
        };
        let file = File::open(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ImageError::MissingBlob {
                manifest: manifest.clone(),
                digest: descriptor.digest.clone(),
                path: path.clone(),
            },
            _ => ImageError::Cache {
                action: "open",
                path: path.clone(),
                source,
            },
        })?;
        let reader = decompress(
            &descriptor.media_type,
            BufReader::with_capacity(READ_BUFFER, file),
        )
        .map_err(unpack_error)?;
        let mut reader = Hashing {
            inner: reader,
            verifier: diff_id.verifier(),
        };
        unpacker.apply_layer(&mut reader).map_err(unpack_error)?;
        // The unpacker drains the stream to its end, so the hash covers all of it.
        reader
            .verifier
            .verify()
            .map_err(|source| ImageError::DiffId {
                manifest: manifest.clone(),
                layer: descriptor.digest.clone(),
                source: Box::new(source),
            })?;
    }
    let stats = unpacker.finish();
    let bytes = measure_tree(&tree).map_err(ImageError::cache("measure", &tree))?;
    let size = staged.join(ROOTFS_SIZE);
    fs::write(&size, bytes.to_string()).map_err(ImageError::cache("write", &size))?;
    tracing::debug!(%manifest, layers = stats.layers, files = stats.total.files, bytes, "unpacked a rootfs");
    Ok(())
}

/// Makes the staged entry durable, then visible at `entry` by one rename.
fn publish(layout: &Layout, temp: tempfile::TempDir, entry: &Path) -> Result<(), ImageError> {
    // One syncfs instead of an fsync per file: after a crash a published tree is whole.
    let staged = temp.path().to_owned();
    File::open(&staged)
        .and_then(|dir| rustix::fs::syncfs(&dir).map_err(io::Error::from))
        .map_err(ImageError::cache("sync the filesystem of", &staged))?;
    let parent = entry
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| layout.rootfs());
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)
        .map_err(ImageError::cache("create", &parent))?;
    // From here on we remove the staged tree ourselves if the rename fails.
    let staged = temp.keep();
    match fs::rename(&staged, entry) {
        Ok(()) => fsync_dir(&parent).map_err(ImageError::cache("fsync", &parent)),
        // Published by someone who did not hold the build lock: only a cache
        // damaged from outside gets here; theirs is as good as ours.
        Err(_) if entry.is_dir() => {
            remove_tree(&staged).map_err(ImageError::cache("remove", &staged))
        }
        Err(source) => {
            let _ = remove_tree(&staged);
            Err(ImageError::Cache {
                action: "publish a rootfs at",
                path: entry.to_owned(),
                source,
            })
        }
    }
}

/// Bytes on disk of a tree (allocated blocks, each hard-linked inode once), without
/// following symlinks.
pub(super) fn measure_tree(root: &Path) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total: u64 = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path)?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total = total.saturating_add(meta.blocks().saturating_mul(512));
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(total)
}

/// Hashes what the unpacker reads, for the diff ID check.
struct Hashing<R> {
    inner: R,
    verifier: DigestVerifier,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.verifier.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_every_layer_type_the_pull_accepts() {
        use bencher_oci::manifest::{
            DOCKER_FOREIGN_LAYER_TAR_GZIP, DOCKER_LAYER_TAR, DOCKER_LAYER_TAR_GZIP,
            LayerCompression, OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD, OCI_LAYER_TAR,
            OCI_LAYER_TAR_GZIP, OCI_LAYER_TAR_ZSTD,
        };
        for media_type in [
            OCI_LAYER_TAR,
            OCI_LAYER_TAR_GZIP,
            OCI_LAYER_TAR_ZSTD,
            OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD,
            DOCKER_LAYER_TAR,
            DOCKER_LAYER_TAR_GZIP,
            DOCKER_FOREIGN_LAYER_TAR_GZIP,
        ] {
            assert!(LayerCompression::from_media_type(media_type).is_some());
            assert!(decompress(media_type, io::empty()).is_ok(), "{media_type}");
        }
        assert!(decompress("application/x-sbom", io::empty()).is_err());
    }

    #[test]
    fn measures_blocks_and_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("a")).unwrap();
        fs::write(root.join("a/big"), vec![7u8; 1 << 20]).unwrap();
        let one = measure_tree(&root).unwrap();
        assert!(one >= 1 << 20, "{one}");
        fs::hard_link(root.join("a/big"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        let linked = measure_tree(&root).unwrap();
        assert!(
            linked - one < 8192,
            "a hard link adds no data: {one} -> {linked}"
        );
    }
}
