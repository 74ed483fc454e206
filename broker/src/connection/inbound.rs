//! Applying what the client sends after CONNACK: PUBLISH and its acknowledgements, SUBSCRIBE,
//! UNSUBSCRIBE, PINGREQ, DISCONNECT and AUTH. Each handler checks the session-dependent rules the
//! codec cannot (aliases, receive maximum, packet ids, features) and answers into the write buffer.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use tracing::info;

use super::{Close, Connection, Wait};
use crate::broker::Published;
use crate::codec::{
    Ack, AckProperties, Disconnect, Packet, PacketId, Publish, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::hook::Access;
use crate::message::{Delivery, Message};
use crate::receipt::Receipt;
use crate::session::NEVER_EXPIRES;
use crate::stats::{DropReason, LimitKind};
use crate::storage::Storage;
use crate::topic::{self, SubscriptionFilter};

impl Connection {
    /// Applies one packet other than AUTH (which may wait on an authenticator, so the caller awaits
    /// it separately and this stays synchronous and small).
    pub(super) fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish),
            Packet::PubAck(ack) => {
                self.session.lock().acknowledge(ack.packet_id, false);
                Ok(())
            }
            Packet::PubRec(ack) => self.on_pubrec(ack),
            Packet::PubRel(ack) => self.on_pubrel(ack),
            Packet::PubComp(ack) => {
                self.session.lock().acknowledge(ack.packet_id, true);
                Ok(())
            }
            Packet::Subscribe(_) => Err(Close::protocol("SUBSCRIBE handled by apply_input")),
            Packet::Unsubscribe(unsubscribe) => self.on_unsubscribe(unsubscribe),
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(disconnect) => Err(self.on_disconnect(disconnect)),
            Packet::Connect(_) => Err(Close::protocol("second CONNECT")), // [MQTT-3.1.0-2]
            other => Err(Close::protocol(format!(
                "{} is not sent by clients",
                other.kind()
            ))),
        }
    }

    fn on_publish(&mut self, mut publish: Publish) -> Result<(), Close> {
        if !publish.properties.subscription_identifiers.is_empty() {
            return Err(Close::protocol(
                "PUBLISH from a client carries a subscription identifier",
            )); // [MQTT-3.3.4-6]
        }
        self.resolve_topic_alias(&mut publish)?;
        let limits = &self.slot.broker().config().limits;
        if let Err(error) = topic::check_limits(
            &publish.topic,
            limits.max_topic_length,
            limits.max_topic_levels,
        ) {
            self.count_topic_limit(&error);
            return Err(Close::Server(
                ReasonCode::TOPIC_NAME_INVALID,
                Cow::Owned(error.to_string()),
            ));
        }
        let features = &self.slot.broker().config().features;
        if publish.qos > features.maximum_qos() {
            return Err(Close::Server(
                ReasonCode::QOS_NOT_SUPPORTED,
                Cow::Borrowed("QoS not supported"),
            )); // [MQTT-3.2.2-11]
        }
        if publish.retain && !features.retain_available {
            return Err(Close::Server(
                ReasonCode::RETAIN_NOT_SUPPORTED,
                Cow::Borrowed("retain not supported"),
            )); // [MQTT-3.2.2-14]
        }
        let packet_id = match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => None,
            (_, Some(id)) => Some(id),
            (_, None) => return Err(Close::protocol("QoS > 0 PUBLISH without packet identifier")),
        };

        if publish.qos == QoS::ExactlyOnce {
            let state = self.session.lock();
            let id = packet_id.map_or(0, PacketId::get);
            if state.inbound_qos2.iter().any(|&held| held == id) {
                // A retransmission of a message we already have: acknowledge, do not deliver again
                // [MQTT-4.3.3-10].
                drop(state);
                return self.send_publish_ack(Packet::PubRec(Ack::success(pid(packet_id)?)), None);
            }
            if state.inbound_qos2.len() >= usize::from(limits.receive_maximum) {
                self.slot
                    .broker()
                    .stats()
                    .limit_hit(LimitKind::ReceiveMaximum);
                return Err(Close::Server(
                    ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                    Cow::Borrowed("receive maximum exceeded"),
                )); // [MQTT-3.3.4-8]
            }
        }

        // What the store records from here on (the message for stored sessions, the inbound
        // packet id) is what the acknowledgement waits for in `durability: sync`.
        let recorded = self.slot.broker().storage().map(Storage::recorded);
        let reason = self.publish_reason(&publish);
        let matched = if reason.is_success() && self.storage_refuses(publish.qos) {
            self.slot
                .broker()
                .stats()
                .dropped(DropReason::StorageFailing);
            Err(ReasonCode::QUOTA_EXCEEDED)
        } else if reason.is_success() {
            let message = Message {
                topic: publish.topic,
                payload: publish.payload,
                qos: publish.qos,
                retain: publish.retain,
                properties: crate::codec::PublishProperties {
                    topic_alias: None,
                    subscription_identifiers: Vec::new(),
                    message_expiry_interval: None,
                    ..publish.properties
                },
                expires_at: None,
                publisher: Some(self.session.id),
                // When the read that brought it arrived (see `apply_input`).
                received_at: self.last_received.into_std(),
                id: 0,
            }
            .with_expiry_interval(publish.properties.message_expiry_interval);
            self.slot.broker().stats().message_received(publish.qos);
            self.route(message)
        } else {
            self.slot
                .broker()
                .stats()
                .dropped(DropReason::NotAuthorized);
            Err(reason)
        };
        let (matched, receipt, reason) = match matched {
            Ok((sessions, receipt)) => (sessions, receipt, reason),
            Err(refused) => (0, None, refused),
        };
        let reason = if reason.is_success() && matched == 0 && self.protocol.is_v5() {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            reason
        };
        // v3 has no negative acknowledgement: a refused message is acknowledged and dropped.
        let reason = if self.protocol.is_v5() {
            reason
        } else {
            ReasonCode::SUCCESS
        };
        match publish.qos {
            QoS::AtMostOnce => Ok(()),
            QoS::AtLeastOnce => {
                let receipt = self.durable(recorded, receipt);
                self.send_publish_ack(Packet::PubAck(self.ack(pid(packet_id)?, reason)), receipt)
            }
            QoS::ExactlyOnce => {
                if reason.is_success() {
                    self.session
                        .lock()
                        .hold_inbound_qos2(packet_id.map_or(0, PacketId::get));
                }
                let receipt = self.durable(recorded, receipt);
                self.send_publish_ack(Packet::PubRec(self.ack(pid(packet_id)?, reason)), receipt)
            }
        }
    }

    /// Whether a QoS 1 or 2 message is refused because the store's commits fail (a full disk):
    /// an MQTT 5 publisher is told with 0x97 *Quota exceeded* rather than acknowledged late, and
    /// keeps the message. MQTT 3 has no negative acknowledgement (a refusal would be acknowledged
    /// and dropped), so an MQTT 3 publisher's acknowledgement waits for the disk instead.
    fn storage_refuses(&self, qos: QoS) -> bool {
        qos != QoS::AtMostOnce
            && self.protocol.is_v5()
            && self
                .slot
                .broker()
                .storage()
                .is_some_and(Storage::is_failing)
    }

    /// `receipt`, made to wait for the store too when it recorded something since `recorded`
    /// and acknowledgements wait for the disk (`durability: sync`).
    fn durable(
        &self,
        recorded: Option<u64>,
        receipt: Option<Arc<Receipt>>,
    ) -> Option<Arc<Receipt>> {
        match (self.slot.broker().storage(), recorded) {
            (Some(storage), Some(since)) => storage.hold(since, receipt),
            _ => receipt,
        }
    }

    /// Publishes an accepted message and says how many sessions it went to and what its
    /// acknowledgement waits for, or, for MQTT 5, why it was refused after all (a retained message
    /// the store has no room for). Waits for a subscriber it backed up, unless this client still
    /// has messages left from its last wait.
    fn route(&mut self, message: Message) -> Result<(usize, Option<Arc<Receipt>>), ReasonCode> {
        let Published {
            routed,
            receipt,
            peer_backlog,
        } = if self.protocol.is_v5() {
            self.slot
                .broker()
                .publish_or_refuse(message, Some(&self.client))?
        } else {
            self.slot.broker().publish(message, Some(&self.client))
        };
        let exempt = self.resume_quota > 0 && !routed.backlog_full;
        self.resume_quota = self.resume_quota.saturating_sub(1);
        if !exempt {
            if let Some(subscriber) = routed.backlogged {
                self.wait_for_backlog(subscriber);
            } else if let Some(wait) = peer_backlog {
                self.wait_for_peer(wait);
            }
        }
        // Subscribers on other nodes of a cluster count as matching too.
        Ok((routed.sessions + routed.remote, receipt))
    }

    /// Whether a well-formed PUBLISH may be delivered: payload format, then the rights every
    /// publish on a client's behalf is checked against (`Broker::authorize_publish`).
    fn publish_reason(&self, publish: &Publish) -> ReasonCode {
        if publish.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            // A receiver MAY check the payload against its format indicator (§3.3.2.3.2).
            return ReasonCode::PAYLOAD_FORMAT_INVALID;
        }
        match self.slot.broker().authorize_publish(
            &self.client,
            &publish.topic,
            publish.qos,
            publish.retain,
        ) {
            Ok(()) => ReasonCode::SUCCESS,
            Err(reason) => reason,
        }
    }

    /// Replaces an alias by its topic, or records a new alias [MQTT-3.3.2-12], [MQTT-3.3.2-13].
    fn resolve_topic_alias(&mut self, publish: &mut Publish) -> Result<(), Close> {
        let Some(alias) = publish.properties.topic_alias else {
            return Ok(());
        };
        let maximum = self.slot.broker().config().limits.topic_alias_maximum;
        if alias == 0 || alias > maximum {
            return Err(Close::Server(
                ReasonCode::TOPIC_ALIAS_INVALID,
                Cow::Borrowed("topic alias out of range"),
            )); // [MQTT-3.3.2-9], [MQTT-3.3.2-10]
        }
        if publish.topic.is_empty() {
            let known = self
                .extras
                .as_ref()
                .and_then(|extras| extras.inbound_aliases.get(alias));
            match known {
                Some(topic) => publish.topic = topic.clone(),
                None => return Err(Close::protocol("unknown topic alias")),
            }
        } else {
            let extras = self.extras.get_or_insert_default();
            extras.inbound_aliases.set(alias, publish.topic.clone());
        }
        publish.properties.topic_alias = None;
        Ok(())
    }

    /// PUBREC for an outbound QoS 2 message. In `durability: sync` the PUBREL waits until the
    /// store knows the message was received: after a crash the broker must not send the PUBLISH
    /// again once it has sent PUBREL [MQTT-4.3.3-6], since the client would take it for a new one.
    fn on_pubrec(&mut self, ack: Ack) -> Result<(), Close> {
        let recorded = self.slot.broker().storage().map(Storage::recorded);
        let known = {
            let mut state = self.session.lock();
            if ack.reason_code.is_success() {
                state.release(ack.packet_id)
            } else {
                // An error PUBREC ends the exchange: PUBREL answers only a PUBREC below 0x80
                // [MQTT-4.3.3-4].
                state.abandon(ack.packet_id);
                return Ok(());
            }
        };
        let reason = if known {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        let receipt = self.durable(recorded, None);
        self.send_publish_ack(Packet::PubRel(self.ack(ack.packet_id, reason)), receipt)
    }

    /// PUBREL for an inbound QoS 2 message. In `durability: sync` the PUBCOMP waits until the
    /// store has let the packet id go: after a crash a held id would make the broker take the
    /// client's next message under it for a repeat and drop it [MQTT-4.3.3-10].
    fn on_pubrel(&mut self, ack: Ack) -> Result<(), Close> {
        let recorded = self.slot.broker().storage().map(Storage::recorded);
        let known = self
            .session
            .lock()
            .release_inbound_qos2(ack.packet_id.get());
        let reason = if known {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        let receipt = self.durable(recorded, None);
        self.send_publish_ack(Packet::PubComp(self.ack(ack.packet_id, reason)), receipt)
    }

    /// Applies a SUBSCRIBE. In a cluster, when it made a route this node did not have, the SUBACK
    /// waits until every linked node holds the route (returned as a [`Wait`]): a message published
    /// anywhere after the SUBACK then reaches the subscriber.
    pub(super) fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<Option<Wait>, Close> {
        let features = &self.slot.broker().config().features;
        if subscribe.subscription_identifier.is_some() && !features.subscription_identifiers {
            return Err(Close::Server(
                ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
                Cow::Borrowed("subscription identifiers not supported"),
            ));
        }
        let recorded = self.slot.broker().storage().map(Storage::recorded);
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        let mut new_route = false;
        for (filter, options) in &subscribe.filters {
            let outcome =
                self.subscribe_one(filter, *options, subscribe.subscription_identifier)?;
            reason_codes.push(outcome.reason);
            new_route |= outcome.new_route;
            if let Some(to_send) = outcome.retained {
                retained.push(to_send);
            }
        }
        let answer = SubscribeAnswer {
            suback: SubAck {
                packet_id: subscribe.packet_id,
                properties: AckProperties::default(),
                reason_codes,
            },
            retained,
        };
        let routes = self
            .slot
            .broker()
            .cluster()
            .filter(|_| new_route)
            .map(|cluster| cluster.local_route_version());
        let stored = self.durable(recorded, None);
        if routes.is_none() && stored.is_none() {
            return self.answer_subscribe(answer).map(|()| None);
        }
        Ok(Some(Wait::SubAck(Box::new(HeldSubAck {
            routes,
            stored,
            answer,
        }))))
    }

    /// Sends the SUBACK, then the retained messages the subscriptions asked for.
    pub(super) fn answer_subscribe(&mut self, answer: SubscribeAnswer) -> Result<(), Close> {
        self.send(&Packet::SubAck(answer.suback))?;
        // Retained messages follow the SUBACK, through the session queue like any delivery.
        let now = Instant::now();
        for (filter, granted, identifier) in answer.retained {
            self.queue_retained(&filter, granted, identifier, now);
        }
        Ok(())
    }

    /// Queues the retained messages matching a new subscription, as many as the session's queue
    /// has room for: a filter such as `#` may match more than any queue holds, and those beyond
    /// are not sent rather than pushing out the ones before them. They are counted, and logged.
    fn queue_retained(
        &self,
        filter: &topic::TopicFilter,
        granted: QoS,
        identifier: Option<u32>,
        now: Instant,
    ) {
        let matching = self.slot.broker().retained().matching(filter, now);
        let total = matching.len();
        for (sent, message) in matching.into_iter().enumerate() {
            let delivery = Delivery {
                qos: message.qos.min(granted),
                share: Delivery::share_of(&message, 1),
                seq: 0,
                message,
                retain: true, // [MQTT-3.3.1-8]
                subscription_ids: identifier.into_iter().collect(),
            };
            if !self
                .session
                .offer_retained(delivery, self.slot.broker().stats())
            {
                let unsent = total - sent;
                self.slot
                    .broker()
                    .stats()
                    .dropped_many(DropReason::RetainedQueueFull, unsent);
                info!(
                    client_id = %self.client.client_id, sent, unsent,
                    "retained messages beyond the session's queue are not sent"
                );
                return;
            }
        }
    }

    /// One SUBSCRIBE entry: the reason code, the filter whose retained messages must be sent, and
    /// whether it made a new route.
    fn subscribe_one(
        &mut self,
        filter: &ByteString,
        mut options: crate::codec::SubscriptionOptions,
        identifier: Option<u32>,
    ) -> Result<SubscribeOutcome, Close> {
        let features = &self.slot.broker().config().features;
        let limits = &self.slot.broker().config().limits;
        let parsed = match SubscriptionFilter::parse(filter, true).and_then(|p| {
            topic::check_limits(filter, limits.max_topic_length, limits.max_topic_levels)
                .map(|()| p)
        }) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.count_topic_limit(&error);
                return Ok(SubscribeOutcome::refused(ReasonCode::TOPIC_FILTER_INVALID));
            }
        };
        if let Some(max) = limits.max_subscriptions_per_client {
            let state = self.session.lock();
            if state.subscriptions.len() >= max && !state.subscriptions.contains_key(&parsed) {
                drop(state);
                self.slot
                    .broker()
                    .stats()
                    .limit_hit(LimitKind::Subscriptions);
                return Ok(SubscribeOutcome::refused(ReasonCode::QUOTA_EXCEEDED));
            }
        }
        if parsed.share.is_some() && !features.shared_subscriptions {
            return Ok(SubscribeOutcome::refused(
                ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
            ));
        }
        if self
            .slot
            .broker()
            .storage()
            .is_some_and(Storage::is_failing)
            && self.session.lock().journal().is_some()
        {
            // A stored session's subscription could not be kept while the store's commits
            // fail (a full disk): refused (MQTT 3.1.1: 0x80) rather than granted and lost.
            return Ok(SubscribeOutcome::refused(ReasonCode::QUOTA_EXCEEDED));
        }
        if parsed.filter.has_wildcards() && !features.wildcard_subscriptions {
            return Ok(SubscribeOutcome::refused(
                ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
            ));
        }
        if parsed.share.is_some() && options.no_local {
            return Err(Close::protocol("No Local on a shared subscription")); // [MQTT-3.8.3-4]
        }
        match self.slot.broker().hooks().authorize_subscribe(
            &self.client,
            parsed.filter.as_str(),
            options.qos,
        ) {
            Access::Deny => return Ok(SubscribeOutcome::refused(ReasonCode::NOT_AUTHORIZED)),
            Access::AllowUpTo(max) => options.qos = options.qos.min(max),
            Access::Allow | Access::Continue => {}
        }
        options.qos = options.qos.min(features.maximum_qos());
        let shared = parsed.share.is_some();
        let topic_filter = parsed.filter.clone();
        let subscribed =
            self.slot
                .broker()
                .subscribe(&self.session, &self.client, parsed, options, identifier);
        // Retained messages are not sent for shared subscriptions; otherwise Retain Handling decides
        // [MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11].
        let send_retained = !shared
            && match options.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscribe => !subscribed.replaced,
                RetainHandling::Never => false,
            };
        Ok(SubscribeOutcome {
            reason: ReasonCode::granted(options.qos),
            retained: send_retained.then_some((topic_filter, options.qos, identifier)),
            new_route: subscribed.new_route,
        })
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Close> {
        let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            let code = match SubscriptionFilter::parse(filter, true) {
                Err(_) => ReasonCode::TOPIC_FILTER_INVALID,
                Ok(parsed) => {
                    if self
                        .slot
                        .broker()
                        .unsubscribe(&self.session, &self.client, &parsed)
                        .existed
                    {
                        ReasonCode::SUCCESS
                    } else {
                        ReasonCode::NO_SUBSCRIPTION_EXISTED
                    }
                }
            };
            reason_codes.push(code);
        }
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: AckProperties::default(),
            reason_codes,
        }))
    }

    fn on_disconnect(&mut self, disconnect: Disconnect) -> Close {
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            if self.zero_expiry_at_connect && expiry != 0 {
                return Close::protocol("session expiry set on DISCONNECT after 0 at CONNECT"); // [MQTT-3.14.2-2]
            }
            let cap = self
                .slot
                .broker()
                .config()
                .limits
                .max_session_expiry_secs
                .unwrap_or(NEVER_EXPIRES);
            self.session.lock().expiry_interval = expiry.min(cap);
        }
        // Only a normal disconnection (0x00) discards the will [MQTT-3.1.2-10], [MQTT-3.14.4-3].
        Close::Client {
            will: disconnect.reason_code != ReasonCode::NORMAL_DISCONNECTION,
        }
    }

    fn count_topic_limit(&self, error: &topic::TopicError) {
        match error {
            topic::TopicError::TooLong { .. } => {
                self.slot.broker().stats().limit_hit(LimitKind::TopicLength)
            }
            topic::TopicError::TooManyLevels { .. } => {
                self.slot.broker().stats().limit_hit(LimitKind::TopicLevels)
            }
            _ => {}
        }
    }

    /// An acknowledgement; negative ones carry no reason string unless the client allows it.
    fn ack(&self, packet_id: PacketId, reason: ReasonCode) -> Ack {
        let mut ack = Ack::success(packet_id);
        ack.reason_code = reason;
        if !reason.is_success() && self.problem_information && self.protocol.is_v5() {
            ack.properties.reason_string = Some(ByteString::from_static(reason.name()));
        }
        ack
    }
}

/// A filter whose retained messages a subscription asked for, with the QoS granted and the
/// subscription identifier.
type RetainedRequest = (topic::TopicFilter, QoS, Option<u32>);

/// What one SUBSCRIBE entry came to.
struct SubscribeOutcome {
    reason: ReasonCode,
    retained: Option<RetainedRequest>,
    /// The filter (or shared group) had no subscriber on this node before.
    new_route: bool,
}

impl SubscribeOutcome {
    fn refused(reason: ReasonCode) -> Self {
        Self {
            reason,
            retained: None,
            new_route: false,
        }
    }
}

/// A SUBACK held back until the cluster's other nodes hold this node's routes up to `routes`
/// (a new route reaches them), and until the store holds the subscriptions (`stored`, in
/// `durability: sync`).
pub(super) struct HeldSubAck {
    pub(super) routes: Option<u64>,
    pub(super) stored: Option<Arc<Receipt>>,
    pub(super) answer: SubscribeAnswer,
}

/// The answer to a SUBSCRIBE.
pub(super) struct SubscribeAnswer {
    suback: SubAck,
    retained: Vec<RetainedRequest>,
}

/// The packet identifier of a QoS 1/2 PUBLISH (the codec guarantees one).
fn pid(packet_id: Option<PacketId>) -> Result<PacketId, Close> {
    packet_id.ok_or_else(|| Close::protocol("missing packet identifier"))
}
