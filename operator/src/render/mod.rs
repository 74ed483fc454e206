//! Pure functions from the custom resources to the Kubernetes objects and files the operator
//! applies. No client here: everything is unit-tested from YAML.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod disruption;
pub mod names;
pub mod network;
pub mod optional;
pub mod secrets;
pub mod services;
pub mod statefulset;

/// Lowercase hex of a SHA-256 digest's first 12 bytes: short, stable fingerprints for annotations
/// and revisions.
pub fn fingerprint(text: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(text.as_bytes())[..12])
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
