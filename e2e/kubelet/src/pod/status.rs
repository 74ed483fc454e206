//! Pod status as a kubelet reports it, built from the containers' reports: phase, addresses, start
//! time, the conditions `PodReadyToStartContainers`, `Initialized`, `ContainersReady`, `Ready` and
//! `PodScheduled` (the StatefulSet controller counts ready replicas from `Ready`), and container
//! statuses. Pure; the worker writes the result through `pods/status` only when it changed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::downward::HOST_IP;

/// Where a container's process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        started_at: Timestamp,
        finished_at: Timestamp,
    },
}

impl RunState {
    pub fn waiting(reason: &str, message: impl Into<Option<String>>) -> Self {
        Self::Waiting {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    fn to_api(&self, container_id: Option<&String>) -> ContainerState {
        match self {
            Self::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..ContainerState::default()
            },
            Self::Running { started_at } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..ContainerState::default()
            },
            Self::Terminated {
                exit_code,
                reason,
                started_at,
                finished_at,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    reason: Some(reason.clone()),
                    started_at: Some(Time(*started_at)),
                    finished_at: Some(Time(*finished_at)),
                    container_id: container_id.cloned(),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            },
        }
    }
}

/// What a container's supervisor reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerReport {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: RunState,
    /// The last `Terminated` state, after a restart.
    pub last_state: Option<RunState>,
    pub ready: bool,
    pub started: bool,
    pub restart_count: i32,
}

impl ContainerReport {
    pub fn waiting(
        name: &str,
        image: &str,
        reason: &str,
        message: impl Into<Option<String>>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            image_id: String::new(),
            container_id: None,
            state: RunState::waiting(reason, message),
            last_state: None,
            ready: false,
            started: false,
            restart_count: 0,
        }
    }

    /// Running now, or ran before and is being restarted.
    fn has_run(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
            || self.restart_count > 0
            || self.last_state.is_some()
    }

    fn to_api(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            container_id: self.container_id.clone(),
            ready: self.ready,
            started: Some(self.started),
            restart_count: self.restart_count,
            state: Some(self.state.to_api(self.container_id.as_ref())),
            last_state: self.last_state.as_ref().map(|state| state.to_api(None)),
            ..ContainerStatus::default()
        }
    }
}

/// Builds a pod's status and remembers condition transition times and what was written last.
#[derive(Debug)]
pub struct StatusTracker {
    pod_ip: Ipv4Addr,
    start_time: Timestamp,
    transitions: BTreeMap<&'static str, (bool, Timestamp)>,
    written: Option<PodStatus>,
}

/// The containers' side of a pod status.
#[derive(Debug, Clone, Copy)]
pub struct Containers<'a> {
    pub init: &'a [ContainerReport],
    pub initialized: bool,
    pub app: &'a [ContainerReport],
    /// `spec.readinessGates` conditions are all True.
    pub gates_ready: bool,
}

impl StatusTracker {
    pub fn new(pod_ip: Ipv4Addr, start_time: Timestamp) -> Self {
        Self {
            pod_ip,
            start_time,
            transitions: BTreeMap::new(),
            written: None,
        }
    }

    /// The status for these containers as of `now` (only used for condition transitions).
    pub fn build(&mut self, containers: Containers<'_>, now: Timestamp) -> PodStatus {
        let all_ready = !containers.app.is_empty() && containers.app.iter().all(|c| c.ready);
        let phase = if containers.initialized && containers.app.iter().all(ContainerReport::has_run)
        {
            "Running"
        } else {
            "Pending"
        };
        let unready: Vec<&str> = containers
            .app
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.name.as_str())
            .collect();
        let not_ready = format!("containers with unready status: [{}]", unready.join(" "));
        let pending_init: Vec<&str> = containers
            .init
            .iter()
            .filter(|c| !matches!(c.state, RunState::Terminated { exit_code: 0, .. }))
            .map(|c| c.name.as_str())
            .collect();
        let conditions = vec![
            self.condition("PodReadyToStartContainers", true, None, now),
            self.condition(
                "Initialized",
                containers.initialized,
                Some((
                    "ContainersNotInitialized",
                    format!(
                        "containers with incomplete status: [{}]",
                        pending_init.join(" ")
                    ),
                )),
                now,
            ),
            self.condition(
                "Ready",
                all_ready && containers.gates_ready,
                Some(("ContainersNotReady", not_ready.clone())),
                now,
            ),
            self.condition(
                "ContainersReady",
                all_ready,
                Some(("ContainersNotReady", not_ready)),
                now,
            ),
            self.condition("PodScheduled", true, None, now),
        ];
        let ip = self.pod_ip.to_string();
        PodStatus {
            phase: Some(phase.to_owned()),
            conditions: Some(conditions),
            host_ip: Some(HOST_IP.to_owned()),
            host_ips: Some(vec![HostIP {
                ip: HOST_IP.to_owned(),
            }]),
            pod_ip: Some(ip.clone()),
            pod_ips: Some(vec![PodIP { ip }]),
            start_time: Some(Time(self.start_time)),
            init_container_statuses: (!containers.init.is_empty()).then(|| {
                containers
                    .init
                    .iter()
                    .map(ContainerReport::to_api)
                    .collect()
            }),
            container_statuses: Some(containers.app.iter().map(ContainerReport::to_api).collect()),
            ..PodStatus::default()
        }
    }

    /// Whether `status` differs from what was written last.
    pub fn changed(&self, status: &PodStatus) -> bool {
        self.written.as_ref() != Some(status)
    }

    pub fn mark_written(&mut self, status: PodStatus) {
        self.written = Some(status);
    }

    fn condition(
        &mut self,
        kind: &'static str,
        status: bool,
        when_false: Option<(&str, String)>,
        now: Timestamp,
    ) -> PodCondition {
        let since = match self.transitions.get(kind) {
            Some((previous, since)) if *previous == status => *since,
            _ => {
                self.transitions.insert(kind, (status, now));
                now
            }
        };
        let (reason, message) = match when_false {
            Some((reason, message)) if !status => (Some(reason.to_owned()), Some(message)),
            _ => (None, None),
        };
        PodCondition {
            type_: kind.to_owned(),
            status: if status { "True" } else { "False" }.to_owned(),
            last_transition_time: Some(Time(since)),
            reason,
            message,
            ..PodCondition::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(ready: bool, at: Timestamp) -> ContainerReport {
        ContainerReport {
            state: RunState::Running { started_at: at },
            ready,
            started: true,
            ..ContainerReport::waiting("broker", "tern-broker", "ContainerCreating", None)
        }
    }

    fn condition<'a>(status: &'a PodStatus, kind: &str) -> &'a PodCondition {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .expect("condition present")
    }

    fn containers(app: &[ContainerReport]) -> Containers<'_> {
        Containers {
            init: &[],
            initialized: true,
            app,
            gates_ready: true,
        }
    }

    #[test]
    fn waiting_pods_are_pending_with_the_reason() {
        let t0 = Timestamp::from_second(1_000).expect("timestamp");
        let mut tracker = StatusTracker::new(Ipv4Addr::new(127, 77, 0, 2), t0);
        let waiting = [ContainerReport::waiting(
            "broker",
            "tern-broker",
            "CreateContainerConfigError",
            Some("configmap \"x\" not found".to_owned()),
        )];
        let status = tracker.build(containers(&waiting), t0);
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.pod_ip.as_deref(), Some("127.77.0.2"));
        assert_eq!(condition(&status, "Ready").status, "False");
        let state = status
            .container_statuses
            .as_ref()
            .and_then(|s| s[0].state.clone())
            .expect("state");
        assert_eq!(
            state.waiting.and_then(|w| w.reason).as_deref(),
            Some("CreateContainerConfigError")
        );
    }

    #[test]
    fn ready_follows_the_containers_and_keeps_transition_times() {
        let t0 = Timestamp::from_second(1_000).expect("timestamp");
        let t1 = Timestamp::from_second(1_010).expect("timestamp");
        let t2 = Timestamp::from_second(1_020).expect("timestamp");
        let mut tracker = StatusTracker::new(Ipv4Addr::new(127, 77, 0, 2), t0);

        let first = tracker.build(containers(&[running(false, t0)]), t0);
        assert_eq!(first.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&first, "Ready").status, "False");
        tracker.mark_written(first.clone());
        let same = tracker.build(containers(&[running(false, t0)]), t1);
        assert!(!tracker.changed(&same));

        let ready = tracker.build(containers(&[running(true, t0)]), t1);
        assert!(tracker.changed(&ready));
        assert_eq!(condition(&ready, "Ready").status, "True");
        assert_eq!(
            condition(&ready, "ContainersReady").last_transition_time,
            Some(Time(t1))
        );
        assert_eq!(
            condition(&ready, "PodScheduled").last_transition_time,
            Some(Time(t0))
        );

        let again = tracker.build(containers(&[running(true, t0)]), t2);
        assert_eq!(again, ready, "nothing changed, nothing moves");
    }

    #[test]
    fn a_readiness_gate_holds_ready_back() {
        let t0 = Timestamp::from_second(1_000).expect("timestamp");
        let mut tracker = StatusTracker::new(Ipv4Addr::new(127, 77, 0, 2), t0);
        let app = [running(true, t0)];
        let status = tracker.build(
            Containers {
                gates_ready: false,
                ..containers(&app)
            },
            t0,
        );
        assert_eq!(condition(&status, "ContainersReady").status, "True");
        assert_eq!(condition(&status, "Ready").status, "False");
    }
}
