//! Keys and values of the proposed layout, and deterministic message contents so that a scan can
//! verify every byte it reads back.

use crate::store::{Op, Table};

pub fn msg_key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

pub fn queue_key(session: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&session.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn parse_queue_key(k: &[u8]) -> Option<(u64, u64)> {
    let s = u64::from_be_bytes(k.get(0..8)?.try_into().ok()?);
    let q = u64::from_be_bytes(k.get(8..16)?.try_into().ok()?);
    Some((s, q))
}

/// Queue entry value: message id, QoS, flags (bit 0: DUP, i.e. sent at least once).
pub fn queue_value(msg: u64, qos: u8, flags: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(10);
    v.extend_from_slice(&msg.to_be_bytes());
    v.push(qos);
    v.push(flags);
    v
}

pub fn parse_queue_value(v: &[u8]) -> Option<u64> {
    if v.len() != 10 {
        return None;
    }
    Some(u64::from_be_bytes(v.get(0..8)?.try_into().ok()?))
}

pub fn topic(producer: u64) -> String {
    format!("tern/bench/{producer}/data")
}

fn payload_byte_stream(id: u64, out: &mut Vec<u8>, len: usize) {
    // xorshift64*, seeded by the id: every message has its own bytes.
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let w = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        let n = (len - out.len()).min(8);
        out.extend_from_slice(&w[..n]);
    }
}

/// Stored message: version u8, QoS u8, flags u8 (bit 0 retain), expiry (unix s, 0 = none) u32,
/// topic length u16, topic, properties length u32, properties, payload.
pub fn encode_msg(id: u64, topic: &str, payload_len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(13 + topic.len() + payload_len);
    v.push(1);
    v.push(1);
    v.push(0);
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    v.extend_from_slice(topic.as_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    let start = v.len();
    let mut p = Vec::with_capacity(payload_len);
    payload_byte_stream(id, &mut p, payload_len);
    v.extend_from_slice(&p);
    debug_assert_eq!(v.len() - start, payload_len);
    v
}

/// True when `v` is exactly what `encode_msg(id, ..)` wrote, whatever the topic and length.
pub fn check_msg(id: u64, v: &[u8]) -> bool {
    let Some(tl) = v.get(7..9) else { return false };
    let tl = u16::from_be_bytes([tl[0], tl[1]]) as usize;
    let Some(topic) = v.get(9..9 + tl) else {
        return false;
    };
    let Ok(topic) = std::str::from_utf8(topic) else {
        return false;
    };
    let Some(payload_len) = v.len().checked_sub(13 + tl) else {
        return false;
    };
    encode_msg(id, topic, payload_len) == v
}

/// The message and its single queue entry, as a publish to a topic with one persistent subscriber.
pub fn store_p2p(id: u64, session: u64, seq: u64, payload: usize) -> Vec<Op> {
    vec![
        Op::Put(
            Table::Msg,
            msg_key(id),
            encode_msg(id, &topic(session), payload),
        ),
        Op::Put(Table::Queue, queue_key(session, seq), queue_value(id, 1, 0)),
    ]
}

/// The subscriber's PUBACK: the queue entry goes, and with the last reference the message.
pub fn ack_p2p(id: u64, session: u64, seq: u64) -> Vec<Op> {
    vec![
        Op::Del(Table::Queue, queue_key(session, seq)),
        Op::Del(Table::Msg, msg_key(id)),
    ]
}

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_checks_against_its_own_id_only() {
        let m = encode_msg(42, &topic(7), 64);
        assert!(check_msg(42, &m));
        assert!(!check_msg(43, &m));
        let mut bad = m.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(!check_msg(42, &bad));
        assert!(!check_msg(42, &m[..5]));
    }

    #[test]
    fn queue_keys_and_values_round_trip() {
        assert_eq!(parse_queue_key(&queue_key(3, 9)), Some((3, 9)));
        assert_eq!(parse_queue_key(&[0; 7]), None);
        assert_eq!(parse_queue_value(&queue_value(5, 1, 0)), Some(5));
        assert_eq!(parse_queue_value(&[0; 9]), None);
        // Big-endian keys sort numerically, so a scan visits a queue in order.
        assert!(queue_key(1, 255) < queue_key(1, 256));
    }
}
