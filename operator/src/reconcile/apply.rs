//! Server-side apply with the operator's one field manager, and the other small API moves every
//! reconciler makes. These return the client's error; the caller names the object that failed
//! (its [`Error`](super::Error) variant).

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Error, Result};
use crate::render::names::FIELD_MANAGER;

/// Applies `object` (its whole desired state) and returns what the server holds afterwards.
/// `force` takes over fields another manager set, which is how hand edits are repaired.
pub async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&object.name_any(), &params, &Patch::Apply(object))
        .await
}

/// Deletes an object if it exists.
pub async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + DeserializeOwned + Clone + Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// The Secret `name`, or `None` when it does not exist.
pub async fn read_secret(secrets: &Api<Secret>, name: String) -> Result<Option<Secret>> {
    secrets
        .get_opt(&name)
        .await
        .map_err(|source| Error::ReadSecret { name, source })
}

/// A Secret's data as UTF-8 strings; keys that are not UTF-8 are left out.
pub fn secret_strings(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect()
}

/// Replaces `object`'s status with `status` unless it already holds exactly that, so an unchanged
/// reconcile writes nothing (and triggers no watch event).
pub async fn patch_status<K, S>(
    client: &kube::Client,
    object: &K,
    current: Option<&S>,
    status: &S,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(
        client.clone(),
        object.namespace().as_deref().unwrap_or_default(),
    );
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::PatchStatus)?;
    Ok(())
}
