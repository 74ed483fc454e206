//! Transports: the layers a listener can stack between the TCP socket and MQTT. Each layer turns one
//! byte stream into another (or, for PROXY, reads a prefix off it), so the connection task only ever
//! sees `AsyncRead + AsyncWrite`:
//!
//! ```text
//! tcp ─▶ [proxy] ─▶ [tls] ─▶ [websocket] ─▶ MQTT (connection::serve)
//! ```
//!
//! - [`proxy`] reads a PROXY protocol v1/v2 header, when a load balancer in front of us sends one, and
//!   yields the client's real address. It must come first: the balancer writes it before any TLS.
//! - [`tls`] terminates TLS with a certificate that can be rotated while running, optionally
//!   verifies client certificates and yields the certificate's common name as an identity.
//! - [`websocket`] accepts the HTTP upgrade on one path and carries MQTT in binary frames; `wss` is
//!   [`tls`] followed by [`websocket`].
//!
//! The listener picks the stack from its configuration and owns the deadlines: none of these layers
//! times out by itself, so a listener wraps each handshake in its own timeout. None of them knows
//! about MQTT beyond its name in ALPN and the WebSocket subprotocol.

pub mod proxy;
pub mod tls;
pub mod websocket;

#[cfg(test)]
mod test_pki;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

use crate::config::TlsSettings;

/// Why TLS settings could not be loaded (at start or on reload). The cause is part of the message
/// rather than a `source`, so that a report that prints the chain names it once.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{}: {what}", path.display())]
    Pem { path: PathBuf, what: String },
    #[error("{}: unusable private key: {error}", path.display())]
    Key { path: PathBuf, error: rustls::Error },
    #[error("the certificate in {} does not belong to the key in {}", cert.display(), key.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("client CA file {}: {what}", path.display())]
    ClientCa { path: PathBuf, what: String },
    #[error("invalid TLS settings: {0}")]
    Settings(&'static str),
}

impl TlsError {
    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Pem { .. } => "pem",
            Self::Key { .. } => "key",
            Self::KeyMismatch { .. } => "key_mismatch",
            Self::ClientCa { .. } => "client_ca",
            Self::Settings(_) => "settings",
        }
    }

    /// The setting of `settings` that names the file this error is about, if it is about one.
    pub fn setting(&self, settings: &TlsSettings) -> Option<&'static str> {
        let named = |path: &Path| {
            if path == settings.cert_file {
                "cert_file"
            } else if path == settings.key_file {
                "key_file"
            } else {
                "client_ca_file"
            }
        };
        match self {
            Self::Read { path, .. } | Self::Pem { path, .. } => Some(named(path)),
            Self::Key { .. } | Self::KeyMismatch { .. } => Some("key_file"),
            Self::ClientCa { .. } => Some("client_ca_file"),
            Self::Settings(_) => None,
        }
    }
}

/// Why a WebSocket upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The client asked for another path; it was answered with 404.
    #[error("no WebSocket endpoint at {path:?}")]
    WrongPath { path: String },
    /// Not a valid upgrade request, or the connection failed during it.
    #[error("WebSocket handshake failed: {0}")]
    Handshake(#[source] Box<tokio_tungstenite::tungstenite::Error>),
}

impl WsError {
    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::WrongPath { .. } => "wrong_path",
            Self::Handshake(_) => "handshake",
        }
    }
}

/// Why a PROXY protocol header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The connection does not start with either PROXY signature.
    #[error("the connection does not start with a PROXY protocol header")]
    NotProxy,
    /// It starts like a PROXY header but breaks the format.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The stream failed or ended inside the header.
    #[error("reading the PROXY protocol header failed: {0}")]
    Io(#[from] io::Error),
}

impl ProxyError {
    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotProxy => "not_proxy",
            Self::Malformed(_) => "malformed",
            Self::Io(_) => "io",
        }
    }
}
