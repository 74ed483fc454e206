//! One pod on this node, from admission to deletion; the only writer of its status.
//!
//! 1. Admission: an address from the registry.
//! 2. Start (retried every second, and at once when a ConfigMap or Secret changes): service account
//!    tokens, volumes materialized, the hosts file written (kept current by [`crate::dns`]),
//!    containers planned. A failure leaves the pod Pending with the
//!    containers waiting (`CreateContainerConfigError`, `ErrImagePull`).
//! 3. Init containers one after the other, then every app container under its own supervisor.
//! 4. While running: volumes refreshed when their ConfigMaps or Secrets change; status written through
//!    `pods/status` whenever it changes.
//! 5. End: on `deletionTimestamp`, every container stops within the grace period (preStop, SIGTERM,
//!    SIGKILL), then the pod object is deleted with `gracePeriodSeconds=0` and a UID precondition. On
//!    kubelet shutdown the processes stop (no preStop, 10 s grace) and the object is left alone.
//!    Either way the address is freed and the pod's UID directory removed.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Pod, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::container::{self, ContainerPlan, Exit, PodContext, Slot, StopRequest};
use super::plan::{self, PlanError, PlanInput, PodPlan};
use super::process::Launcher;
use super::status::{ContainerReport, Containers, RunState, StatusTracker};
use super::{PodName, PodUid};
use crate::config::BinaryMap;
use crate::dns::ClusterDns;
use crate::events::{Event, EventLog};
use crate::registry::Registry;
use crate::rewrite::PodRewriter;
use crate::sources::Sources;
use crate::volume::{
    self, PayloadContext, PodDirs, SourceKind, TokenKey, Tokens, VolumeError, VolumeSet,
};

const START_RETRY: Duration = Duration::from_secs(1);
const STATUS_RETRY: Duration = Duration::from_secs(1);
/// Grace for the processes when the kubelet itself shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Beyond the grace period, how long to wait for supervisors before abandoning them.
const STOP_SLACK: Duration = Duration::from_secs(10);
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// What every pod worker shares.
pub struct Shared {
    pub client: Client,
    pub root: PathBuf,
    pub binaries: BinaryMap,
    pub sources: Sources,
    pub registry: Arc<Registry>,
    pub events: Arc<EventLog>,
    pub launcher: Launcher,
    pub dns: Arc<ClusterDns>,
}

/// Why a pod cannot start yet.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("service account token for {key:?}: {source}")]
    Token { key: TokenKey, source: kube::Error },
}

impl StartError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Plan(error) => error.reason(),
            Self::Volume(_) | Self::Token { .. } => "CreateContainerConfigError",
        }
    }
}

/// Why the worker stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// `deletionTimestamp` is set: stop gracefully, then delete the object.
    Deleted,
    /// The object is gone from the API (force-deleted, or no longer selected).
    Gone,
    /// The kubelet is shutting down.
    Shutdown,
}

/// Runs the pod until it is deleted or the kubelet shuts down. `updates` carries the latest object;
/// its sender is dropped when the pod leaves the API.
pub async fn run(
    shared: Arc<Shared>,
    mut updates: watch::Receiver<Arc<Pod>>,
    cancel: CancellationToken,
) {
    let pod = updates.borrow_and_update().clone();
    let name = PodName::of(&pod);
    let uid = PodUid::of(&pod);
    let Some(ip) = shared.registry.admit(&name, &uid) else {
        tracing::error!(pod = %name, "no free pod address; the pod is not run");
        return;
    };
    tracing::info!(pod = %name, %ip, "pod admitted");
    let (reports_tx, mut reports_rx) = mpsc::channel(64);
    let mut sources = shared.sources.subscribe();
    let mut worker = Worker::new(shared, pod, name, uid, ip);
    let ending = loop {
        if worker.pod.metadata.deletion_timestamp.is_some() {
            break Ending::Deleted;
        }
        if worker.start_due() {
            worker.try_start(&reports_tx).await;
        }
        let status_written = worker.write_status().await;
        let wake = worker.wake_at(status_written);
        tokio::select! {
            biased;
            () = cancel.cancelled() => break Ending::Shutdown,
            changed = updates.changed() => {
                if changed.is_err() {
                    break Ending::Gone;
                }
                worker.pod = updates.borrow_and_update().clone();
            }
            Ok(()) = sources.changed() => worker.sources_changed(),
            Some((slot, report)) = reports_rx.recv() => worker.report(slot, report, &reports_tx),
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
        }
    };
    // supervisors may still report while stopping; they must never block on a full channel
    drop(reports_rx);
    worker.end(ending).await;
}

/// A running supervisor.
struct Handle {
    stop: Option<oneshot::Sender<StopRequest>>,
    task: JoinHandle<Exit>,
}

/// How far the pod got.
enum Phase {
    /// Not started; the next attempt is due at this instant.
    Waiting(Instant),
    /// Init container `running` of `plan.init` runs; the app containers wait.
    Init {
        running: usize,
        plan: PodPlan,
    },
    Running,
}

/// The materialized volumes and what refreshes them.
struct Volumes {
    set: VolumeSet,
    rewriter: PodRewriter,
    fingerprint: Vec<(SourceKind, String, Option<String>)>,
}

struct Worker {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    name: PodName,
    uid: PodUid,
    ip: Ipv4Addr,
    dirs: PodDirs,
    api: Api<Pod>,
    status: StatusTracker,
    status_retry: Option<Instant>,
    tokens: Tokens,
    volumes: Option<Volumes>,
    init: Vec<ContainerReport>,
    app: Vec<ContainerReport>,
    phase: Phase,
    containers: Vec<Handle>,
    /// The `start` event was recorded: every app container has run.
    started: bool,
    last_error: Option<String>,
}

impl Worker {
    fn new(shared: Arc<Shared>, pod: Arc<Pod>, name: PodName, uid: PodUid, ip: Ipv4Addr) -> Self {
        let dirs = PodDirs::new(&shared.root, name.clone(), uid.clone());
        let api = Api::namespaced(shared.client.clone(), &name.namespace);
        let spec = pod.spec.clone().unwrap_or_default();
        let waiting = |c: &Container, reason: &str| {
            ContainerReport::waiting(
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                reason,
                None,
            )
        };
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| waiting(c, "PodInitializing"))
            .collect();
        let app = spec
            .containers
            .iter()
            .map(|c| waiting(c, "ContainerCreating"))
            .collect();
        Self {
            status: StatusTracker::new(ip, Timestamp::now()),
            shared,
            pod,
            name,
            uid,
            ip,
            dirs,
            api,
            status_retry: None,
            tokens: Tokens::new(),
            volumes: None,
            init,
            app,
            phase: Phase::Waiting(Instant::now()),
            containers: Vec::new(),
            started: false,
            last_error: None,
        }
    }

    fn start_due(&self) -> bool {
        matches!(self.phase, Phase::Waiting(at) if at <= Instant::now())
    }

    /// The next timed wake-up: a start attempt or a status write to retry.
    fn wake_at(&mut self, status_written: bool) -> Option<Instant> {
        self.status_retry = (!status_written).then(|| Instant::now() + STATUS_RETRY);
        let start = match self.phase {
            Phase::Waiting(at) => Some(at),
            _ => None,
        };
        match (start, self.status_retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn try_start(&mut self, reports: &mpsc::Sender<(Slot, ContainerReport)>) {
        let plan = match self.prepare().await {
            Ok(plan) => plan,
            Err(error) => {
                let message = error.to_string();
                if self.last_error.as_ref() != Some(&message) {
                    tracing::warn!(pod = %self.name, reason = error.reason(), %message, "pod cannot start yet");
                }
                for report in self.init.iter_mut().chain(self.app.iter_mut()) {
                    report.state = RunState::waiting(error.reason(), message.clone());
                }
                self.last_error = Some(message);
                self.phase = Phase::Waiting(Instant::now() + START_RETRY);
                return;
            }
        };
        self.last_error = None;
        let mut plan = plan;
        if plan.init.is_empty() {
            self.start_app(std::mem::take(&mut plan.app), reports);
        } else {
            for report in &mut self.app {
                report.state = RunState::waiting("PodInitializing", None);
            }
            let first = plan.init[0].clone();
            self.spawn(first, Slot::Init(0), reports);
            self.phase = Phase::Init { running: 0, plan };
        }
    }

    /// Tokens, volumes and container plans; nothing is started.
    async fn prepare(&mut self) -> Result<PodPlan, StartError> {
        self.fetch_tokens().await?;
        let pod = self.pod.clone();
        let set = VolumeSet::plan(&self.dirs, &pod)?;
        let rewriter = PodRewriter::new(set.mounts(&pod)?, self.ip);
        let uid_dir = self.dirs.uid_dir();
        std::fs::create_dir_all(&uid_dir).map_err(|source| VolumeError::Io {
            path: uid_dir,
            source,
        })?;
        let fingerprint = volume::fingerprint(&pod, &self.shared.sources);
        let payload = PayloadContext {
            pod: &pod,
            pod_ip: self.ip,
            lookup: &self.shared.sources,
            rewriter: &rewriter,
            tokens: &self.tokens,
        };
        set.materialize(&pod, &payload)?;
        let hosts = self.shared.launcher.mounts_hosts_files().then(|| {
            let path = self.dirs.hosts_file();
            self.shared
                .dns
                .attach(&pod, &self.uid, self.ip, path.clone());
            path
        });
        let plan = plan::plan(&PlanInput {
            pod: &pod,
            pod_ip: self.ip,
            dirs: &self.dirs,
            rewriter: &rewriter,
            binaries: &self.shared.binaries,
            lookup: &self.shared.sources,
            hosts,
        })?;
        self.volumes = Some(Volumes {
            set,
            rewriter,
            fingerprint,
        });
        Ok(plan)
    }

    /// Asks for the service account tokens the projected volumes need, once per pod.
    async fn fetch_tokens(&mut self) -> Result<(), StartError> {
        let account = self
            .pod
            .spec
            .as_ref()
            .and_then(|spec| spec.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned());
        let accounts: Api<ServiceAccount> =
            Api::namespaced(self.shared.client.clone(), &self.name.namespace);
        for key in volume::payload::token_requests(&self.pod) {
            if self.tokens.contains_key(&key) {
                continue;
            }
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: key.audience.iter().cloned().collect(),
                    expiration_seconds: key.expiration_seconds,
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(self.name.name.clone()),
                        uid: Some(self.uid.0.clone()),
                    }),
                },
                ..TokenRequest::default()
            };
            let issued = accounts
                .create_token_request(&account, &PostParams::default(), &request)
                .await
                .map_err(|source| StartError::Token {
                    key: key.clone(),
                    source,
                })?;
            let token = issued.status.map(|status| status.token).unwrap_or_default();
            self.tokens.insert(key, token);
        }
        Ok(())
    }

    fn start_app(
        &mut self,
        plans: Vec<ContainerPlan>,
        reports: &mpsc::Sender<(Slot, ContainerReport)>,
    ) {
        for (index, plan) in plans.into_iter().enumerate() {
            self.spawn(plan, Slot::App(index), reports);
        }
        self.phase = Phase::Running;
    }

    fn spawn(
        &mut self,
        plan: ContainerPlan,
        slot: Slot,
        reports: &mpsc::Sender<(Slot, ContainerReport)>,
    ) {
        let (stop, stop_rx) = oneshot::channel();
        let ctx = PodContext {
            pod: self.name.clone(),
            uid: self.uid.clone(),
            launcher: self.shared.launcher.clone(),
            events: self.shared.events.clone(),
            registry: self.shared.registry.clone(),
            reports: reports.clone(),
            restart_grace: self.grace(),
        };
        let task = tokio::spawn(container::supervise(plan, slot, ctx, stop_rx));
        self.containers.push(Handle {
            stop: Some(stop),
            task,
        });
    }

    /// A supervisor's report: kept for the status; an init container's success starts the next step.
    fn report(
        &mut self,
        slot: Slot,
        report: ContainerReport,
        reports: &mpsc::Sender<(Slot, ContainerReport)>,
    ) {
        match slot {
            Slot::App(index) => {
                if let Some(known) = self.app.get_mut(index) {
                    *known = report;
                }
                let all_ran = self
                    .app
                    .iter()
                    .all(|c| matches!(c.state, RunState::Running { .. }) || c.restart_count > 0);
                if all_ran && !self.started {
                    self.started = true;
                    self.shared.events.record(&Event::Start {
                        pod: self.name.clone(),
                        ip: self.ip,
                    });
                }
            }
            Slot::Init(index) => {
                let completed = matches!(report.state, RunState::Terminated { exit_code: 0, .. });
                if let Some(known) = self.init.get_mut(index) {
                    *known = report;
                }
                if completed {
                    self.init_completed(index, reports);
                }
            }
        }
    }

    fn init_completed(&mut self, index: usize, reports: &mpsc::Sender<(Slot, ContainerReport)>) {
        let phase = std::mem::replace(&mut self.phase, Phase::Running);
        let Phase::Init { running, mut plan } = phase else {
            self.phase = phase;
            return;
        };
        if running != index {
            self.phase = Phase::Init { running, plan };
            return;
        }
        let next = index + 1;
        if let Some(next_plan) = plan.init.get(next).cloned() {
            self.spawn(next_plan, Slot::Init(next), reports);
            self.phase = Phase::Init {
                running: next,
                plan,
            };
        } else {
            self.start_app(std::mem::take(&mut plan.app), reports);
        }
    }

    /// A ConfigMap or Secret changed: retry a waiting pod now, refresh a started pod's files.
    fn sources_changed(&mut self) {
        if let Phase::Waiting(at) = &mut self.phase {
            *at = Instant::now();
            return;
        }
        let Some(volumes) = &mut self.volumes else {
            return;
        };
        let fingerprint = volume::fingerprint(&self.pod, &self.shared.sources);
        if fingerprint == volumes.fingerprint {
            return;
        }
        let payload = PayloadContext {
            pod: &self.pod,
            pod_ip: self.ip,
            lookup: &self.shared.sources,
            rewriter: &volumes.rewriter,
            tokens: &self.tokens,
        };
        match volumes.set.materialize(&self.pod, &payload) {
            Ok(changed) => {
                if !changed.is_empty() {
                    tracing::info!(pod = %self.name, volumes = ?changed, "volumes refreshed");
                }
                volumes.fingerprint = fingerprint;
            }
            // kubelet keeps the last good files when a source disappears or breaks
            Err(error) => {
                tracing::warn!(pod = %self.name, %error, "cannot refresh volumes; keeping the last files")
            }
        }
    }

    /// Writes the status if it changed; `false` when the write failed and should be retried.
    async fn write_status(&mut self) -> bool {
        let initialized = self.init.is_empty() || matches!(self.phase, Phase::Running);
        let containers = Containers {
            init: &self.init,
            initialized,
            app: &self.app,
            gates_ready: self.gates_ready(),
        };
        let status = self.status.build(containers, Timestamp::now());
        if !self.status.changed(&status) {
            return true;
        }
        let patch = serde_json::json!({ "status": &status });
        match self
            .api
            .patch_status(
                &self.name.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                self.status.mark_written(status);
                true
            }
            Err(kube::Error::Api(status)) if status.code == 404 => true,
            Err(error) => {
                tracing::warn!(pod = %self.name, %error, "cannot write pod status; retrying");
                false
            }
        }
    }

    /// Every `spec.readinessGates` condition is True in the pod's status.
    fn gates_ready(&self) -> bool {
        let gates = self
            .pod
            .spec
            .iter()
            .flat_map(|spec| spec.readiness_gates.iter().flatten());
        let conditions = self
            .pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten());
        let conditions: Vec<_> = conditions.collect();
        gates.into_iter().all(|gate| {
            conditions
                .iter()
                .any(|c| c.type_ == gate.condition_type && c.status == "True")
        })
    }

    /// The deletion's grace period, else `terminationGracePeriodSeconds`, else 30 s.
    fn grace(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    }

    async fn end(mut self, ending: Ending) {
        let request = match ending {
            Ending::Shutdown => StopRequest {
                grace: SHUTDOWN_GRACE,
                run_pre_stop: false,
            },
            Ending::Deleted | Ending::Gone => StopRequest {
                grace: self.grace(),
                run_pre_stop: true,
            },
        };
        tracing::info!(pod = %self.name, ?ending, grace = ?request.grace, "stopping pod");
        let handles = std::mem::take(&mut self.containers);
        let had_processes = !handles.is_empty();
        let mut tasks = Vec::with_capacity(handles.len());
        for mut handle in handles {
            if let Some(stop) = handle.stop.take() {
                let _ = stop.send(request);
            }
            tasks.push(handle.task);
        }
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(request.grace + STOP_SLACK, join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!(pod = %self.name, "containers did not stop in time; abandoning them");
            // aborting drops the processes, and kill_on_drop kills them
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
        if had_processes {
            self.shared.events.record(&Event::Stop {
                pod: self.name.clone(),
            });
        }
        if ending == Ending::Deleted {
            self.delete_object().await;
        }
        self.shared.dns.detach(&self.uid);
        self.shared.registry.release(&self.name, &self.uid, self.ip);
        let uid_dir = self.dirs.uid_dir();
        if let Err(error) = std::fs::remove_dir_all(&uid_dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %uid_dir.display(), %error, "cannot remove the pod directory");
        }
    }

    /// Deletes the pod object now that its processes are gone (what kubelet does after a graceful stop).
    async fn delete_object(&self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.0.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&self.name.name, &params).await {
            Ok(_) => tracing::info!(pod = %self.name, "pod deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => tracing::warn!(pod = %self.name, %error, "cannot delete the pod object"),
        }
    }
}
