//! Watches the selected pods, acts as the scheduler for them (binds every unscheduled one to this
//! node through `pods/binding`, ignoring node selectors, affinity, taints and resources), and keeps one
//! worker per pod bound here, keyed by UID. The owner of the worker map; workers learn of their pod's
//! changes through a watch channel whose sender is dropped when the pod leaves the API.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::worker::{self, Shared};
use super::{PodName, PodUid};

/// Which pods this kubelet runs.
#[derive(Debug, Clone)]
pub struct Selection {
    pub selector: String,
    pub namespace: Option<String>,
    pub node_name: String,
}

/// Runs until cancelled, then waits for every worker to stop its pod.
pub async fn run(shared: Arc<Shared>, selection: Selection, cancel: CancellationToken) {
    let api: Api<Pod> = match &selection.namespace {
        Some(namespace) => Api::namespaced(shared.client.clone(), namespace),
        None => Api::all(shared.client.clone()),
    };
    let config = watcher::Config::default().labels(&selection.selector);
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut manager = Manager {
        shared,
        selection,
        cancel: cancel.clone(),
        workers: HashMap::new(),
        finished: HashSet::new(),
        tasks: JoinSet::new(),
        listed: None,
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            event = events.next() => match event {
                Some(Ok(event)) => manager.event(event),
                Some(Err(error)) => tracing::warn!(%error, "pod watch failed; retrying"),
                None => break,
            },
            Some(done) = manager.tasks.join_next() => match done {
                Ok(uid) => {
                    manager.workers.remove(&uid);
                    manager.finished.insert(uid);
                }
                Err(error) => tracing::error!(%error, "pod worker panicked"),
            },
        }
    }
    // the workers hold child tokens of `cancel`: they are stopping their pods now. Their senders stay
    // alive until they are done, or a worker would take its pod for deleted and run the preStop hooks.
    while manager.tasks.join_next().await.is_some() {}
    drop(manager.workers);
}

struct Manager {
    shared: Arc<Shared>,
    selection: Selection,
    cancel: CancellationToken,
    /// The latest object of every pod with a worker.
    workers: HashMap<PodUid, watch::Sender<Arc<Pod>>>,
    /// Pods whose worker ended (deleted, or stopped); late events about them start nothing.
    finished: HashSet<PodUid>,
    tasks: JoinSet<PodUid>,
    /// UIDs seen since the watch (re)started listing; pods missing at the end of the list are gone.
    listed: Option<HashSet<PodUid>>,
}

impl Manager {
    fn event(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => self.listed = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(listed) = &mut self.listed {
                    listed.insert(PodUid::of(&pod));
                }
                self.apply(pod);
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.listed.take() {
                    self.workers.retain(|uid, _| listed.contains(uid));
                }
            }
            watcher::Event::Apply(pod) => self.apply(pod),
            watcher::Event::Delete(pod) => {
                let uid = PodUid::of(&pod);
                // dropping the sender tells the worker its pod is gone
                self.workers.remove(&uid);
                self.finished.remove(&uid);
            }
        }
    }

    fn apply(&mut self, pod: Pod) {
        let uid = PodUid::of(&pod);
        if self.finished.contains(&uid) {
            return;
        }
        let spec = pod.spec.as_ref();
        let node = spec.and_then(|spec| spec.node_name.as_deref());
        match node {
            None => {
                let gated = spec.is_some_and(|spec| {
                    spec.scheduling_gates
                        .as_ref()
                        .is_some_and(|g| !g.is_empty())
                });
                if pod.metadata.deletion_timestamp.is_none() && !gated {
                    let client = self.shared.client.clone();
                    let node_name = self.selection.node_name.clone();
                    tokio::spawn(bind(client, PodName::of(&pod), uid, node_name));
                }
            }
            Some(node) if node == self.selection.node_name => {
                let phase = pod
                    .status
                    .as_ref()
                    .and_then(|status| status.phase.as_deref());
                if matches!(phase, Some("Succeeded" | "Failed")) {
                    return;
                }
                let pod = Arc::new(pod);
                if let Some(sender) = self.workers.get(&uid) {
                    sender.send_replace(pod);
                } else {
                    let (sender, updates) = watch::channel(pod);
                    let shared = self.shared.clone();
                    let cancel = self.cancel.child_token();
                    let worker_uid = uid.clone();
                    self.tasks.spawn(async move {
                        worker::run(shared, updates, cancel).await;
                        worker_uid
                    });
                    self.workers.insert(uid, sender);
                }
            }
            Some(_) => {}
        }
    }
}

/// Binds the pod to the node, as the scheduler would. A pod bound meanwhile answers 409; fine.
async fn bind(client: Client, pod: PodName, uid: PodUid, node_name: String) {
    let api: Api<Pod> = Api::namespaced(client, &pod.namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(uid.0),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node_name.clone()),
            ..ObjectReference::default()
        },
    };
    let bound: Result<serde_json::Value, _> = api
        .create_subresource("binding", &pod.name, &PostParams::default(), &binding)
        .await;
    match bound {
        Ok(_) => tracing::info!(%pod, node = %node_name, "pod bound"),
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
            tracing::debug!(%pod, message = %status.message, "pod already bound or gone");
        }
        Err(error) => tracing::warn!(%pod, %error, "cannot bind pod"),
    }
}
