//! Who is who: the identifiers the broker hands out and takes in ([`ClientId`], [`SessionId`],
//! [`Generation`]) and a connected client's identity as hooks and listings see it ([`ClientInfo`]).
//!
//! The lowest layer of the broker: plain values, no locks, nothing that knows about sessions,
//! connections or routing, so every other module can name a client without depending on the module
//! that holds its state.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::codec::ProtocolVersion;

/// A client identifier as the client sent it (or as the broker assigned it).
///
/// Its own small allocation, shared by the session, the registry and the client's identity: not a
/// slice of the CONNECT packet, which would keep the whole packet for as long as the client stays.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The broker-wide identity of one session incarnation (a new session for the same client id gets a
/// new one), used for No Local and to order sessions cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// Counts a session's attachments: bumped each time a connection attaches, so that a timer armed
/// for an earlier attachment, or a connection that was taken over, can tell it is stale. 32 bits
/// wrap only after four billion reconnects, long after any timer from the first one has fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Generation(u32);

impl Generation {
    /// The generation of a session's first connection.
    pub const FIRST: Self = Self(1);

    /// The generation of the next attachment.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0.wrapping_add(1))
    }
}

/// Who a connected client is, as hooks see it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: ClientId,
    /// Its own allocation, like the client identifier: not a slice that keeps CONNECT alive.
    pub username: Option<Arc<str>>,
    pub protocol: ProtocolVersion,
    pub remote_addr: PeerAddr,
    /// The name of the listener the client came through.
    pub listener: Arc<str>,
    /// The username is the subject of a client certificate the TLS layer verified.
    pub certificate_identity: bool,
    /// When it connected, in seconds since the Unix epoch (for listings, and for the cluster's
    /// arbiters to tell the later of two connections).
    pub connected_at: Option<NonZeroU32>,
}

/// Seconds since the Unix epoch now, for [`ClientInfo::connected_at`].
pub fn unix_seconds_now() -> Option<NonZeroU32> {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    NonZeroU32::new(u32::try_from(seconds).ok()?)
}

/// A client's address and port, in 20 bytes rather than `SocketAddr`'s 32: this is paid per
/// connected client. An IPv6 address's flow label and scope id are not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    ip: IpAddr,
    port: u16,
}

impl PeerAddr {
    pub fn socket_addr(self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    pub fn ip(self) -> IpAddr {
        self.ip
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self {
            ip: addr.ip(),
            port: addr.port(),
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.socket_addr().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_count_up_and_wrap() {
        assert_ne!(Generation::FIRST.next(), Generation::FIRST);
        assert_eq!(Generation(u32::MAX).next(), Generation(0));
    }

    #[test]
    fn a_peer_address_shows_as_the_socket_address_it_came_from() {
        for text in ["192.0.2.7:1883", "[2001:db8::1]:8883"] {
            let addr: SocketAddr = text.parse().unwrap();
            let peer = PeerAddr::from(addr);
            assert_eq!(peer.to_string(), text);
            assert_eq!(peer.socket_addr(), addr);
        }
    }
}
