//! Users and ACL for one cluster: gathered from its `MqttUser`s (passwords from their credentials
//! Secrets) and `MqttAcl`s, rendered into `NAME-auth`, and pushed to every running broker through
//! the admin API so a change takes effect in seconds without a restart. kubelet's later refresh of
//! the mounted Secret is the backstop for brokers the push could not reach.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::super::apply::{apply, secret_data, secret_strings};
use super::super::context::Context;
use super::super::error::Result;
use super::super::hex;
use super::super::passwords::hash_for;
use crate::crd::{MqttAcl, MqttUser};
use crate::render::auth::{UserEntry, acl_file, users_file, validate_acl};
use crate::render::names::{ClusterNames, LABEL_CLUSTER, keys};

/// The rendered files and what was left out.
#[derive(Debug, Clone)]
pub struct AuthFiles {
    pub users: String,
    pub acl: String,
    /// A digest of both texts: what the brokers must have.
    pub revision: String,
    /// Why the ACL could not be updated (an invalid `MqttAcl`); the previous ACL stays.
    pub acl_problem: Option<String>,
}

/// Renders the cluster's users and ACL and stores them in `NAME-auth`.
pub async fn render_and_store(
    ctx: &Context,
    names: &ClusterNames,
    owner: &OwnerReference,
) -> Result<AuthFiles> {
    let ns = &names.namespace;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let deployed = secrets
        .get_opt(&names.auth_secret())
        .await?
        .map(|s| secret_strings(&s))
        .unwrap_or_default();
    let deployed_hashes = deployed_hashes(deployed.get(keys::USERS).map(String::as_str));

    let users = users_of(ctx, names).await?;
    let passwords = credentials_of(ctx, names).await?;
    let mut entries: Vec<UserEntry> = Vec::new();
    let mut claimed = std::collections::HashSet::new();
    for user in &users {
        let username = user.username();
        if !claimed.insert(username.clone()) {
            continue; // the older MqttUser keeps the name; the newer one reports the conflict
        }
        // Only a Secret this MqttUser controls counts: a look-alike Secret someone else made under
        // that name must not smuggle a password in.
        let Some(password) = passwords
            .get(&user.credentials_secret_name())
            .filter(|(owner, _)| user.metadata.uid.as_ref() == Some(owner))
            .map(|(_, password)| password)
        else {
            continue;
        };
        let key = format!("{ns}/{}/{username}", names.name);
        let hash = hash_for(ctx, key, password, deployed_hashes.get(&username).cloned()).await?;
        entries.push(UserEntry {
            username,
            hash,
            groups: user.spec.groups.iter().map(|g| g.0.clone()).collect(),
        });
    }
    let users_text =
        users_file(&entries).map_err(|e| super::super::error::Error::Render(e.to_string()))?;

    let acls = acls_of(ctx, names).await?;
    let invalid: Vec<String> = acls
        .iter()
        .filter_map(|a| {
            validate_acl(a)
                .err()
                .map(|e| format!("MqttAcl {}: {e}", a.name_any()))
        })
        .collect();
    let (acl_text, acl_problem) = if invalid.is_empty() {
        let refs: Vec<&MqttAcl> = acls.iter().collect();
        (
            acl_file(&entries, &refs)
                .map_err(|e| super::super::error::Error::Render(e.to_string()))?,
            None,
        )
    } else {
        // Fail closed: skipping an invalid MqttAcl could drop a deny rule. Keep what is deployed,
        // or deny everything on a new cluster.
        let previous = deployed.get(keys::ACL).cloned().unwrap_or_else(|| {
            "# An MqttAcl is invalid; everything is denied until it is fixed.\n".into()
        });
        (previous, Some(invalid.join("; ")))
    };

    let revision = {
        let mut digest = Sha256::new();
        digest.update(users_text.as_bytes());
        digest.update([0]);
        digest.update(acl_text.as_bytes());
        hex(&digest.finalize()[..12])
    };
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(names.auth_secret()),
            namespace: Some(ns.clone()),
            labels: Some(names.labels("auth")),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        data: Some(secret_data(BTreeMap::from([
            (keys::USERS.into(), users_text.clone()),
            (keys::ACL.into(), acl_text.clone()),
        ]))),
        ..Default::default()
    };
    apply(&secrets, &secret).await?;
    Ok(AuthFiles {
        users: users_text,
        acl: acl_text,
        revision,
        acl_problem,
    })
}

/// Pushes the files to every running broker pod that has not accepted this revision yet.
/// Returns how many running pods now have it and how many do not.
pub async fn push_to_brokers(
    ctx: &Context,
    pods: &[Pod],
    token: &str,
    files: &AuthFiles,
) -> (usize, usize) {
    let (mut current, mut behind) = (0, 0);
    for pod in pods {
        let (Some(uid), Some(ip)) = (pod.metadata.uid.clone(), pod_ip(pod)) else {
            continue;
        };
        if ctx.pushed_auth.lock().get(&uid) == Some(&files.revision) {
            current += 1;
            continue;
        }
        match ctx
            .broker_api
            .push_auth(ip, token, &files.users, &files.acl)
            .await
        {
            Ok(()) => {
                debug!(pod = %pod.name_any(), revision = %files.revision, "users and ACL pushed");
                ctx.metrics.auth_pushed(true);
                ctx.pushed_auth.lock().insert(uid, files.revision.clone());
                current += 1;
            }
            Err(error) => {
                ctx.metrics.auth_pushed(false);
                if is_running_and_ready(pod) {
                    warn!(pod = %pod.name_any(), %error, "cannot push users and ACL");
                }
                behind += 1;
            }
        }
    }
    (current, behind)
}

pub fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

pub fn is_running_and_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The cluster's users, oldest first, so the first claim on a username wins.
pub async fn users_of(ctx: &Context, names: &ClusterNames) -> Result<Vec<MqttUser>> {
    let api: Api<MqttUser> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut users: Vec<MqttUser> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|u| {
            u.spec.cluster_ref.name == names.name && u.metadata.deletion_timestamp.is_none()
        })
        .collect();
    users.sort_by_key(|u| {
        (
            u.metadata.creation_timestamp.clone().map(|t| t.0),
            u.name_any(),
        )
    });
    Ok(users)
}

async fn acls_of(ctx: &Context, names: &ClusterNames) -> Result<Vec<MqttAcl>> {
    let api: Api<MqttAcl> = Api::namespaced(ctx.client.clone(), &names.namespace);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|a| {
            a.spec.cluster_ref.name == names.name && a.metadata.deletion_timestamp.is_none()
        })
        .collect())
}

/// `(controlling owner's UID, password)` by credentials-Secret name, from the Secrets the user
/// controller writes.
async fn credentials_of(
    ctx: &Context,
    names: &ClusterNames,
) -> Result<HashMap<String, (String, String)>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let selector = format!(
        "{LABEL_CLUSTER}={},app.kubernetes.io/component=credentials",
        names.name
    );
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter_map(|s| {
            let owner = s
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))?
                .uid
                .clone();
            let password = secret_strings(&s).remove("password")?;
            Some((s.name_any(), (owner, password)))
        })
        .collect())
}

/// `username -> hash` from a users file text.
fn deployed_hashes(text: Option<&str>) -> HashMap<String, String> {
    text.unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(u, h)| (u.to_owned(), h.to_owned()))
        .collect()
}
