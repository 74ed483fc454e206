//! One link per pair of nodes: a persistent, ordered TCP connection (mutual TLS when configured)
//! that carries route replication and forwarded messages both ways. The node with the smaller id
//! dials, with backoff; the other accepts. Each link task lives as long as gossip says its peer is
//! alive, and reconnects whenever the connection drops.
//!
//! On every (re)connection each side first sends a snapshot of its routes and retained messages,
//! then the QoS 1 and 2 messages the last connection may have lost, then what else waits; frames it
//! receives are applied to the route table or handed to the broker (`ClusterSink`), and what was
//! applied is acknowledged. Writes are batched: everything waiting in the outbox goes out in as
//! few writes as it fits.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, trace, warn};

use super::peer::{Outgoing, Peer};
use super::wire::{self, Frame, Hello, PROTOCOL_VERSION};
use super::{Shared, SnapshotReceiver};

/// A peer link's byte stream: TCP, or TLS over TCP.
pub(super) trait LinkIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> LinkIo for T {}

pub(super) type LinkStream = Pin<Box<dyn LinkIo>>;

/// How long connecting and the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait before redialling; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Frames taken from the outbox per write, and the bytes a write aims at.
const BATCH_FRAMES: usize = 512;
const BATCH_BYTES: usize = 256 * 1024;
/// The largest hello accepted: two names and a few numbers.
const MAX_HELLO: usize = 4096;

/// Whether this node dials `peer` (rather than waiting for it to dial).
pub(super) fn dials(me: &str, peer: &str) -> bool {
    me < peer
}

/// Keeps a link to `peer` up until the peer is gone or the node shuts down. On the accepting side
/// a newer connection from the peer replaces the current one: the peer only dials again once it
/// has given up on the old one.
pub(super) async fn run(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut accepted: tokio::sync::mpsc::Receiver<LinkStream>,
) {
    let dialer = dials(&shared.me, &peer.node_id);
    let mut backoff = MIN_BACKOFF;
    let mut newer: Option<LinkStream> = None;
    loop {
        let stream = match newer.take() {
            Some(stream) => stream,
            None if dialer => {
                let dialled = tokio::select! {
                    () = peer.gone.cancelled() => return,
                    dialled = dial(&shared, &peer) => dialled,
                };
                match dialled {
                    Ok(stream) => stream,
                    Err(error) => {
                        debug!(peer = %peer.node_id, %error, ?backoff, "cannot reach peer; retrying");
                        tokio::select! {
                            () = peer.gone.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            None => tokio::select! {
                () = peer.gone.cancelled() => return,
                stream = accepted.recv() => match stream {
                    Some(stream) => stream,
                    None => return,
                },
            },
        };
        backoff = MIN_BACKOFF;
        info!(peer = %peer.node_id, "peer link up");
        peer.connected.store(true, Ordering::Release);
        // Copies the last link may have lost go again, behind the snapshot that goes first.
        let resent = peer.resend_unacked();
        if resent > 0 {
            info!(peer = %peer.node_id, resent, "sending again what the last link may have lost");
            shared.metrics.resent(&peer.node_id, resent);
        }
        shared.send_snapshot(&peer);
        let (reader, writer) = tokio::io::split(stream);
        let ended = tokio::select! {
            () = peer.gone.cancelled() => "peer gone",
            error = read_frames(&shared, &peer, reader) => error,
            error = write_frames(&shared, &peer, writer) => error,
            stream = accepted.recv(), if !dialer => {
                newer = stream;
                "replaced by a newer connection"
            }
        };
        peer.connected.store(false, Ordering::Release);
        peer.synced.store(false, Ordering::Release);
        peer.caught_up.store(false, Ordering::Release);
        if peer.gone.is_cancelled() {
            return;
        }
        warn!(peer = %peer.node_id, reason = ended, "peer link down; reconnecting");
    }
}

/// Connects to `peer` and completes the handshake.
async fn dial(shared: &Shared, peer: &Peer) -> Result<LinkStream, String> {
    let handshake = async {
        let tcp = TcpStream::connect(peer.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let mut stream: LinkStream = match &shared.tls {
            Some(tls) => Box::pin(tls.connect(tcp).await.map_err(|e| e.to_string())?),
            None => Box::pin(tcp),
        };
        send_hello(shared, &mut stream).await?;
        let hello = read_hello(&mut stream).await?;
        check_hello(shared, &hello)?;
        if *hello.node_id != *peer.node_id || hello.generation != peer.generation {
            return Err(format!(
                "{} answered as {} generation {}",
                peer.addr, hello.node_id, hello.generation
            ));
        }
        Ok(stream)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| "handshake timed out".to_string())?
}

/// Accepts peer links until the node shuts down, handing each to its peer's link task.
pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, remote)) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(accept_one(Arc::clone(&shared), tcp, remote));
            }
            Err(error) => {
                warn!(%error, "peer link accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn accept_one(shared: Arc<Shared>, tcp: TcpStream, remote: SocketAddr) {
    let handshake = async {
        let mut stream: LinkStream = match &shared.tls {
            Some(tls) => Box::pin(tls.accept(tcp).await.map_err(|e| e.to_string())?),
            None => Box::pin(tcp),
        };
        let hello = read_hello(&mut stream).await?;
        check_hello(&shared, &hello)?;
        let peer = shared
            .peer(&hello.node_id)
            .filter(|peer| peer.generation == hello.generation)
            .ok_or_else(|| {
                format!(
                    "{} generation {} is not a live peer yet",
                    hello.node_id, hello.generation
                )
            })?;
        if dials(&shared.me, &peer.node_id) {
            return Err(format!("{} dialled, but this node dials it", peer.node_id));
        }
        send_hello(&shared, &mut stream).await?;
        Ok((peer, stream))
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok((peer, stream))) => shared.hand_over(&peer, stream).await,
        Ok(Err(error)) => debug!(%remote, %error, "peer link refused"),
        Err(_) => debug!(%remote, "peer link handshake timed out"),
    }
}

async fn send_hello(shared: &Shared, stream: &mut LinkStream) -> Result<(), String> {
    let mut buf = BytesMut::new();
    wire::encode(
        &Frame::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            cluster: shared.config.name.clone(),
            node_id: shared.me.to_string(),
            generation: shared.generation,
        }),
        &mut buf,
    );
    stream.write_all(&buf).await.map_err(|e| e.to_string())
}

/// Reads exactly the peer's hello frame: the bytes behind it belong to the link's reader.
async fn read_hello(stream: &mut LinkStream) -> Result<Hello, String> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| format!("during the handshake: {e}"))?;
    let body_len = u32::from_be_bytes(len) as usize;
    if body_len > MAX_HELLO {
        return Err(format!("a hello of {body_len} bytes"));
    }
    let mut frame = BytesMut::zeroed(4 + body_len);
    frame[..4].copy_from_slice(&len);
    stream
        .read_exact(&mut frame[4..])
        .await
        .map_err(|e| format!("during the handshake: {e}"))?;
    match wire::decode(&mut frame).map_err(|e| e.to_string())? {
        Some(Frame::Hello(hello)) => Ok(hello),
        Some(other) => Err(format!("expected hello, got {}", other.name())),
        None => Err("a truncated hello".into()),
    }
}

fn check_hello(shared: &Shared, hello: &Hello) -> Result<(), String> {
    if hello.protocol != PROTOCOL_VERSION {
        return Err(format!(
            "{} speaks peer protocol {}, this node {PROTOCOL_VERSION}",
            hello.node_id, hello.protocol
        ));
    }
    if hello.cluster != shared.config.name {
        return Err(format!(
            "{} belongs to cluster {:?}, not {:?}",
            hello.node_id, hello.cluster, shared.config.name
        ));
    }
    Ok(())
}

/// Applies frames from the peer until the link fails; returns why it did.
async fn read_frames(
    shared: &Shared,
    peer: &Peer,
    mut reader: tokio::io::ReadHalf<LinkStream>,
) -> &'static str {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut snapshot: Option<SnapshotReceiver> = None;
    let mut acknowledged = 0;
    let mut pause = None;
    loop {
        loop {
            let frame = match wire::decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    warn!(peer = %peer.node_id, kind = error.kind(), %error, "malformed peer frame");
                    return "malformed frame";
                }
            };
            trace!(peer = %peer.node_id, frame = frame.name(), "frame received");
            if let Err(why) = shared.apply(peer, frame, &mut snapshot, &mut pause) {
                warn!(peer = %peer.node_id, why, "peer broke the protocol");
                return why;
            }
            // The frames after it wait in the buffer: one read holds a thousand small messages,
            // more than a backlogged queue should take before its publishers stop.
            if pause.is_some() {
                break;
            }
        }
        // The routes and messages applied from this read are acknowledged once, whatever their
        // number.
        let held = peer.route_version.load(Ordering::Acquire);
        if peer.is_synced() && held != acknowledged {
            acknowledged = held;
            peer.outbox.push_ack(Frame::RoutesAck { version: held });
        }
        if let Some(ack) = peer.forward_ack() {
            peer.outbox.push_ack(ack);
        }
        // A subscriber here backed up: read no more until it drains (or is given up on), so the
        // peer's outbox fills and its publishers wait, as they would for a subscriber of their own.
        if let Some(wait) = pause.take() {
            wait.await;
            continue;
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => return "closed by the peer",
            Ok(_) => {}
            Err(_) => return "read failed",
        }
    }
}

/// Sends what the outbox holds, in batches, until the link fails.
async fn write_frames(
    shared: &Shared,
    peer: &Peer,
    mut writer: tokio::io::WriteHalf<LinkStream>,
) -> &'static str {
    let mut taken = Vec::with_capacity(BATCH_FRAMES);
    let mut buf = BytesMut::with_capacity(BATCH_BYTES);
    loop {
        let room = peer.window_room();
        if room == 0 {
            // The peer has not acknowledged a window's worth yet: forwarded messages wait in the
            // outbox, where publishers see the backlog, not in the sockets' buffers. What goes
            // before the next of them (acknowledgements, control frames) goes meanwhile.
            tokio::select! {
                () = peer.window_opened() => continue,
                () = peer.outbox.take(BATCH_FRAMES, 0, &mut taken) => {}
            }
        } else {
            peer.outbox.take(BATCH_FRAMES, room, &mut taken).await;
        }
        let mut messages = 0u64;
        for outgoing in taken.drain(..) {
            match outgoing {
                Outgoing::Sync(frame) | Outgoing::Control(frame) => wire::encode(&frame, &mut buf),
                Outgoing::Forward(copy) => {
                    messages += 1;
                    wire::encode_forward(&copy.forward, &mut buf);
                    peer.written(copy);
                }
            }
        }
        trace!(peer = %peer.node_id, bytes = buf.len(), messages, "writing frames");
        shared.metrics.forwarded(&peer.node_id, messages, buf.len());
        if writer.write_all(&buf).await.is_err() {
            return "write failed";
        }
        buf.clear();
        if buf.capacity() > 4 * BATCH_BYTES {
            buf = BytesMut::with_capacity(BATCH_BYTES);
        }
    }
}
