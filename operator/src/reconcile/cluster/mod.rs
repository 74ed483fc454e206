//! The `MqttCluster` reconciler: fetch → validate → render → apply → status.
//!
//! Order matters where one object feeds another: the admin token and the CA come first (the
//! brokers and the users need them), then the certificate, the users and ACL, the configuration,
//! the Services and finally the StatefulSet, whose pod template carries the configuration's hash so
//! a configuration change rolls the pods one at a time (each drained by its preStop).

mod auth;
mod optional;
mod scale;
mod status;
mod tls;

pub use auth::{is_running_and_ready, pod_ip, users_of};
pub use scale::ordinal;
pub use tls::clusters_using_secret;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use rand::RngExt;
use tracing::info;

use super::apply::{apply, delete_if_present, secret_data, secret_strings};
use super::context::Context;
use super::error::{Error, Result};
use crate::crd::MqttCluster;
use crate::render::config::broker_config;
use crate::render::disruption::pod_disruption_budget;
use crate::render::names::{ClusterNames, keys};
use crate::render::services::{client_service, headless_service};
use crate::render::statefulset::{StatefulSetInputs, statefulset};
use scale::{ScaleDown, drain_leaving, pods_from_ordinal};
use status::Observed;
use tls::ServerTls;

/// How often a settled cluster is looked at again (members, certificate expiry).
const RESYNC: Duration = Duration::from_secs(60);
/// How soon while something is moving (scaling, rolling, pushing).
const SOON: Duration = Duration::from_secs(2);

pub async fn reconcile(cluster: Arc<MqttCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&cluster, &ctx).await;
    ctx.metrics.reconciled(
        "cluster",
        started.elapsed(),
        result.as_ref().err().map(Error::kind),
    );
    result
}

async fn reconcile_inner(cluster: &MqttCluster, ctx: &Context) -> Result<Action> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    let names = ClusterNames::new(&cluster.name_any(), &namespace);
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("uid"))?;
    let spec = &cluster.spec;
    let client = ctx.client.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut observed = Observed::default();

    let token = ensure_admin_token(&secrets, &names, &owner).await?;
    let (ca, ca_created) = tls::ensure_ca(&secrets, &names, &owner).await?;
    if ca_created {
        publish(
            ctx,
            cluster,
            EventType::Normal,
            "CaCreated",
            "created the cluster's CA",
        )
        .await;
    }

    let hostnames = match &spec.tls {
        Some(tls) => names.server_hostnames(&ctx.settings.cluster_domain, &tls.extra_hostnames),
        None => Vec::new(),
    };
    let server_tls = match &spec.tls {
        None => ServerTls::default(),
        Some(tls) if tls.secret_name.is_some() => {
            tls::check_user_secret(&secrets, tls.secret_name.as_deref().unwrap_or_default()).await?
        }
        Some(tls) if tls.cert_manager.is_some() => {
            optional::cert_manager_certificate(ctx, &names, &owner, &hostnames, tls).await?
        }
        Some(tls) => {
            let managed = tls.managed.clone().unwrap_or_default();
            tls::ensure_managed_certificate(&secrets, &names, &owner, &ca, &hostnames, &managed)
                .await?
        }
    };
    if server_tls.issued {
        let note = format!(
            "issued the server certificate, valid until {}",
            server_tls.not_after.clone().unwrap_or_default()
        );
        publish(ctx, cluster, EventType::Normal, "CertificateIssued", &note).await;
    }
    observed.tls = server_tls.clone();
    // Without TLS the CA still signs client certificates; with it, clients trust what signed the
    // server certificate.
    observed.ca_secret = match &spec.tls {
        None => Some(names.ca_secret()),
        Some(_) => server_tls.ca_secret.clone(),
    };

    let auth_files = auth::render_and_store(ctx, &names, &owner).await?;
    observed.auth = Some(auth_files.clone());

    let config = broker_config(spec);
    let config_hash = super::fingerprint(&config);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    apply(
        &config_maps,
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some(names.config_map()),
                namespace: Some(namespace.clone()),
                labels: Some(names.labels("config")),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(keys::CONFIG.into(), config)])),
            ..Default::default()
        },
    )
    .await?;

    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    apply(&services, &headless_service(&names, spec, owner.clone())).await?;
    apply(&services, &client_service(&names, spec, owner.clone())).await?;

    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    match pod_disruption_budget(&names, spec, owner.clone()) {
        Some(budget) => drop(apply(&budgets, &budget).await?),
        None => delete_if_present(&budgets, &names.pdb()).await?,
    }
    optional::apply_service_monitor(ctx, cluster, &names, &owner).await?;
    if spec.tls.as_ref().is_none_or(|t| t.cert_manager.is_none()) {
        optional::remove_certificate(ctx, &names, &owner).await?;
    }

    let pods = list_pods(ctx, &names).await?;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let current = sets
        .get_opt(&names.statefulset())
        .await?
        .and_then(|s| s.spec.and_then(|s| s.replicas));
    let replicas = match current {
        Some(current) if current > spec.replicas => {
            let leaving: Vec<Pod> = pods_from_ordinal(&pods, &names.statefulset(), spec.replicas)
                .into_iter()
                .cloned()
                .collect();
            let timeout =
                Duration::from_secs(u64::try_from(spec.drain_timeout_seconds).unwrap_or(60));
            match drain_leaving(ctx, &leaving, &token, timeout).await {
                ScaleDown::Draining(waiting) => {
                    observed.draining = waiting;
                    current
                }
                ScaleDown::Ready { timed_out } => {
                    let note = if timed_out.is_empty() {
                        format!(
                            "drained and removed {} pod(s); scaling {current} → {}",
                            current - spec.replicas,
                            spec.replicas
                        )
                    } else {
                        format!(
                            "drain timed out on {}; scaling {current} → {} anyway",
                            timed_out.join(", "),
                            spec.replicas
                        )
                    };
                    let kind = if timed_out.is_empty() {
                        EventType::Normal
                    } else {
                        EventType::Warning
                    };
                    publish(ctx, cluster, kind, "ScaledDown", &note).await;
                    spec.replicas
                }
            }
        }
        Some(current) if current < spec.replicas => {
            let note = format!("scaling {current} → {}", spec.replicas);
            publish(ctx, cluster, EventType::Normal, "ScalingUp", &note).await;
            spec.replicas
        }
        _ => spec.replicas,
    };
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| ctx.settings.broker_image.clone());
    let set = apply(
        &sets,
        &statefulset(&StatefulSetInputs {
            names: &names,
            spec,
            owner: owner.clone(),
            image,
            replicas,
            config_hash,
            tls_secret: server_tls.secret.clone(),
        }),
    )
    .await?;
    observed.statefulset = Some(set);

    let running: Vec<Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    let (current_auth, behind) = auth::push_to_brokers(ctx, &running, &token, &auth_files).await;
    observed.auth_current = current_auth;
    observed.auth_behind = behind;
    observed.members = status::members(ctx, &running, &token).await;

    let status = status::build(cluster, &names, &ctx.settings.cluster_domain, &observed);
    let settled = status::is_settled(&status, spec.replicas);
    status::patch(ctx, cluster, status).await?;
    let settled = settled && observed.draining.is_empty() && behind == 0;
    Ok(Action::requeue(next_reconcile(
        settled,
        observed.tls.renew_in,
    )))
}

/// When to look at the cluster again: soon while something moves, at the resync otherwise, and
/// never later than the server certificate's renewal (nothing else would wake the operator then).
fn next_reconcile(settled: bool, renew_in: Option<Duration>) -> Duration {
    let next = if settled { RESYNC } else { SOON };
    match renew_in {
        Some(renew_in) => next.min(renew_in.max(Duration::from_secs(1))),
        None => next,
    }
}

/// The admin API token the brokers accept and the operator sends; made once.
async fn ensure_admin_token(
    secrets: &Api<Secret>,
    names: &ClusterNames,
    owner: &OwnerReference,
) -> Result<String> {
    if let Some(secret) = secrets.get_opt(&names.admin_secret()).await?
        && let Some(token) = secret_strings(&secret).remove(keys::ADMIN_TOKEN)
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let token = random_token();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(names.admin_secret()),
            namespace: Some(names.namespace.clone()),
            labels: Some(names.labels("admin")),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        data: Some(secret_data(BTreeMap::from([(
            keys::ADMIN_TOKEN.into(),
            token.clone(),
        )]))),
        ..Default::default()
    };
    apply(secrets, &secret).await?;
    info!(cluster = %names.name, "created the admin API token");
    Ok(token)
}

/// 32 random alphanumerics (about 190 bits) from the operating system's generator.
pub fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

async fn list_pods(ctx: &Context, names: &ClusterNames) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut pods = api
        .list(&ListParams::default().labels(&names.selector()))
        .await?
        .items;
    pods.sort_by_key(|p| ordinal(&p.name_any(), &names.statefulset()).unwrap_or(i32::MAX));
    Ok(pods)
}

/// Records a Kubernetes Event on the cluster; a failure to record is logged, not fatal.
pub async fn publish(
    ctx: &Context,
    cluster: &MqttCluster,
    kind: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_: kind,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, reason, "cannot record an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_renewal_wakes_the_operator_before_the_resync() {
        let renewal = Duration::from_secs(30);
        assert_eq!(next_reconcile(true, Some(renewal)), renewal);
        assert_eq!(next_reconcile(true, None), RESYNC);
        assert_eq!(next_reconcile(false, Some(renewal)), SOON);
        assert_eq!(
            next_reconcile(true, Some(Duration::ZERO)),
            Duration::from_secs(1),
            "an overdue renewal does not spin"
        );
        assert_eq!(
            next_reconcile(true, Some(Duration::from_secs(90 * 24 * 3600))),
            RESYNC
        );
    }
}
