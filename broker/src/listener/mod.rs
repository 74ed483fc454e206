//! Listeners: bind the configured sockets and accept connections, handing each to its own tracked
//! connection task. A listener stops accepting as soon as shutdown begins.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::{ListenerConfig, ListenerProtocol};
use crate::connection;

/// What a connection knows about the listener it came through.
#[derive(Debug)]
pub struct ListenerHandle {
    pub name: Arc<str>,
    max_connections: Option<usize>,
    active: AtomicUsize,
}

impl ListenerHandle {
    /// Takes a connection slot; `false` if the listener is full.
    pub fn admit(&self) -> bool {
        let before = self.active.fetch_add(1, Ordering::AcqRel);
        if self.max_connections.is_some_and(|max| before >= max) {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A bound, not yet accepting, listener.
#[derive(Debug)]
pub struct BoundListener {
    pub name: Arc<str>,
    pub protocol: ListenerProtocol,
    pub local_addr: SocketAddr,
    socket: TcpListener,
    handle: Arc<ListenerHandle>,
}

impl BoundListener {
    pub async fn bind(config: &ListenerConfig) -> io::Result<Self> {
        let socket = TcpListener::bind(config.bind).await?;
        let name: Arc<str> = Arc::from(config.name.as_str());
        Ok(Self {
            handle: Arc::new(ListenerHandle {
                name: Arc::clone(&name),
                max_connections: config.max_connections,
                active: AtomicUsize::new(0),
            }),
            name,
            protocol: config.protocol,
            local_addr: socket.local_addr()?,
            socket,
        })
    }

    /// Accepts until shutdown. Accept errors (out of file descriptors, say) are logged and retried
    /// after a pause instead of ending the listener.
    pub async fn run(self, broker: Arc<Broker>) {
        info!(listener = %self.name, addr = %self.local_addr, protocol = ?self.protocol, "listening");
        loop {
            let accepted = tokio::select! {
                accepted = self.socket.accept() => accepted,
                () = broker.accepting.cancelled() => break,
            };
            match accepted {
                Ok((stream, remote_addr)) => {
                    // MQTT packets are small and latency matters more than coalescing.
                    let _ = stream.set_nodelay(true);
                    let broker_for_task = Arc::clone(&broker);
                    let handle = Arc::clone(&self.handle);
                    broker.tasks.spawn(connection::serve(
                        broker_for_task,
                        stream,
                        remote_addr,
                        handle,
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
