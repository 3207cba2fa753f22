//! UC-1 hardware maintenance: `host evacuate` moves every guest off a host (each to
//! the server [`tern_model::planner::choose_target`] picks, through an ordinary
//! migration run by the host's own agent, LM-02) and marks it Maintenance; `host
//! restore` marks it Up and brings back the guests it sent away.

use crate::report::violation;
use crate::{Cluster, agent_actor};
use std::sync::Arc;
use tern_model::{DomainKind, Reserved, Server};
use tern_proto::v1 as pb;
use tern_raft_store::{Command, HostStatus, OperationKind, Phase};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::info;

pub type HostEvents = mpsc::Sender<Result<pb::HostEvent, Status>>;

async fn emit(tx: &HostEvents, event: pb::host_event::Event) {
    let _ = tx.send(Ok(pb::HostEvent { event: Some(event) })).await;
}

/// Runs a migration on `source`'s agent and waits for its outcome.
async fn remote_migrate(
    c: &dyn Cluster,
    source: &str,
    req: pb::MigrateRequest,
) -> Result<pb::migrate_event::Event, Status> {
    let addr = c
        .state()
        .read(|s| s.host(source).map(|h| h.address.clone()))
        .ok_or_else(|| Status::not_found(format!("no host {source}")))?;
    let mut stream = pb::migration_client::MigrationClient::new(c.channel(&addr)?).migrate(req).await?.into_inner();
    while let Some(e) = stream.message().await? {
        match e.event {
            Some(pb::migrate_event::Event::Progress(_)) | None => {}
            Some(other) => return Ok(other),
        }
    }
    Err(Status::aborted("the migration stream ended without an outcome"))
}

fn guest_result(domain: &str, target: &str, outcome: Result<pb::migrate_event::Event, Status>) -> pb::GuestResult {
    let mut r = pb::GuestResult { domain: domain.into(), target: target.into(), ..Default::default() };
    match outcome {
        Ok(pb::migrate_event::Event::Report(report)) => {
            r.moved = true;
            r.report = Some(report);
        }
        Ok(pb::migrate_event::Event::Refused(refusal)) => r.reasons = refusal.errors,
        Ok(pb::migrate_event::Event::Progress(_)) => {}
        Err(s) => {
            r.reasons = vec![pb::Violation { rule: String::new(), code: "error".into(), message: s.message().into() }]
        }
    }
    r
}

async fn set_status(c: &dyn Cluster, host: &str, status: HostStatus) -> Result<(), Status> {
    c.propose(&agent_actor(c), Command::SetHostStatus { host: host.to_string(), status }).await.map(|_| ())
}

/// Moves every guest off `req.host`, then marks it Maintenance.
pub async fn evacuate(c: Arc<dyn Cluster>, req: pb::HostRequest, tx: HostEvents) -> Result<(), Status> {
    let host = req.host.clone();
    let status = c.state().read(|s| s.host(&host).map(|h| h.status));
    match status {
        None => return Err(Status::not_found(format!("no host named {host:?} in the cluster"))),
        Some(HostStatus::Up | HostStatus::Maintenance) => {}
        Some(other) => {
            return Err(Status::failed_precondition(format!(
                "LM-02 {host} is {other}; migration runs from its control domain, so it cannot be evacuated (HA failover is the path)"
            )));
        }
    }
    let guests: Vec<String> = c.state().read(|s| {
        s.host(&host)
            .and_then(|h| h.inventory.as_ref())
            .map(|inv| inv.domains.iter().filter(|d| d.kind == DomainKind::Guest).map(|d| d.name.clone()).collect())
            .unwrap_or_default()
    });
    let (mut moved, mut stayed) = (0u32, 0u32);
    for guest in guests {
        let plan = c.state().read(|s| {
            let now = c.now_ms();
            let source: Option<Server> = s.host(&host).and_then(|h| h.inventory.clone());
            let others: Vec<(Server, Reserved)> = s
                .hosts()
                .values()
                .filter(|h| h.name != host && h.status == HostStatus::Up)
                .filter_map(|h| h.inventory.clone().map(|inv| (inv, s.reserved_on(&h.name, now))))
                .collect();
            source.map(|src| {
                let refs: Vec<(&Server, &Reserved)> = others.iter().map(|(a, b)| (a, b)).collect();
                tern_model::planner::choose_target(&src, &guest, &refs)
            })
        });
        let result = match plan {
            None => guest_result(&guest, "", Err(Status::not_found(format!("{host} has no inventory")))),
            Some(Err(refusals)) => {
                let reasons = refusals
                    .iter()
                    .flat_map(|(target, vs)| {
                        vs.iter().map(move |v| {
                            let mut p = violation(v);
                            p.message = format!("{target}: {}", p.message);
                            p
                        })
                    })
                    .collect();
                pb::GuestResult { domain: guest.clone(), reasons, ..Default::default() }
            }
            Some(Ok(choice)) => {
                let req = pb::MigrateRequest {
                    domain: guest.clone(),
                    target: choice.target.clone(),
                    new_name: String::new(),
                    user: req.user.clone(),
                    password: req.password.clone(),
                    dry_run: false,
                };
                guest_result(&guest, &choice.target, remote_migrate(c.as_ref(), &host, req).await)
            }
        };
        if result.moved {
            moved += 1;
        } else {
            stayed += 1;
        }
        emit(&tx, pb::host_event::Event::Guest(result)).await;
    }
    set_status(c.as_ref(), &host, HostStatus::Maintenance).await?;
    info!(%host, moved, stayed, "evacuated");
    emit(&tx, pb::host_event::Event::Done(pb::HostSummary { moved, stayed, status: "maintenance".into() })).await;
    Ok(())
}

/// Marks `req.host` Up and brings back every guest whose latest migration took it off
/// this host and which still runs where it went.
pub async fn restore(c: Arc<dyn Cluster>, req: pb::HostRequest, tx: HostEvents) -> Result<(), Status> {
    let host = req.host.clone();
    let status = c.state().read(|s| s.host(&host).map(|h| h.status));
    match status {
        None => return Err(Status::not_found(format!("no host named {host:?} in the cluster"))),
        Some(HostStatus::Maintenance) => set_status(c.as_ref(), &host, HostStatus::Up).await?,
        Some(HostStatus::Up) => {}
        Some(other) => return Err(Status::failed_precondition(format!("{host} is {other}; bring it back up first"))),
    }
    // (name on its current host, current host, original name)
    let away: Vec<(String, String, String)> = c.state().read(|s| {
        let mut latest: std::collections::BTreeMap<String, (String, String, String)> = Default::default();
        for op in s.operations().values().filter(|o| o.phase == Phase::Done) {
            if let OperationKind::Migration { domain, source, target, new_name, dry_run: false } = &op.kind {
                let now_named = new_name.clone().unwrap_or_else(|| domain.clone());
                latest.remove(domain);
                if source == &host {
                    latest.insert(now_named.clone(), (now_named, target.clone(), domain.clone()));
                }
            }
        }
        latest.into_values().filter(|(name, at, _)| s.domain(name).is_some_and(|d| &d.host == at)).collect()
    });
    let (mut moved, mut stayed) = (0u32, 0u32);
    for (name, at, original) in away {
        let req = pb::MigrateRequest {
            domain: name.clone(),
            target: host.clone(),
            new_name: if original != name { original } else { String::new() },
            user: req.user.clone(),
            password: req.password.clone(),
            dry_run: false,
        };
        let result = guest_result(&name, &host, remote_migrate(c.as_ref(), &at, req).await);
        if result.moved {
            moved += 1;
        } else {
            stayed += 1;
        }
        emit(&tx, pb::host_event::Event::Guest(result)).await;
    }
    info!(%host, moved, stayed, "restored");
    emit(&tx, pb::host_event::Event::Done(pb::HostSummary { moved, stayed, status: "up".into() })).await;
    Ok(())
}
