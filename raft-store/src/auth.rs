//! Password hashing for users (OP-04): argon2id with a random salt, in PHC string form.
//!
//! Hashing needs randomness, so it happens in the proposer ([`hash_password`]) and the
//! log carries only the PHC string; apply merely checks that the string parses
//! ([`check_phc`]), which is deterministic. Verification runs wherever a user logs in.

use crate::error::Error;
use crate::state::command::{RejectCode, Rejection};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use password_hash::SaltString;
use password_hash::rand_core::OsRng;

/// Longest password accepted, in bytes (argon2 takes more; nobody needs it).
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// Hashes `password` with argon2id (default parameters) and a fresh salt from the OS RNG.
pub fn hash_password(password: &str) -> Result<String, Error> {
    if password.is_empty() || password.len() > PASSWORD_BYTES_MAX {
        return Err(Error::Password(format!("a password must be 1 to {PASSWORD_BYTES_MAX} bytes long")));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Password(format!("hashing failed: {e}")))
}

/// True when `password` matches the PHC string `hash`. A malformed hash never matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    if password.len() > PASSWORD_BYTES_MAX {
        return false;
    }
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Apply's check: `hash` is an argon2 PHC string with a salt and a hash.
pub(crate) fn check_phc(hash: &str) -> Result<(), Rejection> {
    let bad = |why: String| Err(Rejection::new(RejectCode::PasswordHashInvalid, why));
    let parsed = match PasswordHash::new(hash) {
        Ok(p) => p,
        Err(e) => return bad(format!("password hash is not a PHC string: {e}")),
    };
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return bad(format!("password hash uses {}; only argon2 is accepted", parsed.algorithm));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return bad("password hash lacks its salt or hash".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_password_verifies_and_others_do_not() {
        // Goal: hash_password makes a PHC string that check_phc accepts, that verifies
        // the right password only, and that differs each time (random salt).
        let h1 = hash_password("s3cret").unwrap();
        let h2 = hash_password("s3cret").unwrap();
        assert!(h1.starts_with("$argon2id$"));
        assert_ne!(h1, h2);
        assert!(check_phc(&h1).is_ok());
        assert!(verify_password("s3cret", &h1));
        assert!(!verify_password("S3cret", &h1));
        assert!(!verify_password("s3cret", "not a hash"));
        assert!(check_phc("$5$rounds=5000$salt$hash").is_err());
        assert!(check_phc("plaintext").is_err());
        assert!(hash_password("").is_err());
    }
}
