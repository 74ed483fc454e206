//! The HTTP endpoint's accept loop and connections, bounded so that peers who never authenticate
//! cannot hold it or the process's file descriptors:
//!
//! - at most `http.max_connections` connections at once. A new one beyond that closes the oldest
//!   (and waits until it is gone), so the endpoint never holds more descriptors than that and the
//!   MQTT listeners keep accepting whatever the HTTP side is sent; and so that sockets held open
//!   cannot keep a new request, such as kubelet's probe, out: to push a probe out before it is
//!   answered, an attacker would have to open `max_connections` connections in the millisecond
//!   the probe takes, where refusing new ones would let a few dozen idle sockets deny it for good;
//! - a request header must be complete within `http.header_read_timeout_secs` of the endpoint
//!   starting to wait for it (hyper's timer: from the connection's start, or from the previous
//!   response on a kept-alive connection, which bounds idle keep-alive too);
//! - a connection on which no byte is read or written for `http.idle_timeout_secs` is closed
//!   whatever it is doing, such as a request body or a response that stalls (see `idle`).
//!
//! Every connection closed by one of these is counted in `tern_http_connections_closed_total{reason}`.

mod idle;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use self::idle::{Activity, Bounded};
use crate::broker::Broker;
use crate::config::HttpConfig;
use crate::stats::HttpClose;

/// The bounds of one endpoint, from its configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    max_connections: usize,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Bounds {
    pub fn new(config: &HttpConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        }
    }
}

/// Accepts until the broker shuts down; connections then finish their request and close.
pub(super) async fn serve(socket: TcpListener, app: Router, bounds: Bounds, broker: Arc<Broker>) {
    let open = Arc::new(OpenConnections::new(bounds.max_connections));
    let shutdown = broker.shutdown_token().clone();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = socket.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, say: pause rather than spin; the MQTT side is not
                // waiting on this loop.
                warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = open.admit(&broker).await else {
            break;
        };
        let connection = serve_connection(stream, app.clone(), bounds, slot, &broker);
        broker.tasks().spawn(connection);
    }
}

/// The connections open now, oldest first, and the slots that bound their number.
struct OpenConnections {
    /// One permit per connection; a connection's task holds it until its socket is closed.
    slots: Arc<Semaphore>,
    /// Each open connection's id and the token that closes it, oldest first. Permits are taken
    /// and given back under this lock, so the queue always lists exactly the permits' holders and
    /// a full semaphore always has someone to close.
    oldest_first: Mutex<VecDeque<(u64, CancellationToken)>>,
    next_id: AtomicU64,
}

/// A connection's place among the open ones: it leaves the queue and gives its permit back when
/// dropped, after the connection's socket is closed.
struct Slot {
    id: u64,
    open: Arc<OpenConnections>,
    /// Cancelled when a newer connection needs the place.
    closed: CancellationToken,
    permit: Option<OwnedSemaphorePermit>,
}

impl OpenConnections {
    fn new(max_connections: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_connections)),
            oldest_first: Mutex::new(VecDeque::with_capacity(max_connections)),
            next_id: AtomicU64::new(0),
        }
    }

    /// A place for a new connection; at the cap, the oldest connection is closed to make room and
    /// its socket is gone before this returns. `None` once the broker shuts down.
    async fn admit(self: &Arc<Self>, broker: &Broker) -> Option<Slot> {
        let waiting = {
            let mut open = self.oldest_first.lock();
            if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
                return Some(self.register(&mut open, permit));
            }
            // At the cap: the oldest makes room. It stays listed, holding its permit, until its
            // task has closed its socket.
            if let Some((_, closed)) = open.iter().find(|(_, closed)| !closed.is_cancelled()) {
                closed.cancel();
                broker.stats().http_closed(HttpClose::MaxConnections);
                debug!("HTTP connection closed to make room: http.max_connections are open");
            }
            Arc::clone(&self.slots).acquire_owned()
        };
        tokio::select! {
            permit = waiting => {
                let permit = permit.ok()?;
                Some(self.register(&mut self.oldest_first.lock(), permit))
            }
            () = broker.shutdown_token().cancelled() => None,
        }
    }

    fn register(
        self: &Arc<Self>,
        open: &mut VecDeque<(u64, CancellationToken)>,
        permit: OwnedSemaphorePermit,
    ) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let closed = CancellationToken::new();
        open.push_back((id, closed.clone()));
        Slot {
            id,
            open: Arc::clone(self),
            closed,
            permit: Some(permit),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.oldest_first.lock();
        if let Some(at) = open.iter().position(|(id, _)| *id == self.id) {
            open.remove(at);
        }
        drop(self.permit.take());
    }
}

/// One connection's requests, until it closes, a bound closes it, or the broker shuts down.
fn serve_connection(
    stream: TcpStream,
    app: Router,
    bounds: Bounds,
    slot: Slot,
    broker: &Arc<Broker>,
) -> impl Future<Output = ()> + Send + 'static {
    let broker = Arc::clone(broker);
    async move {
        let stats = broker.stats();
        stats.http_connections.inc();
        let activity = Arc::new(Activity::default());
        let io = Bounded::new(stream, bounds.idle_timeout, Arc::clone(&activity));
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(bounds.header_read_timeout);
        // Boxed so that it, and the socket in it, can be dropped before the slot is given back.
        let mut connection =
            Box::pin(builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app)));
        let shutdown = broker.shutdown_token();
        let result = tokio::select! {
            result = connection.as_mut() => Some(result),
            // Counted by whoever needed the place; dropping the connection closes the socket.
            () = slot.closed.cancelled() => None,
            () = shutdown.cancelled() => {
                // Let a request under way finish (still bounded by the timeouts), then close.
                connection.as_mut().graceful_shutdown();
                Some(connection.as_mut().await)
            }
        };
        drop(connection);
        if let Some(result) = result {
            match closed_by(result.as_ref().err(), &activity) {
                Some(reason) => stats.http_closed(reason),
                None => {
                    if let Err(error) = result {
                        debug!(%error, "HTTP connection failed");
                    }
                }
            }
        }
        stats.http_connections.dec();
        drop(slot);
    }
}

/// Which timeout ended a connection, if one did.
fn closed_by(error: Option<&hyper::Error>, activity: &Activity) -> Option<HttpClose> {
    if activity.idle_timed_out.load(Ordering::Relaxed) {
        return Some(HttpClose::IdleTimeout);
    }
    let timed_out = error.is_some_and(hyper::Error::is_timeout);
    let answered = activity.answered.load(Ordering::Relaxed);
    match (timed_out, answered) {
        (false, _) => None,
        (true, false) => Some(HttpClose::HeaderReadTimeout),
        (true, true) => Some(HttpClose::KeepAliveTimeout),
    }
}
