//! The MQTT codec: packets as data, decoding from and encoding into byte buffers, for protocol levels
//! 3 (3.1), 4 (3.1.1) and 5.
//!
//! Sans-IO: nothing here touches a socket. [`decode`] takes one whole packet off the front of a buffer
//! or reports that more bytes are needed; partial input stays in the buffer, so a read loop around it is
//! cancel-safe. Every check the specification asks of a receiver of a packet's *encoding* lives here
//! (fixed-header flags, lengths, UTF-8, property placement); checks that need session state (topic alias
//! ranges, receive maximum, packet id reuse) belong to the connection.

mod decode;
mod encode;
mod error;
pub mod packet;
mod properties;
pub mod reason;
#[cfg(test)]
mod tests;

pub use decode::{decode, sniff_connect_version};
pub use encode::{encode, encode_publish, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use reason::ReasonCode;

/// The largest remaining length a fixed header can express (2.1.4): 268,435,455 bytes.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;
