//! TLS termination for `tls` and `wss` listeners: one [`TlsTerminator`] per listener holds the
//! current certificate, optionally verifies client certificates against a CA, and can swap in new
//! files while running ([`TlsTerminator::reload`], or [`TlsTerminator::watch`] polling the files).
//!
//! Rustls runs on the `ring` provider, passed in explicitly; nothing here installs a process-wide
//! default provider. A reload only affects handshakes that start afterwards: established
//! connections keep the keys they negotiated.

mod identity;

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{Acceptor, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::MissedTickBehavior;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::TlsError;
use crate::config::TlsSettings;

/// The ALPN protocol name registered for MQTT.
const ALPN_MQTT: &[u8] = b"mqtt";

/// Terminates TLS for one listener; shared by its connection tasks and its file watcher.
pub struct TlsTerminator {
    settings: TlsSettings,
    /// Replaced whole on reload. A handshake takes its config when the ClientHello has arrived
    /// and keeps it to the end, so a reload never changes a handshake under way.
    current: ArcSwap<Loaded>,
}

/// What one version of the files produced.
struct Loaded {
    /// For clients that offer "mqtt" in ALPN: the server confirms it.
    with_alpn: Arc<ServerConfig>,
    /// For every other client, so that ALPN is advertised but never required (rustls refuses a
    /// client whose ALPN list misses all of the server's).
    without_alpn: Arc<ServerConfig>,
    /// Of the files' contents, to tell a real change from a touched file.
    fingerprint: u64,
}

/// The raw contents of the configured files.
struct SourceFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// A file's modification time and size, or `None` when it cannot be read.
type FileStamp = Option<(SystemTime, u64)>;

impl TlsTerminator {
    /// Reads and checks the files. Errors name the file and what is wrong with it.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        if settings.client_ca_file.is_none() {
            if settings.require_client_certificate {
                return Err(TlsError::Settings(
                    "require_client_certificate needs client_ca_file",
                ));
            }
            if settings.use_identity_as_username {
                return Err(TlsError::Settings(
                    "use_identity_as_username needs client_ca_file",
                ));
            }
        }
        let files = SourceFiles::read(settings)?;
        let loaded = build(settings, &files)?;
        Ok(Self {
            settings: settings.clone(),
            current: ArcSwap::from_pointee(loaded),
        })
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Reads the files again and uses them for new handshakes if their contents changed.
    /// Returns whether they did. On error the current certificate stays in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = SourceFiles::read(&self.settings)?;
        if files.fingerprint() == self.current.load().fingerprint {
            return Ok(false);
        }
        self.current.store(Arc::new(build(&self.settings, &files)?));
        Ok(true)
    }

    /// Runs the TLS handshake on `stream`. Returns the stream and, when `use_identity_as_username`
    /// is set and the client presented a certificate, that certificate's common name; a verified
    /// certificate without a common name is then refused. The caller bounds the time this takes.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> io::Result<(TlsStream<S>, Option<String>)> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        let config = {
            let loaded = self.current.load();
            let offers_mqtt = start
                .client_hello()
                .alpn()
                .is_some_and(|mut offered| offered.any(|name| name == ALPN_MQTT));
            if offers_mqtt {
                Arc::clone(&loaded.with_alpn)
            } else {
                Arc::clone(&loaded.without_alpn)
            }
        };
        let stream = start.into_stream(config).await?;
        if !self.settings.use_identity_as_username {
            return Ok((stream, None));
        }
        let identity = match stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
        {
            None => None,
            Some(leaf) => Some(identity::common_name(leaf).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "client certificate has no common name",
                )
            })?),
        };
        Ok((stream, identity))
    }

    /// Polls the files every `interval` until `cancel` fires, and reloads when a file's modification
    /// time or size changed (the reload itself then compares contents). Polling rather than file
    /// notifications, because Kubernetes updates a mounted Secret by swapping a symlink to a new
    /// directory, which watches on the files miss. Failures are logged and retried on the next
    /// change; the current certificate stays in use meanwhile.
    pub async fn watch(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last: Option<Vec<FileStamp>> = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            // Stat and read off the runtime threads: a network volume can be slow.
            let this = Arc::clone(&self);
            let previous = last.take();
            match tokio::task::spawn_blocking(move || this.poll_files(previous)).await {
                Ok(stamps) => last = Some(stamps),
                Err(error) => warn!(%error, "TLS file check did not finish"),
            }
        }
        debug!(cert_file = %self.settings.cert_file.display(), "stopped watching TLS files");
    }

    /// One watch step: reloads if the stamps differ from `previous`, returns the new stamps.
    fn poll_files(&self, previous: Option<Vec<FileStamp>>) -> Vec<FileStamp> {
        // Stamped before reading, so a change that lands during the reload is seen next time.
        let stamps: Vec<FileStamp> = self.paths().map(stamp).collect();
        if previous.as_ref() == Some(&stamps) {
            return stamps;
        }
        let cert_file = self.settings.cert_file.display();
        match self.reload() {
            Ok(true) => info!(%cert_file, "TLS files changed; new handshakes use them"),
            Ok(false) => debug!(%cert_file, "TLS files touched but unchanged"),
            Err(error) => {
                warn!(%cert_file, %error, kind = error.kind(), "TLS reload failed; keeping the current files");
            }
        }
        stamps
    }

    fn paths(&self) -> impl Iterator<Item = &Path> {
        [
            Some(&self.settings.cert_file),
            Some(&self.settings.key_file),
            self.settings.client_ca_file.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
    }
}

impl fmt::Debug for TlsTerminator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTerminator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Follows symlinks, as the Kubernetes layout needs.
fn stamp(path: &Path) -> FileStamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

impl SourceFiles {
    fn read(settings: &TlsSettings) -> Result<Self, TlsError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|error| TlsError::Read {
                path: path.clone(),
                error,
            })
        };
        Ok(Self {
            cert: read(&settings.cert_file)?,
            key: read(&settings.key_file)?,
            client_ca: settings.client_ca_file.as_ref().map(read).transpose()?,
        })
    }

    fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        (&self.cert, &self.key, &self.client_ca).hash(&mut hasher);
        hasher.finish()
    }
}

/// Builds both server configs from the files' contents.
fn build(settings: &TlsSettings, files: &SourceFiles) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&settings.cert_file, &files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|error| TlsError::Pem {
        path: settings.key_file.clone(),
        what: match error {
            pem::Error::NoItemsFound => {
                "no private key found (PKCS#8, PKCS#1 or SEC1 PEM)".to_owned()
            }
            other => other.to_string(),
        },
    })?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|_| TlsError::Settings("the ring provider offers no safe TLS version"))?;
    let builder = match (&settings.client_ca_file, &files.client_ca) {
        (Some(path), Some(pem)) => {
            let client_ca = |what: String| TlsError::ClientCa {
                path: path.clone(),
                what,
            };
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path, pem)? {
                roots
                    .add(certificate)
                    .map_err(|error| client_ca(error.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.require_client_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|error| client_ca(error.to_string()))?,
            )
        }
        _ => builder.with_no_client_auth(),
    };
    let without_alpn = builder
        .with_single_cert(chain, key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: settings.cert_file.clone(),
                key: settings.key_file.clone(),
            },
            other => TlsError::Key {
                path: settings.key_file.clone(),
                error: other,
            },
        })?;
    let mut with_alpn = without_alpn.clone();
    with_alpn.alpn_protocols = vec![ALPN_MQTT.to_vec()];
    Ok(Loaded {
        with_alpn: Arc::new(with_alpn),
        without_alpn: Arc::new(without_alpn),
        fingerprint: files.fingerprint(),
    })
}

/// All certificates in a PEM file; at least one.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |what: String| TlsError::Pem {
        path: path.to_owned(),
        what,
    };
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(error.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            "no certificate found (expected PEM \"BEGIN CERTIFICATE\")".to_owned(),
        ));
    }
    Ok(chain)
}

/// TLS connections are not parked: the session's keys and buffers live above the socket.
impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> crate::connection::Transport
    for TlsStream<S>
{
}

#[cfg(test)]
mod tests;
