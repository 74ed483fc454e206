//! The two Services: a headless one that gives each pod a stable DNS name and is the brokers'
//! gossip seed (so it lists pods before they are ready), and the client Service in front of all
//! ready pods.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{
    CLUSTER_PORT, ClusterNames, GOSSIP_PORT_NAME, HTTP_PORT, HTTP_PORT_NAME, PEER_PORT_NAME,
};
use crate::crd::MqttClusterSpec;

fn listener_ports(spec: &MqttClusterSpec) -> Vec<ServicePort> {
    spec.listeners
        .iter()
        .map(|l| ServicePort {
            name: Some(l.name.clone()),
            port: l.port,
            target_port: Some(IntOrString::String(l.name.clone())),
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .collect()
}

/// `NAME-headless`: every pod, ready or not, with the HTTP port for scraping and the cluster port
/// (TCP for peer links, UDP for gossip).
pub fn headless_service(
    names: &ClusterNames,
    spec: &MqttClusterSpec,
    owner: OwnerReference,
) -> Service {
    let port = |name: &str, number: i32, protocol: &str| ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    let mut ports = listener_ports(spec);
    ports.push(port(HTTP_PORT_NAME, HTTP_PORT, "TCP"));
    ports.push(port(PEER_PORT_NAME, CLUSTER_PORT, "TCP"));
    ports.push(port(GOSSIP_PORT_NAME, CLUSTER_PORT, "UDP"));
    Service {
        metadata: ObjectMeta {
            name: Some(names.headless_service()),
            namespace: Some(names.namespace.clone()),
            labels: Some(names.labels("headless")),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // The Service's DNS name is the brokers' gossip seed (`cluster.seeds`), and a broker
            // turns ready only once it has joined the cluster: if only ready pods were listed,
            // a starting pod could not find the others to join, and the first pods of a new
            // cluster could never find each other at all.
            publish_not_ready_addresses: Some(true),
            selector: Some(names.selector_labels()),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `NAME`: the address clients use, of the type and with the annotations the spec asks for.
pub fn client_service(
    names: &ClusterNames,
    spec: &MqttClusterSpec,
    owner: OwnerReference,
) -> Service {
    let mut labels = names.labels("client");
    labels.extend(spec.service.labels.clone());
    let load_balancer = spec.service.type_ == crate::crd::ServiceType::LoadBalancer;
    Service {
        metadata: ObjectMeta {
            name: Some(names.client_service()),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels),
            annotations: (!spec.service.annotations.is_empty())
                .then(|| spec.service.annotations.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(spec.service.type_.as_str().into()),
            selector: Some(names.selector_labels()),
            ports: Some(listener_ports(spec)),
            load_balancer_source_ranges: (load_balancer
                && !spec.service.load_balancer_source_ranges.is_empty())
            .then(|| spec.service.load_balancer_source_ranges.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MqttCluster;

    #[test]
    fn the_headless_service_publishes_unready_pods_and_the_client_one_takes_the_spec() {
        let cluster: MqttCluster = serde_yaml::from_str(
            r#"
apiVersion: tern.dev/v1alpha1
kind: MqttCluster
metadata: {name: demo}
spec:
  listeners: [{name: mqtt, port: 1883}, {name: ws, protocol: ws, port: 8080}]
  service: {type: LoadBalancer, annotations: {lb.example.com/internal: "true"}, loadBalancerSourceRanges: [10.0.0.0/8]}
"#,
        )
        .unwrap();
        let names = ClusterNames::new("demo", "iot");
        let headless = headless_service(&names, &cluster.spec, OwnerReference::default());
        let spec = headless.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<(String, i32, String)> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap()))
            .collect();
        let expected = [
            ("mqtt", 1883, "TCP"),
            ("ws", 8080, "TCP"),
            ("http", 9090, "TCP"),
            ("peer", 4370, "TCP"),
            ("gossip", 4370, "UDP"),
        ]
        .map(|(n, p, t)| (n.to_owned(), p, t.to_owned()));
        assert_eq!(ports, expected);
        let client = client_service(&names, &cluster.spec, OwnerReference::default());
        assert_eq!(
            client.metadata.annotations.unwrap()["lb.example.com/internal"],
            "true"
        );
        let spec = client.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.unwrap()[1].port, 8080);
        assert_eq!(spec.load_balancer_source_ranges.unwrap(), ["10.0.0.0/8"]);
    }
}
