//! The objects of other projects' kinds a cluster may have: cert-manager's `Certificate` and the
//! Prometheus Operator's `ServiceMonitor`. Each is applied only while discovery finds its kind, so
//! the operator works without those projects and picks them up when they are installed later
//! (a missing kind is looked up again after a few seconds, at the cluster's next reconcile).

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject};

use super::tls::{ServerTls, check_tls_secret};
use crate::crd::IssuerRef;
use crate::reconcile::apply::{apply, delete_if_present};
use crate::reconcile::context::Context;
use crate::reconcile::error::{Error, Result};
use crate::render::optional::{certificate, certificate_resource, service_monitor_resource};
use crate::validate::ValidatedCluster;

const CERT_MANAGER: &str = "cert-manager.io/v1";
const PROMETHEUS_OPERATOR: &str = "monitoring.coreos.com/v1";

/// Asks cert-manager for the server certificate and reports the Secret it writes (`existing`,
/// `NAME-tls`); without cert-manager, reports that instead of failing the reconcile.
pub async fn cert_manager_certificate(
    ctx: &Context,
    cluster: &ValidatedCluster<'_>,
    issuer: &IssuerRef,
    hostnames: &[String],
    existing: Option<&Secret>,
) -> Result<ServerTls> {
    let names = &cluster.names;
    if !serves(ctx, CERT_MANAGER, "certificates").await? {
        return Ok(ServerTls {
            secret: Some(names.tls_secret()),
            problem: Some((
                "CertManagerMissing",
                "spec.tls.certManager: cert-manager's Certificate kind (certificates.cert-manager.io/v1) is not installed".into(),
            )),
            ..Default::default()
        });
    }
    let api = dynamic(ctx, cluster, &certificate_resource());
    let desired = certificate(names, issuer, hostnames, cluster.owner.clone());
    forget_if_gone(ctx, CERT_MANAGER, apply(&api, &desired).await)
        .map_err(Error::ApplyCertificate)?;
    let mut observed = check_tls_secret(&names.tls_secret(), existing);
    if observed.problem.is_some() {
        observed.problem = Some((
            "CertificatePending",
            format!(
                "waiting for cert-manager to write Secret {:?} for Certificate {:?}",
                names.tls_secret(),
                names.certificate()
            ),
        ));
    }
    Ok(observed)
}

/// Deletes the cluster's `Certificate` once `certManager` is no longer its TLS source: left behind,
/// cert-manager would keep rewriting `NAME-tls` over the certificate the operator now puts there.
/// Only a Certificate the cluster owns is touched.
pub async fn remove_certificate(ctx: &Context, cluster: &ValidatedCluster<'_>) -> Result<()> {
    if !serves(ctx, CERT_MANAGER, "certificates").await? {
        return Ok(());
    }
    let api = dynamic(ctx, cluster, &certificate_resource());
    let name = cluster.names.certificate();
    let Some(existing) = api.get_opt(&name).await.map_err(Error::ReadCertificate)? else {
        return Ok(());
    };
    if !existing
        .owner_references()
        .iter()
        .any(|o| o.uid == cluster.owner.uid)
    {
        return Ok(());
    }
    forget_if_gone(ctx, CERT_MANAGER, delete_if_present(&api, &name).await)
        .map_err(Error::DeleteCertificate)
}

/// Applies `monitor` where the ServiceMonitor kind exists.
pub async fn apply_service_monitor(
    ctx: &Context,
    cluster: &ValidatedCluster<'_>,
    monitor: &DynamicObject,
) -> Result<()> {
    if !serves(ctx, PROMETHEUS_OPERATOR, "servicemonitors").await? {
        return Ok(());
    }
    let api = dynamic(ctx, cluster, &service_monitor_resource());
    forget_if_gone(ctx, PROMETHEUS_OPERATOR, apply(&api, monitor).await)
        .map_err(Error::ApplyServiceMonitor)
}

/// Deletes the cluster's ServiceMonitor (disabled in the spec) where the kind exists.
pub async fn remove_service_monitor(ctx: &Context, cluster: &ValidatedCluster<'_>) -> Result<()> {
    if !serves(ctx, PROMETHEUS_OPERATOR, "servicemonitors").await? {
        return Ok(());
    }
    let api = dynamic(ctx, cluster, &service_monitor_resource());
    let outcome = delete_if_present(&api, &cluster.names.service_monitor()).await;
    forget_if_gone(ctx, PROMETHEUS_OPERATOR, outcome).map_err(Error::DeleteServiceMonitor)
}

async fn serves(ctx: &Context, group_version: &'static str, plural: &str) -> Result<bool> {
    ctx.serves(group_version, plural)
        .await
        .map_err(|source| Error::Discover {
            group_version,
            source,
        })
}

fn dynamic(
    ctx: &Context,
    cluster: &ValidatedCluster<'_>,
    resource: &ApiResource,
) -> Api<DynamicObject> {
    Api::namespaced_with(ctx.client.clone(), &cluster.names.namespace, resource)
}

/// A 404 for a kind discovery said exists means its CRD was removed since: ask again next time.
fn forget_if_gone<T>(
    ctx: &Context,
    group_version: &str,
    outcome: Result<T, kube::Error>,
) -> Result<(), kube::Error> {
    match outcome {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            ctx.forget(group_version);
            Err(kube::Error::Api(status))
        }
        Err(error) => Err(error),
    }
}
