//! Users who may migrate to this cluster's servers (OP-04). Passwords are hashed here,
//! in the proposer; the log only ever holds argon2 hashes.

use crate::{Cluster, agent_actor};
use std::collections::BTreeSet;
use tern_proto::v1 as pb;
use tern_raft_store::{Command, Profile};
use tonic::Status;

pub async fn add(c: &dyn Cluster, req: pb::AddUserRequest) -> Result<pb::AddUserResponse, Status> {
    if req.profiles.is_empty() {
        return Err(Status::invalid_argument(
            "give at least one profile, e.g. \"LDoms Management\" or \"System Administrator\"",
        ));
    }
    let password = req.password.clone();
    let hash = crate::blocking(c, move || tern_raft_store::hash_password(&password))
        .await?
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let profiles: BTreeSet<Profile> = req.profiles.iter().map(|p| Profile::parse(p)).collect();
    let command = Command::AddUser { name: req.name, password_hash: hash, profiles, replace: req.replace };
    c.propose(&agent_actor(c), command).await?;
    Ok(pb::AddUserResponse {})
}

pub async fn remove(c: &dyn Cluster, req: pb::RemoveUserRequest) -> Result<pb::RemoveUserResponse, Status> {
    c.propose(&agent_actor(c), Command::RemoveUser { name: req.name }).await?;
    Ok(pb::RemoveUserResponse {})
}

pub fn list(c: &dyn Cluster) -> pb::ListUsersResponse {
    let users = c.state().read(|s| {
        s.users()
            .values()
            .map(|u| pb::UserInfo {
                name: u.name.clone(),
                profiles: u.profiles.iter().map(|p| p.as_str().to_string()).collect(),
            })
            .collect()
    });
    pb::ListUsersResponse { users }
}
