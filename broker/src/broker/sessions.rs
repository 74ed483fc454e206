//! A session's life: opened or resumed by a CONNECT, taken over by a later one, detached when its
//! connection ends, and ended by a clean start, its expiry or a takeover; and the will that goes
//! out on the way.
//!
//! Lock order: the registry before any session; never across an `.await`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::Broker;
use crate::codec::ReasonCode;
use crate::control::ConnectionControl;
use crate::identity::{ClientId, ClientInfo, Generation, SessionId};
use crate::session::{NEVER_EXPIRES, PendingWill, Session};
use crate::stats::DropReason;
use crate::storage::unix_millis_now;

/// How long a CONNECT waits for the connection it takes a session from to let go: it acts on what
/// its socket already holds and closes, normally within milliseconds; one stuck in a slow hook is
/// overtaken after this.
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);
/// Connections displaced one after another before a CONNECT takes the session regardless.
const TAKEOVER_ROUNDS: usize = 3;

/// What a connection asks for when it opens its session.
#[derive(Debug)]
pub struct SessionRequest {
    pub client_id: ClientId,
    pub clean_start: bool,
    pub expiry_interval: u32,
    pub client: Arc<ClientInfo>,
}

/// A connection's hold on its session.
#[derive(Debug)]
pub struct Attachment {
    pub session: Arc<Session>,
    pub session_present: bool,
    pub control: Arc<ConnectionControl>,
    pub generation: Generation,
}

impl Broker {
    /// Opens, resumes or takes over the session for a CONNECT [MQTT-3.1.2-4], [MQTT-3.1.2-5],
    /// [MQTT-3.1.4-3]. A connection still attached to the session is told to go first, and this one
    /// waits until it has acted on what its socket already held and let go: a DISCONNECT that
    /// arrived before this CONNECT decides what is left to resume (with Session Expiry 0 it ends
    /// the session) [MQTT-3.1.2-23].
    /// In a cluster the client id is claimed cluster-wide first, and a session held on another
    /// node moves here (or ends there, for a clean start).
    pub async fn open_session(self: &Arc<Self>, request: SessionRequest) -> Attachment {
        self.claim_cluster_wide(&request).await;
        self.displace_connection(&request.client_id).await;
        self.attach(request)
    }

    /// Kicks the connection attached to `client_id`'s session (0x8E) and waits, bounded by
    /// [`TAKEOVER_WAIT`], until it has let go. Another CONNECT may attach in between: a few rounds.
    pub(super) async fn displace_connection(&self, client_id: &ClientId) {
        for _ in 0..TAKEOVER_ROUNDS {
            let Some((session, control)) = self.attached(client_id) else {
                return;
            };
            control.kick(ReasonCode::SESSION_TAKEN_OVER);
            let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
            let mut pause = Duration::from_micros(250);
            while still_attached(&session, &control) {
                if tokio::time::Instant::now() >= deadline {
                    debug!(%client_id, "the old connection did not let go in time; taking over");
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    }

    /// The session of `client_id` and the connection attached to it, if one is.
    fn attached(&self, client_id: &ClientId) -> Option<(Arc<Session>, Arc<ConnectionControl>)> {
        let session = self.sessions.get(client_id)?;
        let control = session.lock().connection.clone()?;
        Some((session, control))
    }

    /// Opens, resumes or takes over the session, now that no connection should hold it.
    fn attach(self: &Arc<Self>, request: SessionRequest) -> Attachment {
        if let Some(cluster) = &self.cluster {
            // A will kept for an earlier connection (cancelled by this one [MQTT-3.1.3-9], or
            // discarded) is let go; this connection's own is kept once it is accepted.
            cluster.drop_will(&request.client_id);
        }
        let control = Arc::new(ConnectionControl::default());
        let mut ended_session = None;

        let (session, session_present, generation) = {
            let mut sessions = self.sessions.lock();
            let existing = sessions.get(&request.client_id).cloned();
            let resumed = existing
                .as_ref()
                .filter(|_| !request.clean_start)
                .and_then(|session| resume(session, &request, &control));
            match (resumed, existing) {
                (Some(generation), Some(session)) => {
                    let mut state = session.lock();
                    if state.journal().is_none() {
                        // It moved here from another node: stored from now on.
                        self.start_journal(&session, &mut state);
                    }
                    state.record_session(&session.client_id, Some(None));
                    drop(state);
                    (session, true, generation)
                }
                (_, existing) => {
                    // Clean start (or nothing to resume): any old session ends here. Its connection,
                    // if any, is kicked and publishes its own will as it closes.
                    ended_session = existing;
                    let session = Arc::new(self.new_session(request.client_id.clone()));
                    {
                        let mut state = session.lock();
                        state.generation = Generation::FIRST;
                        state.connection = Some(Arc::clone(&control));
                        state.expiry_interval = request.expiry_interval;
                        state.client = Some(request.client.clone());
                        self.start_journal(&session, &mut state);
                        state.record_session(&session.client_id, Some(None));
                    }
                    session.set_online(true);
                    sessions.insert(Arc::clone(&session));
                    (session, false, Generation::FIRST)
                }
            }
        };

        if let Some(old) = ended_session {
            self.end_session(&old, Some(ReasonCode::SESSION_TAKEN_OVER), None);
        }
        Attachment {
            session,
            session_present,
            control,
            generation,
        }
    }

    /// A new, empty session for `client_id` with the configured queue, not yet in the registry.
    pub(crate) fn new_session(&self, client_id: ClientId) -> Session {
        Session::new(
            self.sessions.next_id(),
            client_id,
            Arc::clone(&self.queue_limits),
        )
    }

    /// A connection let go of its session, handing over its will: `None` after a DISCONNECT with reason
    /// 0x00 [MQTT-3.1.2-10]. Applies the session expiry interval [MQTT-3.1.2-23] and the will delay.
    pub fn detach(
        self: &Arc<Self>,
        session: &Arc<Session>,
        generation: Generation,
        will: Option<Box<PendingWill>>,
    ) {
        enum Next {
            /// Another connection took the session over; only an undelayed will goes out [MQTT-3.1.3-9].
            TakenOver,
            /// The session ended (clean-start takeover): the will goes out now.
            Ended,
            Detached {
                expiry: u32,
            },
        }
        if let (Some(cluster), None) = (&self.cluster, &will) {
            // Discarded (DISCONNECT 0x00) or never given: no node needs to keep it.
            cluster.drop_will(&session.client_id);
        }
        let next = {
            let mut state = session.lock();
            if session.is_ended() {
                Next::Ended
            } else if state.generation != generation {
                Next::TakenOver
            } else {
                state.connection = None;
                session.set_online(false);
                Next::Detached {
                    expiry: state.expiry_interval,
                }
            }
        };
        self.backpressure.subscriber_gone(session);
        match next {
            Next::Ended => {
                if let Some(will) = will {
                    self.publish_will(will, session);
                }
            }
            Next::TakenOver => {
                if let Some(will) = will.filter(|w| w.delay == 0) {
                    self.publish_will(will, session);
                }
            }
            Next::Detached { expiry: 0 } => {
                if let Some(will) = will {
                    self.publish_will(will, session);
                }
                self.end_session(session, None, Some(generation));
            }
            Next::Detached { expiry } => {
                match will {
                    Some(will) if will.delay > 0 => {
                        let delay = Duration::from_secs(u64::from(will.delay));
                        session.lock().set_pending_will(will);
                        self.spawn_will_timer(session, generation, delay);
                    }
                    Some(will) => self.publish_will(will, session),
                    None => {}
                }
                session
                    .lock()
                    .record_session(&session.client_id, Some(Some(unix_millis_now())));
                if expiry != NEVER_EXPIRES {
                    self.spawn_expiry_timer(
                        session,
                        generation,
                        Duration::from_secs(u64::from(expiry)),
                    );
                }
            }
        }
    }

    /// Ends a session: it leaves the registry and the router, its queue is dropped, and a will still
    /// pending is published now, since the session ending comes before its delay [MQTT-3.1.3-9].
    /// With `idle_since`, only a session still detached at that generation is ended (for timers).
    pub fn end_session(
        &self,
        session: &Arc<Session>,
        kick: Option<ReasonCode>,
        idle_since: Option<Generation>,
    ) {
        let (subscriptions, will) = {
            let mut state = session.lock();
            let reattached =
                idle_since.is_some_and(|g| state.generation != g || state.connection.is_some());
            if session.is_ended() || reattached {
                return;
            }
            session.mark_ended();
            state.record_end();
            state.queue.clear();
            if let (Some(reason), Some(connection)) = (kick, state.connection.take()) {
                connection.kick(reason);
            }
            session.set_online(false);
            (
                std::mem::take(&mut state.subscriptions),
                state.take_pending_will(),
            )
        };
        self.backpressure.subscriber_gone(session);
        self.sessions.remove_if_same(session);
        self.forget_subscriptions(session.id, subscriptions.into_keys());
        if let Some(will) = will {
            self.publish_will(will, session);
        }
        if idle_since.is_some() {
            debug!(client_id = %session.client_id, "session ended");
            for hook in self.hooks.iter() {
                hook.on_session_expired(&session.client_id);
            }
        }
    }

    /// Publishes a will another node kept for a client of a node that died.
    pub(super) fn publish_kept_will(&self, will: PendingWill) {
        self.publish_will_message(will, None);
    }

    pub(super) fn publish_will(&self, will: Box<PendingWill>, session: &Session) {
        if let Some(cluster) = &self.cluster {
            // Published here: the node that kept it in case this one died lets it go.
            cluster.drop_will(&session.client_id);
        }
        self.publish_will_message(*will, Some(session.id));
    }

    /// Publishes a will on its client's behalf, with the rights the client has now: a reload since
    /// CONNECT may have taken away what allowed it then.
    fn publish_will_message(&self, will: PendingWill, publisher: Option<SessionId>) {
        let PendingWill {
            message, client, ..
        } = will;
        if let Err(reason) =
            self.authorize_publish(&client, &message.topic, message.qos, message.retain)
        {
            info!(client_id = %client.client_id, %reason, "will not published: no longer authorized");
            self.stats.dropped(DropReason::NotAuthorized);
            return;
        }
        let mut message = message;
        message.publisher = publisher;
        // The will's Message Expiry Interval starts when it is published (§3.1.3.2.4).
        let interval = message.properties.message_expiry_interval.take();
        message.received_at = Instant::now();
        self.publish(message.with_expiry_interval(interval), None);
    }

    pub(super) fn spawn_will_timer(
        self: &Arc<Self>,
        session: &Arc<Session>,
        generation: Generation,
        delay: Duration,
    ) {
        let broker = Arc::clone(self);
        let session = Arc::clone(session);
        self.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = broker.shutdown.cancelled() => return,
            }
            let will = {
                let mut state = session.lock();
                if state.generation != generation
                    || state.connection.is_some()
                    || session.is_ended()
                {
                    return;
                }
                let will = state.take_pending_will();
                // Gone from the store before it goes out: a crash from here on loses it rather
                // than sending it twice.
                state.record_session(&session.client_id, None);
                will
            };
            if let Some(will) = will {
                broker.publish_will(will, &session);
            }
        });
    }

    pub(super) fn spawn_expiry_timer(
        self: &Arc<Self>,
        session: &Arc<Session>,
        generation: Generation,
        expiry: Duration,
    ) {
        let broker = Arc::clone(self);
        let session = Arc::clone(session);
        self.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(expiry) => {}
                () = broker.shutdown.cancelled() => return,
            }
            broker.end_session(&session, None, Some(generation));
        });
    }
}

/// Whether `control`'s connection still holds `session`.
fn still_attached(session: &Session, control: &Arc<ConnectionControl>) -> bool {
    let state = session.lock();
    !session.is_ended()
        && state
            .connection
            .as_ref()
            .is_some_and(|held| Arc::ptr_eq(held, control))
}

/// Attaches a new connection to an existing session, kicking the one attached before. Returns the
/// new generation, or `None` if the session has just ended and cannot be resumed.
fn resume(
    session: &Arc<Session>,
    request: &SessionRequest,
    control: &Arc<ConnectionControl>,
) -> Option<Generation> {
    let mut state = session.lock();
    if session.is_ended() {
        return None;
    }
    if let Some(old) = state.connection.take() {
        old.kick(ReasonCode::SESSION_TAKEN_OVER);
    }
    // A will still waiting out its delay is cancelled by this new connection [MQTT-3.1.3-9].
    drop(state.take_pending_will());
    state.generation = state.generation.next();
    state.connection = Some(Arc::clone(control));
    state.expiry_interval = request.expiry_interval;
    state.client = Some(request.client.clone());
    session.set_online(true);
    Some(state.generation)
}
