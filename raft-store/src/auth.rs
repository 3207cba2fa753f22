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
        // A stored hash with other costs is not trusted (it could make each login
        // take minutes, or be cheap to crack): only the cluster's parameters verify.
        Ok(parsed) if cluster_parameters(&parsed).is_ok() => {
            Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
        }
        _ => false,
    }
}

/// `Ok` when `parsed` is argon2id with the parameters [`hash_password`] uses.
fn cluster_parameters(parsed: &PasswordHash<'_>) -> Result<(), String> {
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!("password hash uses {}; only argon2id is accepted", parsed.algorithm));
    }
    let want = argon2::Params::default();
    let got = argon2::Params::try_from(parsed).map_err(|e| format!("password hash parameters: {e}"))?;
    if (got.m_cost(), got.t_cost(), got.p_cost()) != (want.m_cost(), want.t_cost(), want.p_cost()) {
        return Err(format!(
            "password hash costs m={} t={} p={}; the cluster uses m={} t={} p={}",
            got.m_cost(),
            got.t_cost(),
            got.p_cost(),
            want.m_cost(),
            want.t_cost(),
            want.p_cost()
        ));
    }
    Ok(())
}

/// Apply's check: `hash` is an argon2 PHC string with a salt and a hash.
pub(crate) fn check_phc(hash: &str) -> Result<(), Rejection> {
    let bad = |why: String| Err(Rejection::new(RejectCode::PasswordHashInvalid, why));
    let parsed = match PasswordHash::new(hash) {
        Ok(p) => p,
        Err(e) => return bad(format!("password hash is not a PHC string: {e}")),
    };
    if let Err(why) = cluster_parameters(&parsed) {
        return bad(why);
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

    #[test]
    fn a_hash_with_other_argon2_costs_is_refused_and_never_verifies() {
        // Goal: only the cluster's argon2id parameters are trusted: a cheap (or costly) stored hash is refused by
        // apply, naming the costs, and does not verify even with the right password.
        let salt = SaltString::generate(&mut OsRng);
        let cheap = argon2::Params::new(8, 1, 1, None).unwrap();
        let hash = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, cheap)
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string();
        assert!(!verify_password("s3cret", &hash));
        let r = check_phc(&hash).unwrap_err();
        assert!(r.message.contains("m=8 t=1 p=1"), "{}", r.message);
        let argon2i = Argon2::new(argon2::Algorithm::Argon2i, argon2::Version::V0x13, argon2::Params::default())
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string();
        assert!(check_phc(&argon2i).unwrap_err().message.contains("only argon2id"));
    }
}
