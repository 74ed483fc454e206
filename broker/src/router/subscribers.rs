//! Who is subscribed to one topic filter: ordinary subscribers, and shared-subscription groups from
//! which one member is picked per message.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Inserted, Removed};
use crate::codec::SubscriptionOptions;
use crate::identity::SessionId;
use crate::session::Session;
use crate::topic::{ShareName, TopicFilter};

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
    /// The filter the group subscribes to (what `$share/{name}/` is followed by).
    pub filter: TopicFilter,
    pub members: Vec<Subscriber>,
    cursor: AtomicUsize,
}

impl SharedGroup {
    fn new(name: ShareName, filter: TopicFilter) -> Self {
        Self {
            name,
            filter,
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

    /// Adds or replaces a subscription, saying whether the session was already subscribed here and
    /// whether its route (the direct subscribers, or the shared group) is new.
    pub fn insert(
        &mut self,
        filter: &TopicFilter,
        share: Option<&ShareName>,
        subscriber: Subscriber,
    ) -> Inserted {
        let session_id = subscriber.session.id;
        match share {
            None => {
                let new_route = self.direct.is_empty();
                let replaced = self.direct.insert(session_id, subscriber).is_some();
                Inserted {
                    replaced,
                    new_route,
                }
            }
            Some(name) => {
                let Some(group) = self.shared.iter_mut().find(|g| &g.name == name) else {
                    let mut group = SharedGroup::new(name.clone(), filter.clone());
                    group.members.push(subscriber);
                    self.shared.push(group);
                    return Inserted {
                        replaced: false,
                        new_route: true,
                    };
                };
                let replaced = match group
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
                };
                Inserted {
                    replaced,
                    new_route: false,
                }
            }
        }
    }

    /// Removes a session's subscription, saying whether it existed and whether its route (the
    /// direct subscribers, or the shared group) is gone with it.
    pub fn remove(&mut self, share: Option<&ShareName>, session_id: SessionId) -> Removed {
        const NOTHING: Removed = Removed {
            existed: false,
            route_gone: false,
        };
        match share {
            None => {
                let existed = self.direct.remove(&session_id).is_some();
                Removed {
                    existed,
                    route_gone: existed && self.direct.is_empty(),
                }
            }
            Some(name) => {
                let Some(index) = self.shared.iter().position(|g| &g.name == name) else {
                    return NOTHING;
                };
                let group = &mut self.shared[index];
                let before = group.members.len();
                group.members.retain(|m| m.session.id != session_id);
                let existed = group.members.len() != before;
                let route_gone = group.members.is_empty();
                if route_gone {
                    self.shared.swap_remove(index);
                }
                Removed {
                    existed,
                    route_gone,
                }
            }
        }
    }
}
