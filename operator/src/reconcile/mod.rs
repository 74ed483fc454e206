//! The controllers: one per kind, sharing a [`Context`]. Each reconcile is a pipeline (fetch →
//! validate → render → apply → status) and is idempotent; errors are recorded and retried with
//! backoff by [`error_policy`].

pub mod acl;
pub mod apply;
pub mod cluster;
pub mod context;
pub mod controllers;
pub mod error;
pub mod passwords;

pub use context::{Context, Settings};
pub use error::Error;
pub mod user;

/// Lowercase hex of a SHA-256 digest's first 12 bytes: short, stable fingerprints for annotations
/// and revisions.
pub fn fingerprint(text: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(text.as_bytes())[..12])
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
