//! The broker's shared core: configuration, router, session registry, hooks and counters, and the rules
//! that span them — opening, taking over, detaching and ending sessions, wills, and publishing.
//!
//! Connection tasks, the `$SYS` task and the inline client all hold an `Arc<Broker>`. Nothing here
//! awaits while holding a lock; timers (will delay, session expiry) are separate tracked tasks that
//! re-check the session's generation when they fire, so a reconnect simply makes them stale.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::codec::{ProtocolVersion, ReasonCode};
use crate::config::Config;
use crate::hook::{ClientInfo, Hooks};
use crate::message::Message;
use crate::router::Router;
use crate::session::{
    ClientId, ConnectionControl, PendingWill, Session, SessionId, SessionRegistry,
};
use crate::stats::Stats;
use crate::topic::SubscriptionFilter;

/// Session Expiry Interval meaning "never" [MQTT-3.1.2-?] (0xFFFFFFFF).
pub const NEVER_EXPIRES: u32 = u32::MAX;

#[derive(Debug)]
pub struct Broker {
    pub config: Arc<Config>,
    pub router: Router,
    pub sessions: SessionRegistry,
    pub hooks: Hooks,
    pub stats: Arc<Stats>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Every task the broker spawns, so shutdown can wait for them.
    pub tasks: TaskTracker,
    pub started_at: Instant,
}

/// What a connection asks for when it opens its session.
#[derive(Debug)]
pub struct SessionRequest {
    pub client_id: ClientId,
    pub protocol: ProtocolVersion,
    pub clean_start: bool,
    pub expiry_interval: u32,
}

/// A connection's hold on its session.
#[derive(Debug)]
pub struct Attachment {
    pub session: Arc<Session>,
    pub session_present: bool,
    pub control: Arc<ConnectionControl>,
    pub generation: u64,
}

impl Broker {
    pub fn new(config: Config, hooks: Hooks, shutdown: CancellationToken) -> Self {
        Self {
            config: Arc::new(config),
            router: Router::new(),
            sessions: SessionRegistry::default(),
            hooks,
            stats: Arc::new(Stats::default()),
            shutdown,
            tasks: TaskTracker::new(),
            started_at: Instant::now(),
        }
    }

    /// Accepts a message for delivery: hooks, retained store, then every matching session.
    /// Returns how many sessions it was handed to.
    pub fn publish(&self, message: Message, from: Option<&ClientInfo>) -> usize {
        let message = Arc::new(message);
        for hook in self.hooks.iter() {
            hook.on_publish(from, &message);
        }
        if message.retain && self.config.features.retain_available {
            self.router.retain(&message);
        }
        self.router.route(&message)
    }

    /// Opens, resumes or takes over the session for a CONNECT [MQTT-3.1.2-4], [MQTT-3.1.2-5],
    /// [MQTT-3.1.4-3].
    pub fn open_session(self: &Arc<Self>, request: SessionRequest) -> Attachment {
        let control = Arc::new(ConnectionControl::default());
        let mut ended_session = None;
        let limits = &self.config.limits;

        let (session, session_present, generation) = {
            let mut sessions = self.sessions.lock();
            let existing = sessions.get(&request.client_id).cloned();
            let resumed = existing
                .as_ref()
                .filter(|_| !request.clean_start)
                .and_then(|session| Self::resume(session, &request, &control));
            match (resumed, existing) {
                (Some(generation), Some(session)) => (session, true, generation),
                (_, existing) => {
                    // Clean start (or nothing to resume): any old session ends here. Its connection,
                    // if any, is kicked and publishes its own will as it closes.
                    ended_session = existing;
                    let session = Arc::new(Session::new(
                        self.sessions.next_id(),
                        request.client_id.clone(),
                        request.protocol,
                        limits.max_queued_messages,
                        limits.queue_overflow,
                        Arc::clone(&self.stats),
                    ));
                    {
                        let mut state = session.lock();
                        state.generation = 1;
                        state.connection = Some(Arc::clone(&control));
                        state.expiry_interval = request.expiry_interval;
                    }
                    session.set_online(true);
                    sessions.insert(request.client_id.clone(), Arc::clone(&session));
                    (session, false, 1)
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

    /// Attaches a new connection to an existing session, kicking the one attached before. Returns the
    /// new generation, or `None` if the session has just ended and cannot be resumed.
    fn resume(
        session: &Arc<Session>,
        request: &SessionRequest,
        control: &Arc<ConnectionControl>,
    ) -> Option<u64> {
        let mut state = session.lock();
        if state.ended {
            return None;
        }
        if let Some(old) = state.connection.take() {
            old.kick(ReasonCode::SESSION_TAKEN_OVER);
        }
        // A will still waiting out its delay is cancelled by this new connection [MQTT-3.1.3-9].
        state.pending_will = None;
        state.generation += 1;
        state.connection = Some(Arc::clone(control));
        state.protocol = request.protocol;
        state.expiry_interval = request.expiry_interval;
        state.disconnected_at = None;
        session.set_online(true);
        Some(state.generation)
    }

    /// A connection let go of its session, handing over its will: `None` after a DISCONNECT with reason
    /// 0x00 [MQTT-3.1.2-10]. Applies the session expiry interval [MQTT-3.1.2-23] and the will delay.
    pub fn detach(
        self: &Arc<Self>,
        session: &Arc<Session>,
        generation: u64,
        will: Option<PendingWill>,
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
                state.disconnected_at = Some(Instant::now());
                session.set_online(false);
                Next::Detached {
                    expiry: state.expiry_interval,
                }
            }
        };
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
        idle_since: Option<u64>,
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
        self.sessions.remove_if_same(session);
        for filter in subscriptions.keys() {
            let allow_shared = true;
            if let Ok(parsed) = SubscriptionFilter::parse(filter, allow_shared) {
                self.router.unsubscribe(session.id, &parsed);
            }
        }
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

    fn publish_will(&self, will: PendingWill, publisher: SessionId) {
        let mut message = will.message;
        message.publisher = Some(publisher);
        // The will's Message Expiry Interval starts when it is published [MQTT-3.1.3-?].
        let interval = message.properties.message_expiry_interval.take();
        message.received_at = Instant::now();
        self.publish(message.with_expiry_interval(interval), None);
    }

    fn spawn_will_timer(
        self: &Arc<Self>,
        session: &Arc<Session>,
        generation: u64,
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
        generation: u64,
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
