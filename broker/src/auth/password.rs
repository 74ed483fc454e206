//! Password hashes as they appear after `username:` in a users file, and their verification.
//!
//! Three formats are read; only the first is written:
//!
//! - `$argon2id$v=19$m=…,t=…,p=…$salt$hash`: a PHC string (RustCrypto `argon2`). [`hash_new`] makes
//!   these with OWASP's minimum parameters.
//! - `$6$salt$hash`: Mosquitto's legacy format. Not sha512-crypt: `hash` is standard base64 of a single
//!   SHA-512 over the password bytes followed by the raw salt bytes; `salt` is base64 of those bytes
//!   (`mosquitto_passwd` writes 12).
//! - `$7$iterations$salt$hash`: Mosquitto 2's default, PBKDF2-HMAC-SHA512 with a 64-byte output;
//!   `salt` and `hash` are standard base64 (`mosquitto_passwd` writes 12 salt bytes, 101 iterations).
//!
//! Mosquitto hashes the password up to its first NUL byte; here every byte counts, so a password
//! with a NUL inside will not match a Mosquitto-made hash. For `$7$`, as for any HMAC-keyed scheme,
//! passwords that differ only by trailing NUL bytes are equivalent (HMAC pads its key with zeros).
//! Pure computation: no I/O, no clock.

use std::fmt;

use argon2::password_hash::{self, PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::PasswordError;

/// Argon2id memory cost of new hashes, in KiB (19 MiB: OWASP's minimum for argon2id).
pub const NEW_M_COST_KIB: u32 = 19 * 1024;
/// Argon2id passes over memory of new hashes.
pub const NEW_T_COST: u32 = 2;
/// Argon2id lanes of new hashes.
pub const NEW_P_COST: u32 = 1;

/// The most memory an argon2id hash may ask for, in KiB. Verification allocates this much per CONNECT,
/// so a users file (perhaps rendered from a tenant's resource) must not be able to ask for gigabytes.
pub const MAX_M_COST_KIB: u32 = 256 * 1024;
/// The most passes an argon2id hash may ask for.
pub const MAX_T_COST: u32 = 16;
/// The most lanes an argon2id hash may ask for.
pub const MAX_P_COST: u32 = 16;
/// The most PBKDF2 iterations a `$7$` hash may ask for (about a second of CPU at this count).
pub const MAX_PBKDF2_ITERATIONS: u32 = 1_000_000;

/// Bytes in a SHA-512 digest, the stored hash of both Mosquitto formats.
const SHA512_LEN: usize = 64;
/// The longest salt accepted in the Mosquitto formats (Mosquitto itself writes 12 or 64).
const MAX_SALT_LEN: usize = 64;

/// Standard base64 that accepts the padding present or absent, as Mosquitto's files are written by
/// more than one tool.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A parsed password hash. Verifying costs what its parameters say: for the argon2id defaults about
/// 19 MiB of memory and some tens of milliseconds of one core per CONNECT, so callers run it off the
/// async executor (`spawn_blocking`) and bound how many run at once.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(Scheme);

#[derive(Clone, PartialEq, Eq)]
enum Scheme {
    /// Boxed: a parsed PHC string is several times the size of the other variants.
    Argon2id(Box<argon2::PasswordHash>),
    Sha512 {
        salt: Box<[u8]>,
        hash: [u8; SHA512_LEN],
    },
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Box<[u8]>,
        hash: [u8; SHA512_LEN],
    },
}

impl PasswordHash {
    /// Parses the text after `username:` (surrounding whitespace is the caller's to trim).
    pub fn parse(s: &str) -> Result<Self, PasswordError> {
        if s.starts_with("$argon2") {
            return parse_argon2id(s).map(|h| Self(Scheme::Argon2id(Box::new(h))));
        }
        if let Some(rest) = s.strip_prefix("$6$") {
            let (salt, hash) = split_salt_hash(rest)?;
            return Ok(Self(Scheme::Sha512 { salt, hash }));
        }
        if let Some(rest) = s.strip_prefix("$7$") {
            let (iterations, rest) = rest.split_once('$').ok_or(PasswordError::Malformed(
                "`$7$` needs `iterations$salt$hash`",
            ))?;
            let iterations = parse_iterations(iterations)?;
            let (salt, hash) = split_salt_hash(rest)?;
            return Ok(Self(Scheme::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            }));
        }
        Err(PasswordError::UnknownScheme)
    }

    /// Whether `password` hashes to this hash. The final comparison is constant-time; the work before
    /// it depends only on the hash's parameters, not on the password.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.0 {
            Scheme::Argon2id(hash) => Argon2::default().verify_password(password, &**hash).is_ok(),
            Scheme::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                let computed = digest.finalize();
                computed.as_slice().ct_eq(hash.as_slice()).into()
            }
            Scheme::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                let mut computed = [0u8; SHA512_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut computed);
                computed.ct_eq(hash).into()
            }
        }
    }

    /// The scheme's name for logs: `argon2id`, `sha512` (`$6$`) or `pbkdf2-sha512` (`$7$`).
    pub fn scheme(&self) -> &'static str {
        match self.0 {
            Scheme::Argon2id(_) => "argon2id",
            Scheme::Sha512 { .. } => "sha512",
            Scheme::Pbkdf2Sha512 { .. } => "pbkdf2-sha512",
        }
    }

    /// Whether this is one of Mosquitto's formats, which are worth replacing with argon2id (`$6$` is a
    /// single unstretched SHA-512 and falls quickly to offline guessing).
    pub fn is_legacy(&self) -> bool {
        !matches!(self.0, Scheme::Argon2id(_))
    }
}

/// Hashes never reach logs, not even the salt.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({})", self.scheme())
    }
}

/// A new argon2id PHC string for `password`, with a fresh 16-byte salt from the operating system and
/// [`NEW_M_COST_KIB`], [`NEW_T_COST`], [`NEW_P_COST`]. Verifying it later costs 19 MiB and a few tens
/// of milliseconds of one core per CONNECT.
pub fn hash_new(password: &[u8]) -> Result<String, PasswordError> {
    let salt = password_hash::try_generate_salt().map_err(|_| PasswordError::Rng)?;
    let params = Params::new(NEW_M_COST_KIB, NEW_T_COST, NEW_P_COST, None)
        .map_err(|e| PasswordError::Argon2(e.to_string()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_with_salt(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Argon2(e.to_string()))
}

/// Parses and bounds an argon2id PHC string, so that verification cannot fail on parameters later.
fn parse_argon2id(s: &str) -> Result<argon2::PasswordHash, PasswordError> {
    let hash = argon2::PasswordHash::new(s).map_err(|e| PasswordError::Argon2(e.to_string()))?;
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return Err(PasswordError::UnsupportedAlgorithm);
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(PasswordError::Malformed(
            "an argon2id hash needs a salt and an output",
        ));
    }
    if let Some(version) = hash.version {
        Version::try_from(version).map_err(|e| PasswordError::Argon2(e.to_string()))?;
    }
    let params = Params::try_from(&hash).map_err(|e| PasswordError::Argon2(e.to_string()))?;
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return Err(PasswordError::CostTooHigh);
    }
    Ok(hash)
}

fn parse_iterations(s: &str) -> Result<u32, PasswordError> {
    let iterations: u32 = s
        .parse()
        .map_err(|_| PasswordError::Malformed("`$7$` iterations must be a positive integer"))?;
    if iterations == 0 {
        return Err(PasswordError::Malformed(
            "`$7$` iterations must be a positive integer",
        ));
    }
    if iterations > MAX_PBKDF2_ITERATIONS {
        return Err(PasswordError::CostTooHigh);
    }
    Ok(iterations)
}

/// Splits and decodes `salt$hash`, both base64; the salt is 1 to 64 bytes, the hash exactly 64.
fn split_salt_hash(s: &str) -> Result<(Box<[u8]>, [u8; SHA512_LEN]), PasswordError> {
    let (salt, hash) = s.split_once('$').ok_or(PasswordError::Malformed(
        "expected `salt$hash` after the scheme",
    ))?;
    let salt = BASE64
        .decode(salt)
        .map_err(|_| PasswordError::Base64("salt"))?;
    if salt.is_empty() || salt.len() > MAX_SALT_LEN {
        return Err(PasswordError::Length {
            field: "salt",
            len: salt.len(),
        });
    }
    let hash = BASE64
        .decode(hash)
        .map_err(|_| PasswordError::Base64("hash"))?;
    let hash: [u8; SHA512_LEN] = hash
        .as_slice()
        .try_into()
        .map_err(|_| PasswordError::Length {
            field: "hash",
            len: hash.len(),
        })?;
    Ok((salt.into_boxed_slice(), hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with Debian's mosquitto_passwd 2.0.11: `mosquitto_passwd -H sha512 -b FILE user pass`.
    const SHA512_CORRECT_HORSE: &str = "$6$IeWPlxxAxUn1DSuW$TW/NNC/hED5FH8y/4anGet4hAjde+Wphr0Qc+JXCof2kcqIwBu2M07Kse2NUQDUJpoMXpXorY5VoPHmiCW/SIQ==";
    const SHA512_UNICODE: &str = "$6$ZNUmpdT8tBfsA+Yj$jNrKfnXdarqsAPrXdtt5/URpiFGD/Xgl7u/FGphp+IjpCrVwJLwIaRNqK3S/eOUDINf4qgrlsPoWDp2ZQ5Hx5g==";
    const SHA512_EMPTY: &str = "$6$DXqTRRVtumVwyDZa$l/e5LAXbaVFzXZ87kqSQCBiNv+PRHHT6CL66Nkzyp7W+O4EEBUjlYPHTurzG2Oj+td7eEOwziz08yCJrUOD3Ug==";
    // Made with `mosquitto_passwd -b FILE user pass` (its default, sha512-pbkdf2, 101 iterations).
    const PBKDF2_CORRECT_HORSE: &str = "$7$101$QGQUKL/EJcapr6B3$AsKtK3I/Xwtzv5ILMlSwIlQAH3Fxrs/IkPRB3Dpee3RoUH8cWfUoKYydPCqAs4Cf3gabHaSn+wUAG21Dx5PV4Q==";
    const PBKDF2_UNICODE: &str = "$7$101$LlJgmPoa+vQnOHcn$nxXkj7Rz0BKf/dK0UIY4HpQne7GMCEDS5tkboSKCPOgWz2iDDENQfOR3756mbFQoFVd9bNSK/JAG2/gSoYxkCg==";
    const PBKDF2_PUNCTUATION: &str = "$7$101$vRp95ZtAPt45T1jP$68A/WTWaW738cLPunm5yupYaW4WoJp8Xs/Odpx69De/BM7q5Ks/by2J3KVWAApK4xos12ck6CoOWgyj+JFLdTQ==";
    const PBKDF2_EMPTY: &str = "$7$101$pLbuSftAPLc+7wet$I8ZrdiEL7bzHNSk+kURuO4ZB+M59Y9qj9cKyBLByEm2yXFoulB1K7ZWwoQ0PQk5oO2qh1bKpY6mlYiWbs5pAnw==";

    // Made with Debian's reference `argon2` CLI:
    // `echo -n 'correct horse' | argon2 saltsalt -id -t 2 -k 19456 -p 1 -e`.
    const ARGON2ID_CORRECT_HORSE: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$pEoTT/PQJUrQ+4Qp3XrtcTufBun4D9FCw+dj/PBsWHI";

    fn parsed(s: &str) -> PasswordHash {
        match PasswordHash::parse(s) {
            Ok(h) => h,
            Err(e) => panic!("{s:?} did not parse: {e}"),
        }
    }

    #[test]
    fn mosquitto_sha512_hashes_verify_their_password_only() {
        let h = parsed(SHA512_CORRECT_HORSE);
        assert_eq!(h.scheme(), "sha512");
        assert!(h.verify(b"correct horse"));
        assert!(!h.verify(b"correct horsf"));
        assert!(!h.verify(b""));
        assert!(parsed(SHA512_UNICODE).verify("ünïcødé pässwörd".as_bytes()));
        assert!(parsed(SHA512_EMPTY).verify(b""));
        assert!(!parsed(SHA512_EMPTY).verify(b" "));
    }

    #[test]
    fn mosquitto_pbkdf2_hashes_verify_their_password_only() {
        let h = parsed(PBKDF2_CORRECT_HORSE);
        assert_eq!(h.scheme(), "pbkdf2-sha512");
        assert!(h.is_legacy());
        assert!(h.verify(b"correct horse"));
        assert!(!h.verify(b"Correct horse"));
        assert!(parsed(PBKDF2_UNICODE).verify("ünïcødé pässwörd".as_bytes()));
        assert!(parsed(PBKDF2_PUNCTUATION).verify(b"p:a$s#w"));
        assert!(parsed(PBKDF2_EMPTY).verify(b""));
        assert!(!parsed(PBKDF2_EMPTY).verify(b"x"));
    }

    #[test]
    fn pbkdf2_ignores_trailing_nul_bytes_as_hmac_pads_its_key() {
        assert!(parsed(PBKDF2_EMPTY).verify(b"\0"));
        assert!(parsed(PBKDF2_CORRECT_HORSE).verify(b"correct horse\0\0"));
        assert!(!parsed(PBKDF2_CORRECT_HORSE).verify(b"correct\0horse"));
    }

    #[test]
    fn mosquitto_hashes_parse_without_base64_padding() {
        let unpadded = SHA512_CORRECT_HORSE.trim_end_matches('=');
        assert!(parsed(unpadded).verify(b"correct horse"));
    }

    #[test]
    fn pbkdf2_iteration_count_is_part_of_the_hash() {
        let changed = PBKDF2_CORRECT_HORSE.replacen("$101$", "$102$", 1);
        assert!(!parsed(&changed).verify(b"correct horse"));
    }

    #[test]
    fn argon2id_round_trip() {
        let text = match hash_new(b"s3cret") {
            Ok(t) => t,
            Err(e) => panic!("hash_new failed: {e}"),
        };
        assert!(
            text.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{text}"
        );
        let h = parsed(&text);
        assert_eq!(h.scheme(), "argon2id");
        assert!(!h.is_legacy());
        assert!(h.verify(b"s3cret"));
        assert!(!h.verify(b"s3cres"));
    }

    #[test]
    fn argon2id_strings_from_the_reference_implementation_verify() {
        let h = parsed(ARGON2ID_CORRECT_HORSE);
        assert!(h.verify(b"correct horse"));
        assert!(!h.verify(b"correct horse "));
    }

    #[test]
    fn new_hashes_use_a_fresh_salt() {
        assert_ne!(hash_new(b"same").ok(), hash_new(b"same").ok());
    }

    #[test]
    fn argon2i_and_argon2d_are_refused() {
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$YWJjZGVmZ2hpamtsbW5vcA";
        assert_eq!(
            PasswordHash::parse(argon2i),
            Err(PasswordError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn argon2id_costs_beyond_the_limits_are_refused() {
        let huge = "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY";
        assert_eq!(PasswordHash::parse(huge), Err(PasswordError::CostTooHigh));
        let many = PBKDF2_CORRECT_HORSE.replacen("$101$", "$1000001$", 1);
        assert_eq!(PasswordHash::parse(&many), Err(PasswordError::CostTooHigh));
    }

    #[test]
    fn malformed_hashes_are_refused_with_a_reason() {
        for bad in [
            "",
            "plaintext",
            "$1$abc$def",
            "$6$",
            "$6$c2FsdA==",
            "$6$!!!$AAAA",
            "$6$c2FsdA==$c2hvcnQ=",
            "$7$0$c2FsdA==$AAAA",
            "$7$abc$c2FsdA==$AAAA",
            "$7$101",
            "$argon2id$garbage",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn debug_output_shows_only_the_scheme() {
        let shown = format!("{:?}", parsed(SHA512_CORRECT_HORSE));
        assert_eq!(shown, "PasswordHash(sha512)");
    }
}
