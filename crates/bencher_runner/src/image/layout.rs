//! The on-disk layout of the image cache, and the few filesystem operations on it that
//! are not about one download, unpack or eviction: creating the directories, removing
//! what interrupted work left in `tmp/`, fsyncing directories and removing trees.
//! IO: the cache directory.
//!
//! ```text
//! ROOT/blobs/<alg>/<hex>             a blob, complete and verified (0444)
//! ROOT/rootfs/<alg>/<hex>/root/      the root filesystem of image manifest <alg>:<hex>
//! ROOT/rootfs/<alg>/<hex>/size       its bytes on disk, for the size bound
//! ROOT/tmp/<lock>.<random>           a download or unpack in progress, owned by the
//!                                    holder of ROOT/locks/<lock>
//! ROOT/tmp/trash.<random>/           an evicted rootfs being deleted
//! ROOT/locks/blob-<alg>-<hex>.fetch  held exclusively while downloading that blob
//! ROOT/locks/blob-<alg>-<hex>.pin    held shared while an image uses that blob
//! ROOT/locks/rootfs-<alg>-<hex>.build, .pin   the same for a rootfs
//! ```
//!
//! Both kinds of content appear at their final path by one `rename` from `tmp/` (same
//! filesystem), so a path that exists is complete. A rootfs is a directory holding the
//! tree and its size so that one rename publishes both, and so that the guest's `/` can
//! have its own mode (0755) while the entry directory around it stays 0700: images
//! carry setuid-root binaries and world-writable directories, and `tmp/` and `rootfs/`
//! are kept 0700 so no other host user can reach them.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bencher_oci::digest::{Digest, DigestAlgorithm};

use super::lock::{FileLock, LockMode};

const BLOBS: &str = "blobs";
const ROOTFS: &str = "rootfs";
const TMP: &str = "tmp";
const LOCKS: &str = "locks";
/// Inside a rootfs entry: the tree, and its accounted size in decimal bytes.
pub(super) const ROOTFS_TREE: &str = "root";
pub(super) const ROOTFS_SIZE: &str = "size";
/// Prefix of evicted rootfs entries awaiting deletion in `tmp/`.
pub(super) const TRASH: &str = "trash";

/// What a lock file protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LockKind {
    /// Exclusive while a blob is downloaded; owns `tmp/<lock>.*` files.
    BlobFetch,
    /// Shared while an image uses the blob; exclusive to evict it.
    BlobPin,
    /// Exclusive while a rootfs is unpacked; owns `tmp/<lock>.*` directories.
    RootfsBuild,
    /// Shared while an image uses the rootfs; exclusive to evict it.
    RootfsPin,
}

impl LockKind {
    fn file_name(self, digest: &Digest) -> String {
        let (content, purpose) = match self {
            Self::BlobFetch => ("blob", "fetch"),
            Self::BlobPin => ("blob", "pin"),
            Self::RootfsBuild => ("rootfs", "build"),
            Self::RootfsPin => ("rootfs", "pin"),
        };
        format!(
            "{content}-{}-{}.{purpose}",
            digest.algorithm(),
            digest.hex()
        )
    }
}

/// Paths of one cache directory.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Creates the directories (0700) if needed and enforces 0700 on the two that hold
    /// image trees.
    pub(super) fn create(root: &Path) -> io::Result<Layout> {
        let layout = Layout {
            root: root.to_owned(),
        };
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(root)?;
        for dir in [BLOBS, ROOTFS, TMP, LOCKS] {
            builder.create(root.join(dir))?;
        }
        for dir in [ROOTFS, TMP] {
            fs::set_permissions(root.join(dir), fs::Permissions::from_mode(0o700))?;
        }
        Ok(layout)
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn blobs(&self) -> PathBuf {
        self.root.join(BLOBS)
    }

    pub(super) fn blob_dir(&self, algorithm: DigestAlgorithm) -> PathBuf {
        self.blobs().join(algorithm.as_str())
    }

    pub(super) fn blob(&self, digest: &Digest) -> PathBuf {
        self.blob_dir(digest.algorithm()).join(digest.hex())
    }

    pub(super) fn rootfs(&self) -> PathBuf {
        self.root.join(ROOTFS)
    }

    pub(super) fn rootfs_dir(&self, algorithm: DigestAlgorithm) -> PathBuf {
        self.rootfs().join(algorithm.as_str())
    }

    /// The entry directory of the rootfs of manifest `digest` (tree and size inside).
    pub(super) fn rootfs_entry(&self, digest: &Digest) -> PathBuf {
        self.rootfs_dir(digest.algorithm()).join(digest.hex())
    }

    pub(super) fn tmp(&self) -> PathBuf {
        self.root.join(TMP)
    }

    pub(super) fn locks(&self) -> PathBuf {
        self.root.join(LOCKS)
    }

    pub(super) fn lock(&self, kind: LockKind, digest: &Digest) -> PathBuf {
        self.locks().join(kind.file_name(digest))
    }

    /// The name prefix of temporary entries owned by the holder of that lock.
    pub(super) fn temp_prefix(kind: LockKind, digest: &Digest) -> String {
        format!("{}.", kind.file_name(digest))
    }

    /// Removes what interrupted downloads, unpacks and evictions left in `tmp/`. An
    /// entry whose owning lock another process holds right now is live work of a runner
    /// sharing this cache, and is left alone. Returns how many entries were removed.
    pub(super) fn clean_tmp(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.tmp())? {
            let entry = entry?;
            let name = entry.file_name();
            let owner = name
                .to_str()
                .and_then(|name| name.rsplit_once('.'))
                .map(|(owner, _random)| owner)
                .filter(|owner| owner.ends_with(".fetch") || owner.ends_with(".build"));
            // Held while the entry is removed, so the owner cannot be mid-way.
            let _lock = match owner {
                None => None,
                Some(owner) => {
                    let path = self.locks().join(owner);
                    match FileLock::try_acquire(&path, LockMode::Exclusive, false) {
                        Ok(Some(lock)) => Some(lock),
                        Ok(None) => continue,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => return Err(e),
                    }
                }
            };
            let path = entry.path();
            let result = if entry.file_type()?.is_dir() {
                remove_tree(&path)
            } else {
                fs::remove_file(&path)
            };
            match result {
                Ok(()) => removed += 1,
                // Another process cleaning at the same time, or deleting its trash.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

/// Makes a rename or creation in `dir` durable.
pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a directory tree that may hold directories an image made read-only (which
/// stop even their owner from deleting their entries unless running as root).
pub(super) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path)?;
            fs::remove_dir_all(path)
        }
        other => other,
    }
}

/// Gives the owner rwx on every directory of the tree, without following symlinks.
fn make_dirs_writable(path: &Path) -> io::Result<()> {
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let meta = fs::symlink_metadata(&dir)?;
        if !meta.is_dir() {
            continue;
        }
        fs::set_permissions(
            &dir,
            fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
        )?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::sha256_of(b"x")
    }

    #[test]
    fn paths_follow_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(&dir.path().join("cache")).unwrap();
        let d = digest();
        let root = dir.path().join("cache");
        assert_eq!(
            layout.blob(&d),
            root.join("blobs/sha256").join(d.hex()),
            "content address"
        );
        assert_eq!(
            layout.rootfs_entry(&d),
            root.join("rootfs/sha256").join(d.hex())
        );
        assert_eq!(
            layout.lock(LockKind::BlobPin, &d),
            root.join(format!("locks/blob-sha256-{}.pin", d.hex()))
        );
        assert_eq!(
            Layout::temp_prefix(LockKind::RootfsBuild, &d),
            format!("rootfs-sha256-{}.build.", d.hex())
        );
        for sub in ["rootfs", "tmp"] {
            let mode = fs::metadata(root.join(sub)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{sub}");
        }
    }

    #[test]
    fn clean_tmp_spares_entries_whose_owner_is_alive() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let live = Digest::sha256_of(b"live");
        let dead = Digest::sha256_of(b"dead");
        let live_file = layout.tmp().join(format!(
            "{}abc123",
            Layout::temp_prefix(LockKind::BlobFetch, &live)
        ));
        let dead_file = layout.tmp().join(format!(
            "{}def456",
            Layout::temp_prefix(LockKind::BlobFetch, &dead)
        ));
        let dead_dir = layout.tmp().join(format!(
            "{}ghi789",
            Layout::temp_prefix(LockKind::RootfsBuild, &dead)
        ));
        let trash = layout.tmp().join("trash.xyz");
        fs::write(&live_file, b"partial").unwrap();
        fs::write(&dead_file, b"partial").unwrap();
        fs::create_dir_all(dead_dir.join("root/ro/sub")).unwrap();
        fs::set_permissions(dead_dir.join("root/ro"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::create_dir_all(trash.join("x")).unwrap();
        fs::write(layout.tmp().join("garbage"), b"?").unwrap();

        let _owner = FileLock::acquire(
            &layout.lock(LockKind::BlobFetch, &live),
            LockMode::Exclusive,
        )
        .unwrap();
        assert_eq!(layout.clean_tmp().unwrap(), 4);
        let left: Vec<_> = fs::read_dir(layout.tmp())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left, [live_file]);
    }
}
