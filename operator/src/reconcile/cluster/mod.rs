//! The `MqttCluster` reconciler: validate → fetch → the credentials (admin token, CA, server and
//! peer certificates, users and ACL) → render → apply → scale → the StatefulSet → clean up →
//! brokers → status.
//!
//! Order matters where one object feeds another: the admin token and the CA come first (the
//! brokers and the users need them), then the certificates, the users and ACL, the configuration,
//! the Services and finally the StatefulSet, whose pod template carries the configuration's hash so
//! a configuration change rolls the pods one at a time (each drained by its preStop). What the spec
//! no longer asks for is deleted only after that, and the status is written last, so it describes
//! a reconcile that ran to its end.

mod admin;
mod auth;
mod fetch;
mod members;
mod optional;
mod scale;
mod status;
mod tls;

pub use auth::{is_running_and_ready, pod_ip};
pub use fetch::users_of;
pub use scale::ordinal;
pub use tls::{authority_of, clusters_using_secret};

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::apply::{apply, delete_if_present};
use super::context::Context;
use super::error::{Error, Result};
use super::{Outcome, finish, rejected_conditions, report_invalid};
use crate::crd::{MqttCluster, MqttClusterStatus};
use crate::render::cluster::{ClusterObjects, cluster_objects};
use crate::tls::CertificateAuthority;
use crate::validate::{InvalidSpec, TlsSource, ValidatedCluster, validate_cluster};
use auth::AuthFiles;
use fetch::{Existing, fetch};
use status::{Brokers, Observed};
use tls::{PeerCertificate, ServerTls};

/// How often a settled cluster is looked at again (members, certificate expiry).
const RESYNC: Duration = Duration::from_secs(60);
/// How soon while something is moving (scaling, rolling, pushing).
const SOON: Duration = Duration::from_secs(2);

pub async fn reconcile(cluster: Arc<MqttCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&cluster, &ctx).await;
    finish(&ctx, "cluster", &*cluster, started, result)
}

async fn reconcile_inner(object: &MqttCluster, ctx: &Context) -> Result<Outcome> {
    let cluster = match validate_cluster(object) {
        Ok(cluster) => cluster,
        Err(invalid) => return reject(ctx, object, invalid).await,
    };
    let existing = fetch(ctx, &cluster).await?;
    let token = admin::ensure_token(ctx, &cluster, existing.admin.as_ref()).await?;
    let ca = certificate_authority(ctx, object, &cluster, &existing).await?;
    let tls = server_certificate(ctx, object, &cluster, &existing, &ca).await?;
    let peer = peer_certificate(ctx, object, &cluster, &existing, &ca).await?;
    let auth = auth::users_and_acl(ctx, &cluster, &existing).await?;
    let domain = &ctx.settings.cluster_domain;
    let objects = cluster_objects(&cluster.names, cluster.spec, &cluster.owner, domain);
    apply_objects(ctx, &cluster, &objects).await?;
    let scale = scale::scale(ctx, object, &cluster, &existing, &token).await;
    let statefulset = apply_statefulset(ctx, &cluster, &objects, scale.replicas, &tls).await?;
    clean_up(ctx, &cluster).await?;
    let brokers = update_brokers(ctx, &existing.pods, &token, &auth).await;
    let observed = Observed {
        statefulset,
        ca_secret: clients_trust(&cluster, &tls),
        tls,
        auth,
        brokers,
        draining: scale.draining,
    };
    let renew_in = earliest(observed.tls.renew_in, peer.renew_in);
    update_status(ctx, object, &cluster, &observed, renew_in).await
}

/// An invalid cluster: `Ready=False` with the field in the message and a Warning event; nothing
/// is applied or removed until the cluster changes.
async fn reject(ctx: &Context, object: &MqttCluster, invalid: InvalidSpec) -> Result<Outcome> {
    report_invalid(ctx, object, &invalid).await;
    let previous = object.status.clone().unwrap_or_default();
    let generation = object.metadata.generation;
    let status = MqttClusterStatus {
        observed_generation: generation,
        conditions: rejected_conditions(&previous.conditions, generation, &invalid),
        ..previous
    };
    status::patch(ctx, object, status).await?;
    Ok(Outcome::Rejected(invalid))
}

/// The cluster's CA, and a `CaCreated` event when it was made now.
async fn certificate_authority(
    ctx: &Context,
    object: &MqttCluster,
    cluster: &ValidatedCluster<'_>,
    existing: &Existing,
) -> Result<CertificateAuthority> {
    let (ca, created) = tls::ensure_ca(ctx, cluster, existing.ca.as_ref()).await?;
    if created {
        let note = "created the cluster's CA";
        ctx.publish(object, EventType::Normal, "CaCreated", note)
            .await;
    }
    Ok(ca)
}

/// The server certificate from the spec's source, and a `CertificateIssued` event when the
/// operator issued one.
async fn server_certificate(
    ctx: &Context,
    object: &MqttCluster,
    cluster: &ValidatedCluster<'_>,
    existing: &Existing,
    ca: &CertificateAuthority,
) -> Result<ServerTls> {
    let hostnames = cluster.server_hostnames(&ctx.settings.cluster_domain);
    let current = existing.server_tls.as_ref();
    let server_tls = match &cluster.tls {
        TlsSource::None => ServerTls::default(),
        TlsSource::Secret(name) => tls::check_tls_secret(name, current),
        TlsSource::CertManager(issuer) => {
            optional::cert_manager_certificate(ctx, cluster, issuer, &hostnames, current).await?
        }
        TlsSource::Managed {
            validity,
            renew_before,
        } => {
            let durations = (*validity, *renew_before);
            tls::ensure_managed_certificate(ctx, cluster, current, ca, &hostnames, durations)
                .await?
        }
    };
    if server_tls.issued {
        let note = format!(
            "issued the server certificate, valid until {}",
            server_tls.not_after.clone().unwrap_or_default()
        );
        ctx.publish(object, EventType::Normal, "CertificateIssued", &note)
            .await;
    }
    Ok(server_tls)
}

/// The brokers' peer certificate, and a `PeerCertificateIssued` event when the operator issued one.
async fn peer_certificate(
    ctx: &Context,
    object: &MqttCluster,
    cluster: &ValidatedCluster<'_>,
    existing: &Existing,
    ca: &CertificateAuthority,
) -> Result<PeerCertificate> {
    let peer = tls::ensure_peer_certificate(ctx, cluster, existing.peer_tls.as_ref(), ca).await?;
    if let Some(not_after) = &peer.issued {
        let note = format!("issued the brokers' peer certificate, valid until {not_after}");
        ctx.publish(object, EventType::Normal, "PeerCertificateIssued", &note)
            .await;
    }
    Ok(peer)
}

/// The ConfigMap, the Services, the PodDisruptionBudget, the NetworkPolicy and the ServiceMonitor,
/// in that order.
async fn apply_objects(
    ctx: &Context,
    cluster: &ValidatedCluster<'_>,
    objects: &ClusterObjects<'_>,
) -> Result<()> {
    let namespace = &cluster.names.namespace;
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    apply(&config_maps, &objects.config_map)
        .await
        .map_err(Error::ApplyConfigMap)?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    apply(&services, &objects.headless_service)
        .await
        .map_err(Error::ApplyHeadlessService)?;
    apply(&services, &objects.client_service)
        .await
        .map_err(Error::ApplyClientService)?;
    if let Some(budget) = &objects.pod_disruption_budget {
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), namespace);
        apply(&budgets, budget)
            .await
            .map_err(Error::ApplyPodDisruptionBudget)?;
    }
    if let Some(policy) = &objects.network_policy {
        let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), namespace);
        apply(&policies, policy)
            .await
            .map_err(Error::ApplyNetworkPolicy)?;
    }
    if let Some(monitor) = &objects.service_monitor {
        optional::apply_service_monitor(ctx, cluster, monitor).await?;
    }
    Ok(())
}

/// The StatefulSet at the replicas the scale step chose, mounting the server certificate.
async fn apply_statefulset(
    ctx: &Context,
    cluster: &ValidatedCluster<'_>,
    objects: &ClusterObjects<'_>,
    replicas: i32,
    tls: &ServerTls,
) -> Result<StatefulSet> {
    let image = cluster
        .spec
        .image
        .clone()
        .unwrap_or_else(|| ctx.settings.broker_image.clone());
    let set = objects.statefulset(image, replicas, tls.secret.clone());
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &cluster.names.namespace);
    apply(&sets, &set).await.map_err(Error::ApplyStatefulSet)
}

/// Deletes what the spec no longer asks for: the PodDisruptionBudget, the NetworkPolicy and the
/// ServiceMonitor when turned off, the cert-manager Certificate when TLS no longer comes from
/// cert-manager.
async fn clean_up(ctx: &Context, cluster: &ValidatedCluster<'_>) -> Result<()> {
    if !cluster.spec.pod_disruption_budget.enabled {
        let budgets: Api<PodDisruptionBudget> =
            Api::namespaced(ctx.client.clone(), &cluster.names.namespace);
        delete_if_present(&budgets, &cluster.names.pdb())
            .await
            .map_err(Error::DeletePodDisruptionBudget)?;
    }
    if !cluster.spec.network_policy.enabled {
        let policies: Api<NetworkPolicy> =
            Api::namespaced(ctx.client.clone(), &cluster.names.namespace);
        delete_if_present(&policies, &cluster.names.network_policy())
            .await
            .map_err(Error::DeleteNetworkPolicy)?;
    }
    if !cluster.spec.metrics.service_monitor.enabled {
        optional::remove_service_monitor(ctx, cluster).await?;
    }
    if !matches!(cluster.tls, TlsSource::CertManager(_)) {
        optional::remove_certificate(ctx, cluster).await?;
    }
    Ok(())
}

/// Pushes the users and ACL to the running brokers and asks each about the cluster and itself.
async fn update_brokers(ctx: &Context, pods: &[Pod], token: &str, auth: &AuthFiles) -> Brokers {
    let running: Vec<Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    let auth_behind = auth::push_to_brokers(ctx, &running, token, auth).await;
    let answers = members::ask(ctx, &running, token).await;
    Brokers {
        auth_behind,
        ready_pods: answers.iter().filter(|a| a.pod_ready).count(),
        membership: members::merge(&answers),
    }
}

/// The Secret whose `ca.crt` clients trust. Without TLS the CA still signs client certificates;
/// with it, clients trust what signed the server certificate.
fn clients_trust(cluster: &ValidatedCluster<'_>, tls: &ServerTls) -> Option<String> {
    match cluster.tls {
        TlsSource::None => Some(cluster.names.ca_secret()),
        _ => tls.ca_secret.clone(),
    }
}

/// Writes the status and decides when to look again.
async fn update_status(
    ctx: &Context,
    object: &MqttCluster,
    cluster: &ValidatedCluster<'_>,
    observed: &Observed,
    renew_in: Option<Duration>,
) -> Result<Outcome> {
    let domain = &ctx.settings.cluster_domain;
    let status = status::build(object, &cluster.names, domain, observed);
    let settled = status::is_settled(&status, cluster.spec.replicas)
        && observed.draining.is_empty()
        && observed.brokers.auth_behind == 0;
    status::patch(ctx, object, status).await?;
    let next = next_reconcile(settled, renew_in);
    Ok(Outcome::Reconciled(Action::requeue(next)))
}

/// The sooner of two renewals, when there is any.
fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When to look at the cluster again: soon while something moves, at the resync otherwise, and
/// never later than a certificate's renewal (nothing else would wake the operator then).
fn next_reconcile(settled: bool, renew_in: Option<Duration>) -> Duration {
    let next = if settled { RESYNC } else { SOON };
    match renew_in {
        Some(renew_in) => next.min(renew_in.max(Duration::from_secs(1))),
        None => next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sooner_renewal_counts() {
        let (soon, later) = (Duration::from_secs(5), Duration::from_secs(50));
        assert_eq!(earliest(Some(later), Some(soon)), Some(soon));
        assert_eq!(earliest(None, Some(later)), Some(later));
        assert_eq!(earliest(Some(soon), None), Some(soon));
        assert_eq!(earliest(None, None), None);
    }

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
