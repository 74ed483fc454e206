//! ConfigMaps and Secrets, watched and cached (kube-runtime reflectors), so pod workers read them
//! without a request and learn of every change within the watch latency (milliseconds). A real
//! kubelet refreshes mounted ConfigMaps and Secrets only on its periodic sync, up to a minute or more.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::volume::SourceLookup;

/// How long the first list of ConfigMaps and Secrets may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// The caches and a change counter bumped on every ConfigMap or Secret event.
#[derive(Clone)]
pub struct Sources {
    configmaps: Store<ConfigMap>,
    secrets: Store<Secret>,
    changes: watch::Receiver<u64>,
}

/// The initial list did not arrive.
#[derive(Debug, thiserror::Error)]
#[error("configmaps and secrets not listed within {0:?}")]
pub struct NotSynced(Duration);

impl Sources {
    /// Starts watching (in `namespace`, or everywhere) and waits for the first complete lists.
    pub async fn start(
        client: Client,
        namespace: Option<&str>,
        cancel: CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), NotSynced> {
        let (configmap_api, secret_api): (Api<ConfigMap>, Api<Secret>) = match namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
        let (configmaps, configmap_writer) = reflector::store();
        let (secrets, secret_writer) = reflector::store();
        let configmap_events = reflector::reflector(
            configmap_writer,
            watcher(configmap_api, watcher::Config::default()),
        )
        .default_backoff()
        .map(|event| event.map(|_| ()))
        .boxed();
        let secret_events = reflector::reflector(
            secret_writer,
            watcher(secret_api, watcher::Config::default()),
        )
        .default_backoff()
        .map(|event| event.map(|_| ()))
        .boxed();
        let (changed, changes) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut events = stream::select(configmap_events, secret_events);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    event = events.next() => match event {
                        Some(Ok(())) => changed.send_modify(|count| *count += 1),
                        Some(Err(error)) => tracing::warn!(%error, "configmap/secret watch failed; retrying"),
                        None => return,
                    },
                }
            }
        });
        let synced = async {
            configmaps.wait_until_ready().await.ok();
            secrets.wait_until_ready().await.ok();
        };
        if tokio::time::timeout(SYNC_TIMEOUT, synced).await.is_err() {
            task.abort();
            return Err(NotSynced(SYNC_TIMEOUT));
        }
        Ok((
            Self {
                configmaps,
                secrets,
                changes,
            },
            task,
        ))
    }

    /// A receiver that sees a new value after every ConfigMap or Secret event.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

impl SourceLookup for Sources {
    fn configmap(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.configmaps.get(&ObjectRef::new(name).within(namespace))
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))
    }
}
