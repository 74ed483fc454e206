//! The downward API: pod fields (`metadata.name`, `status.podIP`, …) and container resources as the
//! values of env vars (`fieldRef`, `resourceFieldRef`) and of downward API volume files. Pure functions
//! of the pod and its address; used by `pod::env` and `volume`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Pod, ResourceFieldSelector};

/// What the node reports as capacity; a resource limit that is not set reads as this, as in kubelet.
pub const NODE_CPU: &str = "4";
pub const NODE_MEMORY: &str = "16Gi";
pub const NODE_EPHEMERAL_STORAGE: &str = "100Gi";
pub const NODE_PODS: &str = "253";

/// The loopback address standing in for the node's.
pub const HOST_IP: &str = "127.0.0.1";

/// The value of a `fieldRef` path, or `None` for a path kubelet would refuse.
/// `metadata.labels` and `metadata.annotations` (whole maps) are only allowed in volumes.
pub fn field_value(pod: &Pod, field_path: &str, pod_ip: Ipv4Addr) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let value = match field_path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_lines(meta.labels.as_ref()),
        "metadata.annotations" => map_lines(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => HOST_IP.to_owned(),
        other => {
            let (map, key) = if let Some(key) = subscript(other, "metadata.labels") {
                (meta.labels.as_ref(), key)
            } else {
                (
                    meta.annotations.as_ref(),
                    subscript(other, "metadata.annotations")?,
                )
            };
            map.and_then(|map| map.get(key))
                .cloned()
                .unwrap_or_default()
        }
    };
    Some(value)
}

/// `metadata.labels['app']` → `app`.
fn subscript<'a>(path: &'a str, map: &str) -> Option<&'a str> {
    path.strip_prefix(map)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// `key="value"` lines, sorted, as kubelet writes label and annotation files.
fn map_lines(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value:?}\n"))
        .collect()
}

/// The value of a `resourceFieldRef`: the container's limit or request as written (divisors are not
/// applied), a missing limit reads as the node's capacity and a missing request as `0`.
/// `default_container` names the container whose env asks, for selectors without `containerName`.
pub fn resource_value(
    pod: &Pod,
    selector: &ResourceFieldSelector,
    default_container: &str,
) -> Option<String> {
    let container_name = selector
        .container_name
        .as_deref()
        .unwrap_or(default_container);
    let container = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container_name)?;
    let (kind, resource) = selector.resource.split_once('.')?;
    let resources = container.resources.as_ref();
    let set = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return None,
    };
    if let Some(quantity) = set.and_then(|set| set.get(resource)) {
        return Some(quantity.0.clone());
    }
    let fallback = match (kind, resource) {
        ("limits", "cpu") => NODE_CPU,
        ("limits", "memory") => NODE_MEMORY,
        ("limits", "ephemeral-storage") => NODE_EPHEMERAL_STORAGE,
        _ => "0",
    };
    Some(fallback.to_owned())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::api::ObjectMeta;

    use super::*;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("tern-0".into()),
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([
                    ("app".to_owned(), "tern".to_owned()),
                    ("b".to_owned(), "x\"y".to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node".into()),
                containers: vec![Container {
                    name: "broker".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([(
                            "memory".to_owned(),
                            Quantity("1Gi".into()),
                        )])),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn pod_fields() {
        let ip = Ipv4Addr::new(127, 77, 0, 2);
        let pod = pod();
        assert_eq!(
            field_value(&pod, "metadata.name", ip).as_deref(),
            Some("tern-0")
        );
        assert_eq!(
            field_value(&pod, "status.podIP", ip).as_deref(),
            Some("127.77.0.2")
        );
        assert_eq!(
            field_value(&pod, "spec.nodeName", ip).as_deref(),
            Some("node")
        );
        assert_eq!(
            field_value(&pod, "metadata.labels['app']", ip).as_deref(),
            Some("tern")
        );
        assert_eq!(
            field_value(&pod, "metadata.annotations['x']", ip).as_deref(),
            Some("")
        );
        assert_eq!(
            field_value(&pod, "metadata.labels", ip).as_deref(),
            Some("app=\"tern\"\nb=\"x\\\"y\"\n")
        );
        assert_eq!(field_value(&pod, "spec.bogus", ip), None);
    }

    #[test]
    fn resources_fall_back_to_node_capacity() {
        let pod = pod();
        let selector = |resource: &str| ResourceFieldSelector {
            resource: resource.to_owned(),
            ..ResourceFieldSelector::default()
        };
        assert_eq!(
            resource_value(&pod, &selector("limits.memory"), "broker").as_deref(),
            Some("1Gi")
        );
        assert_eq!(
            resource_value(&pod, &selector("limits.cpu"), "broker").as_deref(),
            Some(NODE_CPU)
        );
        assert_eq!(
            resource_value(&pod, &selector("requests.cpu"), "broker").as_deref(),
            Some("0")
        );
        assert_eq!(resource_value(&pod, &selector("limits.cpu"), "other"), None);
    }
}
