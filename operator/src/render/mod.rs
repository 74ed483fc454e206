//! Pure functions from the custom resources to the Kubernetes objects and files the operator
//! applies. No client here: everything is unit-tested from YAML.

pub mod auth;
pub mod config;
pub mod disruption;
pub mod names;
pub mod optional;
pub mod services;
pub mod statefulset;
