//! Who is subscribed to one topic filter: ordinary subscribers, and shared-subscription groups from
//! which one member is picked per message.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::codec::SubscriptionOptions;
use crate::session::{Session, SessionId};
use crate::topic::ShareName;

/// One session's subscription to a filter.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub session: Arc<Session>,
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

/// A `$share/{name}/{filter}` group. Members are picked round-robin, preferring online members whose
/// queue is not backlogged, then any online member; when all are offline the message queues in the
/// next member's session so nothing is lost.
#[derive(Debug)]
pub struct SharedGroup {
    pub name: ShareName,
    pub members: Vec<Subscriber>,
    cursor: AtomicUsize,
}

impl SharedGroup {
    fn new(name: ShareName) -> Self {
        Self {
            name,
            members: Vec::new(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The member that gets the next message.
    pub fn pick(&self) -> Option<&Subscriber> {
        let len = self.members.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let in_turn = || (0..len).map(move |offset| &self.members[(start + offset) % len]);
        in_turn()
            .find(|member| member.session.is_online() && !member.session.is_backlogged())
            .or_else(|| in_turn().find(|member| member.session.is_online()))
            .or_else(|| self.members.get(start % len))
    }
}

/// Everything subscribed to one filter.
#[derive(Debug, Default)]
pub struct FilterSubscribers {
    pub direct: foldhash::HashMap<SessionId, Subscriber>,
    pub shared: Vec<SharedGroup>,
}

impl FilterSubscribers {
    pub fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.shared.is_empty()
    }

    /// Adds or replaces a subscription; returns true if the session was already subscribed here.
    pub fn insert(&mut self, share: Option<&ShareName>, subscriber: Subscriber) -> bool {
        let session_id = subscriber.session.id;
        match share {
            None => self.direct.insert(session_id, subscriber).is_some(),
            Some(name) => {
                let index = match self.shared.iter().position(|g| &g.name == name) {
                    Some(index) => index,
                    None => {
                        self.shared.push(SharedGroup::new(name.clone()));
                        self.shared.len() - 1
                    }
                };
                let group = &mut self.shared[index];
                match group
                    .members
                    .iter_mut()
                    .find(|m| m.session.id == session_id)
                {
                    Some(existing) => {
                        *existing = subscriber;
                        true
                    }
                    None => {
                        group.members.push(subscriber);
                        false
                    }
                }
            }
        }
    }

    /// Removes a session's subscription; returns true if it existed.
    pub fn remove(&mut self, share: Option<&ShareName>, session_id: SessionId) -> bool {
        match share {
            None => self.direct.remove(&session_id).is_some(),
            Some(name) => {
                let Some(index) = self.shared.iter().position(|g| &g.name == name) else {
                    return false;
                };
                let group = &mut self.shared[index];
                let before = group.members.len();
                group.members.retain(|m| m.session.id != session_id);
                let removed = group.members.len() != before;
                if group.members.is_empty() {
                    self.shared.swap_remove(index);
                }
                removed
            }
        }
    }
}
