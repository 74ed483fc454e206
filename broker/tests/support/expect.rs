//! Waiting on an [`Inbox`] for CONNACK, SUBACK and PUBLISH packets, written once for both
//! `rumqttc` packet types: [`v311`](super::v311) and [`v5`](super::v5) implement [`Packets`] and
//! re-export these functions, so tests call them as `v311::expect_publish` or `v5::expect_publish`.

use std::fmt::Debug;
use std::time::Duration;

use super::{Inbox, Note};

/// The packets of one protocol version that the helpers below pick out of an inbox.
pub trait Packets: Debug {
    type ConnAck: Clone + Debug;
    type SubAck: Clone + Debug;
    type Publish: Clone + Debug;

    fn as_connack(&self) -> Option<&Self::ConnAck>;
    fn as_suback(&self) -> Option<&Self::SubAck>;
    fn as_publish(&self) -> Option<&Self::Publish>;
}

pub async fn expect_connack<P: Packets, E: Debug>(
    inbox: &mut Inbox<P, E>,
    timeout: Duration,
) -> P::ConnAck {
    inbox
        .next_matching("CONNACK", timeout, |p| p.as_connack().cloned())
        .await
}

pub async fn expect_suback<P: Packets, E: Debug>(
    inbox: &mut Inbox<P, E>,
    timeout: Duration,
) -> P::SubAck {
    inbox
        .next_matching("SUBACK", timeout, |p| p.as_suback().cloned())
        .await
}

/// The next application message the broker sends to this client.
pub async fn expect_publish<P: Packets, E: Debug>(
    inbox: &mut Inbox<P, E>,
    timeout: Duration,
) -> P::Publish {
    inbox
        .next_matching("PUBLISH", timeout, |p| p.as_publish().cloned())
        .await
}

/// The next application message if one arrives within `within`, else `None`.
pub async fn next_publish_within<P: Packets, E: Debug>(
    inbox: &mut Inbox<P, E>,
    within: Duration,
) -> Option<P::Publish> {
    inbox
        .next_matching_within("PUBLISH", within, |p| p.as_publish().cloned())
        .await
}

/// The next `count` application messages, in arrival order.
pub async fn expect_publishes<P: Packets, E: Debug>(
    inbox: &mut Inbox<P, E>,
    count: usize,
    timeout: Duration,
) -> Vec<P::Publish> {
    let mut received = Vec::with_capacity(count);
    for _ in 0..count {
        received.push(expect_publish(inbox, timeout).await);
    }
    received
}

/// Fails if an application message arrives within `within`.
pub async fn expect_no_publish<P: Packets, E: Debug>(inbox: &mut Inbox<P, E>, within: Duration) {
    inbox
        .nothing_matching("PUBLISH", within, |p| p.as_publish().is_some())
        .await
}

/// Waits until the connection has ended by the broker's doing (v3.1.1 has no DISCONNECT from the
/// server; in v5 it may come with or without one).
pub async fn expect_connection_closed<P: Packets, E: Debug>(
    inbox: &mut Inbox<P, E>,
    timeout: Duration,
) -> E {
    match inbox.ended(timeout).await {
        Note::Failed(e) => e,
        other => panic!("expected the broker to close the connection, got {other:?}"),
    }
}
