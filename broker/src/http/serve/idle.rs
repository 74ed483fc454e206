//! The socket under an HTTP connection, with the idle timeout: it fails a read or a write that has
//! waited `http.idle_timeout_secs` since the last byte moved either way, and notes in an
//! [`Activity`] what happened, for the count of why connections close.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// What a connection's socket saw, for telling which bound ended it.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// A response was written, so a later header timeout was a kept-alive connection's wait for
    /// its next request.
    pub answered: AtomicBool,
    /// The idle timeout failed a read or write. Not always the connection's error: hyper hands a
    /// failed body read to the handler, which answers it.
    pub idle_timed_out: AtomicBool,
}

/// The error a [`Bounded`] stream fails with when nothing moved for the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no byte read or written for the idle timeout")]
struct IdleTimedOut;

/// A socket that fails with [`IdleTimedOut`] once no byte was read or written for the idle timeout
/// while a read or a write waits, and notes in its [`Activity`] what happened. The deadline is
/// boxed so the stream stays `Unpin`, as hyper wants.
pub(super) struct Bounded {
    stream: TcpStream,
    deadline: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    activity: Arc<Activity>,
}

impl Bounded {
    pub fn new(stream: TcpStream, idle_timeout: Duration, activity: Arc<Activity>) -> Self {
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
