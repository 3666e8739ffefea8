//! Locks of the image cache: `flock(2)` on files under `ROOT/locks/` for exclusion
//! between processes (and between tasks, since flock locks belong to open files, not to
//! processes), and an in-process keyed async mutex so tasks of one runner share a
//! download without parking blocking threads. IO: opens, locks and unlinks lock files.
//!
//! Lock files may be unlinked by their holder (eviction removes the lock files of what
//! it deletes), so acquiring re-checks after the lock is granted that the file still is
//! the one at the path; otherwise the lock protects nothing and we start over.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LockMode {
    /// Many holders: pins of content in use.
    Shared,
    /// One holder: a download, an unpack, or an eviction.
    Exclusive,
}

/// A held `flock`; released when dropped (closing the file releases it).
#[derive(Debug)]
pub(super) struct FileLock {
    /// Never read: holding the file open is holding the lock.
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// Blocks until the lock is held, creating the lock file if needed.
    pub(super) fn acquire(path: &Path, mode: LockMode) -> io::Result<FileLock> {
        let op = match mode {
            LockMode::Shared => FlockOperation::LockShared,
            LockMode::Exclusive => FlockOperation::LockExclusive,
        };
        // A blocking lock never answers "would block", so `None` cannot come back.
        lock_at(path, op, true)?.ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
    }

    /// The lock if nobody else holds a conflicting one right now, creating the lock file
    /// if `create` (without it, a missing lock file means nobody holds it: `Ok(None)`
    /// is not returned for that, the caller gets `NotFound`).
    pub(super) fn try_acquire(
        path: &Path,
        mode: LockMode,
        create: bool,
    ) -> io::Result<Option<FileLock>> {
        let op = match mode {
            LockMode::Shared => FlockOperation::NonBlockingLockShared,
            LockMode::Exclusive => FlockOperation::NonBlockingLockExclusive,
        };
        lock_at(path, op, create)
    }

    /// Unlinks the lock file while still holding the lock, then releases it. Anyone who
    /// opened the old file and gets the lock after us sees that it is no longer at the
    /// path and retries with a fresh one.
    pub(super) fn remove(self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn lock_at(path: &Path, op: FlockOperation, create: bool) -> io::Result<Option<FileLock>> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .mode(0o600)
            .open(path)?;
        loop {
            match flock(&file, op) {
                Ok(()) => break,
                Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) => return Ok(None),
                Err(errno) => return Err(errno.into()),
            }
        }
        let held = file.metadata()?;
        match fs::metadata(path) {
            Ok(current) if current.dev() == held.dev() && current.ino() == held.ino() => {
                return Ok(Some(FileLock {
                    _file: file,
                    path: path.to_owned(),
                }));
            }
            // Unlinked (or replaced) by its previous holder while we waited.
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Shared locks on the pin files of everything one pulled image uses: while held, the
/// evictor skips those blobs and that rootfs.
#[derive(Debug, Default)]
pub(super) struct PinSet {
    _locks: Vec<FileLock>,
}

impl PinSet {
    /// Pins every path's content; blocks only while an evictor holds one of them, which
    /// is for the duration of an unlink or rename.
    pub(super) fn acquire(pin_files: &[PathBuf]) -> io::Result<PinSet> {
        let locks = pin_files
            .iter()
            .map(|path| FileLock::acquire(path, LockMode::Shared))
            .collect::<io::Result<_>>()?;
        Ok(PinSet { _locks: locks })
    }
}

/// One async mutex per key, created on demand and dropped when unused, so that tasks of
/// this process wanting the same download or unpack wait for the first instead of
/// blocking a thread on the flock.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub(super) struct InFlightGuard<'a> {
    owner: &'a InFlight,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl InFlight {
    pub(super) async fn lock(&self, key: &str) -> InFlightGuard<'_> {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(key.to_owned()).or_default())
        };
        let guard = mutex.lock_owned().await;
        InFlightGuard {
            owner: self,
            key: key.to_owned(),
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        // Release first, so the count below no longer includes us.
        self.guard.take();
        let mut map = self
            .owner
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only the map's own reference left: nobody holds or waits for this key.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flock_conflicts_between_files_of_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pin");
        let shared = FileLock::acquire(&path, LockMode::Shared).unwrap();
        let shared2 = FileLock::try_acquire(&path, LockMode::Shared, true).unwrap();
        assert!(shared2.is_some(), "shared locks coexist");
        assert!(
            FileLock::try_acquire(&path, LockMode::Exclusive, true)
                .unwrap()
                .is_none(),
            "a pin blocks the evictor even within one process"
        );
        drop((shared, shared2));
        let exclusive = FileLock::try_acquire(&path, LockMode::Exclusive, true).unwrap();
        assert!(exclusive.is_some());
        assert!(
            FileLock::try_acquire(&path, LockMode::Shared, true)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_removed_lock_file_is_not_locked_by_late_comers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pin");
        let exclusive = FileLock::acquire(&path, LockMode::Exclusive).unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let lock = FileLock::acquire(&path, LockMode::Shared).unwrap();
                // The lock held is on the file at the path, not the unlinked one.
                let held = lock._file.metadata().unwrap();
                let current = fs::metadata(&path).unwrap();
                (held.ino(), current.ino())
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        exclusive.remove().unwrap();
        let (held, current) = waiter.join().unwrap();
        assert_eq!(held, current);
    }

    #[test]
    fn try_without_create_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileLock::try_acquire(&dir.path().join("none"), LockMode::Exclusive, false)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn in_flight_serializes_a_key_and_forgets_it() {
        let in_flight = Arc::new(InFlight::default());
        let first = in_flight.lock("a").await;
        let other_key = in_flight.lock("b").await;
        drop(other_key);
        let waiter = {
            let in_flight = Arc::clone(&in_flight);
            tokio::spawn(async move {
                let _second = in_flight.lock("a").await;
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the second waits for the first");
        drop(first);
        waiter.await.unwrap();
        assert_eq!(in_flight.len(), 0);
    }
}
