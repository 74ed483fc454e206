//! `MqttCluster.status`: replicas, endpoints, members as the brokers report them, and the
//! `Ready`, `Progressing` and `Degraded` conditions with a reason naming what holds things up.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::auth::{AuthFiles, is_running_and_ready, pod_ip};
use super::tls::ServerTls;
use crate::crd::{Conditions, Endpoint, Member, MqttCluster, MqttClusterStatus, condition};
use crate::reconcile::apply::patch_status;
use crate::reconcile::context::Context;
use crate::reconcile::error::Result;
use crate::render::names::ClusterNames;

/// What one reconcile saw, for the status.
#[derive(Debug)]
pub struct Observed {
    /// The StatefulSet as the server holds it after the apply.
    pub statefulset: StatefulSet,
    pub tls: ServerTls,
    /// The Secret whose `ca.crt` clients trust.
    pub ca_secret: Option<String>,
    pub auth: AuthFiles,
    pub brokers: Brokers,
    /// Leaving pods still draining before a scale-down.
    pub draining: Vec<String>,
}

/// What the running brokers have and say.
#[derive(Debug, Default)]
pub struct Brokers {
    /// Running pods that do not have the current users and ACL yet.
    pub auth_behind: usize,
    pub members: Vec<Member>,
}

/// Asks each running broker about itself.
pub async fn members(ctx: &Context, pods: &[Pod], token: &str) -> Vec<Member> {
    let mut members = Vec::new();
    for pod in pods {
        let mut member = Member {
            pod: pod.name_any(),
            ready: is_running_and_ready(pod),
            version: None,
            connections: None,
            state: None,
        };
        if let Some(ip) = pod_ip(pod)
            && let Ok(info) = ctx.broker_api.info(ip, token).await
        {
            member.version = Some(info.version);
            member.connections = Some(info.connections);
            member.state = Some(if info.draining { "draining" } else { "running" }.into());
        }
        members.push(member);
    }
    members
}

pub fn build(
    cluster: &MqttCluster,
    names: &ClusterNames,
    cluster_domain: &str,
    observed: &Observed,
) -> MqttClusterStatus {
    let spec = &cluster.spec;
    let previous = cluster.status.clone().unwrap_or_default();
    let set = &observed.statefulset;
    let set_status = set.status.clone().unwrap_or_default();
    let set_generation_seen = set_status.observed_generation == set.metadata.generation;
    let replicas = set_status.replicas;
    // The StatefulSet's count and the pods this reconcile looked at can differ by a moment; report
    // the lower so `Ready` never runs ahead of the members listed beside it.
    let members_ready = observed.brokers.members.iter().filter(|m| m.ready).count();
    let ready = set_status
        .ready_replicas
        .unwrap_or(0)
        .min(i32::try_from(members_ready).unwrap_or(i32::MAX));
    let updated = set_status.updated_replicas.unwrap_or(0);
    let rolled = set_status.current_revision.is_some()
        && set_status.current_revision == set_status.update_revision;
    let host = names.service_host(cluster_domain);
    let endpoints = spec
        .listeners
        .iter()
        .map(|l| Endpoint {
            listener: l.name.clone(),
            url: format!(
                "{}://{host}:{}{}",
                l.protocol.scheme(),
                l.port,
                if l.protocol.uses_websocket() {
                    l.path.clone().unwrap_or_else(|| "/mqtt".into())
                } else {
                    String::new()
                }
            ),
        })
        .collect();

    let mut conditions = Conditions::new(&previous.conditions, cluster.metadata.generation);
    let mut problems: Vec<(&str, String)> = Vec::new();
    if let Some((reason, message)) = &observed.tls.problem {
        problems.push((reason, message.clone()));
    }
    if let Some(problem) = observed.auth.acl_problem.clone() {
        problems.push((
            "InvalidAcl",
            format!("{problem}; the previous ACL stays in force"),
        ));
    }
    match problems.first() {
        Some((reason, _)) => {
            let message = problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            conditions.set(condition::DEGRADED, true, reason, message);
        }
        None => conditions.set(condition::DEGRADED, false, "AsExpected", ""),
    }

    let progressing: Option<(&str, String)> = if !observed.draining.is_empty() {
        Some((
            "Draining",
            format!(
                "draining {} before scale-down",
                observed.draining.join(", ")
            ),
        ))
    } else if !set_generation_seen || replicas != spec.replicas {
        Some(("Scaling", format!("{replicas} of {} pods", spec.replicas)))
    } else if !rolled || updated < spec.replicas {
        Some((
            "RollingUpdate",
            format!("{updated} of {} pods updated", spec.replicas),
        ))
    } else if ready < spec.replicas {
        Some((
            "WaitingForPods",
            format!("{ready} of {} pods ready", spec.replicas),
        ))
    } else if observed.brokers.auth_behind > 0 {
        Some((
            "PushingAuth",
            format!(
                "{} broker(s) do not have the current users and ACL yet",
                observed.brokers.auth_behind
            ),
        ))
    } else {
        None
    };
    match &progressing {
        Some((reason, message)) => {
            conditions.set(condition::PROGRESSING, true, reason, message.clone())
        }
        None => conditions.set(
            condition::PROGRESSING,
            false,
            "Settled",
            "all pods run the current spec",
        ),
    }
    match (&progressing, problems.first()) {
        (None, None) => conditions.set(
            condition::READY,
            true,
            "Ready",
            format!("{ready} of {} brokers ready", spec.replicas),
        ),
        (_, Some((reason, message))) => {
            conditions.set(condition::READY, false, reason, message.clone())
        }
        (Some((reason, message)), None) => {
            conditions.set(condition::READY, false, reason, message.clone())
        }
    }

    let auth_revision = if observed.brokers.auth_behind == 0 {
        Some(observed.auth.revision.clone())
    } else {
        previous.auth_revision.clone()
    };
    MqttClusterStatus {
        observed_generation: cluster.metadata.generation,
        conditions: conditions.into_vec(),
        replicas,
        ready_replicas: ready,
        selector: names.selector(),
        endpoints,
        members: observed.brokers.members.clone(),
        ca_secret: observed.ca_secret.clone(),
        certificate_not_after: observed.tls.not_after.clone(),
        auth_revision,
    }
}

/// Whether nothing is moving: the next look can wait.
pub fn is_settled(status: &MqttClusterStatus, replicas: i32) -> bool {
    status.ready_replicas == replicas
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == condition::PROGRESSING && c.status == "False")
}

pub async fn patch(ctx: &Context, cluster: &MqttCluster, status: MqttClusterStatus) -> Result<()> {
    patch_status(&ctx.client, cluster, cluster.status.as_ref(), &status).await
}
