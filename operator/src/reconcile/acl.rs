//! The `MqttAcl` reconciler: checks the rules with the broker's own parser and reports the result.
//! The cluster reconciler renders valid ACLs into the brokers' ACL file; while any ACL of a
//! cluster is invalid it keeps the previous file (failing closed), and this status says why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::apply::patch_status;
use super::context::Context;
use super::error::{Error, Result};
use crate::crd::{Conditions, MqttAcl, MqttAclStatus, MqttCluster, condition};
use crate::render::auth::validate_acl;

pub async fn reconcile(acl: Arc<MqttAcl>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&acl, &ctx).await;
    ctx.metrics.reconciled(
        "acl",
        started.elapsed(),
        result.as_ref().err().map(Error::kind),
    );
    result
}

async fn reconcile_inner(acl: &MqttAcl, ctx: &Context) -> Result<Action> {
    let namespace = acl.namespace().ok_or(Error::MissingField("namespace"))?;
    let clusters: Api<MqttCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let cluster = clusters.get_opt(&acl.spec.cluster_ref.name).await?;
    let validated = validate_acl(acl);
    let previous = acl.status.clone().unwrap_or_default();
    let mut conditions = Conditions::new(&previous.conditions, acl.metadata.generation);
    let problem = match (&cluster, &validated) {
        (_, Err(invalid)) => Some(("InvalidRule", invalid.to_string())),
        (None, Ok(_)) => Some((
            "ClusterNotFound",
            format!(
                "spec.clusterRef: MqttCluster {:?} does not exist",
                acl.spec.cluster_ref.name
            ),
        )),
        (Some(_), Ok(_)) => None,
    };
    match &problem {
        Some((reason, message)) => {
            conditions.set(condition::READY, false, reason, message.clone());
            conditions.set(condition::DEGRADED, true, reason, message.clone());
        }
        None => {
            conditions.set(
                condition::READY,
                true,
                "Valid",
                "rules are valid and rendered into the cluster's ACL",
            );
            conditions.set(condition::DEGRADED, false, "AsExpected", "");
        }
    }
    conditions.set(condition::PROGRESSING, false, "Settled", "");
    let status = MqttAclStatus {
        observed_generation: acl.metadata.generation,
        conditions: conditions.into_vec(),
        rules: validated
            .ok()
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(0),
    };
    patch_status(&ctx.client, acl, acl.status.as_ref(), &status).await?;
    Ok(Action::requeue(Duration::from_secs(600)))
}
