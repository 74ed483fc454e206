//! The extension point: a [`Hook`] sees every step of a client's life and may decide authentication
//! and authorization. The broker's own policies plug in here, and so can an embedding program.
//!
//! Hooks run in registration order. For decisions the first hook that answers something other than
//! `Continue` wins; notifications go to every hook. Decision methods on the message path are
//! synchronous on purpose: they run once per PUBLISH, where boxing a future would cost more than most
//! checks. Authentication is asynchronous because it may ask another system.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

pub use crate::identity::{ClientInfo, PeerAddr};

use crate::codec::{QoS, ReasonCode, SubscriptionOptions};
use crate::identity::ClientId;
use crate::message::Message;
use crate::stats::DropReason;

/// A boxed future, for the asynchronous hook methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a client presented in CONNECT, for [`Hook::authenticate`].
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    pub client: &'a ClientInfo,
    pub password: Option<&'a [u8]>,
}

/// A hook's answer to an authentication question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthDecision {
    /// No opinion; ask the next hook.
    Continue,
    Allow,
    /// Refuse, with the CONNACK reason code (mapped to a v3 return code for older clients).
    Deny(ReasonCode),
}

/// A hook's answer to an authorization question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Continue,
    Allow,
    /// Allow a subscription, granting at most this QoS.
    AllowUpTo(QoS),
    Deny,
}

/// One step of an MQTT 5 enhanced authentication exchange (4.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send AUTH 0x18 with this data and wait for the client's answer.
    Continue(Option<Bytes>),
    /// Authentication succeeded; the data goes into CONNACK (or AUTH 0x00 on re-authentication).
    Success(Option<Bytes>),
    /// Authentication failed with this reason code.
    Failure(ReasonCode),
}

/// The state of one enhanced authentication exchange, created by [`Hook::start_enhanced_auth`].
pub trait EnhancedAuth: Send {
    /// Consumes the client's Authentication Data (from CONNECT or AUTH) and says what comes next.
    fn step(&mut self, data: Option<Bytes>) -> BoxFuture<'_, AuthStep>;
}

/// Lifecycle callbacks and decisions. Every method has a default that does nothing or says `Continue`,
/// so a hook implements only what it cares about.
pub trait Hook: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Username/password authentication for a CONNECT without an Authentication Method.
    fn authenticate<'a>(&'a self, _request: &'a ConnectRequest<'a>) -> BoxFuture<'a, AuthDecision> {
        Box::pin(async { AuthDecision::Continue })
    }

    /// Starts an enhanced authentication exchange if this hook knows `method`.
    fn start_enhanced_auth(
        &self,
        _method: &str,
        _client: &ClientInfo,
    ) -> Option<Box<dyn EnhancedAuth>> {
        None
    }

    fn authorize_publish(
        &self,
        _client: &ClientInfo,
        _topic: &str,
        _qos: QoS,
        _retain: bool,
    ) -> Access {
        Access::Continue
    }

    fn authorize_subscribe(&self, _client: &ClientInfo, _filter: &str, _qos: QoS) -> Access {
        Access::Continue
    }

    fn on_connect(&self, _client: &ClientInfo, _session_present: bool) {}

    /// The connection ended. `reason` is what the client sent in DISCONNECT, what the server sent, or
    /// `None` when the network connection just closed.
    fn on_disconnect(&self, _client: &ClientInfo, _reason: Option<ReasonCode>) {}

    /// A subscription was added or replaced: by a client's SUBSCRIBE, by the inline client, or by
    /// a re-check after a reload that lowered its QoS. `filter` includes any `$share/` prefix.
    fn on_subscribe(&self, _client: &ClientInfo, _filter: &str, _options: &SubscriptionOptions) {}

    /// A subscription was removed: by UNSUBSCRIBE, by dropping an inline subscription, or by a
    /// re-check after a reload that no longer allows it. The end of a session is reported by
    /// [`Hook::on_session_expired`] or [`Hook::on_disconnect`], not subscription by subscription.
    fn on_unsubscribe(&self, _client: &ClientInfo, _filter: &str) {}

    /// A message was accepted for routing. `client` is `None` for messages the broker or an embedding
    /// program published.
    fn on_publish(&self, _client: Option<&ClientInfo>, _message: &Message) {}

    /// A message was written to a client's connection.
    fn on_deliver(&self, _client: &ClientInfo, _message: &Message) {}

    /// A message was dropped instead of delivered.
    fn on_message_dropped(&self, _client_id: &ClientId, _message: &Message, _reason: DropReason) {}

    fn on_session_expired(&self, _client_id: &ClientId) {}

    /// Asked for every connected client after a reload: true disconnects the client (MQTT 5 reason
    /// 0x87), for example because its user was removed or its password changed.
    fn revoked(&self, _client: &ClientInfo) -> bool {
        false
    }
}

/// The registered hooks, fixed when the server starts (so the message path reads them without a lock).
#[derive(Clone, Default)]
pub struct Hooks(Arc<[Arc<dyn Hook>]>);

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|h| h.name()))
            .finish()
    }
}

impl Hooks {
    pub fn new(hooks: Vec<Arc<dyn Hook>>) -> Self {
        Self(hooks.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Hook>> {
        self.0.iter()
    }

    pub async fn authenticate(&self, request: &ConnectRequest<'_>) -> AuthDecision {
        for hook in self.0.iter() {
            match hook.authenticate(request).await {
                AuthDecision::Continue => continue,
                decision => return decision,
            }
        }
        AuthDecision::Continue
    }

    pub fn start_enhanced_auth(
        &self,
        method: &str,
        client: &ClientInfo,
    ) -> Option<Box<dyn EnhancedAuth>> {
        self.0
            .iter()
            .find_map(|hook| hook.start_enhanced_auth(method, client))
    }

    pub fn authorize_publish(
        &self,
        client: &ClientInfo,
        topic: &str,
        qos: QoS,
        retain: bool,
    ) -> Access {
        self.0
            .iter()
            .map(|hook| hook.authorize_publish(client, topic, qos, retain))
            .find(|access| *access != Access::Continue)
            .unwrap_or(Access::Continue)
    }

    pub fn revoked(&self, client: &ClientInfo) -> bool {
        self.0.iter().any(|hook| hook.revoked(client))
    }

    pub fn authorize_subscribe(&self, client: &ClientInfo, filter: &str, qos: QoS) -> Access {
        self.0
            .iter()
            .map(|hook| hook.authorize_subscribe(client, filter, qos))
            .find(|access| *access != Access::Continue)
            .unwrap_or(Access::Continue)
    }
}
