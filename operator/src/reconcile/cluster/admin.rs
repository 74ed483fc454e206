//! The admin API token the brokers accept and the operator sends: made once, kept in `NAME-admin`.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tracing::info;

use crate::reconcile::apply::{apply, secret_strings};
use crate::reconcile::context::Context;
use crate::reconcile::error::{Error, Result};
use crate::reconcile::passwords::random_token;
use crate::render::names::keys;
use crate::render::secrets::admin_secret;
use crate::validate::ValidatedCluster;

/// The token in `existing` (`NAME-admin`), or a new one applied there.
pub async fn ensure_token(
    ctx: &Context,
    cluster: &ValidatedCluster<'_>,
    existing: Option<&Secret>,
) -> Result<String> {
    if let Some(token) = existing.and_then(token_of) {
        return Ok(token);
    }
    let names = &cluster.names;
    let token = random_token();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    apply(
        &secrets,
        &admin_secret(names, cluster.owner.clone(), &token),
    )
    .await
    .map_err(Error::ApplyAdminSecret)?;
    info!(cluster = %names.name, "created the admin API token");
    Ok(token)
}

fn token_of(secret: &Secret) -> Option<String> {
    let token = secret_strings(secret).remove(keys::ADMIN_TOKEN)?;
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_owned())
}
