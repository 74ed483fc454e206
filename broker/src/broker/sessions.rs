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
use crate::session::{NEVER_EXPIRES, PendingWill, Session, unix_seconds_now};
use crate::stats::DropReason;

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
    /// [MQTT-3.1.4-3].
    pub fn open_session(self: &Arc<Self>, request: SessionRequest) -> Attachment {
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
                (Some(generation), Some(session)) => (session, true, generation),
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
                        state.connected_since = unix_seconds_now();
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
        let next = {
            let mut state = session.lock();
            if state.ended {
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
                    self.publish_will(will, session.id);
                }
            }
            Next::TakenOver => {
                if let Some(will) = will.filter(|w| w.delay == 0) {
                    self.publish_will(will, session.id);
                }
            }
            Next::Detached { expiry: 0 } => {
                if let Some(will) = will {
                    self.publish_will(will, session.id);
                }
                self.end_session(session, None, Some(generation));
            }
            Next::Detached { expiry } => {
                match will {
                    Some(will) if will.delay > 0 => {
                        let delay = Duration::from_secs(u64::from(will.delay));
                        session.lock().pending_will = Some(will);
                        self.spawn_will_timer(session, generation, delay);
                    }
                    Some(will) => self.publish_will(will, session.id),
                    None => {}
                }
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
            if state.ended || reattached {
                return;
            }
            state.ended = true;
            state.queue.clear();
            if let (Some(reason), Some(connection)) = (kick, state.connection.take()) {
                connection.kick(reason);
            }
            session.set_online(false);
            (
                std::mem::take(&mut state.subscriptions),
                state.pending_will.take(),
            )
        };
        self.backpressure.subscriber_gone(session);
        self.sessions.remove_if_same(session);
        self.forget_subscriptions(session.id, subscriptions.into_keys());
        if let Some(will) = will {
            self.publish_will(will, session.id);
        }
        if idle_since.is_some() {
            debug!(client_id = %session.client_id, "session ended");
            for hook in self.hooks.iter() {
                hook.on_session_expired(&session.client_id);
            }
        }
    }

    /// Publishes a will on its client's behalf, with the rights the client has now: a reload since
    /// CONNECT may have taken away what allowed it then.
    fn publish_will(&self, will: Box<PendingWill>, publisher: SessionId) {
        let PendingWill {
            message, client, ..
        } = *will;
        if let Err(reason) =
            self.authorize_publish(&client, &message.topic, message.qos, message.retain)
        {
            info!(client_id = %client.client_id, %reason, "will not published: no longer authorized");
            self.stats.dropped(DropReason::NotAuthorized);
            return;
        }
        let mut message = message;
        message.publisher = Some(publisher);
        // The will's Message Expiry Interval starts when it is published (§3.1.3.2.4).
        let interval = message.properties.message_expiry_interval.take();
        message.received_at = Instant::now();
        self.publish(message.with_expiry_interval(interval), None);
    }

    fn spawn_will_timer(
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
                if state.generation != generation || state.connection.is_some() || state.ended {
                    return;
                }
                state.pending_will.take()
            };
            if let Some(will) = will {
                broker.publish_will(will, session.id);
            }
        });
    }

    fn spawn_expiry_timer(
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

/// Attaches a new connection to an existing session, kicking the one attached before. Returns the
/// new generation, or `None` if the session has just ended and cannot be resumed.
fn resume(
    session: &Arc<Session>,
    request: &SessionRequest,
    control: &Arc<ConnectionControl>,
) -> Option<Generation> {
    let mut state = session.lock();
    if state.ended {
        return None;
    }
    if let Some(old) = state.connection.take() {
        old.kick(ReasonCode::SESSION_TAKEN_OVER);
    }
    // A will still waiting out its delay is cancelled by this new connection [MQTT-3.1.3-9].
    state.pending_will = None;
    state.generation = state.generation.next();
    state.connection = Some(Arc::clone(control));
    state.expiry_interval = request.expiry_interval;
    state.client = Some(request.client.clone());
    state.connected_since = unix_seconds_now();
    session.set_online(true);
    Some(state.generation)
}
