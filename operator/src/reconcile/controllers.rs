//! Wires the three controllers to the API: what each watches, how a change to a related object
//! finds the resource to reconcile, and the error policy that records a failed reconcile and
//! retries it with a per-object backoff.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::context::Context;
use super::error::Error;
use super::{acl, cluster, user};
use crate::crd::{MqttAcl, MqttCluster, MqttUser};
use crate::render::names::{FIELD_MANAGER, LABEL_CLUSTER, LABEL_INSTANCE, LABEL_MANAGED_BY};

/// The namespace the operator watches, or all.
#[derive(Debug, Clone, Default)]
pub struct Scope(pub Option<String>);

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        match &self.0 {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        }
    }
}

/// Runs all controllers until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: CancellationToken) {
    tokio::join!(
        run_clusters(
            ctx.clone(),
            scope.clone(),
            shutdown.clone().cancelled_owned()
        ),
        run_users(
            ctx.clone(),
            scope.clone(),
            shutdown.clone().cancelled_owned()
        ),
        run_acls(ctx, scope, shutdown.cancelled_owned()),
    );
}

/// After a failed reconcile (already counted by its kind in the metrics): a log line, a Warning
/// event on the object whose reason names the failed step, and the next try after the object's
/// backoff (5 s doubling to 5 min; a successful reconcile resets it).
fn error_policy<K>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let retry_in = ctx.backoff.failed(ObjectRef::from_obj(&*object).erase());
    warn!(
        kind = %K::kind(&()),
        name = %object.name_any(),
        namespace = ?object.namespace(),
        error_kind = error.kind(),
        %error,
        ?retry_in,
        "reconcile failed; retrying"
    );
    let (reason, note) = (error.reason(), error.to_string());
    // The policy itself is synchronous; the event is sent beside it.
    tokio::spawn(async move {
        ctx.publish(&*object, EventType::Warning, &reason, &note)
            .await;
    });
    Action::requeue(retry_in)
}

fn log_outcome<K, E: std::fmt::Display>(
    controller: &'static str,
) -> impl Fn(Result<(ObjectRef<K>, Action), E>) -> std::future::Ready<()>
where
    K: Resource,
{
    move |result| {
        match result {
            Ok((object, _)) => debug!(controller, object = %object.name, "reconciled"),
            Err(error) => debug!(controller, %error, "controller event"),
        }
        std::future::ready(())
    }
}

/// The resources in `store` that name `cluster` in their `clusterRef`.
fn members_of<K>(
    store: &Store<K>,
    cluster: &MqttCluster,
    cluster_ref: impl Fn(&K) -> &String,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let namespace = cluster.namespace();
    let name = cluster.name_any();
    store
        .state()
        .into_iter()
        .filter(|k| k.namespace() == namespace && *cluster_ref(k) == name)
        .map(|k| ObjectRef::from_obj(&*k))
        .collect()
}

/// The cluster a labelled object belongs to.
fn cluster_of_label<K: ResourceExt>(object: &K, label: &str) -> Option<ObjectRef<MqttCluster>> {
    let name = object.labels().get(label)?;
    Some(ObjectRef::new(name).within(&object.namespace()?))
}

async fn run_clusters(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ours = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={FIELD_MANAGER}"));
    watching_tls_secrets(
        Controller::new(
            scope.api::<MqttCluster>(&client),
            watcher::Config::default(),
        ),
        &scope,
        &client,
    )
    .owns(scope.api::<StatefulSet>(&client), ours.clone())
    .owns(scope.api::<Service>(&client), ours.clone())
    .owns(scope.api::<ConfigMap>(&client), ours.clone())
    .owns(scope.api::<PodDisruptionBudget>(&client), ours.clone())
    .owns(scope.api::<NetworkPolicy>(&client), ours.clone())
    // Owned Secrets and users' credentials Secrets alike carry the cluster label.
    .watches(
        scope.api::<Secret>(&client),
        watcher::Config::default().labels(LABEL_CLUSTER),
        |s| cluster_of_label(&s, LABEL_CLUSTER),
    )
    .watches(
        scope.api::<Pod>(&client),
        watcher::Config::default().labels("app.kubernetes.io/name=tern-broker"),
        |p| cluster_of_label(&p, LABEL_INSTANCE),
    )
    .watches(
        scope.api::<MqttUser>(&client),
        watcher::Config::default(),
        |u| {
            u.namespace()
                .map(|ns| ObjectRef::new(&u.spec.cluster_ref.name).within(&ns))
        },
    )
    .watches(
        scope.api::<MqttAcl>(&client),
        watcher::Config::default(),
        |a| {
            a.namespace()
                .map(|ns| ObjectRef::new(&a.spec.cluster_ref.name).within(&ns))
        },
    )
    .graceful_shutdown_on(shutdown)
    .run(cluster::reconcile, error_policy, ctx)
    .for_each(log_outcome("cluster"))
    .await;
}

/// Adds a watch on users' own TLS Secrets (`spec.tls.secretName`), which carry no label of ours.
fn watching_tls_secrets(
    controller: Controller<MqttCluster>,
    scope: &Scope,
    client: &Client,
) -> Controller<MqttCluster> {
    let clusters = controller.store();
    controller.watches(
        scope.api::<Secret>(client),
        watcher::Config::default(),
        move |s| cluster::clusters_using_secret(&clusters, &s),
    )
}

async fn run_users(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let controller = Controller::new(scope.api::<MqttUser>(&client), watcher::Config::default());
    let users = controller.store();
    let users_of_cluster = users.clone();
    controller
        .owns(
            scope.api::<Secret>(&client),
            watcher::Config::default().labels(LABEL_CLUSTER),
        )
        // A user's own password Secret (rotation), or a cluster's CA changing under the users.
        .watches(
            scope.api::<Secret>(&client),
            watcher::Config::default(),
            move |secret| {
                let namespace = secret.namespace();
                let cluster = secret.labels().get(LABEL_CLUSTER).cloned();
                let name = secret.name_any();
                users
                    .state()
                    .into_iter()
                    .filter(|u| u.namespace() == namespace)
                    .filter(|u| {
                        u.spec
                            .password_from
                            .as_ref()
                            .is_some_and(|p| p.secret_key_ref.name == name)
                            || (cluster.as_deref() == Some(u.spec.cluster_ref.name.as_str())
                                && secret
                                    .labels()
                                    .get("app.kubernetes.io/component")
                                    .map(String::as_str)
                                    == Some("tls"))
                    })
                    .map(|u| ObjectRef::from_obj(&*u))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            scope.api::<MqttCluster>(&client),
            watcher::Config::default(),
            move |cluster| members_of(&users_of_cluster, &cluster, |u| &u.spec.cluster_ref.name),
        )
        .graceful_shutdown_on(shutdown)
        .run(user::reconcile, error_policy, ctx)
        .for_each(log_outcome("user"))
        .await;
}

async fn run_acls(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let controller = Controller::new(scope.api::<MqttAcl>(&client), watcher::Config::default());
    let acls = controller.store();
    controller
        .watches(
            scope.api::<MqttCluster>(&client),
            watcher::Config::default(),
            move |cluster| members_of(&acls, &cluster, |a| &a.spec.cluster_ref.name),
        )
        .graceful_shutdown_on(shutdown)
        .run(acl::reconcile, error_policy, ctx)
        .for_each(log_outcome("acl"))
        .await;
}
