//! Everything one `MqttCluster` renders to besides its Secrets: the ConfigMap, the two Services, the
//! PodDisruptionBudget, the NetworkPolicy and the ServiceMonitor, which are applied in that order,
//! then the StatefulSet, which the reconciler renders last because its replica count waits on
//! draining.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DynamicObject;

use super::config::{broker_config, config_map};
use super::disruption::pod_disruption_budget;
use super::fingerprint;
use super::names::ClusterNames;
use super::network::network_policy;
use super::optional::service_monitor;
use super::services::{client_service, headless_service};
use super::statefulset::{StatefulSetInputs, statefulset};
use crate::crd::MqttClusterSpec;

/// A cluster's objects as its spec asks for them.
#[derive(Debug, Clone)]
pub struct ClusterObjects<'a> {
    names: &'a ClusterNames,
    spec: &'a MqttClusterSpec,
    owner: OwnerReference,
    pub config_map: ConfigMap,
    /// A digest of the broker configuration, on the pod template: a change rolls the pods.
    pub config_hash: String,
    pub headless_service: Service,
    pub client_service: Service,
    /// `None` when the spec turns the budget off.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// `None` when the spec turns it off.
    pub network_policy: Option<NetworkPolicy>,
    /// `None` when the spec turns it off; applied only where its kind exists.
    pub service_monitor: Option<DynamicObject>,
}

/// Renders the cluster's objects; `cluster_domain` is the Kubernetes cluster's DNS domain, through
/// which the brokers find each other.
pub fn cluster_objects<'a>(
    names: &'a ClusterNames,
    spec: &'a MqttClusterSpec,
    owner: &OwnerReference,
    cluster_domain: &str,
) -> ClusterObjects<'a> {
    let config = broker_config(names, spec, cluster_domain);
    ClusterObjects {
        names,
        spec,
        owner: owner.clone(),
        config_hash: fingerprint(&config),
        config_map: config_map(names, owner.clone(), config),
        headless_service: headless_service(names, spec, owner.clone()),
        client_service: client_service(names, spec, owner.clone()),
        pod_disruption_budget: pod_disruption_budget(names, spec, owner.clone()),
        network_policy: network_policy(names, spec, owner.clone()),
        service_monitor: spec
            .metrics
            .service_monitor
            .enabled
            .then(|| service_monitor(names, spec, owner.clone())),
    }
}

impl ClusterObjects<'_> {
    /// The StatefulSet at `replicas` with `image`, mounting the server certificate from
    /// `tls_secret` (when TLS is on).
    pub fn statefulset(
        &self,
        image: String,
        replicas: i32,
        tls_secret: Option<String>,
    ) -> StatefulSet {
        statefulset(&StatefulSetInputs {
            names: self.names,
            spec: self.spec,
            owner: self.owner.clone(),
            image,
            replicas,
            config_hash: self.config_hash.clone(),
            tls_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MqttCluster;
    use crate::render::names::{ANNOTATION_CONFIG_HASH, keys};
    use kube::Resource;

    fn cluster(yaml: &str) -> MqttCluster {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn every_object_belongs_to_the_cluster_and_the_pods_carry_the_config_hash() {
        let cluster = cluster(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo, namespace: iot, uid: u1}\nspec: {}\n",
        );
        let names = ClusterNames::new("demo", "iot");
        let owner = cluster.controller_owner_ref(&()).unwrap();
        let objects = cluster_objects(&names, &cluster.spec, &owner, "cluster.local");
        let config = &objects.config_map.data.as_ref().unwrap()[keys::CONFIG];
        assert_eq!(objects.config_hash, fingerprint(config));
        let owners = [
            &objects.config_map.metadata,
            &objects.headless_service.metadata,
            &objects.client_service.metadata,
            &objects.pod_disruption_budget.as_ref().unwrap().metadata,
            &objects.network_policy.as_ref().unwrap().metadata,
            &objects.service_monitor.as_ref().unwrap().metadata,
        ];
        for metadata in owners {
            assert_eq!(metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
            assert_eq!(metadata.namespace.as_deref(), Some("iot"));
        }
        let set = objects.statefulset("tern-broker:test".into(), 2, None);
        let template = set.spec.unwrap().template;
        assert_eq!(
            template.metadata.unwrap().annotations.unwrap()[ANNOTATION_CONFIG_HASH],
            objects.config_hash
        );
    }

    #[test]
    fn a_config_change_changes_the_hash_and_disabled_extras_render_nothing() {
        let names = ClusterNames::new("demo", "iot");
        let plain = cluster(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {}\n",
        );
        let edited = cluster(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {broker: {maxConnections: 777}, podDisruptionBudget: {enabled: false}, networkPolicy: {enabled: false}, metrics: {serviceMonitor: {enabled: false}}}\n",
        );
        let before = cluster_objects(
            &names,
            &plain.spec,
            &OwnerReference::default(),
            "cluster.local",
        );
        let after = cluster_objects(
            &names,
            &edited.spec,
            &OwnerReference::default(),
            "cluster.local",
        );
        assert_ne!(before.config_hash, after.config_hash);
        assert!(after.pod_disruption_budget.is_none());
        assert!(after.network_policy.is_none());
        assert!(after.service_monitor.is_none());
    }
}
