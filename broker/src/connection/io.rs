//! A connection's byte stream and the input it has not decoded yet.
//!
//! Reads land in a scratch buffer on the stack and are appended to the connection's read buffer, which
//! is let go of whenever it is empty. So an idle connection holds no buffer at all; a busy one holds
//! an allocation the size of what arrived, shared by the payloads decoded from it. Per-connection
//! memory is what limits how many clients one broker holds, and most of them are idle.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::stats::Stats;

/// The most one read takes in; a larger packet arrives over several reads.
const READ_CHUNK: usize = 8 * 1024;
/// The most [`read_arrived`] takes at once; the rest is read as usual.
const ARRIVED_MAX: usize = 1024 * 1024;

/// The stream and the undecoded input.
pub(super) struct Io<S> {
    stream: S,
    /// Bytes read but not yet decoded: part of a packet, or several packets not yet applied.
    pub(super) read_buf: BytesMut,
    stats: Arc<Stats>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    pub(super) fn new(stream: S, stats: Arc<Stats>) -> Self {
        Self {
            stream,
            read_buf: BytesMut::new(),
            stats,
        }
    }

    /// Reads what has arrived into the read buffer: `Ok(0)` at end of stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
        let read = buf.filled();
        self.read_buf.extend_from_slice(read);
        self.stats.bytes_received.inc_by(read.len() as u64);
        Poll::Ready(Ok(read.len()))
    }

    /// Puts input read straight from the socket (see [`read_arrived`]) in front of what follows.
    pub(super) fn take_arrived(&mut self, arrived: Vec<u8>) {
        if !arrived.is_empty() {
            self.stats.bytes_received.inc_by(arrived.len() as u64);
            self.read_buf.extend_from_slice(&arrived);
        }
    }

    /// Reads more bytes; `Ok(false)` at end of stream.
    pub(super) async fn fill(&mut self) -> io::Result<bool> {
        std::future::poll_fn(|cx| self.poll_fill(cx))
            .await
            .map(|n| n > 0)
    }

    /// Lets go of the read buffer once everything in it was decoded; the payloads taken from it keep
    /// their part of the allocation alive for as long as they need it.
    pub(super) fn release_read_buf(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
            self.read_buf = BytesMut::new();
        }
    }

    /// Writes from the front of `buf` and removes what was written: `Ok(0)` if the peer is gone.
    pub(super) fn poll_write_from(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.stream).poll_write(cx, buf))?;
        buf.advance(written);
        self.stats.bytes_sent.inc_by(written as u64);
        Poll::Ready(Ok(written))
    }

    /// Pushes out what a layer above TCP (TLS, WebSocket) still holds.
    pub(super) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// Writes a whole buffer, for the handshake and the final packet.
    pub(super) async fn write_all(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        self.stats.bytes_sent.inc_by(buf.len() as u64);
        self.stream.write_all(buf).await?;
        buf.clear();
        self.stream.flush().await
    }

    /// The stream itself, for the parking lot: only taken once the read buffer is empty.
    pub(super) fn into_stream(self) -> S {
        self.stream
    }

    /// Closes the write side (TLS close_notify, WebSocket close, TCP FIN).
    pub(super) async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

/// What has arrived on a non-blocking socket and not been read yet (up to [`ARRIVED_MAX`]), read
/// without waiting. For a socket about to be registered with the runtime, whose readiness the
/// runtime does not know yet.
pub(super) fn read_arrived(socket: &std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut arrived = Vec::new();
    let mut chunk = [0u8; READ_CHUNK];
    let mut reader = socket;
    while arrived.len() < ARRIVED_MAX {
        match reader.read(&mut chunk) {
            // End of stream stays for the connection's own read to find.
            Ok(0) => return arrived,
            Ok(n) => arrived.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            // WouldBlock: nothing more has arrived; another error: the connection's read sees it.
            Err(_) => return arrived,
        }
    }
    arrived
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_emptied_read_buffer_is_let_go_and_end_of_stream_reads_zero() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = Io::new(server, Arc::new(Stats::default()));
        client.write_all(b"hello").await.unwrap();
        assert!(io.fill().await.unwrap());
        assert_eq!(&io.read_buf[..], b"hello");
        let taken = io.read_buf.split_to(5).freeze();
        io.release_read_buf();
        assert_eq!(
            io.read_buf.capacity(),
            0,
            "an idle connection holds no buffer"
        );
        assert_eq!(
            &taken[..],
            b"hello",
            "a decoded payload outlives the release"
        );
        drop(client);
        assert!(!io.fill().await.unwrap());
    }

    #[tokio::test]
    async fn a_partial_packet_is_kept_across_reads() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = Io::new(server, Arc::new(Stats::default()));
        client.write_all(b"abc").await.unwrap();
        assert!(io.fill().await.unwrap());
        io.release_read_buf();
        client.write_all(b"def").await.unwrap();
        assert!(io.fill().await.unwrap());
        assert_eq!(&io.read_buf[..], b"abcdef");
    }
}
