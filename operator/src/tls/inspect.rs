//! Reading back what a PEM certificate says: names, issuer, expiry.

use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;

use super::TlsError;

/// What the renewal checks need from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub common_name: String,
    /// DNS names and IP addresses, in certificate order.
    pub hostnames: Vec<String>,
    pub not_after: OffsetDateTime,
}

impl CertificateInfo {
    /// Whether less than `renew_before` of validity is left at `now`.
    pub fn expires_within(&self, now: OffsetDateTime, renew_before: std::time::Duration) -> bool {
        self.not_after - now < renew_before
    }

    /// `not_after` as RFC 3339, for status fields.
    pub fn not_after_rfc3339(&self) -> String {
        self.not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }
}

/// Parses the first certificate of a PEM text.
pub fn inspect(pem: &str) -> Result<CertificateInfo, TlsError> {
    let (_, pem) =
        parse_x509_pem(pem.as_bytes()).map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut hostnames = Vec::new();
    if let Ok(Some(sans)) = cert.subject_alternative_name() {
        for name in &sans.value.general_names {
            match name {
                GeneralName::DNSName(dns) => hostnames.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        hostnames.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        common_name,
        hostnames,
        not_after: cert.validity().not_after.to_datetime(),
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}
