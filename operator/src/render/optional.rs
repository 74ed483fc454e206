//! Objects of kinds that only exist when another project is installed: the Prometheus Operator's
//! `ServiceMonitor` and cert-manager's `Certificate`. Rendered as dynamic objects, applied only when
//! discovery finds the kind.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::core::ObjectMeta;
use serde_json::json;

use super::names::{ClusterNames, HTTP_PORT_NAME, LABEL_COMPONENT};
use crate::crd::{IssuerRef, MqttClusterSpec};

pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// Scrapes every broker's `/metrics` through the headless Service.
pub fn service_monitor(
    names: &ClusterNames,
    spec: &MqttClusterSpec,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> DynamicObject {
    let settings = &spec.metrics.service_monitor;
    let mut labels = names.labels("metrics");
    labels.extend(settings.labels.clone());
    let mut selector = names.selector_labels();
    selector.insert(LABEL_COMPONENT.into(), "headless".into());
    let mut endpoint = json!({ "port": HTTP_PORT_NAME, "path": "/metrics" });
    if let Some(interval) = &settings.interval {
        endpoint["interval"] = json!(interval);
    }
    let mut object = DynamicObject::new(&names.service_monitor(), &service_monitor_resource())
        .within(&names.namespace);
    object.metadata = ObjectMeta {
        labels: Some(labels),
        owner_references: Some(vec![owner]),
        ..object.metadata
    };
    object.data = json!({
        "spec": {
            "selector": { "matchLabels": selector },
            "endpoints": [endpoint],
        }
    });
    object
}

/// Asks cert-manager for the server certificate, written to the same Secret the operator's own
/// CA would write. The Secret gets the labels of the operator's own TLS Secret (through
/// `secretTemplate`), so that the operator sees when cert-manager writes or renews it.
pub fn certificate(
    names: &ClusterNames,
    issuer: &IssuerRef,
    hostnames: &[String],
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> DynamicObject {
    let (ips, dns): (Vec<&String>, Vec<&String>) = hostnames
        .iter()
        .partition(|h| h.parse::<std::net::IpAddr>().is_ok());
    let mut object =
        DynamicObject::new(&names.certificate(), &certificate_resource()).within(&names.namespace);
    object.metadata = ObjectMeta {
        labels: Some(names.labels("tls")),
        owner_references: Some(vec![owner]),
        ..object.metadata
    };
    object.data = json!({
        "spec": {
            "secretName": names.tls_secret(),
            "commonName": names.name,
            "dnsNames": dns,
            "ipAddresses": ips,
            "usages": ["server auth", "digital signature", "key encipherment"],
            "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
            "issuerRef": { "name": issuer.name, "kind": issuer.kind, "group": issuer.group },
            "secretTemplate": { "labels": names.labels("tls") },
        }
    });
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MqttCluster;

    #[test]
    fn the_service_monitor_selects_the_headless_service_http_port() {
        let cluster: MqttCluster = serde_yaml::from_str(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {metrics: {serviceMonitor: {interval: 15s, labels: {release: prom}}}}\n",
        )
        .unwrap();
        let names = ClusterNames::new("demo", "iot");
        let monitor = service_monitor(&names, &cluster.spec, Default::default());
        assert_eq!(monitor.metadata.labels.as_ref().unwrap()["release"], "prom");
        let spec = &monitor.data["spec"];
        assert_eq!(spec["selector"]["matchLabels"][LABEL_COMPONENT], "headless");
        assert_eq!(spec["endpoints"][0]["port"], "http");
        assert_eq!(spec["endpoints"][0]["interval"], "15s");
        assert_eq!(monitor.types.unwrap().kind, "ServiceMonitor");
    }

    #[test]
    fn the_certificate_splits_names_and_addresses() {
        let names = ClusterNames::new("demo", "iot");
        let issuer = IssuerRef {
            name: "ca".into(),
            kind: "ClusterIssuer".into(),
            group: "cert-manager.io".into(),
        };
        let cert = certificate(
            &names,
            &issuer,
            &["demo.iot.svc".into(), "10.1.2.3".into()],
            Default::default(),
        );
        assert_eq!(cert.data["spec"]["dnsNames"][0], "demo.iot.svc");
        assert_eq!(cert.data["spec"]["ipAddresses"][0], "10.1.2.3");
        assert_eq!(cert.data["spec"]["secretName"], "demo-tls");
        assert_eq!(cert.data["spec"]["issuerRef"]["kind"], "ClusterIssuer");
        let labels = &cert.data["spec"]["secretTemplate"]["labels"];
        assert_eq!(labels[crate::render::names::LABEL_CLUSTER], "demo");
        assert_eq!(labels[LABEL_COMPONENT], "tls");
    }
}
