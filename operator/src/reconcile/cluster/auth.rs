//! Users and ACL for one cluster: rendered from its `MqttUser`s (passwords from their credentials
//! Secrets) and `MqttAcl`s into `NAME-auth`, and pushed to every running broker through the admin
//! API so a change takes effect in seconds without a restart. kubelet's later refresh of the
//! mounted Secret is the backstop for brokers the push could not reach.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::Api;
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::fetch::Existing;
use crate::crd::MqttAcl;
use crate::reconcile::apply::{apply, secret_strings};
use crate::reconcile::context::Context;
use crate::reconcile::error::{Error, Result};
use crate::reconcile::passwords::hash_for;
use crate::render::auth::{AuthFileError, UserEntry, acl_file, users_file};
use crate::render::hex;
use crate::render::names::keys;
use crate::render::secrets::auth_secret;
use crate::validate::{ValidatedCluster, acl_rules};

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
pub async fn users_and_acl(
    ctx: &Context,
    cluster: &ValidatedCluster<'_>,
    existing: &Existing,
) -> Result<AuthFiles> {
    let names = &cluster.names;
    let deployed = existing
        .auth
        .as_ref()
        .map(secret_strings)
        .unwrap_or_default();
    let entries = user_entries(ctx, cluster, existing, deployed.get(keys::USERS)).await?;
    let files = render_files(&entries, &existing.acls, deployed.get(keys::ACL))?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let secret = auth_secret(names, cluster.owner.clone(), &files.users, &files.acl);
    apply(&secrets, &secret)
        .await
        .map_err(Error::ApplyAuthSecret)?;
    Ok(files)
}

/// One users-file entry per user that has a password, with its hash (made once per password).
async fn user_entries(
    ctx: &Context,
    cluster: &ValidatedCluster<'_>,
    existing: &Existing,
    deployed_users: Option<&String>,
) -> Result<Vec<UserEntry>> {
    let names = &cluster.names;
    let deployed_hashes = deployed_hashes(deployed_users.map(String::as_str));
    let mut entries: Vec<UserEntry> = Vec::new();
    let mut claimed = HashSet::new();
    for user in &existing.users {
        let username = user.username();
        if !claimed.insert(username.clone()) {
            continue; // the older MqttUser keeps the name; the newer one reports the conflict
        }
        // Only a Secret this MqttUser controls counts: a look-alike Secret someone else made under
        // that name must not smuggle a password in.
        let Some(password) = existing
            .credentials
            .get(&user.credentials_secret_name())
            .filter(|(owner, _)| user.metadata.uid.as_ref() == Some(owner))
            .map(|(_, password)| password)
        else {
            continue;
        };
        let key = format!("{}/{}/{username}", names.namespace, names.name);
        let hash = hash_for(ctx, key, password, deployed_hashes.get(&username).cloned()).await?;
        entries.push(UserEntry {
            username,
            hash,
            groups: user.spec.groups.iter().map(|g| g.0.clone()).collect(),
        });
    }
    Ok(entries)
}

/// The users file and the ACL file. While any `MqttAcl` is invalid the ACL fails closed: skipping
/// one could drop a deny rule, so the deployed ACL stays (or, on a new cluster, everything is
/// denied) and `acl_problem` says why.
fn render_files(
    entries: &[UserEntry],
    acls: &[MqttAcl],
    deployed_acl: Option<&String>,
) -> Result<AuthFiles, AuthFileError> {
    let users = users_file(entries)?;
    let invalid: Vec<String> = acls
        .iter()
        .filter_map(|a| {
            acl_rules(a)
                .err()
                .map(|e| format!("MqttAcl {}: {e}", a.name_any()))
        })
        .collect();
    let (acl, acl_problem) = if invalid.is_empty() {
        let refs: Vec<&MqttAcl> = acls.iter().collect();
        (acl_file(entries, &refs)?, None)
    } else {
        let previous = deployed_acl.cloned().unwrap_or_else(|| {
            "# An MqttAcl is invalid; everything is denied until it is fixed.\n".into()
        });
        (previous, Some(invalid.join("; ")))
    };
    let revision = {
        let mut digest = Sha256::new();
        digest.update(users.as_bytes());
        digest.update([0]);
        digest.update(acl.as_bytes());
        hex(&digest.finalize()[..12])
    };
    Ok(AuthFiles {
        users,
        acl,
        revision,
        acl_problem,
    })
}

/// Pushes the files to every running broker pod that has not accepted this revision yet.
/// Returns how many running pods do not have it.
pub async fn push_to_brokers(ctx: &Context, pods: &[Pod], token: &str, files: &AuthFiles) -> usize {
    let mut behind = 0;
    for pod in pods {
        let (Some(uid), Some(ip)) = (pod.metadata.uid.clone(), pod_ip(pod)) else {
            continue;
        };
        if ctx.pushed_auth.lock().get(&uid) == Some(&files.revision) {
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
    behind
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

/// `username -> hash` from a users file text.
fn deployed_hashes(text: Option<&str>) -> HashMap<String, String> {
    text.unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(u, h)| (u.to_owned(), h.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(topic: &str) -> MqttAcl {
        serde_yaml::from_str(&format!(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttAcl\nmetadata: {{name: a}}\nspec:\n  clusterRef: {{name: demo}}\n  rules: [{{access: allow, action: subscribe, topic: \"{topic}\", everyone: true}}]\n"
        ))
        .unwrap()
    }

    #[test]
    fn an_invalid_acl_keeps_the_deployed_one_or_denies_everything() {
        let deployed = "# before\nallow all both #\n".to_owned();
        let valid = render_files(&[], &[acl("a/#")], Some(&deployed)).unwrap();
        assert!(valid.acl.contains("allow all subscribe a/#"));
        assert_eq!(valid.acl_problem, None);

        let kept = render_files(&[], &[acl("a/#"), acl("a/#/b")], Some(&deployed)).unwrap();
        assert_eq!(kept.acl, deployed);
        assert!(
            kept.acl_problem
                .as_deref()
                .is_some_and(|p| p.starts_with("MqttAcl a: spec.rules[0]: ")),
            "{:?}",
            kept.acl_problem
        );
        let new = render_files(&[], &[acl("a/#/b")], None).unwrap();
        assert!(new.acl.contains("everything is denied"));
        assert_ne!(new.revision, kept.revision);
    }

    #[test]
    fn the_revision_follows_both_files() {
        let a = render_files(&[], &[], None).unwrap();
        let b = render_files(&[], &[acl("x")], None).unwrap();
        assert_eq!(a.revision, render_files(&[], &[], None).unwrap().revision);
        assert_ne!(a.revision, b.revision);
        assert_eq!(a.revision.len(), 24);
    }

    #[test]
    fn deployed_hashes_skip_comments() {
        let hashes = deployed_hashes(Some("# header\nalice:$argon2id$x\n"));
        assert_eq!(hashes.len(), 1);
        assert_eq!(hashes["alice"], "$argon2id$x");
    }
}
