//! The client's identity from its certificate: the first common name (CN) of the subject.
//!
//! A small DER walk rather than a full X.509 parser: by the time this runs rustls has verified the
//! certificate, so only the path to the subject has to be followed, and any surprise yields `None`.

/// The DER content of OID 2.5.4.3, id-at-commonName.
const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OBJECT_IDENTIFIER: u8 = 0x06;
const EXPLICIT_VERSION: u8 = 0xa0;

/// The subject's first common name, if it has one that is a non-empty string.
pub(super) fn common_name(certificate: &[u8]) -> Option<String> {
    let (certificate, _) = element(SEQUENCE, certificate)?;
    let (mut tbs, _) = element(SEQUENCE, certificate)?;
    if tbs.first() == Some(&EXPLICIT_VERSION) {
        tbs = split_tlv(tbs)?.2;
    }
    // serialNumber, signature, issuer, validity; then the subject.
    for tag in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE] {
        tbs = element(tag, tbs)?.1;
    }
    let (mut names, _) = element(SEQUENCE, tbs)?;
    while !names.is_empty() {
        let (mut attributes, rest) = element(SET, names)?;
        names = rest;
        while !attributes.is_empty() {
            let (attribute, rest) = element(SEQUENCE, attributes)?;
            attributes = rest;
            let (oid, value) = element(OBJECT_IDENTIFIER, attribute)?;
            if oid == COMMON_NAME_OID {
                let (tag, content, _) = split_tlv(value)?;
                return directory_string(tag, content).filter(|name| !name.is_empty());
            }
        }
    }
    None
}

/// Splits one DER element off `input`: (tag, content, rest). Single-byte tags and definite lengths
/// of up to four bytes, which covers every certificate a verifier accepts.
fn split_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |len, &byte| (len << 8) | usize::from(byte))
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// Content and rest of an element with the given tag.
fn element(tag: u8, input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (found, content, rest) = split_tlv(input)?;
    (found == tag).then_some((content, rest))
}

/// Decodes the string types X.509 allows for a name.
fn directory_string(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, and TeletexString, which in practice holds ASCII.
        0x0c | 0x13 | 0x16 | 0x14 => String::from_utf8(content.to_vec()).ok(),
        // BMPString: UTF-16, big-endian.
        0x1e => {
            let units = content.chunks(2).map(|pair| match pair {
                [high, low] => Some(u16::from_be_bytes([*high, *low])),
                _ => None,
            });
            let units = units.collect::<Option<Vec<u16>>>()?;
            String::from_utf16(&units).ok()
        }
        // UniversalString: UTF-32, big-endian.
        0x1c => content
            .chunks(4)
            .map(|quad| {
                <[u8; 4]>::try_from(quad)
                    .ok()
                    .and_then(|b| char::from_u32(u32::from_be_bytes(b)))
            })
            .collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair};

    use super::*;

    fn certificate_with(names: &[(DnType, DnValue)]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        for (kind, value) in names {
            params.distinguished_name.push(kind.clone(), value.clone());
        }
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn reads_a_utf8_common_name_among_other_attributes() {
        let der = certificate_with(&[
            (
                DnType::OrganizationName,
                DnValue::Utf8String("Tern".to_owned()),
            ),
            (
                DnType::CommonName,
                DnValue::Utf8String("sensor-zoë-7".to_owned()),
            ),
        ]);
        assert_eq!(common_name(&der).as_deref(), Some("sensor-zoë-7"));
    }

    #[test]
    fn reads_printable_and_bmp_common_names() {
        let printable = rcgen::string::PrintableString::try_from("device 42").unwrap();
        let der = certificate_with(&[(DnType::CommonName, DnValue::PrintableString(printable))]);
        assert_eq!(common_name(&der).as_deref(), Some("device 42"));
        let bmp = rcgen::string::BmpString::try_from("Zoë").unwrap();
        let der = certificate_with(&[(DnType::CommonName, DnValue::BmpString(bmp))]);
        assert_eq!(common_name(&der).as_deref(), Some("Zoë"));
    }

    #[test]
    fn no_common_name_is_none() {
        let der = certificate_with(&[(
            DnType::OrganizationName,
            DnValue::Utf8String("Tern".to_owned()),
        )]);
        assert_eq!(common_name(&der), None);
        let der = certificate_with(&[(DnType::CommonName, DnValue::Utf8String(String::new()))]);
        assert_eq!(common_name(&der), None);
    }

    #[test]
    fn damaged_input_is_none_and_never_panics() {
        let der =
            certificate_with(&[(DnType::CommonName, DnValue::Utf8String("device".to_owned()))]);
        for len in 0..der.len() {
            let _ = common_name(&der[..len]);
        }
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = common_name(&flipped);
            flipped[i] ^= 0xff;
        }
        assert_eq!(common_name(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(common_name(b"\x30\x80\x00\x00"), None);
    }
}
