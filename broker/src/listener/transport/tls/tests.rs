//! TLS termination end to end: certificates made with rcgen at test time, real sockets, a rustls
//! client on the ring provider.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::super::test_pki::{Authority, Leaf, client_config};
use super::*;

/// Files in a temporary directory, and settings pointing at them.
struct Files {
    dir: TempDir,
    settings: TlsSettings,
}

impl Files {
    fn new(server: &Leaf) -> Self {
        let dir = TempDir::new().unwrap();
        let settings = TlsSettings {
            cert_file: dir.path().join("tls.crt"),
            key_file: dir.path().join("tls.key"),
            client_ca_file: None,
            require_client_certificate: false,
            use_identity_as_username: false,
        };
        let files = Self { dir, settings };
        files.write_server(server);
        files
    }

    fn with_client_ca(mut self, ca: &Authority, required: bool) -> Self {
        let path = self.dir.path().join("client-ca.crt");
        std::fs::write(&path, &ca.pem).unwrap();
        self.settings.client_ca_file = Some(path);
        self.settings.require_client_certificate = required;
        self.settings.use_identity_as_username = true;
        self
    }

    fn write_server(&self, server: &Leaf) {
        std::fs::write(&self.settings.cert_file, &server.cert_pem).unwrap();
        std::fs::write(&self.settings.key_file, &server.key_pem).unwrap();
    }
}

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;
type ServerSide = io::Result<(TlsStream<TcpStream>, Option<String>)>;

/// Connects a client to a fresh socket and runs the server side of the handshake beside it.
async fn handshake(
    terminator: &TlsTerminator,
    client: Arc<ClientConfig>,
) -> (io::Result<ClientStream>, ServerSide) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let connect = async move {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
    };
    let accept = async {
        let (tcp, _) = listener.accept().await.unwrap();
        terminator.accept(tcp).await
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(connect, accept)
    })
    .await
    .unwrap()
}

fn served_certificate(client: &ClientStream) -> CertificateDer<'static> {
    client.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Echoes what the server side reads, until the client goes.
fn echo(mut server: TlsStream<TcpStream>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = server.read(&mut buf).await {
            if server.write_all(&buf[..n]).await.is_err() || server.flush().await.is_err() {
                break;
            }
        }
    })
}

async fn round_trip(client: &mut ClientStream, message: &[u8]) -> io::Result<Vec<u8>> {
    client.write_all(message).await?;
    client.flush().await?;
    let mut back = vec![0u8; message.len()];
    client.read_exact(&mut back).await?;
    Ok(back)
}

#[tokio::test]
async fn serves_the_certificate_and_negotiates_mqtt_only_when_offered() {
    let ca = Authority::new("test ca");
    let server = ca.server("broker-1");
    let terminator = TlsTerminator::load(&Files::new(&server).settings).unwrap();

    let (client, accepted) = handshake(&terminator, client_config(&ca, None, &[b"mqtt"])).await;
    let client = client.unwrap();
    assert_eq!(served_certificate(&client), server.der);
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"mqtt"[..]));
    assert_eq!(accepted.unwrap().1, None);

    for offered in [&[][..], &[&b"http/1.1"[..], b"h2"]] {
        let (client, accepted) = handshake(&terminator, client_config(&ca, None, offered)).await;
        assert_eq!(
            client.unwrap().get_ref().1.alpn_protocol(),
            None,
            "offered {offered:?}"
        );
        assert!(accepted.is_ok());
    }
}

#[tokio::test]
async fn rotation_serves_the_new_certificate_and_keeps_old_connections() {
    let ca = Authority::new("test ca");
    let (first, second) = (ca.server("broker-first"), ca.server("broker-second"));
    let files = Files::new(&first);
    let terminator = TlsTerminator::load(&files.settings).unwrap();
    assert!(!terminator.reload().unwrap(), "nothing changed yet");

    let (old_client, accepted) = handshake(&terminator, client_config(&ca, None, &[])).await;
    let mut old_client = old_client.unwrap();
    let old_server = echo(accepted.unwrap().0);
    assert_eq!(served_certificate(&old_client), first.der);

    files.write_server(&second);
    assert!(terminator.reload().unwrap());

    let (new_client, accepted) = handshake(&terminator, client_config(&ca, None, &[])).await;
    let mut new_client = new_client.unwrap();
    let new_server = echo(accepted.unwrap().0);
    assert_eq!(served_certificate(&new_client), second.der);
    assert_eq!(round_trip(&mut new_client, b"new").await.unwrap(), b"new");
    assert_eq!(
        round_trip(&mut old_client, b"still here").await.unwrap(),
        b"still here"
    );

    drop((old_client, new_client));
    old_server.await.unwrap();
    new_server.await.unwrap();
}

#[tokio::test]
async fn a_failed_reload_keeps_the_current_certificate() {
    let ca = Authority::new("test ca");
    let first = ca.server("broker-first");
    let files = Files::new(&first);
    let terminator = TlsTerminator::load(&files.settings).unwrap();

    std::fs::write(&files.settings.key_file, "not a key").unwrap();
    let error = terminator.reload().unwrap_err();
    assert!(error.to_string().contains("tls.key"), "{error}");
    assert_eq!(error.kind(), "pem");

    let other = ca.server("other");
    std::fs::write(&files.settings.key_file, &other.key_pem).unwrap();
    assert_eq!(terminator.reload().unwrap_err().kind(), "key_mismatch");

    let (client, _) = handshake(&terminator, client_config(&ca, None, &[])).await;
    assert_eq!(served_certificate(&client.unwrap()), first.der);
}

#[tokio::test]
async fn load_errors_name_the_file_and_the_problem() {
    let ca = Authority::new("test ca");
    let files = Files::new(&ca.server("broker"));
    let mut settings = files.settings.clone();

    settings.cert_file = files.dir.path().join("missing.crt");
    let error = TlsTerminator::load(&settings).unwrap_err();
    assert!(error.to_string().contains("missing.crt"), "{error}");
    assert_eq!(error.kind(), "read");

    std::fs::write(files.dir.path().join("empty.crt"), "").unwrap();
    settings.cert_file = files.dir.path().join("empty.crt");
    let error = TlsTerminator::load(&settings).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("empty.crt: no certificate found"),
        "{error}"
    );

    settings.cert_file = files.settings.cert_file.clone();
    settings.key_file = files.settings.cert_file.clone();
    let error = TlsTerminator::load(&settings).unwrap_err();
    assert!(
        error.to_string().contains("no private key found"),
        "{error}"
    );

    let mut settings = files.settings.clone();
    settings.require_client_certificate = true;
    assert_eq!(
        TlsTerminator::load(&settings).unwrap_err().kind(),
        "settings"
    );
    settings.require_client_certificate = false;
    settings.use_identity_as_username = true;
    assert_eq!(
        TlsTerminator::load(&settings).unwrap_err().kind(),
        "settings"
    );
    settings.use_identity_as_username = false;
    settings.client_ca_file = Some(files.settings.key_file.clone());
    let error = TlsTerminator::load(&settings).unwrap_err();
    assert!(
        error.to_string().contains("tls.key: no certificate found"),
        "{error}"
    );
}

#[tokio::test]
async fn required_client_certificates_are_verified_and_give_the_identity() {
    let (server_ca, client_ca, stranger_ca) = (
        Authority::new("server ca"),
        Authority::new("client ca"),
        Authority::new("stranger ca"),
    );
    let files = Files::new(&server_ca.server("broker")).with_client_ca(&client_ca, true);
    let terminator = TlsTerminator::load(&files.settings).unwrap();

    let device = client_ca.client("device-42");
    let (client, accepted) =
        handshake(&terminator, client_config(&server_ca, Some(&device), &[])).await;
    client.unwrap();
    assert_eq!(accepted.unwrap().1.as_deref(), Some("device-42"));

    let (_, accepted) = handshake(&terminator, client_config(&server_ca, None, &[])).await;
    assert!(accepted.is_err(), "no certificate must be refused");

    let stranger = stranger_ca.client("device-42");
    let (_, accepted) =
        handshake(&terminator, client_config(&server_ca, Some(&stranger), &[])).await;
    assert!(
        accepted.is_err(),
        "a certificate from another CA must be refused"
    );
}

#[tokio::test]
async fn optional_client_certificates_give_an_identity_only_when_presented() {
    let (server_ca, client_ca) = (Authority::new("server ca"), Authority::new("client ca"));
    let files = Files::new(&server_ca.server("broker")).with_client_ca(&client_ca, false);
    let terminator = TlsTerminator::load(&files.settings).unwrap();

    let (client, accepted) = handshake(&terminator, client_config(&server_ca, None, &[])).await;
    client.unwrap();
    assert_eq!(accepted.unwrap().1, None);

    let device = client_ca.client("device-7");
    let (_, accepted) = handshake(&terminator, client_config(&server_ca, Some(&device), &[])).await;
    assert_eq!(accepted.unwrap().1.as_deref(), Some("device-7"));
}

/// Lays files out as Kubernetes mounts a Secret: `tls.crt -> ..data/tls.crt`, `..data -> <dir>`,
/// updated by pointing `..data` at a new directory in one rename.
fn publish_secret(root: &Path, version: &str, server: &Leaf) {
    let version_dir = root.join(version);
    std::fs::create_dir(&version_dir).unwrap();
    std::fs::write(version_dir.join("tls.crt"), &server.cert_pem).unwrap();
    std::fs::write(version_dir.join("tls.key"), &server.key_pem).unwrap();
    let staged = root.join("..data_tmp");
    std::os::unix::fs::symlink(version, &staged).unwrap();
    std::fs::rename(&staged, root.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = root.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
}

#[tokio::test]
async fn watch_follows_a_kubernetes_secret_update() {
    let ca = Authority::new("test ca");
    let (first, second) = (ca.server("broker-first"), ca.server("broker-second"));
    let root = TempDir::new().unwrap();
    publish_secret(root.path(), "..2024_01", &first);
    let settings = TlsSettings {
        cert_file: root.path().join("tls.crt"),
        key_file: root.path().join("tls.key"),
        client_ca_file: None,
        require_client_certificate: false,
        use_identity_as_username: false,
    };
    let terminator = Arc::new(TlsTerminator::load(&settings).unwrap());
    let cancel = CancellationToken::new();
    let watcher =
        tokio::spawn(Arc::clone(&terminator).watch(Duration::from_millis(20), cancel.clone()));

    publish_secret(root.path(), "..2024_02", &second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (client, _) = handshake(&terminator, client_config(&ca, None, &[])).await;
        if served_certificate(&client.unwrap()) == second.der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher never picked up the new secret"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn settings_read_from_yaml_with_defaults_and_refuse_unknown_keys() {
    let settings: TlsSettings =
        serde_yaml::from_str("cert_file: /tls/tls.crt\nkey_file: /tls/tls.key\n").unwrap();
    assert_eq!(settings.client_ca_file, None);
    assert!(!settings.require_client_certificate && !settings.use_identity_as_username);
    let unknown = serde_yaml::from_str::<TlsSettings>("cert_file: a\nkey_file: b\nca_file: c\n");
    assert!(unknown.is_err());
}
