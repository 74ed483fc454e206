//! Listeners: bind the configured sockets and accept connections, handing each to its own tracked
//! task. That task first peels the transport stack — optional PROXY header, optional TLS, optional
//! WebSocket — under one deadline, then runs the MQTT connection. A slow handshake therefore never
//! holds up the accept loop, which stops as soon as a drain or shutdown begins.

pub mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use self::transport::tls::TlsTerminator;
use self::transport::{proxy, websocket};
use crate::broker::{Broker, ListenerGate};
use crate::config::{ListenerConfig, ListenerProtocol};
use crate::connection::{self, RunningConnection, Transport};
use crate::reload::{Reload, ReloadError};

/// Why a listener could not start. The cause is part of the message rather than a `source`, so
/// that a report that prints the chain names it once.
#[derive(Debug, Error)]
pub enum ListenerError {
    #[error("cannot bind: {0}")]
    Bind(std::io::Error),
}

/// The layers between TCP and MQTT on one listener.
#[derive(Debug)]
struct Stack {
    proxy_protocol: bool,
    tls: Option<Arc<TlsTerminator>>,
    /// Shared with the connections that need it after the handshake.
    websocket_path: Option<Arc<str>>,
}

/// A bound, not yet accepting, listener.
#[derive(Debug)]
pub struct BoundListener {
    pub name: Arc<str>,
    pub protocol: ListenerProtocol,
    pub local_addr: SocketAddr,
    socket: TcpListener,
    gate: Arc<ListenerGate>,
    stack: Arc<Stack>,
}

impl BoundListener {
    /// Binds the socket. `tls` is the listener's terminator, loaded from its files beforehand (so a
    /// bad certificate fails the start before anything listens); `None` for `tcp` and `ws`.
    pub async fn bind(
        config: &ListenerConfig,
        tls: Option<Arc<TlsTerminator>>,
    ) -> Result<Self, ListenerError> {
        let websocket_path = config
            .protocol
            .uses_websocket()
            .then(|| Arc::from(config.websocket.clone().unwrap_or_default().path));
        let socket = TcpListener::bind(config.bind)
            .await
            .map_err(ListenerError::Bind)?;
        let name: Arc<str> = Arc::from(config.name.as_str());
        Ok(Self {
            gate: Arc::new(ListenerGate::new(Arc::clone(&name), config.max_connections)),
            name,
            protocol: config.protocol,
            local_addr: socket.local_addr().map_err(ListenerError::Bind)?,
            socket,
            stack: Arc::new(Stack {
                proxy_protocol: config.proxy_protocol,
                tls,
                websocket_path,
            }),
        })
    }

    /// The certificate reloader of a TLS listener, for the broker's reload and file watching.
    pub fn tls_reload(&self) -> Option<Arc<dyn Reload>> {
        let terminator = self.stack.tls.as_ref()?;
        Some(Arc::new(TlsReload {
            terminator: Arc::clone(terminator),
        }))
    }

    /// Accepts until the broker stops accepting. Accept errors (out of file descriptors, say) are
    /// logged and retried after a pause instead of ending the listener.
    pub async fn run(self, broker: Arc<Broker>) {
        info!(listener = %self.name, addr = %self.local_addr, protocol = self.protocol.name(), "listening");
        loop {
            let accepted = tokio::select! {
                biased;
                () = broker.accepting_token().cancelled() => break,
                accepted = self.socket.accept() => accepted,
            };
            match accepted {
                // A connection that arrived as a drain or shutdown began gets no CONNACK either.
                Ok(_) if broker.accepting_token().is_cancelled() => break,
                Ok((stream, remote_addr)) => {
                    // MQTT packets are small and latency matters more than coalescing.
                    let _ = stream.set_nodelay(true);
                    broker.tasks().spawn(serve(
                        Arc::clone(&broker),
                        stream,
                        remote_addr,
                        Arc::clone(&self.gate),
                        Arc::clone(&self.stack),
                    ));
                }
                Err(error) => {
                    warn!(listener = %self.name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        info!(listener = %self.name, "stopped accepting");
    }
}

/// One accepted socket's task: the handshakes, then the MQTT connection.
///
/// This future is the connection's task for as long as the client stays connected, and an `async fn`
/// is as large as its largest await point. So the handshakes (PROXY, TLS, WebSocket, CONNECT) run in
/// a box that is freed once they are done, and what stays is the task's arguments and a pointer to
/// the running connection: a plain TCP connection pays for no TLS or WebSocket state, and none for a
/// handshake's leftovers. Per-connection memory decides how many idle clients one broker can hold.
/// (Not an `async fn`, which would store its arguments twice: rust-lang/rust#62958.)
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
fn serve(
    broker: Arc<Broker>,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    gate: Arc<ListenerGate>,
    stack: Arc<Stack>,
) -> impl Future<Output = ()> + Send {
    async move {
        let established = Box::pin(establish(broker, tcp, remote_addr, gate, stack)).await;
        if let Some(connection) = established {
            connection.await;
        }
    }
}

/// Peels PROXY, TLS and WebSocket as configured, within the connect timeout, and completes the MQTT
/// handshake; returns the connection to run.
async fn establish(
    broker: Arc<Broker>,
    mut tcp: TcpStream,
    mut remote_addr: SocketAddr,
    gate: Arc<ListenerGate>,
    stack: Arc<Stack>,
) -> Option<RunningConnection> {
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(broker.config().limits.connect_timeout_secs);
    if stack.proxy_protocol {
        match tokio::time::timeout_at(deadline, proxy::read_header(&mut tcp)).await {
            Ok(Ok(header)) => remote_addr = header.source.unwrap_or(remote_addr),
            Ok(Err(error)) => {
                debug!(listener = %gate.name, %remote_addr, kind = error.kind(), %error, "bad PROXY header");
                return None;
            }
            Err(_) => return None,
        }
    }
    let Some(tls) = &stack.tls else {
        return upgrade(broker, tcp, remote_addr, gate, &stack, None, deadline).await;
    };
    // Boxed: a TLS handshake's state is large, and plain connections should not carry its room.
    match tokio::time::timeout_at(deadline, Box::pin(tls.accept(tcp))).await {
        Ok(Ok((stream, identity))) => {
            let upgraded = upgrade(
                broker,
                stream,
                remote_addr,
                gate,
                &stack,
                identity,
                deadline,
            );
            Box::pin(upgraded).await
        }
        Ok(Err(error)) => {
            debug!(listener = %gate.name, %remote_addr, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(listener = %gate.name, %remote_addr, "TLS handshake timed out");
            None
        }
    }
}

/// The MQTT handshake over `stream`, behind the WebSocket layer if the listener has one.
async fn upgrade<S>(
    broker: Arc<Broker>,
    stream: S,
    remote_addr: SocketAddr,
    gate: Arc<ListenerGate>,
    stack: &Stack,
    identity: Option<String>,
    deadline: tokio::time::Instant,
) -> Option<RunningConnection>
where
    S: Transport,
{
    let Some(path) = &stack.websocket_path else {
        return connection::accept(broker, stream, remote_addr, gate, identity).await;
    };
    let accepted =
        tokio::time::timeout_at(deadline, Box::pin(websocket::accept(stream, path))).await;
    let ws = match accepted {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            debug!(listener = %gate.name, %remote_addr, kind = error.kind(), %error, "WebSocket upgrade failed");
            return None;
        }
        Err(_) => {
            debug!(listener = %gate.name, %remote_addr, "WebSocket upgrade timed out");
            return None;
        }
    };
    Box::pin(connection::accept(broker, ws, remote_addr, gate, identity)).await
}

/// Certificate rotation: the terminator re-reads its files; connections keep their sessions.
#[derive(Debug)]
struct TlsReload {
    terminator: Arc<TlsTerminator>,
}

impl Reload for TlsReload {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn reload(&self) -> Result<bool, ReloadError> {
        self.terminator.reload().map_err(ReloadError::new)
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        let settings = self.terminator.settings();
        [
            Some(&settings.cert_file),
            Some(&settings.key_file),
            settings.client_ca_file.as_ref(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_broker() -> Arc<Broker> {
        Arc::new(Broker::new(
            crate::config::Config::default(),
            crate::hook::Hooks::default(),
            tokio_util::sync::CancellationToken::new(),
        ))
    }

    /// Every connection's task allocates its whole future up front and keeps it while the client
    /// stays connected, so these sizes are paid per idle client (the bounds are memory, not
    /// timing). The task's own future holds only the transport handshakes (boxed) and a pointer to
    /// the connection: it was 15 KB, then 1.5 KB while a TLS handshake's result stayed in it.
    #[tokio::test]
    async fn a_tcp_connection_task_stays_small() {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let stack = Arc::new(Stack {
            proxy_protocol: false,
            tls: None,
            websocket_path: None,
        });
        let task = serve(
            test_broker(),
            stream,
            addr,
            Arc::new(ListenerGate::new(Arc::from("test"), None)),
            stack,
        );
        let size = std::mem::size_of_val(&task);
        eprintln!("establish future: {size} bytes");
        assert!(size <= 512, "the connection task's future is {size} bytes");
    }

    /// The running connection (one boxed future per client): its state plus the event loop, with
    /// every rare await (re-authentication, the publish-rate pause, the kick drain) and the will
    /// boxed. It was 3 KB before those were, 1.5 KB while the event loop held a future per source.
    #[tokio::test]
    async fn a_running_tcp_connection_stays_small() {
        use tokio::io::AsyncWriteExt;
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        // MQTT 3.1.1 CONNECT: clean session, keep alive 60 s, client identifier "a".
        client
            .write_all(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a")
            .await
            .unwrap();
        let (stream, remote) = socket.accept().await.unwrap();
        let connection = connection::accept(
            test_broker(),
            stream,
            remote,
            Arc::new(ListenerGate::new(Arc::from("test"), None)),
            None,
        )
        .await
        .expect("the CONNECT is accepted");
        let size = std::mem::size_of_val(&*connection);
        eprintln!("running connection: {size} bytes");
        assert!(size <= 1024, "the running connection is {size} bytes");
    }
}
