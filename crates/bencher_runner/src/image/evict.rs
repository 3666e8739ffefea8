//! What the cache holds, and least-recently-used eviction down to its size bound.
//! IO: reads `blobs/` and `rootfs/`, touches mtimes, takes pin locks, deletes.
//!
//! Last use is the mtime: set when content is stored and touched on every pull or
//! rootfs request that uses it, so it is shared by every process using the cache
//! without an index file to keep consistent. Blobs and rootfs trees are one LRU list.
//!
//! Eviction takes the content's pin lock exclusively without waiting: content that any
//! pulled image (in any process) still pins is skipped, and while the evictor holds the
//! lock nobody can start using it. A blob is unlinked (a reader with it open keeps its
//! inode); a rootfs is renamed into `tmp/` first, so it vanishes from its path at once,
//! and deleted after the lock is released.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bencher_oci::digest::{Digest, DigestAlgorithm};

use super::CacheUsage;
use super::layout::{Layout, LockKind, ROOTFS_SIZE, ROOTFS_TREE, TRASH, remove_tree};
use super::lock::{FileLock, LockMode};
use super::rootfs::measure_tree;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Blob,
    Rootfs,
}

/// One unit of eviction.
#[derive(Debug)]
struct Item {
    kind: Kind,
    digest: Digest,
    path: PathBuf,
    bytes: u64,
    used: SystemTime,
}

/// What one eviction pass did.
#[derive(Debug, Default)]
pub(super) struct Evicted {
    pub(super) blobs: u64,
    pub(super) rootfs: u64,
    pub(super) bytes_freed: u64,
    /// Bytes still cached afterwards.
    pub(super) bytes_left: u64,
}

/// Marks content as just used.
pub(super) fn touch(path: &Path) -> io::Result<()> {
    File::open(path)?.set_modified(SystemTime::now())
}

pub(super) fn usage(layout: &Layout) -> io::Result<CacheUsage> {
    let mut usage = CacheUsage::default();
    for item in scan(layout)? {
        usage.bytes = usage.bytes.saturating_add(item.bytes);
        match item.kind {
            Kind::Blob => usage.blobs += 1,
            Kind::Rootfs => usage.rootfs += 1,
        }
    }
    Ok(usage)
}

/// Evicts least-recently-used, unpinned content until what is cached plus `reserve`
/// (bytes about to be downloaded) fits in `max_bytes`, or nothing evictable is left.
pub(super) fn evict(layout: &Layout, max_bytes: u64, reserve: u64) -> io::Result<Evicted> {
    let mut items = scan(layout)?;
    let mut total: u64 = items.iter().map(|item| item.bytes).sum();
    let mut evicted = Evicted::default();
    if total.saturating_add(reserve) > max_bytes {
        items.sort_by(|a, b| a.used.cmp(&b.used).then_with(|| a.path.cmp(&b.path)));
        for item in items {
            if total.saturating_add(reserve) <= max_bytes {
                break;
            }
            if evict_item(layout, &item)? {
                total = total.saturating_sub(item.bytes);
                evicted.bytes_freed += item.bytes;
                match item.kind {
                    Kind::Blob => evicted.blobs += 1,
                    Kind::Rootfs => evicted.rootfs += 1,
                }
            }
        }
    }
    evicted.bytes_left = total;
    Ok(evicted)
}

/// Deletes one item unless it is pinned; whether it was deleted by us.
fn evict_item(layout: &Layout, item: &Item) -> io::Result<bool> {
    let (pin_kind, work_kind) = match item.kind {
        Kind::Blob => (LockKind::BlobPin, LockKind::BlobFetch),
        Kind::Rootfs => (LockKind::RootfsPin, LockKind::RootfsBuild),
    };
    let Some(pin) = FileLock::try_acquire(
        &layout.lock(pin_kind, &item.digest),
        LockMode::Exclusive,
        true,
    )?
    else {
        return Ok(false);
    };
    let trash = match item.kind {
        Kind::Blob => {
            match fs::remove_file(&item.path) {
                Ok(()) => {}
                // Another evictor was first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            }
            None
        }
        Kind::Rootfs => {
            let trash = tempfile::Builder::new()
                .prefix(&format!("{TRASH}."))
                .tempdir_in(layout.tmp())?
                .keep();
            match fs::rename(&item.path, trash.join("rootfs")) {
                Ok(()) => Some(trash),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::remove_dir(&trash)?;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
    };
    // Downloads and unpacks of this digest hold its pin, so nobody holds this lock: the
    // lock files go with the content and `locks/` stays as small as the cache.
    match fs::remove_file(layout.lock(work_kind, &item.digest)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    pin.remove()?;
    // Best effort: the rootfs is already gone from its path, and whatever is left here
    // (another process's `open` may be deleting it too) the next `open` removes.
    if let Some(trash) = trash
        && let Err(error) = remove_tree(&trash)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %trash.display(), %error, "cannot delete an evicted rootfs yet");
    }
    tracing::debug!(digest = %item.digest, kind = ?item.kind, bytes = item.bytes, "evicted from the image cache");
    Ok(true)
}

/// Everything cached. Entries that vanish while we look (another process evicting) are
/// skipped; names that are no digest are not ours and are ignored.
fn scan(layout: &Layout) -> io::Result<Vec<Item>> {
    let mut items = Vec::new();
    for (kind, dir) in [
        (Kind::Blob, layout.blobs()),
        (Kind::Rootfs, layout.rootfs()),
    ] {
        for (digest, path) in digests_in(&dir)? {
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let bytes = match kind {
                Kind::Blob if meta.is_file() => meta.len(),
                Kind::Rootfs if meta.is_dir() => match rootfs_size(&path) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                },
                _ => continue,
            };
            items.push(Item {
                kind,
                digest,
                path,
                bytes,
                used: meta.modified()?,
            });
        }
    }
    Ok(items)
}

/// `<dir>/<alg>/<hex>` entries whose names make a digest.
fn digests_in(dir: &Path) -> io::Result<Vec<(Digest, PathBuf)>> {
    let mut found = Vec::new();
    for algorithm in fs::read_dir(dir)? {
        let algorithm = algorithm?;
        let Some(name) = algorithm.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.parse::<DigestAlgorithm>().is_err() || !algorithm.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(algorithm.path())? {
            let entry = entry?;
            let Some(hex) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Ok(digest) = format!("{name}:{hex}").parse::<Digest>() {
                found.push((digest, entry.path()));
            }
        }
    }
    Ok(found)
}

/// The recorded size of a rootfs entry; measured when the record is unreadable (it is
/// written before the entry is published, so that means outside interference).
fn rootfs_size(entry: &Path) -> io::Result<u64> {
    match fs::read_to_string(entry.join(ROOTFS_SIZE)) {
        Ok(text) => match text.trim().parse() {
            Ok(bytes) => Ok(bytes),
            Err(_) => measure_tree(&entry.join(ROOTFS_TREE)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => measure_tree(&entry.join(ROOTFS_TREE)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::lock::PinSet;
    use std::time::Duration;

    fn put_blob(layout: &Layout, content: &[u8], age_secs: u64) -> Digest {
        let digest = Digest::sha256_of(content);
        fs::create_dir_all(layout.blob_dir(digest.algorithm())).unwrap();
        let path = layout.blob(&digest);
        fs::write(&path, content).unwrap();
        File::open(&path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .unwrap();
        digest
    }

    fn put_rootfs(layout: &Layout, key: &[u8], bytes: u64, age_secs: u64) -> Digest {
        let digest = Digest::sha256_of(key);
        let entry = layout.rootfs_entry(&digest);
        fs::create_dir_all(entry.join(ROOTFS_TREE).join("usr/bin")).unwrap();
        fs::write(entry.join(ROOTFS_SIZE), bytes.to_string()).unwrap();
        File::open(&entry)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .unwrap();
        digest
    }

    #[test]
    fn evicts_least_recently_used_first_until_it_fits() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let oldest = put_blob(&layout, &[1; 100], 300);
        let rootfs = put_rootfs(&layout, b"image", 1000, 200);
        let newer = put_blob(&layout, &[2; 100], 100);
        let newest = put_blob(&layout, &[3; 100], 0);
        assert_eq!(
            usage(&layout).unwrap(),
            CacheUsage {
                bytes: 1300,
                blobs: 3,
                rootfs: 1
            }
        );

        // Room for 150 more bytes under 1300: the oldest blob and the rootfs go.
        let evicted = evict(&layout, 1300, 150).unwrap();
        assert_eq!((evicted.blobs, evicted.rootfs), (1, 1));
        assert_eq!(evicted.bytes_left, 200);
        assert!(!layout.blob(&oldest).exists());
        assert!(!layout.rootfs_entry(&rootfs).exists());
        assert!(layout.blob(&newer).exists() && layout.blob(&newest).exists());
        // The trash is gone too, and so are the lock files of what was evicted.
        assert_eq!(fs::read_dir(layout.tmp()).unwrap().count(), 0);
        assert!(!layout.lock(LockKind::BlobPin, &oldest).exists());

        // Within budget: nothing to do.
        let evicted = evict(&layout, 1000, 0).unwrap();
        assert_eq!(evicted.blobs + evicted.rootfs, 0);
    }

    #[test]
    fn never_evicts_pinned_content() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let pinned_blob = put_blob(&layout, &[1; 100], 300);
        let pinned_rootfs = put_rootfs(&layout, b"image", 100, 300);
        let free = put_blob(&layout, &[2; 100], 0);
        let pins = PinSet::acquire(&[
            layout.lock(LockKind::BlobPin, &pinned_blob),
            layout.lock(LockKind::RootfsPin, &pinned_rootfs),
        ])
        .unwrap();
        let evicted = evict(&layout, 0, 0).unwrap();
        assert_eq!((evicted.blobs, evicted.rootfs), (1, 0));
        assert_eq!(evicted.bytes_left, 200, "over budget while pinned");
        assert!(layout.blob(&pinned_blob).exists());
        assert!(layout.rootfs_entry(&pinned_rootfs).exists());
        assert!(!layout.blob(&free).exists());
        drop(pins);
        let evicted = evict(&layout, 0, 0).unwrap();
        assert_eq!(
            (evicted.blobs, evicted.rootfs, evicted.bytes_left),
            (1, 1, 0)
        );
    }

    #[test]
    fn touch_moves_content_to_the_back_of_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let a = put_blob(&layout, &[1; 100], 300);
        let b = put_blob(&layout, &[2; 100], 200);
        touch(&layout.blob(&a)).unwrap();
        evict(&layout, 100, 0).unwrap();
        assert!(layout.blob(&a).exists());
        assert!(!layout.blob(&b).exists());
    }

    #[test]
    fn ignores_foreign_names() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        fs::create_dir_all(layout.blobs().join("md5")).unwrap();
        fs::write(layout.blobs().join("md5/abc"), b"x").unwrap();
        fs::create_dir_all(layout.blob_dir(DigestAlgorithm::Sha256)).unwrap();
        fs::write(
            layout.blob_dir(DigestAlgorithm::Sha256).join("README"),
            b"x",
        )
        .unwrap();
        assert_eq!(usage(&layout).unwrap(), CacheUsage::default());
        evict(&layout, 0, 0).unwrap();
        assert!(layout.blobs().join("md5/abc").exists());
    }
}
