//! Password hashes for the users file, made once per password. Argon2id is slow on purpose, and a
//! fresh hash of an unchanged password would change the users file and make every broker
//! disconnect that user, so a hash is reused while the password stays the same: from memory, or
//! after a restart from the users file already deployed (verified against the password first).

use sha2::{Digest, Sha256};
use tern_broker::auth::{PasswordHash, hash_new};

use super::context::Context;
use super::error::{Error, Result};

/// The hash to put in the users file for `password`; `deployed` is the hash the current users
/// file holds for this user, if any.
pub async fn hash_for(
    ctx: &Context,
    key: String,
    password: &str,
    deployed: Option<String>,
) -> Result<String> {
    let digest = Sha256::digest(password.as_bytes()).to_vec();
    if let Some((known, hash)) = ctx.password_hashes.lock().get(&key)
        && *known == digest
    {
        return Ok(hash.clone());
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || -> Result<String> {
        if let Some(deployed) = deployed
            && PasswordHash::parse(&deployed).is_ok_and(|h| h.verify(password.as_bytes()))
        {
            return Ok(deployed);
        }
        hash_new(password.as_bytes()).map_err(|e| Error::Hash(e.to_string()))
    })
    .await
    .map_err(|e| Error::Hash(e.to_string()))??;
    ctx.password_hashes
        .lock()
        .insert(key, (digest, hash.clone()));
    Ok(hash)
}
