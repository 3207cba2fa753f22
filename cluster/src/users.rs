//! Users who may migrate to this cluster's servers (OP-04). Passwords are hashed here,
//! in the proposer; the log only ever holds argon2 hashes.

use crate::{Cluster, Error, agent_actor, blocking};
use std::collections::BTreeSet;
use tern_raft_store::{Command, Profile};

/// Adds `name` (or, with `replace`, changes an existing user) with `profiles`.
pub async fn add(
    c: &dyn Cluster,
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
    c.propose(&agent_actor(c), Command::AddUser { name, password_hash, profiles, replace }).await?;
    Ok(())
}

pub async fn remove(c: &dyn Cluster, name: String) -> Result<(), Error> {
    c.propose(&agent_actor(c), Command::RemoveUser { name }).await?;
    Ok(())
}

/// Checks that `user` may migrate to this server with `password` (OP-04).
pub async fn authenticate(c: &dyn Cluster, user: &str, password: &str) -> Result<(), Error> {
    let refused = || Error::PermissionDenied(format!("authentication failed for user {user} on {}", c.host()));
    let Some(record) = c.state().read(|s| s.user(user).cloned()) else {
        return Err(refused());
    };
    let (password, hash) = (password.to_string(), record.password_hash.clone());
    if !blocking(c, move || tern_raft_store::verify_password(&password, &hash)).await? {
        return Err(refused());
    }
    if !record.may_migrate() {
        return Err(Error::PermissionDenied(format!(
            "OP-04 user {user} lacks the \"LDoms Management\" or \"System Administrator\" profile on {}",
            c.host()
        )));
    }
    Ok(())
}
