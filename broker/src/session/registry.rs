//! The map from client identifier to session. Only a map: the rules for opening, taking over and
//! ending sessions live in [`crate::broker::Broker`], which also owns the router they touch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};

use super::{ClientId, Session, SessionId};

pub type SessionMap = foldhash::HashMap<ClientId, Arc<Session>>;

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
