//! MQTT 5 packets built and read byte by byte from the specification's layouts (2.1.4, 2.2.2, 3.1,
//! 3.15), for tests that need exchanges no client library offers (enhanced authentication), kept
//! independent of the broker's own codec.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a test waits for the broker's next packet.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn remaining_length(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

pub fn string(s: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(s.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

pub fn packet(first_byte: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![first_byte];
    out.extend(remaining_length(body.len()));
    out.extend(body);
    out
}

/// A property block: Authentication Method (0x15) and Data (0x16) when given, then `extra`.
pub fn properties(method: Option<(&str, Option<&[u8]>)>, extra: &[u8]) -> Vec<u8> {
    let mut props = Vec::new();
    if let Some((method, data)) = method {
        props.push(0x15);
        props.extend(string(method.as_bytes()));
        if let Some(data) = data {
            props.push(0x16);
            props.extend(string(data));
        }
    }
    props.extend_from_slice(extra);
    let mut out = remaining_length(props.len());
    out.extend(props);
    out
}

pub fn connect(client_id: &str, method: Option<(&str, Option<&[u8]>)>, extra: &[u8]) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend([5, 0x02, 0, 30]); // level 5, clean start, keep alive 30
    body.extend(properties(method, extra));
    body.extend(string(client_id.as_bytes()));
    packet(0x10, body)
}

pub fn auth(reason: u8, method: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend(properties(Some((method, data)), &[]));
    packet(0xF0, body)
}

/// A received packet: its type nibble, and the body after the fixed header.
pub struct Received {
    pub kind: u8,
    pub body: Vec<u8>,
}

impl Received {
    /// The reason code: byte 1 of CONNACK, byte 0 of AUTH and DISCONNECT.
    pub fn reason(&self) -> u8 {
        match self.kind {
            2 => self.body[1],
            _ => self.body.first().copied().unwrap_or(0),
        }
    }

    /// Bytes on the wire: the fixed header byte, the Remaining Length and the body.
    pub fn size(&self) -> usize {
        1 + remaining_length(self.body.len()).len() + self.body.len()
    }

    /// The value of a string/binary property (identifier `id`) in the packet's property block.
    pub fn property(&self, id: u8) -> Option<Vec<u8>> {
        let start = if self.kind == 2 { 2 } else { 1 };
        if self.body.len() <= start {
            return None;
        }
        let (len, used) = read_varint(&self.body[start..]);
        let props = &self.body[start + used..start + used + len];
        let mut i = 0;
        while i < props.len() {
            let pid = props[i];
            i += 1;
            let two = |i: usize| usize::from(u16::from_be_bytes([props[i], props[i + 1]]));
            match pid {
                0x15 | 0x16 | 0x1F | 0x12 | 0x1A | 0x1C => {
                    let n = two(i);
                    if pid == id {
                        return Some(props[i + 2..i + 2 + n].to_vec());
                    }
                    i += 2 + n;
                }
                0x11 | 0x27 => i += 4,
                0x21 | 0x22 | 0x13 => i += 2,
                0x24 | 0x25 | 0x28 | 0x29 | 0x2A => i += 1,
                0x26 => {
                    let n = two(i);
                    i += 2 + n;
                    i += 2 + two(i);
                }
                other => panic!("unexpected property {other:#x}"),
            }
        }
        None
    }
}

pub fn read_varint(bytes: &[u8]) -> (usize, usize) {
    let (mut value, mut shift, mut used) = (0usize, 0, 0);
    for byte in bytes {
        value |= usize::from(byte & 0x7F) << shift;
        shift += 7;
        used += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    (value, used)
}

/// The next whole packet, or `None` once the server has closed the connection.
pub async fn read_packet(stream: &mut TcpStream) -> Option<Received> {
    tokio::time::timeout(WAIT, async {
        let first = stream.read_u8().await.ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let byte = stream.read_u8().await.ok()?;
            len |= usize::from(byte & 0x7F) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await.ok()?;
        Some(Received {
            kind: first >> 4,
            body,
        })
    })
    .await
    .expect("no packet and no close in time")
}
