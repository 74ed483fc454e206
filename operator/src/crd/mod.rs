//! The custom resources, group `tern.dev`, version `v1alpha1`. The CRD YAML in `crds/` is generated
//! from these types (`tern-operator crdgen`); never edit it by hand.

// kube-derive's repeated `printcolumn(...)` attributes trip this lint; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

mod acl;
mod cluster;
mod common;
mod user;

pub use acl::*;
pub use cluster::*;
pub use common::{ClusterRef, Conditions, condition, is_true};
pub use user::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD the operator serves, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![MqttCluster::crd(), MqttUser::crd(), MqttAcl::crd()]
}
