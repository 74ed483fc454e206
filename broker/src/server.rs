//! The embeddable server: build it from a [`Config`] and optional [`Hook`]s, bind, then run until a
//! shutdown future resolves. Binaries, tests and embedding programs all start the broker this way.
//!
//! Shutdown order (see [`Server::run`]): stop accepting → tell every connection to close (v5 clients
//! get DISCONNECT 0x8B) and let go of its session → wait for the tasks, bounded by a grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod files;

pub use self::files::FileError;

use self::files::StartFiles;
use crate::broker::{Broker, BrokerSink};
use crate::client::InlineClient;
use crate::cluster::{Cluster, ClusterError};
use crate::config::Config;
use crate::config::StorageConfig;
use crate::hook::{Hook, Hooks};
use crate::http::{HttpError, HttpServer, ListenerInfo};
use crate::listener::{BoundListener, ListenerError};
use crate::stats::Stats;
use crate::storage::{Storage, StorageError, Store};

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often expired retained messages are swept.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

/// Why the server could not start. Every layer's error carries its cause in its message rather
/// than as a `source`, so a report that prints the chain (anyhow's `{:#}`) names the cause once.
#[derive(Debug, Error)]
pub enum ServerError {
    /// A file the configuration names cannot be read or used; `key` is the setting that names it,
    /// such as `listeners[0].tls.cert_file`.
    #[error("{key}: {error}")]
    File { key: String, error: FileError },
    #[error("{0}")]
    Http(HttpError),
    #[error("{0}")]
    Cluster(ClusterError),
    #[error("storage: {0}")]
    Storage(StorageError),
    #[error("listener {name} ({addr}): {error}")]
    Listener {
        name: String,
        addr: SocketAddr,
        error: ListenerError,
    },
}

/// Collects what the server is built from.
pub struct ServerBuilder {
    config: Config,
    hooks: Vec<Arc<dyn Hook>>,
    store: Option<Box<dyn Store>>,
}

impl ServerBuilder {
    /// Adds a hook; hooks run in the order they are added.
    pub fn hook(mut self, hook: impl Hook) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Keeps sessions and retained messages in `store` rather than in the built-in store under
    /// `storage.dir` (with `storage.durability` as configured, `sync` without a `storage`
    /// section). See `docs/storage.md`.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Box::new(store));
        self
    }

    /// Loads every file the configuration names, then binds every listener and the HTTP
    /// endpoint. Nothing is accepted until [`Server::run`].
    pub async fn bind(self) -> Result<Server, ServerError> {
        // Made here rather than by the broker so that the users file's login guard counts in it too.
        let stats = Arc::new(Stats::default());
        let files = StartFiles::load(&self.config, &stats)?;
        let storage = match (self.store, &self.config.storage) {
            (Some(store), config) => {
                let default = StorageConfig::embedded();
                let config = config.as_ref().unwrap_or(&default);
                Some(Storage::with_store(store, config, &stats).map_err(ServerError::Storage)?)
            }
            (None, Some(config)) => Storage::open(config, &stats).map_err(ServerError::Storage)?,
            (None, None) => None,
        };
        let mut listeners = Vec::with_capacity(self.config.listeners.len());
        for (listener, tls) in self.config.listeners.iter().zip(files.tls) {
            let bound = BoundListener::bind(listener, tls).await.map_err(|error| {
                ServerError::Listener {
                    name: listener.name.clone(),
                    addr: listener.bind,
                    error,
                }
            })?;
            listeners.push(bound);
        }
        let http_config = self.config.http.clone();
        let file_auth = files.auth;
        // The built-in file policy decides first; hooks added by an embedding program follow.
        let mut hooks = self.hooks;
        if let Some(file_auth) = &file_auth {
            hooks.insert(0, file_auth.clone() as Arc<dyn Hook>);
        }
        let cluster_config = self.config.cluster.clone();
        let mut broker = Broker::with_stats(
            self.config,
            Hooks::new(hooks),
            CancellationToken::new(),
            Arc::clone(&stats),
        );
        if let Some(config) = &cluster_config {
            let addrs: Vec<(String, SocketAddr)> = listeners
                .iter()
                .map(|l| (l.name.to_string(), l.local_addr))
                .collect();
            let cluster = Cluster::bind(config, &addrs, broker.stats())
                .await
                .map_err(ServerError::Cluster)?;
            broker = broker.with_cluster(cluster);
        }
        let (storage, recovered) = storage.unzip();
        if let Some(storage) = storage {
            broker = broker.with_storage(storage);
        }
        let broker = Arc::new(broker);
        if let Some(recovered) = recovered {
            broker.recover(recovered);
        }
        if let Some(file_auth) = &file_auth {
            broker.register_reload(file_auth.clone());
        }
        for listener in &listeners {
            if let Some(reload) = listener.tls_reload() {
                broker.register_reload(reload);
            }
        }
        if let Some(token) = &files.admin_token {
            broker.register_reload(token.clone());
        }
        let http = match http_config {
            Some(config) => {
                let infos = listeners
                    .iter()
                    .map(|l| ListenerInfo {
                        name: l.name.to_string(),
                        protocol: l.protocol.name().to_string(),
                        address: l.local_addr,
                    })
                    .collect();
                let bound = HttpServer::bind(
                    &config,
                    Arc::clone(&broker),
                    infos,
                    file_auth,
                    files.admin_token,
                );
                Some(bound.await.map_err(ServerError::Http)?)
            }
            None => None,
        };
        Ok(Server {
            broker,
            listeners,
            http,
        })
    }
}

/// A bound broker, ready to run.
pub struct Server {
    broker: Arc<Broker>,
    listeners: Vec<BoundListener>,
    http: Option<HttpServer>,
}

impl Server {
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder {
            store: None,
            config,
            hooks: Vec::new(),
        }
    }

    /// Loads every file `config` names — TLS certificates, keys and client CAs, the users and ACL
    /// files, the admin token — as a start would, without binding a socket or serving anything:
    /// what `tern-broker --check-config` runs. Ports in use are not found this way.
    pub fn check(config: &Config) -> Result<(), ServerError> {
        StartFiles::load(config, &Arc::new(Stats::default())).map(drop)
    }

    /// The address each listener is bound to, by name (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .map(|l| (l.name.to_string(), l.local_addr))
            .collect()
    }

    /// The HTTP endpoint's address, when one is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(HttpServer::local_addr)
    }

    /// A client inside this process that publishes and subscribes without a network connection.
    pub fn client(&self) -> InlineClient {
        InlineClient::new(Arc::clone(&self.broker))
    }

    /// A token that shuts the server down when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.broker.shutdown_token().clone()
    }

    /// Runs until `shutdown` resolves (or the shutdown token is cancelled), then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let broker = self.broker;
        let mut accept_tasks = Vec::new();
        for listener in self.listeners {
            accept_tasks.push(tokio::spawn(listener.run(Arc::clone(&broker))));
        }
        if let Some(http) = self.http {
            broker.tasks().spawn(http.run());
        }
        if let Some(cluster) = broker.cluster() {
            cluster.start(BrokerSink::new(&broker));
        }
        broker.tasks().spawn(crate::sys::run(Arc::clone(&broker)));
        broker.tasks().spawn(housekeeping(Arc::clone(&broker)));
        broker.tasks().spawn(watch_files(Arc::clone(&broker)));

        tokio::select! {
            () = shutdown => {}
            () = broker.shutdown_token().cancelled() => {}
        }
        info!("shutting down");
        // 1. Stop accepting; 2. connections are kicked, send DISCONNECT and detach.
        broker.begin_shutdown();
        for task in accept_tasks {
            let _ = task.await;
        }
        // 3. Leave the cluster: gossip and peer links stop.
        if let Some(cluster) = broker.cluster() {
            cluster.shutdown().await;
        }
        // 4. Wait for every connection and timer task to finish.
        broker.tasks().close();
        if tokio::time::timeout(SHUTDOWN_GRACE, broker.tasks().wait())
            .await
            .is_err()
        {
            warn!(
                remaining = broker.tasks().len(),
                "tasks still running after the grace period"
            );
        }
        // 5. What the sessions recorded as they detached is written, and the store closed.
        if let Some(storage) = broker.storage().cloned() {
            let _ = tokio::task::spawn_blocking(move || storage.close()).await;
        }
        info!("stopped");
    }
}

/// Polls the files reloaders depend on (users, ACL, TLS, admin token) and reloads when one changes.
/// Polling rather than inotify, because Kubernetes updates mounted Secrets and ConfigMaps by swapping a
/// symlink, which inotify watches on the old target miss.
async fn watch_files(broker: Arc<Broker>) {
    let secs = broker.config().auth.reload_poll_secs;
    if secs == 0 {
        return;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(secs));
    let mut last = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = broker.shutdown_token().cancelled() => return,
        }
        let signature: Vec<_> = broker
            .watched_files()
            .iter()
            .map(|path| {
                std::fs::metadata(path)
                    .ok()
                    .map(|m| (m.len(), m.modified().ok()))
            })
            .collect();
        if last.as_ref().is_some_and(|last| *last != signature) {
            info!("a watched file changed; reloading");
            broker.reload_all();
        }
        last = Some(signature);
    }
}

/// Periodic chores that belong to no client: dropping expired retained messages.
async fn housekeeping(broker: Arc<Broker>) {
    let mut ticker = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                broker.retained().sweep_expired(std::time::Instant::now());
            }
            () = broker.shutdown_token().cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the binary prints: the error and its chain of sources, as anyhow's `{:#}` does.
    fn report(error: ServerError) -> String {
        format!("{:#}", anyhow::Error::new(error))
    }

    #[tokio::test]
    async fn a_missing_certificate_is_reported_once() {
        let config = Config::from_yaml(
            "listeners: [{name: s, protocol: tls, bind: '127.0.0.1:0', \
             tls: {cert_file: /nonexistent/server.crt, key_file: /nonexistent/server.key}}]",
            "test.yaml",
        )
        .unwrap();
        let Err(error) = Server::builder(config).bind().await else {
            panic!("a missing certificate must stop the start");
        };
        let report = report(error);
        assert!(report.contains("/nonexistent/server.crt"), "{report}");
        assert_eq!(report.matches("os error 2").count(), 1, "{report}");
    }
}
