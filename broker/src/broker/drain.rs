//! Leaving: a drain (stop accepting, tell every connected client to go elsewhere, keep the sessions)
//! and the start of a shutdown (stop accepting, tell every client the server is going away). The
//! server waits for the connections to finish; see `crate::server` for the whole shutdown order.

use std::sync::atomic::Ordering;

use super::Broker;
use crate::codec::ReasonCode;

/// How far a drain has got.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrainProgress {
    /// `running`, `draining` or `drained`.
    pub state: &'static str,
    pub connections: i64,
    pub sessions: usize,
    pub inflight: usize,
    pub queued: usize,
}

impl Broker {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts a drain: stop accepting, then tell every connected client to go elsewhere (MQTT 5:
    /// DISCONNECT 0x9C *Use another server*; 3.x: close). Sessions stay, so persistent ones keep
    /// their queued messages. Returns false if a drain had already started.
    pub fn start_drain(&self) -> bool {
        if self.draining.swap(true, Ordering::SeqCst) {
            return false;
        }
        tracing::info!("draining: no new connections, disconnecting clients");
        self.accepting.cancel();
        self.kick_connected(ReasonCode::USE_ANOTHER_SERVER);
        true
    }

    /// Begins shutdown: listeners stop accepting, and every connected client is told 0x8B *Server
    /// shutting down*. A connection that attaches after this sees the cancelled token as its event
    /// loop starts, so none is left running.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        self.kick_connected(ReasonCode::SERVER_SHUTTING_DOWN);
    }

    fn kick_connected(&self, reason: ReasonCode) {
        for session in self.sessions.snapshot() {
            if let Some(connection) = &session.lock().connection {
                connection.kick(reason);
            }
        }
    }

    pub fn drain_progress(&self) -> DrainProgress {
        let connections = self.stats.connections.get();
        let (sessions, inflight, queued) = self.session_totals();
        let state = match (self.is_draining(), connections) {
            (false, _) => "running",
            (true, 0) => "drained",
            (true, _) => "draining",
        };
        DrainProgress {
            state,
            connections,
            sessions,
            inflight,
            queued,
        }
    }

    /// Sessions held, and the messages in flight and queued across them.
    pub fn session_totals(&self) -> (usize, usize, usize) {
        let sessions = self.sessions.snapshot();
        let (mut inflight, mut queued) = (0, 0);
        for session in &sessions {
            let state = session.lock();
            inflight += state.inflight.len();
            queued += state.queue.len();
        }
        (sessions.len(), inflight, queued)
    }
}
