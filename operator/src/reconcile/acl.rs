//! The `MqttAcl` reconciler: checks the rules with the broker's own parser and reports the result.
//! The cluster reconciler renders valid ACLs into the brokers' ACL file; while any ACL of a
//! cluster is invalid it keeps the previous file (failing closed), and this status says why.
//!
//! validate (an invalid rule is `InvalidRule`) → fetch the cluster → status. Nothing is applied
//! here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::controller::Action;

use super::apply::patch_status;
use super::context::Context;
use super::error::{Error, Result};
use super::{Outcome, finish, rejected_conditions, report_invalid};
use crate::crd::{Conditions, MqttAcl, MqttAclStatus, MqttCluster, condition};
use crate::validate::{InvalidSpec, ValidatedAcl, validate_acl};

/// How often a valid ACL is looked at again; its cluster's changes wake it sooner.
const RESYNC: Duration = Duration::from_secs(600);

pub async fn reconcile(acl: Arc<MqttAcl>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&acl, &ctx).await;
    finish(&ctx, "acl", &*acl, started, result)
}

async fn reconcile_inner(object: &MqttAcl, ctx: &Context) -> Result<Outcome> {
    let acl = match validate_acl(object) {
        Ok(acl) => acl,
        Err(invalid) => return reject(ctx, object, invalid).await,
    };
    let cluster_exists = fetch_cluster(ctx, &acl).await?.is_some();
    update_status(ctx, object, &acl, cluster_exists).await
}

async fn fetch_cluster(ctx: &Context, acl: &ValidatedAcl) -> Result<Option<MqttCluster>> {
    let clusters: Api<MqttCluster> = Api::namespaced(ctx.client.clone(), &acl.cluster.namespace);
    clusters
        .get_opt(&acl.cluster.name)
        .await
        .map_err(|source| Error::ReadCluster {
            name: acl.cluster.name.clone(),
            source,
        })
}

/// An invalid ACL (usually a rule the broker refuses, reason `InvalidRule`): `Ready=False` with
/// the rule in the message and a Warning event. Its cluster keeps the previous ACL file meanwhile.
async fn reject(ctx: &Context, object: &MqttAcl, invalid: InvalidSpec) -> Result<Outcome> {
    report_invalid(ctx, object, &invalid).await;
    let previous = object.status.clone().unwrap_or_default();
    let generation = object.metadata.generation;
    let status = MqttAclStatus {
        observed_generation: generation,
        conditions: rejected_conditions(&previous.conditions, generation, &invalid),
        rules: 0,
    };
    patch_status(&ctx.client, object, object.status.as_ref(), &status).await?;
    Ok(Outcome::Rejected(invalid))
}

async fn update_status(
    ctx: &Context,
    object: &MqttAcl,
    acl: &ValidatedAcl,
    cluster_exists: bool,
) -> Result<Outcome> {
    let previous = object.status.clone().unwrap_or_default();
    let mut conditions = Conditions::new(&previous.conditions, object.metadata.generation);
    if cluster_exists {
        conditions.set(
            condition::READY,
            true,
            "Valid",
            "rules are valid and rendered into the cluster's ACL",
        );
        conditions.set(condition::DEGRADED, false, "AsExpected", "");
    } else {
        let message = format!(
            "spec.clusterRef: MqttCluster {:?} does not exist",
            acl.cluster.name
        );
        conditions.set(condition::READY, false, "ClusterNotFound", message.clone());
        conditions.set(condition::DEGRADED, true, "ClusterNotFound", message);
    }
    conditions.set(condition::PROGRESSING, false, "Settled", "");
    let status = MqttAclStatus {
        observed_generation: object.metadata.generation,
        conditions: conditions.into_vec(),
        rules: i32::try_from(acl.lines).unwrap_or(0),
    };
    patch_status(&ctx.client, object, object.status.as_ref(), &status).await?;
    Ok(Outcome::Reconciled(Action::requeue(RESYNC)))
}
