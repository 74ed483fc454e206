//! Listeners: bind the configured sockets and accept connections, handing each to its own tracked
//! connection task. A listener stops accepting as soon as shutdown begins.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::{ListenerConfig, ListenerProtocol};
use crate::connection;

/// A bound, not yet accepting, listener.
#[derive(Debug)]
pub struct BoundListener {
    pub name: Arc<str>,
    pub protocol: ListenerProtocol,
    pub local_addr: SocketAddr,
    socket: TcpListener,
}

impl BoundListener {
    pub async fn bind(config: &ListenerConfig) -> io::Result<Self> {
        let socket = TcpListener::bind(config.bind).await?;
        Ok(Self {
            name: Arc::from(config.name.as_str()),
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
                    let name = Arc::clone(&self.name);
                    broker.tasks.spawn(connection::serve(
                        broker_for_task,
                        stream,
                        remote_addr,
                        name,
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
