//! What every reconcile shares: the client, the operator's settings, metrics, the event recorder,
//! and the little state that must survive between reconciles (password hashes, what each broker
//! was last sent, when a leaving pod started draining, how often each object failed in a row).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use parking_lot::Mutex;

use super::backoff::Backoff;
use crate::broker_api::BrokerApi;
use crate::metrics::Metrics;

/// Settings from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image for clusters that do not name one.
    pub broker_image: String,
    /// The cluster's DNS domain, for Service names in certificates and URIs.
    pub cluster_domain: String,
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub broker_api: BrokerApi,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// Argon2id hashes by `namespace/cluster/username`, with a digest of the password they were
    /// made from: hashing is slow by design, and a new hash of the same password would change
    /// the users file and make the brokers disconnect that user.
    pub password_hashes: Mutex<HashMap<String, (Vec<u8>, String)>>,
    /// The auth revision each broker pod (by UID) last accepted.
    pub pushed_auth: Mutex<HashMap<String, String>>,
    /// When each leaving pod (by UID) was asked to drain.
    pub drains: Mutex<HashMap<String, Instant>>,
    /// Whether optional kinds exist, rechecked after a while: (checked at, present).
    pub discovered: Mutex<HashMap<&'static str, (Instant, bool)>>,
    /// Failed reconciles in a row by object, for the error policy's wait.
    pub backoff: Backoff,
}

/// The longest `note` an Event may carry (the API server refuses longer ones).
const EVENT_NOTE_MAX: usize = 1024;

/// How long a discovery answer is trusted: a kind that exists rarely goes away, while one that
/// is missing may be installed any moment (the Prometheus Operator or cert-manager after us) and
/// should be noticed at the next reconcile that follows.
const DISCOVERY_TTL_PRESENT: Duration = Duration::from_secs(60);
const DISCOVERY_TTL_ABSENT: Duration = Duration::from_secs(5);

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: "tern-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            broker_api: BrokerApi::new(),
            metrics,
            password_hashes: Mutex::new(HashMap::new()),
            pushed_auth: Mutex::new(HashMap::new()),
            drains: Mutex::new(HashMap::new()),
            discovered: Mutex::new(HashMap::new()),
            backoff: Backoff::default(),
        }
    }

    /// Records a Kubernetes Event on `object`; a failure to record is logged, not fatal.
    pub async fn publish<K>(&self, object: &K, type_: EventType, reason: &str, note: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, EVENT_NOTE_MAX).into()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason, "cannot record an event");
        }
    }

    /// Whether the API server serves `group_version` (`monitoring.coreos.com/v1`) with `plural`.
    /// A group the server does not know is `false`; any other failure is the caller's error, so a
    /// passing API hiccup is not mistaken for a missing kind.
    pub async fn serves(
        &self,
        group_version: &'static str,
        plural: &str,
    ) -> Result<bool, kube::Error> {
        if let Some((at, present)) = self.discovered.lock().get(group_version) {
            let ttl = if *present {
                DISCOVERY_TTL_PRESENT
            } else {
                DISCOVERY_TTL_ABSENT
            };
            if at.elapsed() < ttl {
                return Ok(*present);
            }
        }
        let present = match self.client.list_api_group_resources(group_version).await {
            Ok(list) => list.resources.iter().any(|r| r.name == plural),
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(error) => return Err(error),
        };
        self.discovered
            .lock()
            .insert(group_version, (Instant::now(), present));
        Ok(present)
    }

    /// Drops what discovery said about `group_version`, after the API server answered 404 for it
    /// (its CRD was removed): the next reconcile asks again.
    pub fn forget(&self, group_version: &str) {
        self.discovered.lock().remove(group_version);
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("short", 1024), "short");
        assert_eq!(truncate("ab€", 4), "ab");
        assert_eq!(truncate(&"x".repeat(2000), EVENT_NOTE_MAX).len(), 1024);
    }
}
