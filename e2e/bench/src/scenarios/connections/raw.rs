//! The two packets an idle client needs, written by hand: MQTT 3.1.1 CONNECT and CONNACK.
//!
//! rumqttc cannot bind a source address, and the connections scenario needs several loopback
//! source addresses to get past ~28,000 ephemeral ports per destination, so it speaks this much
//! MQTT itself over sockets it binds.

use anyhow::{bail, ensure};

/// CONNACK is always four bytes: type, remaining length 2, flags, return code.
pub const CONNACK_LEN: usize = 4;

/// A clean-session MQTT 3.1.1 CONNECT with no will, user name or password.
pub fn connect_packet(client_id: &str, keep_alive_s: u16) -> anyhow::Result<Vec<u8>> {
    ensure!(client_id.len() <= 65_535, "client id too long");
    let id_len = client_id.len() as u16;
    // Variable header: protocol name, level 4, flags (clean session), keep alive; then the id.
    let mut body = Vec::with_capacity(12 + client_id.len());
    body.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02]);
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    body.extend_from_slice(&id_len.to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10];
    let mut remaining = body.len();
    loop {
        let mut byte = (remaining % 128) as u8;
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if remaining == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    Ok(packet)
}

/// Checks a CONNACK; an error names the refusal.
pub fn check_connack(packet: &[u8; CONNACK_LEN]) -> anyhow::Result<()> {
    if packet[0] != 0x20 || packet[1] != 0x02 {
        bail!("expected CONNACK, got {:02x?}", packet);
    }
    match packet[3] {
        0 => Ok(()),
        1 => bail!("CONNACK: unacceptable protocol version"),
        2 => bail!("CONNACK: identifier rejected"),
        3 => bail!("CONNACK: server unavailable"),
        4 => bail!("CONNACK: bad user name or password"),
        5 => bail!("CONNACK: not authorized"),
        code => bail!("CONNACK: return code {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_matches_the_3_1_1_layout() {
        let packet = connect_packet("ab", 60).unwrap();
        assert_eq!(
            packet,
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'a', b'b'
            ]
        );
    }

    #[test]
    fn long_client_ids_use_a_multi_byte_length() {
        let id = "x".repeat(200);
        let packet = connect_packet(&id, 0).unwrap();
        // 12 bytes of header fields + 200: remaining length 212 = 0xd4 0x01.
        assert_eq!(&packet[..3], &[0x10, 0xd4, 0x01]);
        assert_eq!(packet.len(), 3 + 212);
    }

    #[test]
    fn connack_codes() {
        assert!(check_connack(&[0x20, 2, 0, 0]).is_ok());
        let refused = check_connack(&[0x20, 2, 0, 3]).unwrap_err().to_string();
        assert!(refused.contains("server unavailable"), "{refused}");
        assert!(check_connack(&[0x30, 2, 0, 0]).is_err());
    }
}
