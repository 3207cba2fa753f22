//! The target's side: `Prepare` (authenticate, check, reserve, receive) and `Finish`.

use crate::codec;
use crate::report::violation;
use crate::{Cluster, agent_actor};
use tern_hypervisor::Incoming;
use tern_model::{MigrationQuery, Server, preflight};
use tern_proto::v1 as pb;
use tern_raft_store::{Command, Outcome};
use tonic::Status;
use tracing::{info, instrument, warn};

/// How many times Prepare plans again after losing a race for the same resources.
pub const RESERVE_ATTEMPTS_MAX: u32 = 8;

/// A rejection that another operation's reservation caused (plan again), as opposed to
/// one that planning again cannot fix.
fn lost_race(message: &str) -> bool {
    ["[strand-unavailable]", "[memory-unavailable]", "[console-port-unavailable]"].iter().any(|c| message.contains(c))
}

/// Checks that `user` may migrate to this server with `password` (OP-04).
pub async fn authenticate(c: &dyn Cluster, user: &str, password: &str) -> Result<(), Status> {
    let record = c.state().read(|s| s.user(user).cloned());
    let Some(record) = record else {
        return Err(Status::permission_denied(format!("authentication failed for user {user} on {}", c.host())));
    };
    let (password, hash) = (password.to_string(), record.password_hash.clone());
    let ok = crate::blocking(c, move || tern_raft_store::verify_password(&password, &hash)).await?;
    if !ok {
        return Err(Status::permission_denied(format!("authentication failed for user {user} on {}", c.host())));
    }
    if !record.may_migrate() {
        return Err(Status::permission_denied(format!(
            "OP-04 user {user} lacks the \"LDoms Management\" or \"System Administrator\" profile on {}",
            c.host()
        )));
    }
    Ok(())
}

#[instrument(skip_all, fields(node = %c.host(), domain = %req.domain, operation = req.operation_id))]
pub async fn prepare(c: &dyn Cluster, req: pb::PrepareRequest) -> Result<pb::PrepareResponse, Status> {
    let user = if req.user.is_empty() { "root" } else { req.user.as_str() };
    authenticate(c, user, &req.password).await?;
    let source: Server = codec::decode(&req.source_server, "source_server")?;
    if source.name != req.source {
        return Err(Status::invalid_argument(format!("source_server is {}, not {}", source.name, req.source)));
    }
    let new_name = (!req.new_name.is_empty()).then_some(req.new_name.as_str());
    // The plan is made against the replicated reservations, and the state machine
    // arbitrates: when a concurrent operation wins the same resources first, plan again
    // against the new state (a bounded number of times) instead of failing at once.
    let mut attempt = 0;
    let (binding, warnings, reservation, token) = loop {
        attempt += 1;
        let target = c.hypervisor().inventory().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let now = c.now_ms();
        let reserved = c.state().read(|s| s.reserved_on(c.host(), now));
        let report = preflight(&MigrationQuery {
            source: &source,
            target: &target,
            domain: &req.domain,
            new_name,
            target_reserved: &reserved,
        });
        let warnings: Vec<pb::Violation> = report.warnings.iter().map(violation).collect();
        let Some(binding) = report.binding.clone().filter(|_| report.ok()) else {
            return Ok(pb::PrepareResponse {
                errors: report.errors.iter().map(violation).collect(),
                warnings,
                ..Default::default()
            });
        };
        let reserve = Command::Reserve {
            operation: req.operation_id,
            target: c.host().to_string(),
            source: req.source.clone(),
            domain: req.domain.clone(),
            binding: binding.clone(),
            lease_ms: req.lease_ms.clamp(1000, 10 * crate::LEASE_MS),
        };
        match c.propose(&agent_actor(c), reserve).await {
            Ok(Outcome::Reserved { reservation, token, .. }) => break (binding, warnings, reservation, token),
            Ok(other) => return Err(Status::internal(format!("Reserve answered {other:?}"))),
            Err(s)
                if s.code() == tonic::Code::FailedPrecondition
                    && lost_race(s.message())
                    && attempt < RESERVE_ATTEMPTS_MAX =>
            {
                // Let this member's state catch up with the winner's reservation.
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt as u64)).await;
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                let v = pb::Violation {
                    rule: String::new(),
                    code: "reservation-refused".into(),
                    message: s.message().to_string(),
                };
                return Ok(pb::PrepareResponse { errors: vec![v], warnings, ..Default::default() });
            }
            Err(s) => return Err(s),
        }
    };
    if !req.dry_run {
        let domain = source.domain(&req.domain).cloned().ok_or_else(|| Status::not_found("domain vanished"))?;
        let incoming =
            Incoming { domain, binding: binding.clone(), source: req.source.clone(), operation: req.operation_id };
        if let Err(e) = c.hypervisor().receive(incoming).await {
            warn!(error = %e, "the hypervisor refused the incoming domain; releasing");
            let _ = c.propose(&agent_actor(c), Command::Release { reservation, token }).await;
            return Err(Status::failed_precondition(format!("{} could not take {}: {e}", c.host(), req.domain)));
        }
    }
    info!(reservation, "reserved");
    Ok(pb::PrepareResponse {
        errors: vec![],
        warnings,
        reservation_id: reservation,
        token,
        binding: codec::encode(&binding)?,
    })
}

/// The source's verdict on an incoming domain: activate it or drop it.
pub async fn finish(c: &dyn Cluster, req: pb::FinishRequest) -> Result<pb::FinishResponse, Status> {
    c.hypervisor().finish_receive(&req.domain, req.committed).await.map_err(|e| match e {
        tern_hypervisor::HvError::NotFound(_) => Status::not_found(e.to_string()),
        other => Status::failed_precondition(other.to_string()),
    })?;
    info!(node = %c.host(), domain = %req.domain, committed = req.committed, "incoming migration finished");
    Ok(pb::FinishResponse {})
}
