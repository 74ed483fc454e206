//! PROXY protocol, versions 1 (text) and 2 (binary): a load balancer that forwards raw TCP writes one
//! header before the client's bytes, naming the client's real address. The listener calls
//! [`read_header`] first thing on a connection when its configuration says a balancer is in front.
//!
//! The reader takes exactly the header's bytes and never one more, because what follows belongs to
//! the next layer (a TLS ClientHello or MQTT CONNECT). It does not time out: the listener does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::ProxyError;

/// What the balancer told us about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    pub version: ProxyVersion,
    /// The client's address, or `None` for v1 `UNKNOWN`, the v2 `LOCAL` command (a health check
    /// by the balancer itself) and address families without an IP address (unix sockets).
    pub source: Option<SocketAddr>,
    /// The address the client connected to on the balancer, when known.
    pub destination: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest v1 line the specification allows, "\r\n" included.
const V1_MAX_LEN: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads one PROXY header off the start of `stream`, leaving the stream at the first byte after it.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await?;
    match first[0] {
        b'P' => read_v1(stream).await,
        b'\r' => read_v2(stream).await,
        _ => Err(ProxyError::NotProxy),
    }
}

/// Reads the rest of a v1 line, the leading `P` already read.
async fn read_v1<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut line = Vec::with_capacity(V1_MAX_LEN);
    line.push(b'P');
    line.resize(V1_PREFIX.len(), 0);
    stream.read_exact(&mut line[1..]).await?;
    if line.as_slice() != V1_PREFIX {
        return Err(ProxyError::NotProxy);
    }
    // The line cannot end sooner than "\r\n" is complete, so reading two bytes (one after a '\r')
    // never takes a byte past the '\n'.
    while !line.ends_with(b"\r\n") {
        let want = if line.last() == Some(&b'\r') { 1 } else { 2 };
        let start = line.len();
        if start + want > V1_MAX_LEN {
            return Err(ProxyError::Malformed("v1 line longer than 107 bytes"));
        }
        line.resize(start + want, 0);
        stream.read_exact(&mut line[start..]).await?;
        check_line_breaks(&line)?;
    }
    line.truncate(line.len() - 2);
    let text =
        std::str::from_utf8(&line).map_err(|_| ProxyError::Malformed("v1 line is not ASCII"))?;
    parse_v1(text)
}

/// A '\r' may only be followed by '\n', and a '\n' only end the line after a '\r'.
fn check_line_breaks(line: &[u8]) -> Result<(), ProxyError> {
    let last = line.len() - 1;
    for (i, &byte) in line.iter().enumerate() {
        let bad = match byte {
            b'\r' => i < last && line[i + 1] != b'\n',
            b'\n' => i != last || i == 0 || line[i - 1] != b'\r',
            _ => false,
        };
        if bad {
            return Err(ProxyError::Malformed("stray line break in v1 line"));
        }
    }
    Ok(())
}

/// Parses "PROXY TCP4 src dst sport dport" (without "\r\n").
fn parse_v1(line: &str) -> Result<ProxyHeader, ProxyError> {
    let mut fields = line.split(' ');
    fields.next(); // "PROXY", checked by the caller
    let unknown = ProxyHeader {
        version: ProxyVersion::V1,
        source: None,
        destination: None,
    };
    let ipv6 = match fields.next() {
        Some("TCP4") => false,
        Some("TCP6") => true,
        // Whatever follows UNKNOWN is to be ignored.
        Some("UNKNOWN") => return Ok(unknown),
        _ => {
            return Err(ProxyError::Malformed(
                "v1 protocol is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let mut next = || {
        fields
            .next()
            .ok_or(ProxyError::Malformed("v1 line has too few fields"))
    };
    let (source_ip, destination_ip) = (next()?, next()?);
    let (source_port, destination_port) = (next()?, next()?);
    if fields.next().is_some() {
        return Err(ProxyError::Malformed("v1 line has too many fields"));
    }
    let source = SocketAddr::new(parse_ip(source_ip, ipv6)?, parse_port(source_port)?);
    let destination = SocketAddr::new(
        parse_ip(destination_ip, ipv6)?,
        parse_port(destination_port)?,
    );
    Ok(ProxyHeader {
        version: ProxyVersion::V1,
        source: Some(source),
        destination: Some(destination),
    })
}

fn parse_ip(text: &str, ipv6: bool) -> Result<IpAddr, ProxyError> {
    let parsed = if ipv6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    parsed.map_err(|_| ProxyError::Malformed("v1 address does not match its protocol"))
}

fn parse_port(text: &str) -> Result<u16, ProxyError> {
    // `u16::from_str` would also take a leading '+'.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::Malformed("v1 port is not a number"));
    }
    text.parse()
        .map_err(|_| ProxyError::Malformed("v1 port is out of range"))
}

/// Reads the rest of a v2 header, the leading '\r' already read.
async fn read_v2<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut signature = [0u8; 12];
    signature[0] = b'\r';
    stream.read_exact(&mut signature[1..]).await?;
    if &signature != V2_SIGNATURE {
        return Err(ProxyError::NotProxy);
    }
    let mut fixed = [0u8; 4];
    stream.read_exact(&mut fixed).await?;
    let [version_command, family_transport, len_hi, len_lo] = fixed;
    if version_command >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version is not 2"));
    }
    let local = match version_command & 0x0f {
        0x0 => true,
        0x1 => false,
        _ => {
            return Err(ProxyError::Malformed(
                "v2 command is neither LOCAL nor PROXY",
            ));
        }
    };
    // The whole announced body is consumed even when it is not used (LOCAL, TLVs after the
    // addresses), so the next layer starts at the right byte.
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([len_hi, len_lo]))];
    stream.read_exact(&mut body).await?;
    let unknown = ProxyHeader {
        version: ProxyVersion::V2,
        source: None,
        destination: None,
    };
    if local {
        return Ok(unknown);
    }
    match family_transport & 0x0f {
        0x0 => return Ok(unknown),
        0x1 => {}
        0x2 => return Err(ProxyError::Malformed("v2 announces a datagram connection")),
        _ => return Err(ProxyError::Malformed("v2 transport is unknown")),
    }
    let (source, destination) = match family_transport >> 4 {
        0x0 | 0x3 => return Ok(unknown),
        0x1 => v2_addresses::<4>(&body, |b| IpAddr::V4(Ipv4Addr::from(b)))?,
        0x2 => v2_addresses::<16>(&body, |b| IpAddr::V6(Ipv6Addr::from(b)))?,
        _ => return Err(ProxyError::Malformed("v2 address family is unknown")),
    };
    Ok(ProxyHeader {
        version: ProxyVersion::V2,
        source: Some(source),
        destination: Some(destination),
    })
}

/// Reads source address, destination address, source port, destination port from a v2 body whose
/// addresses are `N` bytes long.
fn v2_addresses<const N: usize>(
    body: &[u8],
    ip: impl Fn([u8; N]) -> IpAddr,
) -> Result<(SocketAddr, SocketAddr), ProxyError> {
    let too_short = ProxyError::Malformed("v2 body is too short for its address family");
    let addresses = body.get(..2 * N + 4).ok_or(too_short)?;
    let (source_ip, rest) = addresses.split_at(N);
    let (destination_ip, ports) = rest.split_at(N);
    let array =
        |bytes: &[u8]| <[u8; N]>::try_from(bytes).map_err(|_| ProxyError::Malformed("v2 address"));
    let source_port = u16::from_be_bytes([ports[0], ports[1]]);
    let destination_port = u16::from_be_bytes([ports[2], ports[3]]);
    Ok((
        SocketAddr::new(ip(array(source_ip)?), source_port),
        SocketAddr::new(ip(array(destination_ip)?), destination_port),
    ))
}

#[cfg(test)]
mod tests;
