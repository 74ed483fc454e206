//! Mutual TLS on peer links (`cluster.tls`): each node presents its certificate and requires the
//! other's, both signed by the cluster's CA. The dialling node checks that the certificate it is
//! shown names the cluster (`cluster.name` as a DNS name): one certificate per cluster, shared by its
//! pods, proves membership.
//!
//! The files are read again for every link that is set up, so a renewed certificate is used from
//! the next connection on without a restart; they are also read once at start, so a bad file fails
//! the start rather than the first link.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::PeerTlsConfig;

/// Why the peer certificates could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerTlsError {
    #[error("{}: {what}", path.display())]
    File {
        path: std::path::PathBuf,
        what: String,
    },
    #[error("peer TLS settings: {0}")]
    Settings(String),
}

/// The peer-link TLS settings, ready to build configurations from.
#[derive(Debug, Clone)]
pub struct PeerTls {
    config: PeerTlsConfig,
    server_name: ServerName<'static>,
}

impl PeerTls {
    /// Checks the files once; `cluster` is the name peers' certificates must carry.
    pub fn load(config: &PeerTlsConfig, cluster: &str) -> Result<Self, PeerTlsError> {
        let server_name = ServerName::try_from(cluster.to_owned())
            .map_err(|e| PeerTlsError::Settings(format!("cluster.name as a TLS name: {e}")))?;
        let tls = Self {
            config: config.clone(),
            server_name,
        };
        tls.server_config()?;
        tls.client_config()?;
        Ok(tls)
    }

    /// Completes the TLS handshake as the accepting side.
    pub async fn accept<S>(&self, stream: S) -> io::Result<tokio_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.server_config().map_err(io::Error::other)?;
        TlsAcceptor::from(config).accept(stream).await
    }

    /// Completes the TLS handshake as the dialling side.
    pub async fn connect<S>(&self, stream: S) -> io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.client_config().map_err(io::Error::other)?;
        TlsConnector::from(config)
            .connect(self.server_name.clone(), stream)
            .await
    }

    fn server_config(&self) -> Result<Arc<ServerConfig>, PeerTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .build()
                .map_err(|e| self.file_error(&self.config.ca_file, e.to_string()))?;
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PeerTlsError::Settings(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain()?, self.key()?)
            .map_err(|e| self.file_error(&self.config.key_file, e.to_string()))?;
        Ok(Arc::new(config))
    }

    fn client_config(&self) -> Result<Arc<ClientConfig>, PeerTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PeerTlsError::Settings(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain()?, self.key()?)
            .map_err(|e| self.file_error(&self.config.key_file, e.to_string()))?;
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, PeerTlsError> {
        let mut roots = RootCertStore::empty();
        for certificate in self.certificates(&self.config.ca_file)? {
            roots
                .add(certificate)
                .map_err(|e| self.file_error(&self.config.ca_file, e.to_string()))?;
        }
        Ok(roots)
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, PeerTlsError> {
        self.certificates(&self.config.cert_file)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, PeerTlsError> {
        PrivateKeyDer::from_pem_file(&self.config.key_file)
            .map_err(|e| self.file_error(&self.config.key_file, e.to_string()))
    }

    fn certificates(&self, path: &Path) -> Result<Vec<CertificateDer<'static>>, PeerTlsError> {
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(|e| self.file_error(path, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.file_error(path, e.to_string()))?;
        if certificates.is_empty() {
            return Err(self.file_error(path, "no certificate found".into()));
        }
        Ok(certificates)
    }

    fn file_error(&self, path: &Path, what: String) -> PeerTlsError {
        PeerTlsError::File {
            path: path.to_path_buf(),
            what,
        }
    }
}
