//! An embedded server (the library, not the binary) on a free loopback port, for tests whose
//! behaviour needs a custom hook.

use tern_broker::config::ListenerConfig;
use tern_broker::{Config, Hook, Server};
use tokio_util::sync::CancellationToken;

/// A configuration with one TCP listener on a free loopback port and anonymous access.
pub fn loopback_config() -> Config {
    Config {
        listeners: vec![ListenerConfig {
            name: "test".into(),
            bind: "127.0.0.1:0".parse().unwrap(),
            ..ListenerConfig::default()
        }],
        ..Config::default()
    }
}

/// Starts a server with `hook`; returns its port and the token that stops it.
pub async fn start_with_hook(hook: impl Hook) -> (u16, CancellationToken) {
    let server = Server::builder(loopback_config())
        .hook(hook)
        .bind()
        .await
        .unwrap();
    let port = server.local_addrs()[0].1.port();
    let token = server.shutdown_token();
    tokio::spawn(server.run(std::future::pending()));
    (port, token)
}
