//! The map from client identifier to session. Only a map: the rules for opening, taking over and
//! ending sessions live in [`crate::broker::Broker`], which also owns the router they touch.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

use super::{ClientId, Session, SessionId};

/// Sessions by client identifier. A table of the sessions themselves, keyed by the identifier
/// each holds, rather than a map that stores a second copy of the key: one pointer per slot,
/// and there is a slot per client.
#[derive(Debug, Default)]
pub struct SessionMap {
    sessions: HashTable<Arc<Session>>,
    hasher: foldhash::fast::RandomState,
}

impl SessionMap {
    pub fn get(&self, client_id: &ClientId) -> Option<&Arc<Session>> {
        let hash = self.hasher.hash_one(client_id);
        self.sessions
            .find(hash, |session| session.client_id == *client_id)
    }

    /// Adds `session`, replacing the one with the same client identifier if there is one.
    pub fn insert(&mut self, session: Arc<Session>) {
        let hash = self.hasher.hash_one(&session.client_id);
        let hasher = &self.hasher;
        match self.sessions.entry(
            hash,
            |held| held.client_id == session.client_id,
            |held| hasher.hash_one(&held.client_id),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut held) => *held.get_mut() = session,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(session);
            }
        }
    }

    pub fn remove(&mut self, client_id: &ClientId) -> Option<Arc<Session>> {
        let hash = self.hasher.hash_one(client_id);
        let held = self
            .sessions
            .find_entry(hash, |session| session.client_id == *client_id)
            .ok()?;
        Some(held.remove().0)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.sessions.iter()
    }
}

#[derive(Debug, Default)]
pub struct SessionRegistry {
    sessions: Mutex<SessionMap>,
    next_id: AtomicU64,
}

impl SessionRegistry {
    /// The map, locked. Lock order: registry before any session; never across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, SessionMap> {
        self.sessions.lock()
    }

    pub fn next_id(&self) -> SessionId {
        SessionId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Ids up to `used` are taken (by sessions read back from the store): new ones come after.
    pub fn reserve(&self, used: SessionId) {
        self.next_id.fetch_max(used.0, Ordering::Relaxed);
    }

    pub fn get(&self, client_id: &ClientId) -> Option<Arc<Session>> {
        self.sessions.lock().get(client_id).cloned()
    }

    /// Removes the entry only if it is still this session (a newer one may have replaced it).
    pub fn remove_if_same(&self, session: &Arc<Session>) -> bool {
        let mut sessions = self.sessions.lock();
        match sessions.get(&session.client_id) {
            Some(current) if Arc::ptr_eq(current, session) => {
                sessions.remove(&session.client_id);
                true
            }
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every session, for `$SYS` and the admin API.
    pub fn snapshot(&self) -> Vec<Arc<Session>> {
        self.sessions.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueOverflow;
    use crate::session::QueueLimits;

    fn session(id: u64, client_id: &str) -> Arc<Session> {
        Arc::new(Session::new(
            SessionId(id),
            ClientId::new(client_id),
            QueueLimits::new(10, QueueOverflow::DropOldest, usize::MAX, usize::MAX),
        ))
    }

    #[test]
    fn sessions_are_found_replaced_and_removed_by_client_identifier() {
        let mut map = SessionMap::default();
        map.insert(session(1, "a"));
        map.insert(session(2, "b"));
        map.insert(session(3, "a"));
        assert_eq!(map.len(), 2, "a second session for `a` replaces the first");
        let id = |map: &SessionMap, client: &str| map.get(&ClientId::new(client)).map(|s| s.id);
        assert_eq!(id(&map, "a"), Some(SessionId(3)));
        assert_eq!(id(&map, "b"), Some(SessionId(2)));
        assert_eq!(id(&map, "c"), None);
        assert_eq!(
            map.remove(&ClientId::new("a")).map(|s| s.id),
            Some(SessionId(3))
        );
        assert_eq!(map.remove(&ClientId::new("a")).map(|s| s.id), None);
        assert_eq!(
            map.values().map(|s| s.id).collect::<Vec<_>>(),
            [SessionId(2)]
        );
    }
}
