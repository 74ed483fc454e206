//! The per-cluster certificate authority and what it issues.
//!
//! ECDSA P-256 keys throughout: small, fast to handshake, and accepted by every MQTT client
//! library we test with. The CA lives ten years; it is never rotated by the operator (delete the
//! `NAME-ca` Secret to make a new one, which reissues everything).

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use super::TlsError;

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start a little in the past so that a clock slightly behind ours accepts them.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A CA certificate with its private key, both PEM.
#[derive(Clone)]
pub struct CertificateAuthority {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

/// A leaf certificate with its key, PEM.
#[derive(Clone)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate").finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new self-signed CA named after the cluster.
    pub fn generate(common_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a server certificate for `hostnames` (DNS names, wildcards or IP addresses).
    pub fn issue_server(
        &self,
        common_name: &str,
        hostnames: &[String],
        validity: Duration,
    ) -> Result<IssuedCertificate, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.subject_alt_names = hostnames.iter().map(|h| san(h)).collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        self.sign(params)
    }

    /// Issues the certificate the brokers of one cluster present to each other on peer links:
    /// `cluster_name` as its only DNS name (what a dialling broker verifies) and usable both to
    /// serve and to dial, since every broker does both. One certificate serves every pod.
    pub fn issue_peer(
        &self,
        cluster_name: &str,
        validity: Duration,
    ) -> Result<IssuedCertificate, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(cluster_name);
        params.subject_alt_names = vec![san(cluster_name)?];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        self.sign(params)
    }

    /// Issues a client certificate whose common name is `username` (the broker takes it as the
    /// username with `use_identity_as_username`).
    pub fn issue_client(
        &self,
        username: &str,
        validity: Duration,
    ) -> Result<IssuedCertificate, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(username);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<IssuedCertificate, TlsError> {
        let ca_key =
            KeyPair::from_pem(&self.key_pem).map_err(|e| TlsError::BadAuthority(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)
            .map_err(|e| TlsError::BadAuthority(e.to_string()))?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Tern");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn san(hostname: &str) -> Result<SanType, TlsError> {
    if let Ok(ip) = hostname.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if !is_dns_name(hostname) {
        return Err(TlsError::BadName(hostname.to_owned()));
    }
    hostname
        .to_owned()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| TlsError::BadName(hostname.to_owned()))
}

/// Whether a certificate can name `hostname`: an IP address or a DNS name (see [`is_dns_name`]).
pub fn is_hostname(hostname: &str) -> bool {
    hostname.parse::<IpAddr>().is_ok() || is_dns_name(hostname)
}

/// A DNS name as certificates carry it: dot-separated labels of letters, digits and `-` (not at
/// either end), at most 63 bytes each and 253 in all; the first label may be the wildcard `*`.
fn is_dns_name(name: &str) -> bool {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    name.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::inspect;

    #[test]
    fn a_server_certificate_names_every_host_and_chains_to_the_ca() {
        let ca = CertificateAuthority::generate("tern demo CA").unwrap();
        let hosts = vec![
            "demo.default.svc".to_owned(),
            "*.demo-headless.default.svc".to_owned(),
            "127.0.0.1".to_owned(),
        ];
        let leaf = ca
            .issue_server("demo", &hosts, Duration::from_secs(3600))
            .unwrap();
        let info = inspect(&leaf.cert_pem).unwrap();
        assert_eq!(info.hostnames, hosts);
        assert_eq!(info.issuer, inspect(&ca.cert_pem).unwrap().subject);
        let left = info.not_after - OffsetDateTime::now_utc();
        assert!(left > time::Duration::minutes(59) && left <= time::Duration::hours(1));
    }

    #[test]
    fn a_client_certificate_carries_the_username() {
        let ca = CertificateAuthority::generate("tern demo CA").unwrap();
        let leaf = ca
            .issue_client("gateway-7", Duration::from_secs(60))
            .unwrap();
        assert_eq!(inspect(&leaf.cert_pem).unwrap().common_name, "gateway-7");
    }

    /// Mutual TLS between two brokers, configured as the broker's peer links are
    /// (`broker/src/cluster/tls.rs`): each side presents `leaf`, the acceptor requires a client
    /// certificate from `ca`, the dialler verifies the server's against `ca` and `cluster_name`.
    fn peer_handshake(
        ca: &CertificateAuthority,
        dialler: &IssuedCertificate,
        acceptor: &IssuedCertificate,
        cluster_name: &str,
    ) -> Result<(), rustls::Error> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        use std::sync::Arc;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())?;
        let roots = Arc::new(roots);
        let chain = |leaf: &IssuedCertificate| {
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()]
        };
        let key = |leaf: &IssuedCertificate| {
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap()
        };
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain(acceptor), key(acceptor))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain(dialler), key(dialler))?;
        let name = ServerName::try_from(cluster_name.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut server = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..10 {
            let mut bytes = Vec::new();
            client.write_tls(&mut bytes).unwrap();
            server.read_tls(&mut bytes.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut bytes = Vec::new();
            server.write_tls(&mut bytes).unwrap();
            client.read_tls(&mut bytes.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                // The client's last flight (its certificate) reaches the server.
                let mut bytes = Vec::new();
                client.write_tls(&mut bytes).unwrap();
                server.read_tls(&mut bytes.as_slice()).unwrap();
                server.process_new_packets()?;
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn one_peer_certificate_links_the_brokers_of_its_cluster_and_no_others() {
        let ca = CertificateAuthority::generate("tern demo CA").unwrap();
        let hour = Duration::from_secs(3600);
        let peer = ca.issue_peer("iot.demo", hour).unwrap();
        peer_handshake(&ca, &peer, &peer, "iot.demo").expect("the brokers link");
        let renewed = ca.issue_peer("iot.demo", hour).unwrap();
        peer_handshake(&ca, &renewed, &peer, "iot.demo").expect("old and renewed link");
        let other_cluster = ca.issue_peer("iot.other", hour).unwrap();
        assert!(
            peer_handshake(&ca, &peer, &other_cluster, "iot.demo").is_err(),
            "a dialler refuses a certificate naming another cluster"
        );
        let stranger = CertificateAuthority::generate("other CA").unwrap();
        let foreign = stranger.issue_peer("iot.demo", hour).unwrap();
        assert!(
            peer_handshake(&ca, &foreign, &peer, "iot.demo").is_err(),
            "an acceptor refuses a certificate from another CA"
        );
        let server_only = ca
            .issue_server("iot.demo", &["iot.demo".to_owned()], hour)
            .unwrap();
        assert!(
            peer_handshake(&ca, &server_only, &peer, "iot.demo").is_err(),
            "a certificate must also be good for dialling (client auth)"
        );
    }

    #[test]
    fn a_peer_certificate_names_the_cluster_only() {
        let ca = CertificateAuthority::generate("tern demo CA").unwrap();
        let leaf = ca
            .issue_peer("iot.demo", Duration::from_secs(3600))
            .unwrap();
        let info = inspect(&leaf.cert_pem).unwrap();
        assert_eq!(info.hostnames, ["iot.demo"]);
        assert_eq!(info.common_name, "iot.demo");
        assert_eq!(info.issuer, inspect(&ca.cert_pem).unwrap().subject);
    }

    #[test]
    fn a_hostname_with_spaces_is_refused() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let err = ca
            .issue_server("x", &["not a host".to_owned()], Duration::from_secs(60))
            .unwrap_err();
        assert!(matches!(err, TlsError::BadName(_)), "{err}");
    }
}
