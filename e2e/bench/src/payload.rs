//! The stamp every benchmark payload starts with: who published it, its sequence number, and when.
//!
//! Layout (big-endian): magic `TBN1` (4 bytes), publisher index (u32), sequence number (u64), send
//! time in nanoseconds on the process's [`Clock`](crate::measure::clock::Clock) (u64), then zero
//! padding up to the payload size. Publisher and subscriber share that clock, so latency is a
//! subtraction; messages without the magic (someone else's traffic) are ignored.

use bytes::{BufMut, Bytes, BytesMut};

const MAGIC: [u8; 4] = *b"TBN1";

/// Bytes the stamp takes; payloads are at least this long.
pub const STAMP_LEN: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

impl Stamp {
    /// The payload carrying this stamp, zero-padded to `size` bytes (never shorter than the stamp).
    pub fn encode(&self, size: usize) -> Bytes {
        let mut buf = BytesMut::with_capacity(size.max(STAMP_LEN));
        buf.put_slice(&MAGIC);
        buf.put_u32(self.publisher);
        buf.put_u64(self.seq);
        buf.put_u64(self.sent_ns);
        buf.resize(size.max(STAMP_LEN), 0);
        buf.freeze()
    }

    /// The stamp at the start of `payload`, or `None` if it is not a benchmark payload.
    pub fn decode(payload: &[u8]) -> Option<Stamp> {
        let head = payload.get(..STAMP_LEN)?;
        if head[..4] != MAGIC {
            return None;
        }
        let u32_at = |at: usize| head[at..at + 4].try_into().ok().map(u32::from_be_bytes);
        let u64_at = |at: usize| head[at..at + 8].try_into().ok().map(u64::from_be_bytes);
        Some(Stamp {
            publisher: u32_at(4)?,
            seq: u64_at(8)?,
            sent_ns: u64_at(16)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads_to_the_requested_size() {
        let stamp = Stamp {
            publisher: 7,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        for size in [STAMP_LEN, 64, 1024] {
            let payload = stamp.encode(size);
            assert_eq!(payload.len(), size);
            assert!(payload[STAMP_LEN..].iter().all(|b| *b == 0));
            assert_eq!(Stamp::decode(&payload), Some(stamp));
        }
    }

    #[test]
    fn never_shorter_than_the_stamp() {
        let stamp = Stamp {
            publisher: 1,
            seq: 2,
            sent_ns: 3,
        };
        assert_eq!(stamp.encode(4).len(), STAMP_LEN);
    }

    #[test]
    fn foreign_or_short_payloads_are_ignored() {
        assert_eq!(Stamp::decode(b"hello world, this is not a stamp"), None);
        assert_eq!(Stamp::decode(b"TBN1"), None);
    }
}
