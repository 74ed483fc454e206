//! Tern's Kubernetes operator: reconciles `MqttCluster`, `MqttUser` and `MqttAcl` into broker
//! StatefulSets, Services, configuration, TLS and auth (DESIGN.md §4).

pub mod broker_api;
pub mod crd;
pub mod crdgen;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod render;
pub mod tls;
pub mod validate;
