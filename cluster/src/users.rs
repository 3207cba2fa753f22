//! Users who may migrate to this cluster's servers (OP-04). Passwords are hashed here,
//! in the proposer; the log only ever holds argon2 hashes.

use crate::{Cluster, Error, blocking};
use std::collections::BTreeSet;
use tern_raft_store::{Command, Profile};

/// Adds `name` (or, with `replace`, changes an existing user) with `profiles`; the
/// audit log records `actor`, the authenticated caller.
pub async fn add(
    c: &dyn Cluster,
    actor: &str,
    name: String,
    password: String,
    profiles: BTreeSet<Profile>,
    replace: bool,
) -> Result<(), Error> {
    if profiles.is_empty() {
        return Err(Error::InvalidInput(
            "give at least one profile, e.g. \"LDoms Management\" or \"System Administrator\"".into(),
        ));
    }
    let password_hash = blocking(c, move || tern_raft_store::hash_password(&password)).await??;
    c.propose(actor, Command::AddUser { name, password_hash, profiles, replace }).await?;
    Ok(())
}

pub async fn remove(c: &dyn Cluster, actor: &str, name: String) -> Result<(), Error> {
    c.propose(actor, Command::RemoveUser { name }).await?;
    Ok(())
}

/// Checks that `user` may migrate to this server with `password` (OP-04).
pub async fn authenticate(c: &dyn Cluster, user: &str, password: &str) -> Result<(), Error> {
    let refused = || Error::PermissionDenied(format!("authentication failed for user {user} on {}", c.host()));
    if user.is_empty() {
        return Err(Error::InvalidInput(
            "OP-04 names the user to authenticate as (user@target); none was given".into(),
        ));
    }
    let record = c.state().read(|s| s.user(user).cloned());
    // An unknown user costs one argon2 verification too, against a hash no password
    // matches, so the time taken does not tell which users exist.
    let hash = match &record {
        Some(r) => r.password_hash.clone(),
        None => unknown_user_hash().to_string(),
    };
    let password = password.to_string();
    let matched = blocking(c, move || tern_raft_store::verify_password(&password, &hash)).await?;
    let Some(record) = record.filter(|_| matched) else {
        return Err(refused());
    };
    if !record.may_migrate() {
        return Err(Error::PermissionDenied(format!(
            "OP-04 user {user} lacks the \"LDoms Management\" or \"System Administrator\" profile on {}",
            c.host()
        )));
    }
    Ok(())
}

/// The argon2 hash an unknown user's password is checked against: made once per
/// process from random bytes, with the cluster's parameters, so no password matches.
fn unknown_user_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let noise = format!("{:?}{:?}", std::time::SystemTime::now(), std::thread::current().id());
        tern_raft_store::hash_password(&noise).unwrap_or_default()
    })
}
