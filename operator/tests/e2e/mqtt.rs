//! MQTT 5 clients (rumqttc) as a user of the cluster would run them: TLS trusting the CA from the
//! user's credentials Secret, username and password from it, or a client certificate; and a bare
//! TLS handshake to see which certificate a broker serves.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use rumqttc::{TlsConfiguration, Transport};

/// What a client needs to connect.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub ca_pem: String,
}

pub struct Session {
    pub client: AsyncClient,
    pub events: EventLoop,
    /// Packets read while waiting for another one, handed out first by `next`.
    pending: std::collections::VecDeque<Packet>,
}

/// A certificate and its key, PEM: a client's from its credentials Secret (`tls.crt`, `tls.key`),
/// or a server's for a TLS Secret.
#[derive(Clone, Debug)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

fn client_config(ca_pem: &str, identity: Option<&CertifiedKey>) -> rustls::ClientConfig {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate PEM");
            let key =
                PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).expect("client key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate and key")
        }
    }
}

fn tls(ca_pem: &str, identity: Option<&CertifiedKey>) -> Transport {
    Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(client_config(
        ca_pem, identity,
    ))))
}

/// Connects over TLS and waits for CONNACK; the error is the refusal or failure.
pub async fn connect(
    ip: IpAddr,
    port: u16,
    client_id: &str,
    credentials: &Credentials,
) -> Result<Session, ConnectionError> {
    let mut options = MqttOptions::new(client_id, ip.to_string(), port);
    options.set_transport(tls(&credentials.ca_pem, None));
    options.set_credentials(credentials.username.clone(), credentials.password.clone());
    handshake(options).await
}

/// Connects with mutual TLS, presenting `identity`, and sends no username or password: the
/// certificate is the credential.
pub async fn connect_with_certificate(
    ip: IpAddr,
    port: u16,
    client_id: &str,
    ca_pem: &str,
    identity: Option<&CertifiedKey>,
) -> Result<Session, ConnectionError> {
    let mut options = MqttOptions::new(client_id, ip.to_string(), port);
    options.set_transport(tls(ca_pem, identity));
    handshake(options).await
}

async fn handshake(mut options: MqttOptions) -> Result<Session, ConnectionError> {
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 64);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                return Ok(Session {
                    client,
                    events,
                    pending: Default::default(),
                });
            }
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(ConnectionError::RequestsDone),
        }
    }
}

/// The leaf certificate (DER) a new TLS handshake with `ip:port` is served, verified against
/// `ca_pem` for the name `ip`. No MQTT is spoken.
pub async fn served_certificate(ip: IpAddr, port: u16, ca_pem: &str) -> Result<Vec<u8>, String> {
    let config = Arc::new(client_config(ca_pem, None));
    tokio::task::spawn_blocking(move || {
        let name = rustls_pki_types::ServerName::IpAddress(ip.into());
        let mut tls = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut tcp = std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::new(ip, port),
            Duration::from_secs(5),
        )
        .map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp).map_err(|e| e.to_string())?;
        }
        tls.peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.as_ref().to_vec())
            .ok_or_else(|| "no peer certificate".to_owned())
    })
    .await
    .map_err(|e| e.to_string())?
}

impl Session {
    /// Publishes at QoS 1 and returns the PUBACK's reason.
    pub async fn publish_qos1(&mut self, topic: &str, payload: &str) -> PubAckReason {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .expect("queue publish");
        loop {
            match self.read().await {
                Some(Packet::PubAck(ack)) => return ack.reason,
                Some(other) => self.pending.push_back(other),
                None => panic!("connection closed before PUBACK"),
            }
        }
    }

    /// Subscribes and returns the SUBACK's first return code as a raw byte.
    pub async fn subscribe(&mut self, filter: &str) -> bool {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        loop {
            match self.next().await {
                Some(Packet::SubAck(ack)) => {
                    return ack.return_codes.iter().all(|c| {
                        matches!(
                            c,
                            rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                        )
                    });
                }
                Some(_) => continue,
                None => panic!("connection closed before SUBACK"),
            }
        }
    }

    /// Waits for a PUBLISH on `topic`.
    pub async fn receive(&mut self, topic: &str) -> Option<String> {
        loop {
            match self.next().await {
                Some(Packet::Publish(publish)) if publish.topic == topic.as_bytes() => {
                    return Some(String::from_utf8_lossy(&publish.payload).into_owned());
                }
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// The next incoming packet within 10 s; `None` when the connection ended.
    pub async fn next(&mut self) -> Option<Packet> {
        match self.pending.pop_front() {
            Some(packet) => Some(packet),
            None => self.read().await,
        }
    }

    async fn read(&mut self) -> Option<Packet> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.events.poll()).await {
                Ok(Ok(Event::Incoming(packet))) => return Some(packet),
                Ok(Ok(Event::Outgoing(_))) => continue,
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    /// Awaits `work` while keeping this connection serviced (keep-alive pings, incoming packets
    /// queued for `next`); panics if the connection ends meanwhile, so a caller that gets the
    /// result knows the same network connection is still up.
    pub async fn stay_connected_while<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        loop {
            tokio::select! {
                value = &mut work => return value,
                event = self.events.poll() => match event {
                    Ok(Event::Incoming(packet)) => self.pending.push_back(packet),
                    Ok(Event::Outgoing(_)) => {}
                    Err(error) => panic!("the connection ended: {error}"),
                },
            }
        }
    }

    /// Waits for the server's DISCONNECT and returns its reason code byte.
    pub async fn disconnect_reason(&mut self, within: Duration) -> Option<u8> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(1), self.events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Disconnect(d)))) => return Some(d.reason_code as u8),
                // rumqttc reports the server's DISCONNECT as the connection's error.
                Ok(Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code,
                    ..
                }))) => {
                    return Some(reason_code as u8);
                }
                Ok(Ok(_)) | Err(_) => continue,
                Ok(Err(_)) => return None,
            }
        }
        None
    }
}
