//! Pods on this node: the manager watches and binds them, one worker per pod runs its containers.
//!
//! - `manager` — watches the selected pods, binds unscheduled ones to the node, starts and ends workers;
//! - `worker` — one pod from start to deletion: address, volumes, containers, status, termination;
//! - `container` — one container's process: start, restart with backoff, probes, preStop and stop;
//! - `plan` — a pod's containers resolved to local executables, args, env, probes and hooks;
//! - `process`, `probe`, `env`, `status` — the parts those are made of.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

pub(crate) mod container;
pub(crate) mod env;
pub(crate) mod manager;
pub(crate) mod plan;
pub(crate) mod probe;
pub(crate) mod process;
pub(crate) mod status;
pub(crate) mod worker;

/// `namespace/name` of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

impl PodName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub(crate) fn of(pod: &Pod) -> Self {
        Self::new(
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A pod's UID, which tells two pods of the same name apart (a StatefulSet reuses names).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodUid(pub String);

impl PodUid {
    pub(crate) fn of(pod: &Pod) -> Self {
        Self(pod.metadata.uid.clone().unwrap_or_default())
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
