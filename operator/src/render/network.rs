//! The cluster's NetworkPolicy: the brokers' cluster port (4370: peer links over TCP, gossip over
//! UDP) admits only the cluster's own pods, so nothing else in the Kubernetes cluster can gossip
//! with the brokers or dial their peer links (which mutual TLS guards as well). The listeners and
//! the HTTP port stay open to every source, as they are without a policy: a policy that selects
//! the pods turns away whatever it does not admit.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{CLUSTER_PORT, ClusterNames, HTTP_PORT};
use crate::crd::MqttClusterSpec;

/// `NAME`, selecting the broker pods; `None` when the spec turns it off.
pub fn network_policy(
    names: &ClusterNames,
    spec: &MqttClusterSpec,
    owner: OwnerReference,
) -> Option<NetworkPolicy> {
    let brokers = || LabelSelector {
        match_labels: Some(names.selector_labels()),
        ..Default::default()
    };
    let port = |protocol: &str, number: i32| NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(number)),
        ..Default::default()
    };
    // Same namespace only: a pod selector without a namespace selector.
    let cluster_port = NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(brokers()),
            ..Default::default()
        }]),
        ports: Some(vec![port("TCP", CLUSTER_PORT), port("UDP", CLUSTER_PORT)]),
    };
    let mut open_ports: Vec<NetworkPolicyPort> =
        spec.listeners.iter().map(|l| port("TCP", l.port)).collect();
    open_ports.push(port("TCP", HTTP_PORT));
    // No `from`: every source, as without a policy.
    let open = NetworkPolicyIngressRule {
        from: None,
        ports: Some(open_ports),
    };
    spec.network_policy.enabled.then(|| NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(names.network_policy()),
            namespace: Some(names.namespace.clone()),
            labels: Some(names.labels("broker")),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(brokers()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![cluster_port, open]),
            ..Default::default()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MqttCluster;

    fn render(yaml: &str) -> Option<NetworkPolicy> {
        let cluster: MqttCluster = serde_yaml::from_str(yaml).unwrap();
        let owner = OwnerReference {
            uid: "u1".into(),
            ..Default::default()
        };
        network_policy(&ClusterNames::new("demo", "iot"), &cluster.spec, owner)
    }

    fn ports(rule: &NetworkPolicyIngressRule) -> Vec<(String, i32)> {
        rule.ports
            .iter()
            .flatten()
            .map(|p| match &p.port {
                Some(IntOrString::Int(n)) => (p.protocol.clone().unwrap(), *n),
                other => panic!("a port by number, not {other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_cluster_port_admits_only_the_clusters_pods_and_the_rest_stays_open() {
        let policy = render(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {listeners: [{name: mqtt, port: 1883}, {name: mqtts, protocol: tls, port: 8883}], tls: {}}\n",
        )
        .unwrap();
        assert_eq!(policy.metadata.name.as_deref(), Some("demo"));
        assert_eq!(policy.metadata.namespace.as_deref(), Some("iot"));
        assert_eq!(policy.metadata.owner_references.unwrap()[0].uid, "u1");
        let spec = policy.spec.unwrap();
        let selector = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selector, ClusterNames::new("demo", "iot").selector_labels());
        assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
        assert!(spec.egress.is_none(), "egress is not restricted");
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 2);
        let peers = rules[0].from.as_ref().unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(
            peers[0].pod_selector.as_ref().unwrap().match_labels,
            Some(selector.clone())
        );
        assert!(
            peers[0].namespace_selector.is_none() && peers[0].ip_block.is_none(),
            "the cluster's own namespace only"
        );
        assert_eq!(
            ports(&rules[0]),
            [("TCP".into(), 4370), ("UDP".into(), 4370)]
        );
        assert!(rules[1].from.is_none(), "from anywhere");
        assert_eq!(
            ports(&rules[1]),
            [
                ("TCP".into(), 1883),
                ("TCP".into(), 8883),
                ("TCP".into(), 9090)
            ]
        );
    }

    #[test]
    fn the_spec_can_turn_it_off() {
        assert!(
            render(
                "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {networkPolicy: {enabled: false}}\n",
            )
            .is_none()
        );
    }
}
