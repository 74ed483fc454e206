//! A relay in front of one cluster node's gossip and peer-link port, advertised in its place, so a
//! test can break the peer links that reach the node without stopping anything else.
//!
//! TCP connections are relayed byte for byte until the test says [`LinkProxy::hold`]: then what
//! arrives for the node is kept back, and [`LinkProxy::cut`] closes every relayed connection and
//! drops what was held — bytes the sender wrote and the node never read, as when a network path
//! fails. New connections are relayed again. UDP datagrams (gossip) are always relayed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct LinkProxy {
    /// Whether bytes towards the node are held back.
    holding: Arc<AtomicBool>,
    /// Bumped by every cut: relays of an older round close.
    round: watch::Sender<u64>,
    tasks: JoinSet<()>,
}

impl LinkProxy {
    /// Relays `listen` (TCP and UDP) to `node`.
    pub async fn start(listen: SocketAddr, node: SocketAddr) -> Self {
        let tcp = TcpListener::bind(listen)
            .await
            .expect("bind the proxy's TCP port");
        let udp = Arc::new(
            UdpSocket::bind(listen)
                .await
                .expect("bind the proxy's UDP port"),
        );
        let holding = Arc::new(AtomicBool::new(false));
        let (round, _) = watch::channel(0);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept(tcp, node, Arc::clone(&holding), round.subscribe()));
        tasks.spawn(relay_datagrams(udp, node));
        Self {
            holding,
            round,
            tasks,
        }
    }

    /// From now on, bytes towards the node are kept back.
    pub fn hold(&self) {
        self.holding.store(true, Ordering::SeqCst);
    }

    /// Closes every relayed connection, dropping what was held, and relays new ones again.
    pub fn cut(&self) {
        self.round.send_modify(|round| *round += 1);
        self.holding.store(false, Ordering::SeqCst);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn accept(
    listener: TcpListener,
    node: SocketAddr,
    holding: Arc<AtomicBool>,
    round: watch::Receiver<u64>,
) {
    let mut relays = JoinSet::new();
    while let Ok((from, _)) = listener.accept().await {
        let Ok(to) = TcpStream::connect(node).await else {
            continue;
        };
        let _ = (from.set_nodelay(true), to.set_nodelay(true));
        let mut round = round.clone();
        round.mark_unchanged();
        let holding = Arc::clone(&holding);
        relays.spawn(async move {
            let (from_read, from_write) = from.into_split();
            let (to_read, to_write) = to.into_split();
            tokio::select! {
                () = copy(from_read, to_write, Some(holding)) => {}
                () = copy(to_read, from_write, None) => {}
                _ = round.changed() => {}
            }
        });
    }
}

/// Copies until either side closes; while `holding` is set, what is read is kept, not written.
async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    holding: Option<Arc<AtomicBool>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut held = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if holding.as_ref().is_some_and(|h| h.load(Ordering::SeqCst)) {
            held.extend_from_slice(&buf[..n]);
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Relays datagrams to the node, each sender through its own socket so the node's answers find
/// their way back.
async fn relay_datagrams(socket: Arc<UdpSocket>, node: SocketAddr) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut replies = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, sender)) = socket.recv_from(&mut buf).await {
        let upstream = match upstreams.get(&sender) {
            Some(upstream) => Arc::clone(upstream),
            None => {
                let local = SocketAddr::new(socket.local_addr().expect("bound").ip(), 0);
                let Ok(upstream) = UdpSocket::bind(local).await else {
                    continue;
                };
                let upstream = Arc::new(upstream);
                upstreams.insert(sender, Arc::clone(&upstream));
                let (back, reply_from) = (Arc::clone(&socket), Arc::clone(&upstream));
                replies.spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok((n, _)) = reply_from.recv_from(&mut buf).await {
                        let _ = back.send_to(&buf[..n], sender).await;
                    }
                });
                upstream
            }
        };
        let _ = upstream.send_to(&buf[..n], node).await;
    }
}
