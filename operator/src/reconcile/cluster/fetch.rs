//! What exists of one cluster, read before the reconcile writes anything: its Secrets, users and
//! their credentials, ACLs, broker pods and the StatefulSet's replica count.

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::scale::ordinal;
use crate::crd::{MqttAcl, MqttUser};
use crate::reconcile::apply::{read_secret, secret_strings};
use crate::reconcile::context::Context;
use crate::reconcile::error::{Error, Result};
use crate::render::names::{ClusterNames, LABEL_CLUSTER};
use crate::validate::ValidatedCluster;

/// One cluster's objects as the API server holds them now.
#[derive(Debug, Default)]
pub struct Existing {
    pub admin: Option<Secret>,
    pub ca: Option<Secret>,
    /// The Secret the server certificate is read from (`NAME-tls` or the user's own); `None`
    /// without TLS, or while it does not exist.
    pub server_tls: Option<Secret>,
    /// `NAME-peer-tls`, the brokers' peer certificate.
    pub peer_tls: Option<Secret>,
    pub auth: Option<Secret>,
    /// The cluster's users, oldest first.
    pub users: Vec<MqttUser>,
    /// `(controlling owner's UID, password)` by credentials-Secret name.
    pub credentials: HashMap<String, (String, String)>,
    pub acls: Vec<MqttAcl>,
    /// The broker pods, by ordinal.
    pub pods: Vec<Pod>,
    /// The StatefulSet's replica count, when it exists.
    pub replicas: Option<i32>,
}

pub async fn fetch(ctx: &Context, cluster: &ValidatedCluster<'_>) -> Result<Existing> {
    let names = &cluster.names;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let server_tls = match cluster.tls.secret(names) {
        Some(name) => read_secret(&secrets, name).await?,
        None => None,
    };
    Ok(Existing {
        admin: read_secret(&secrets, names.admin_secret()).await?,
        ca: read_secret(&secrets, names.ca_secret()).await?,
        server_tls,
        peer_tls: read_secret(&secrets, names.peer_tls_secret()).await?,
        auth: read_secret(&secrets, names.auth_secret()).await?,
        users: users_of(ctx, names).await?,
        credentials: credentials_of(ctx, names).await?,
        acls: acls_of(ctx, names).await?,
        pods: pods_of(ctx, names).await?,
        replicas: replicas_of(ctx, names).await?,
    })
}

/// The cluster's users, oldest first, so the first claim on a username wins.
pub async fn users_of(ctx: &Context, names: &ClusterNames) -> Result<Vec<MqttUser>> {
    let api: Api<MqttUser> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut users: Vec<MqttUser> = api
        .list(&ListParams::default())
        .await
        .map_err(Error::ListUsers)?
        .items
        .into_iter()
        .filter(|u| {
            u.spec.cluster_ref.name == names.name && u.metadata.deletion_timestamp.is_none()
        })
        .collect();
    users.sort_by_key(|u| {
        (
            u.metadata.creation_timestamp.clone().map(|t| t.0),
            u.name_any(),
        )
    });
    Ok(users)
}

async fn acls_of(ctx: &Context, names: &ClusterNames) -> Result<Vec<MqttAcl>> {
    let api: Api<MqttAcl> = Api::namespaced(ctx.client.clone(), &names.namespace);
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(Error::ListAcls)?
        .items
        .into_iter()
        .filter(|a| {
            a.spec.cluster_ref.name == names.name && a.metadata.deletion_timestamp.is_none()
        })
        .collect())
}

/// `(controlling owner's UID, password)` by credentials-Secret name, from the Secrets the user
/// controller writes.
async fn credentials_of(
    ctx: &Context,
    names: &ClusterNames,
) -> Result<HashMap<String, (String, String)>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let selector = format!(
        "{LABEL_CLUSTER}={},app.kubernetes.io/component=credentials",
        names.name
    );
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::ListCredentials)?
        .items
        .into_iter()
        .filter_map(|s| {
            let owner = s
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))?
                .uid
                .clone();
            let password = secret_strings(&s).remove("password")?;
            Some((s.name_any(), (owner, password)))
        })
        .collect())
}

async fn pods_of(ctx: &Context, names: &ClusterNames) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut pods = api
        .list(&ListParams::default().labels(&names.selector()))
        .await
        .map_err(Error::ListPods)?
        .items;
    pods.sort_by_key(|p| ordinal(&p.name_any(), &names.statefulset()).unwrap_or(i32::MAX));
    Ok(pods)
}

async fn replicas_of(ctx: &Context, names: &ClusterNames) -> Result<Option<i32>> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &names.namespace);
    Ok(api
        .get_opt(&names.statefulset())
        .await
        .map_err(Error::ReadStatefulSet)?
        .and_then(|s| s.spec.and_then(|s| s.replicas)))
}
