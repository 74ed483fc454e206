//! PROXY header parsing over in-memory streams; every test checks what is left after the header.

use std::net::SocketAddr;

use super::*;

/// Parses `input` and returns the header and the bytes left unread.
async fn parse(input: &[u8]) -> (Result<ProxyHeader, ProxyError>, Vec<u8>) {
    let mut stream = input;
    let header = read_header(&mut stream).await;
    (header, stream.to_vec())
}

fn addr(text: &str) -> Option<SocketAddr> {
    text.parse().ok()
}

fn v2(command: u8, family_transport: u8, body: &[u8]) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.push(0x20 | command);
    header.push(family_transport);
    header.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    header.extend_from_slice(body);
    header
}

#[tokio::test]
async fn v1_tcp4_gives_the_source_and_leaves_the_mqtt_bytes() {
    let (header, rest) = parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 1883\r\n\x10\x0c").await;
    let header = header.unwrap();
    assert_eq!(header.version, ProxyVersion::V1);
    assert_eq!(header.source, addr("192.0.2.7:56324"));
    assert_eq!(header.destination, addr("198.51.100.1:1883"));
    assert_eq!(rest, b"\x10\x0c");
}

#[tokio::test]
async fn v1_tcp6_gives_the_source() {
    let (header, rest) = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 8883\r\nrest").await;
    assert_eq!(header.unwrap().source, addr("[2001:db8::7]:65535"));
    assert_eq!(rest, b"rest");
}

#[tokio::test]
async fn v1_unknown_has_no_address() {
    let (header, rest) = parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n\x10").await;
    assert_eq!(header.unwrap().source, None);
    assert_eq!(rest, b"\x10");
    let (header, rest) = parse(b"PROXY UNKNOWN\r\n").await;
    assert_eq!(header.unwrap().source, None);
    assert!(rest.is_empty());
}

#[tokio::test]
async fn v1_of_the_maximum_length_is_accepted() {
    let line = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(line.len(), V1_MAX_LEN - 3, "the longest valid TCP6 line");
    let (header, rest) = parse(format!("{line}x").as_bytes()).await;
    assert!(header.is_ok());
    assert_eq!(rest, b"x");
}

#[tokio::test]
async fn v1_errors() {
    let cases: &[&[u8]] = &[
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 1883 9\r\n",
        b"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 2\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",
        b"PROXY TCP5 192.0.2.7 198.51.100.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n",
        b"PROXY TCP4 192.0.2.7\r198.51.100.1 1 2\r\n",
    ];
    for case in cases {
        let (header, _) = parse(case).await;
        assert!(
            matches!(header, Err(ProxyError::Malformed(_))),
            "{:?} gave {header:?}",
            String::from_utf8_lossy(case)
        );
    }
}

#[tokio::test]
async fn v1_longer_than_107_bytes_is_refused_without_reading_on() {
    let mut input = b"PROXY UNKNOWN ".to_vec();
    input.resize(200, b'a');
    let (header, rest) = parse(&input).await;
    assert!(matches!(header, Err(ProxyError::Malformed(_))));
    assert!(rest.len() >= 200 - V1_MAX_LEN);
}

#[tokio::test]
async fn v2_ipv4_gives_the_source_and_skips_tlvs() {
    let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0x07, 0x5b];
    body.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a NOOP TLV
    let mut input = v2(0x1, 0x11, &body);
    input.extend_from_slice(b"\x10\x0c");
    let (header, rest) = parse(&input).await;
    let header = header.unwrap();
    assert_eq!(header.version, ProxyVersion::V2);
    assert_eq!(header.source, addr("192.0.2.7:56324"));
    assert_eq!(header.destination, addr("198.51.100.1:1883"));
    assert_eq!(rest, b"\x10\x0c");
}

#[tokio::test]
async fn v2_ipv6_gives_the_source() {
    let source: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
    let destination: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    let mut body = source.octets().to_vec();
    body.extend_from_slice(&destination.octets());
    body.extend_from_slice(&[0x22, 0xb3, 0x07, 0x5b]);
    let mut input = v2(0x1, 0x21, &body);
    input.push(0x10);
    let (header, rest) = parse(&input).await;
    let header = header.unwrap();
    assert_eq!(header.source, addr("[2001:db8::7]:8883"));
    assert_eq!(header.destination, addr("[2001:db8::1]:1883"));
    assert_eq!(rest, b"\x10");
}

#[tokio::test]
async fn v2_local_and_unspecified_have_no_address() {
    let mut input = v2(0x0, 0x00, &[1, 2, 3]);
    input.push(0x10);
    let (header, rest) = parse(&input).await;
    assert_eq!(header.unwrap().source, None);
    assert_eq!(rest, b"\x10");
    let (header, _) = parse(&v2(0x1, 0x00, &[])).await;
    assert_eq!(header.unwrap().source, None);
    let (header, _) = parse(&v2(0x1, 0x31, &[0; 216])).await;
    assert_eq!(header.unwrap().source, None, "unix sockets have no IP");
}

#[tokio::test]
async fn v2_errors() {
    let mut bad_version = v2(0x1, 0x11, &[0; 12]);
    bad_version[12] = 0x11;
    let cases = [
        bad_version,
        v2(0x2, 0x11, &[0; 12]),
        v2(0x1, 0x11, &[0; 11]),
        v2(0x1, 0x21, &[0; 35]),
        v2(0x1, 0x12, &[0; 12]),
        v2(0x1, 0x41, &[0; 12]),
    ];
    for case in cases {
        let (header, _) = parse(&case).await;
        assert!(
            matches!(header, Err(ProxyError::Malformed(_))),
            "{case:?} gave {header:?}"
        );
    }
}

#[tokio::test]
async fn v2_truncated_body_is_an_io_error() {
    let mut input = v2(0x1, 0x11, &[0; 12]);
    input.truncate(20);
    let (header, _) = parse(&input).await;
    assert!(matches!(header, Err(ProxyError::Io(_))));
}

#[tokio::test]
async fn garbage_is_not_proxy() {
    for case in [
        &b"\x10\x0c\x00\x04MQTT"[..],
        b"PROXX TCP4",
        b"\r\n\r\n\0\r\nQUIT!xxxx",
        b"GET /mqtt HTTP/1.1\r\n",
    ] {
        let (header, _) = parse(case).await;
        assert!(
            matches!(header, Err(ProxyError::NotProxy)),
            "{case:?} gave {header:?}"
        );
    }
    let (header, _) = parse(b"").await;
    assert!(matches!(header, Err(ProxyError::Io(_))));
}

#[tokio::test]
async fn reads_over_a_socket_that_delivers_one_byte_at_a_time() {
    let (mut client, mut server) = tokio::io::duplex(1);
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        client
            .write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 1883\r\nMQTT")
            .await
            .unwrap();
        client
    });
    let header = read_header(&mut server).await.unwrap();
    assert_eq!(header.source, addr("192.0.2.7:56324"));
    let mut rest = [0u8; 4];
    server.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"MQTT");
    drop(writer.await.unwrap());
}
