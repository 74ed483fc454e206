//! Reloading: re-reading every registered file set (users, ACL, TLS certificates, the admin token),
//! and applying changed rights to the clients that are connected, leaving alone those whose rights
//! did not change.

use std::path::PathBuf;
use std::sync::Arc;

use super::Broker;
use crate::codec::ReasonCode;
use crate::hook::Access;
use crate::identity::ClientInfo;
use crate::reload::{Reload, ReloadOutcome};
use crate::session::{Session, SubscriptionRecord};
use crate::topic::SubscriptionFilter;

/// What re-checking connected clients after a rights change did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revalidation {
    /// Connections told to go (MQTT 5: DISCONNECT 0x87) because their credentials were revoked.
    pub disconnected: usize,
    /// Subscriptions removed because the ACL no longer allows them.
    pub subscriptions_removed: usize,
    /// Subscriptions kept at a lower QoS than before.
    pub subscriptions_downgraded: usize,
}

/// What re-checking one subscription did.
enum SubscriptionCheck {
    Kept,
    Removed,
    Downgraded,
}

impl Broker {
    /// Registers something the admin API's reload (and file watchers) should re-read.
    pub fn register_reload(&self, reload: Arc<dyn Reload>) {
        self.reloaders.lock().push(reload);
    }

    /// Re-reads every registered file set; each reports separately so one bad file does not hide
    /// the others.
    pub fn reload_all(&self) -> Vec<ReloadOutcome> {
        let reloaders = self.reloaders.lock().clone();
        let outcomes: Vec<ReloadOutcome> = reloaders
            .iter()
            .map(|r| match r.reload() {
                Ok(changed) => ReloadOutcome {
                    name: r.name(),
                    changed,
                    error: None,
                },
                Err(error) => {
                    tracing::warn!(name = r.name(), %error, "reload failed; previous state kept");
                    ReloadOutcome {
                        name: r.name(),
                        changed: false,
                        error: Some(error.to_string()),
                    }
                }
            })
            .collect();
        let rights_changed = reloaders
            .iter()
            .zip(&outcomes)
            .any(|(r, o)| o.changed && r.affects_client_rights());
        if rights_changed {
            self.revalidate_clients();
        }
        outcomes
    }

    /// Files the registered reloaders watch.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.reloaders
            .lock()
            .iter()
            .flat_map(|r| r.watched_files())
            .collect()
    }

    /// Applies changed rights to connected clients: a revoked client is disconnected (0x87); a
    /// subscription no longer allowed is removed, and one allowed at a lower QoS is downgraded.
    /// Clients whose rights did not change are not touched.
    pub fn revalidate_clients(&self) -> Revalidation {
        let mut done = Revalidation::default();
        for session in self.sessions.snapshot() {
            let (client, connection, subscriptions) = {
                let state = session.lock();
                let Some(client) = state.client.clone() else {
                    continue;
                };
                let subscriptions: Vec<_> = state
                    .subscriptions
                    .iter()
                    .map(|(f, r)| (f.clone(), r.clone()))
                    .collect();
                (client, state.connection.clone(), subscriptions)
            };
            if let Some(connection) = &connection
                && self.hooks.revoked(&client)
            {
                tracing::info!(client_id = %client.client_id, "credentials revoked; disconnecting");
                connection.kick(ReasonCode::NOT_AUTHORIZED);
                done.disconnected += 1;
                continue;
            }
            for (filter, record) in subscriptions {
                match self.revalidate_subscription(&session, &client, filter, record) {
                    SubscriptionCheck::Kept => {}
                    SubscriptionCheck::Removed => done.subscriptions_removed += 1,
                    SubscriptionCheck::Downgraded => done.subscriptions_downgraded += 1,
                }
            }
        }
        tracing::debug!(?done, "connected clients re-checked");
        done
    }

    fn revalidate_subscription(
        &self,
        session: &Arc<Session>,
        client: &ClientInfo,
        filter: SubscriptionFilter,
        mut record: SubscriptionRecord,
    ) -> SubscriptionCheck {
        let requested = record.options.qos;
        let granted =
            match self
                .hooks
                .authorize_subscribe(client, filter.filter.as_str(), requested)
            {
                Access::Deny => None,
                Access::AllowUpTo(max) => Some(requested.min(max)),
                Access::Allow | Access::Continue => Some(requested),
            };
        match granted {
            None => {
                tracing::info!(client_id = %client.client_id, %filter, "subscription no longer allowed; removed");
                self.unsubscribe(session, client, &filter);
                SubscriptionCheck::Removed
            }
            Some(qos) if qos != requested => {
                record.options.qos = qos;
                self.subscribe(session, client, filter, record.options, record.identifier);
                SubscriptionCheck::Downgraded
            }
            Some(_) => SubscriptionCheck::Kept,
        }
    }
}
