//! The in-memory table of upload sessions: a lock per session, so requests on one
//! session run one at a time, and the cached hashing state of its data. Pure; no IO.
//! Storage stays the source of truth: an entry only saves re-reading data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bencher_oci::digest::{DigestAlgorithm, DigestHasher};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use uuid::Uuid;

type Entry = Arc<AsyncMutex<Option<DigestHasher>>>;

#[derive(Default)]
pub(super) struct Sessions {
    map: Mutex<HashMap<Uuid, Entry>>,
}

impl Sessions {
    /// Waits until no other request works on `session`, then holds it.
    pub(super) async fn lock(&self, session: Uuid) -> SessionLock<'_> {
        let entry = self.entries().entry(session).or_default().clone();
        let guard = entry.clone().lock_owned().await;
        SessionLock {
            sessions: self,
            session,
            entry,
            guard,
        }
    }

    /// Drops the cached state of `session`; a request holding its lock keeps working
    /// on its own copy, which no later request sees.
    pub(super) fn remove(&self, session: Uuid) {
        self.entries().remove(&session);
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        // The map holds no invariant a panic could break halfway.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Exclusive use of one session, with its cached hashing state.
pub(super) struct SessionLock<'a> {
    sessions: &'a Sessions,
    session: Uuid,
    entry: Entry,
    guard: OwnedMutexGuard<Option<DigestHasher>>,
}

impl SessionLock<'_> {
    /// A copy of the cached hasher if it has hashed exactly the `size` bytes the session
    /// holds; for an empty session a fresh SHA-256 hasher is always right.
    pub(super) fn hasher_at(&self, size: u64) -> Option<DigestHasher> {
        match &*self.guard {
            Some(hasher) if hasher.bytes_hashed() == size => Some(hasher.clone()),
            _ if size == 0 => Some(DigestHasher::new(DigestAlgorithm::Sha256)),
            _ => None,
        }
    }

    pub(super) fn set_hasher(&mut self, hasher: Option<DigestHasher>) {
        *self.guard = hasher;
    }

    /// Removes the session's entry (it was finished, or never existed), unless it was
    /// already replaced by a new one.
    pub(super) fn forget(self) {
        let mut entries = self.sessions.entries();
        if entries
            .get(&self.session)
            .is_some_and(|e| Arc::ptr_eq(e, &self.entry))
        {
            entries.remove(&self.session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caches_the_hasher_per_session_and_serializes() {
        let sessions = Sessions::default();
        let id = Uuid::new_v4();
        let mut lock = sessions.lock(id).await;
        assert!(lock.hasher_at(0).is_some());
        assert!(lock.hasher_at(3).is_none());
        let mut hasher = DigestHasher::new(DigestAlgorithm::Sha256);
        hasher.update(b"abc");
        lock.set_hasher(Some(hasher));
        assert_eq!(lock.hasher_at(3).map(|h| h.bytes_hashed()), Some(3));
        assert!(lock.hasher_at(4).is_none());

        // A second request waits for the first.
        let second = sessions.lock(id);
        tokio::pin!(second);
        assert!(futures::poll!(second.as_mut()).is_pending());
        drop(lock);
        let lock = second.await;
        assert!(lock.hasher_at(3).is_some());
        lock.forget();
        assert!(sessions.entries().is_empty());
    }
}
