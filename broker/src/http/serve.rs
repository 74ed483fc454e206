//! The HTTP endpoint's accept loop and connections, bounded so that peers who never authenticate
//! cannot hold it or the process's file descriptors:
//!
//! - at most `http.max_connections` connections at once; one more is answered `503` and closed on
//!   arrival, so the endpoint never holds more descriptors than that and the MQTT listeners keep
//!   accepting whatever the HTTP side is sent;
//! - a request header must be complete within `http.header_read_timeout_secs` of the endpoint
//!   starting to wait for it (hyper's timer: from the connection's start, or from the previous
//!   response on a kept-alive connection, which bounds idle keep-alive too);
//! - a connection on which no byte is read or written for `http.idle_timeout_secs` is closed
//!   whatever it is doing, such as a request body or a response that stalls.
//!
//! Every connection refused or closed by one of these is counted in
//! `tern_http_connections_closed_total{reason}`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

use crate::broker::Broker;
use crate::config::HttpConfig;
use crate::stats::HttpClose;

/// What a connection over the cap is told before it is closed, when its socket takes it at once.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
content-type: text/plain\r\ncontent-length: 32\r\n\r\ntoo many HTTP connections; retry\n";

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
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
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
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                let connection = serve_connection(stream, app.clone(), bounds, slot, &broker);
                broker.tasks().spawn(connection);
            }
            Err(_) => refuse(&stream, &broker),
        }
    }
}

/// Over the cap: a best-effort `503` (never waited for) and the socket closed at once.
fn refuse(stream: &TcpStream, broker: &Broker) {
    let _ = stream.try_write(BUSY_RESPONSE);
    broker.stats().http_closed(HttpClose::MaxConnections);
    debug!("HTTP connection refused: http.max_connections are open");
}

/// One connection's requests, until it closes, a bound closes it, or the broker shuts down.
fn serve_connection(
    stream: TcpStream,
    app: Router,
    bounds: Bounds,
    slot: OwnedSemaphorePermit,
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
        let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
        tokio::pin!(connection);
        let shutdown = broker.shutdown_token();
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = shutdown.cancelled() => {
                // Let a request under way finish (still bounded by the timeouts), then close.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        match closed_by(result.as_ref().err(), &activity) {
            Some(reason) => stats.http_closed(reason),
            None => {
                if let Err(error) = result {
                    debug!(%error, "HTTP connection failed");
                }
            }
        }
        stats.http_connections.dec();
        drop(slot);
    }
}

/// What a connection's socket saw, for telling which bound ended it.
#[derive(Debug, Default)]
struct Activity {
    /// A response was written, so a later header timeout was a kept-alive connection's wait for
    /// its next request.
    answered: AtomicBool,
    /// The idle timeout failed a read or write. Not always the connection's error: hyper hands a
    /// failed body read to the handler, which answers it.
    idle_timed_out: AtomicBool,
}

/// Which bound ended a connection, if one did.
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

/// The error a [`Bounded`] stream fails with when nothing moved for the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no byte read or written for the idle timeout")]
struct IdleTimedOut;

/// A socket that fails with [`IdleTimedOut`] once no byte was read or written for the idle timeout
/// while a read or a write waits, and notes in its [`Activity`] what happened. The deadline is
/// boxed so the stream stays `Unpin`, as hyper wants.
struct Bounded {
    stream: TcpStream,
    deadline: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    activity: Arc<Activity>,
}

impl Bounded {
    fn new(stream: TcpStream, idle_timeout: Duration, activity: Arc<Activity>) -> Self {
        Self {
            stream,
            deadline: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            activity,
        }
    }

    /// Something moved: the idle clock starts again.
    fn progressed(&mut self) {
        let deadline = Instant::now() + self.idle_timeout;
        self.deadline.as_mut().reset(deadline);
    }

    /// The outcome of a write: a response is under way, and the idle clock starts again.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(result) => {
                if result.as_ref().is_ok_and(|written| *written > 0) {
                    self.activity.answered.store(true, Ordering::Relaxed);
                    self.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }

    /// Nothing moved and the caller waits: fail once the idle timeout has passed.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        ready!(self.deadline.as_mut().poll(cx));
        self.activity.idle_timed_out.store(true, Ordering::Relaxed);
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, IdleTimedOut))
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, bytes);
        this.wrote(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
