//! Generated secrets (users' passwords, the admin token) and password hashes for the users file,
//! made once per password. Argon2id is slow on purpose, and a fresh hash of an unchanged password
//! would change the users file and make every broker disconnect that user, so a hash is reused
//! while the password stays the same: from memory, or after a restart from the users file already
//! deployed (verified against the password first).

use rand::RngExt;
use sha2::{Digest, Sha256};
use tern_broker::auth::{PasswordError, PasswordHash, hash_new};

use super::context::Context;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2id: {0}")]
    Hash(#[from] PasswordError),
    #[error("the hashing task did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// 32 random alphanumerics (about 190 bits) from the operating system's generator.
pub fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The hash to put in the users file for `password`; `deployed` is the hash the current users
/// file holds for this user, if any.
pub async fn hash_for(
    ctx: &Context,
    key: String,
    password: &str,
    deployed: Option<String>,
) -> Result<String, HashError> {
    let digest = Sha256::digest(password.as_bytes()).to_vec();
    if let Some((known, hash)) = ctx.password_hashes.lock().get(&key)
        && *known == digest
    {
        return Ok(hash.clone());
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || -> Result<String, HashError> {
        if let Some(deployed) = deployed
            && PasswordHash::parse(&deployed).is_ok_and(|h| h.verify(password.as_bytes()))
        {
            return Ok(deployed);
        }
        Ok(hash_new(password.as_bytes())?)
    })
    .await??;
    ctx.password_hashes
        .lock()
        .insert(key, (digest, hash.clone()));
    Ok(hash)
}
