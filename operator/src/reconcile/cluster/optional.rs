//! The objects of other projects' kinds a cluster may have: cert-manager's `Certificate` and the
//! Prometheus Operator's `ServiceMonitor`. Each is applied only while discovery finds its kind, so
//! the operator works without those projects and picks them up when they are installed later
//! (a missing kind is looked up again after a few seconds, at the cluster's next reconcile).

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};

use super::super::apply::{apply, delete_if_present};
use super::super::context::Context;
use super::super::error::{Error, Result};
use super::tls::{self, ServerTls};
use crate::crd::{MqttCluster, TlsSpec};
use crate::render::names::ClusterNames;
use crate::render::optional::{
    certificate, certificate_resource, service_monitor, service_monitor_resource,
};

const CERT_MANAGER: &str = "cert-manager.io/v1";
const PROMETHEUS_OPERATOR: &str = "monitoring.coreos.com/v1";

/// Asks cert-manager for the server certificate and reports the Secret it writes; without
/// cert-manager, reports that instead of failing the reconcile.
pub async fn cert_manager_certificate(
    ctx: &Context,
    names: &ClusterNames,
    owner: &OwnerReference,
    hostnames: &[String],
    tls: &TlsSpec,
) -> Result<ServerTls> {
    let Some(cert_manager) = &tls.cert_manager else {
        return Ok(ServerTls::default());
    };
    if !ctx.serves(CERT_MANAGER, "certificates").await? {
        return Ok(ServerTls {
            secret: Some(names.tls_secret()),
            problem: Some((
                "CertManagerMissing",
                "spec.tls.certManager: cert-manager's Certificate kind (certificates.cert-manager.io/v1) is not installed".into(),
            )),
            ..Default::default()
        });
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &names.namespace,
        &certificate_resource(),
    );
    let desired = certificate(names, &cert_manager.issuer_ref, hostnames, owner.clone());
    forget_if_gone(ctx, CERT_MANAGER, apply(&api, &desired).await)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut observed = tls::check_user_secret(&secrets, &names.tls_secret()).await?;
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
pub async fn remove_certificate(
    ctx: &Context,
    names: &ClusterNames,
    owner: &OwnerReference,
) -> Result<()> {
    if !ctx.serves(CERT_MANAGER, "certificates").await? {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &names.namespace,
        &certificate_resource(),
    );
    let Some(existing) = api.get_opt(&names.certificate()).await? else {
        return Ok(());
    };
    if !existing
        .owner_references()
        .iter()
        .any(|o| o.uid == owner.uid)
    {
        return Ok(());
    }
    forget_if_gone(
        ctx,
        CERT_MANAGER,
        delete_if_present(&api, &names.certificate()).await,
    )
}

/// Applies the cluster's ServiceMonitor, or removes it when disabled.
pub async fn apply_service_monitor(
    ctx: &Context,
    cluster: &MqttCluster,
    names: &ClusterNames,
    owner: &OwnerReference,
) -> Result<()> {
    if !ctx.serves(PROMETHEUS_OPERATOR, "servicemonitors").await? {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &names.namespace,
        &service_monitor_resource(),
    );
    let outcome = if cluster.spec.metrics.service_monitor.enabled {
        apply(&api, &service_monitor(names, &cluster.spec, owner.clone()))
            .await
            .map(drop)
    } else {
        delete_if_present(&api, &names.service_monitor()).await
    };
    forget_if_gone(ctx, PROMETHEUS_OPERATOR, outcome)
}

/// A 404 for a kind discovery said exists means its CRD was removed since: ask again next time.
fn forget_if_gone<T>(ctx: &Context, group_version: &str, outcome: Result<T>) -> Result<()> {
    match outcome {
        Ok(_) => Ok(()),
        Err(Error::Kube(kube::Error::Api(status))) if status.code == 404 => {
            ctx.forget(group_version);
            Err(Error::Kube(kube::Error::Api(status)))
        }
        Err(error) => Err(error),
    }
}
