//! MQTT over WebSocket for `ws` and `wss` listeners: [`accept`] answers the HTTP upgrade on one
//! path, and [`WsStream`] turns the binary messages into the byte stream the connection task reads.
//!
//! MQTT packets and WebSocket messages need not line up: a packet may span messages and a message
//! may hold several packets, which a byte stream absorbs for free. Text messages are a protocol
//! violation [MQTT-6.0.0-1]; pings are answered by tungstenite; a close message ends the stream.
//! TLS, for `wss`, is the layer below, not this module's business.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::debug;

use super::WsError;

/// Subprotocols we speak, in order of preference: "mqtt" is the standard name [MQTT-6.0.0-3],
/// "mqttv3.1" the one old 3.1 clients send.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Answers the HTTP upgrade on `stream`. Requests for another path get 404 and an error; the
/// subprotocol is the first of ours the client offers, or none if it offers none of them. The
/// caller bounds the time this takes.
pub async fn accept<S>(stream: S, path: &str) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut wrong_path = None;
    // The refusal's type is tungstenite's, large or not.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        if request.uri().path() != path {
            wrong_path = Some(request.uri().path().to_owned());
            let mut refusal = ErrorResponse::new(Some("no MQTT endpoint here\n".to_owned()));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            return Err(refusal);
        }
        if let Some(chosen) = choose_subprotocol(request) {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(chosen),
            );
        }
        Ok(response)
    };
    let accepted = tokio_tungstenite::accept_hdr_async(stream, callback).await;
    match (accepted, wrong_path) {
        (Ok(inner), _) => Ok(WsStream::new(inner)),
        (Err(_), Some(path)) => Err(WsError::WrongPath { path }),
        (Err(error), None) => Err(WsError::Handshake(Box::new(error))),
    }
}

/// Our preferred subprotocol among those in the request's `Sec-WebSocket-Protocol` headers.
fn choose_subprotocol(request: &Request) -> Option<&'static str> {
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .collect();
    SUBPROTOCOLS.into_iter().find(|ours| offered.contains(ours))
}

/// A WebSocket connection as a byte stream: reads yield the payloads of binary messages in order,
/// and each write sends one binary message.
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// The part of the last binary message the reader has not taken yet.
    pending: Bytes,
    read_state: ReadState,
}

/// Where the read side is; the write side needs none, tungstenite tracks closing itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Open,
    /// A text message arrived: send close 1003, then fail the read.
    Refusing {
        close_queued: bool,
    },
    /// The refusal has been reported; every later read fails again.
    Refused,
    /// The peer closed; every later read is end of stream.
    Ended,
}

impl<S> WsStream<S> {
    fn new(inner: WebSocketStream<S>) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
            read_state: ReadState::Open,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// The underlying stream (a TCP or TLS stream), for peer addresses or certificates.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// Drives the 1003 close to the wire; failures to send it do not matter, the read fails anyway.
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = Pin::new(&mut self.inner);
        if self.read_state
            == (ReadState::Refusing {
                close_queued: false,
            })
        {
            if ready!(inner.as_mut().poll_ready(cx)).is_ok() {
                let frame = CloseFrame {
                    code: CloseCode::Unsupported,
                    reason: "MQTT needs binary frames".into(),
                };
                let _ = inner.as_mut().start_send(Message::Close(Some(frame)));
            }
            self.read_state = ReadState::Refusing { close_queued: true };
        }
        let _ = ready!(inner.poll_flush(cx));
        self.read_state = ReadState::Refused;
        Poll::Ready(())
    }
}

fn text_refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "text WebSocket frame (MQTT needs binary frames)",
    )
}

fn to_io(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(error) => error,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

/// WebSocket connections are not parked: the framing state lives above the socket.
impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> crate::connection::Transport
    for WsStream<S>
{
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.read_state {
                ReadState::Open => {}
                ReadState::Refusing { .. } => {
                    ready!(this.poll_refuse(cx));
                    return Poll::Ready(Err(text_refused()));
                }
                ReadState::Refused => return Poll::Ready(Err(text_refused())),
                ReadState::Ended => return Poll::Ready(Ok(())),
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !this.pending.is_empty() {
                let n = buf.remaining().min(this.pending.len());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(payload))) => this.pending = payload,
                Some(Ok(Message::Text(_))) => {
                    debug!("text WebSocket frame; closing with 1003");
                    this.read_state = ReadState::Refusing {
                        close_queued: false,
                    };
                }
                // Tungstenite has queued the reply to a close; the next poll sends it, then ends.
                None => this.read_state = ReadState::Ended,
                Some(Ok(
                    Message::Close(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_),
                )) => {}
                Some(Err(error)) => return Poll::Ready(Err(to_io(error))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    /// Sends `buf` as one binary message. It is queued in tungstenite's buffer once this returns;
    /// `poll_flush` puts it on the wire. Nothing is taken while this returns `Pending`.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut inner = Pin::new(&mut self.get_mut().inner);
        ready!(inner.as_mut().poll_ready(cx)).map_err(to_io)?;
        inner
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(to_io)
    }

    /// Sends a normal close and flushes it.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_close(cx)
            .map_err(to_io)
    }
}

#[cfg(test)]
mod tests;
