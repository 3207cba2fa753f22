//! UC-1 hardware maintenance: `host evacuate` moves every guest off a host (each to
//! the server [`tern_model::planner::choose_target`] picks, through an ordinary
//! migration run by the host's own agent, LM-02) and marks it Maintenance; `host
//! restore` marks it Up and brings back the guests it sent away.

use std::sync::Arc;
use tern_cluster::{Cluster, Error, Finding, MigrateRequest, MigrationEvent, MigrationReport, agent_actor};
use tern_model::{DomainKind, Reserved, Server};
use tern_raft_store::{Command, HostStatus, OperationKind, Phase};
use tokio::sync::mpsc;
use tracing::info;

/// Which host to evacuate or restore, and as whom its guests migrate (OP-04).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostRequest {
    pub host: String,
    pub user: String,
    pub password: String,
}

/// What became of one guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestResult {
    pub domain: String,
    /// The target chosen for it (empty when none could take it).
    pub target: String,
    pub moved: bool,
    pub report: Option<MigrationReport>,
    /// Why it stayed: each candidate's violations, or the migration's refusal.
    pub reasons: Vec<Finding>,
}

/// What an evacuation or restore tells its caller: one result per guest, then a summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEvent {
    Guest(GuestResult),
    Done { moved: u32, stayed: u32, status: HostStatus },
}

pub type HostEvents = mpsc::Sender<HostEvent>;

async fn emit(tx: &HostEvents, event: HostEvent) {
    // A caller that went away does not stop the work: it runs to its end.
    let _ = tx.send(event).await;
}

/// Runs a migration on `source`'s agent (LM-02) and waits for its outcome.
async fn remote_migrate(c: &dyn Cluster, source: &str, req: MigrateRequest) -> Result<MigrationEvent, Error> {
    let addr = c
        .state()
        .read(|s| s.host(source).map(|h| h.address.clone()))
        .ok_or_else(|| Error::NotFound(format!("no host {source}")))?;
    c.peers().migrate(&addr, req).await
}

fn guest_result(domain: &str, target: &str, outcome: Result<MigrationEvent, Error>) -> GuestResult {
    let mut r = GuestResult { domain: domain.into(), target: target.into(), ..Default::default() };
    match outcome {
        Ok(MigrationEvent::Report(report)) => {
            r.moved = true;
            r.report = Some(report);
        }
        Ok(MigrationEvent::Refused { errors, .. }) => r.reasons = errors,
        Ok(MigrationEvent::Progress { .. }) => {}
        Err(e) => r.reasons = vec![Finding::new(e.rejection().and_then(|x| x.rule), "error", e.to_string())],
    }
    r
}

async fn set_status(c: &dyn Cluster, host: &str, status: HostStatus) -> Result<(), Error> {
    c.propose(&agent_actor(c), Command::SetHostStatus { host: host.to_string(), status }).await.map(|_| ())
}

fn check_named(req: &HostRequest) -> Result<(), Error> {
    if req.host.is_empty() {
        return Err(Error::InvalidInput("name the host".into()));
    }
    Ok(())
}

/// Moves every guest off `req.host`, then marks it Maintenance.
pub async fn evacuate(c: Arc<dyn Cluster>, req: HostRequest, tx: HostEvents) -> Result<(), Error> {
    check_named(&req)?;
    let host = req.host.clone();
    let status = c.state().read(|s| s.host(&host).map(|h| h.status));
    match status {
        None => return Err(Error::NotFound(format!("no host named {host:?} in the cluster"))),
        Some(HostStatus::Up | HostStatus::Maintenance) => {}
        Some(other) => {
            return Err(Error::Conflict(format!(
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
            None => guest_result(&guest, "", Err(Error::NotFound(format!("{host} has no inventory")))),
            Some(Err(refusals)) => {
                let reasons = refusals
                    .iter()
                    .flat_map(|(target, vs)| {
                        vs.iter().map(move |v| {
                            let mut f = Finding::from(v);
                            f.message = format!("{target}: {}", f.message);
                            f
                        })
                    })
                    .collect();
                GuestResult { domain: guest.clone(), reasons, ..Default::default() }
            }
            Some(Ok(choice)) => {
                let req = MigrateRequest {
                    domain: guest.clone(),
                    target: choice.target.clone(),
                    new_name: None,
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
        emit(&tx, HostEvent::Guest(result)).await;
    }
    set_status(c.as_ref(), &host, HostStatus::Maintenance).await?;
    info!(%host, moved, stayed, "evacuated");
    emit(&tx, HostEvent::Done { moved, stayed, status: HostStatus::Maintenance }).await;
    Ok(())
}

/// Marks `req.host` Up and brings back every guest whose latest migration took it off
/// this host and which still runs where it went.
pub async fn restore(c: Arc<dyn Cluster>, req: HostRequest, tx: HostEvents) -> Result<(), Error> {
    check_named(&req)?;
    let host = req.host.clone();
    let status = c.state().read(|s| s.host(&host).map(|h| h.status));
    match status {
        None => return Err(Error::NotFound(format!("no host named {host:?} in the cluster"))),
        Some(HostStatus::Maintenance) => set_status(c.as_ref(), &host, HostStatus::Up).await?,
        Some(HostStatus::Up) => {}
        Some(other) => return Err(Error::Conflict(format!("{host} is {other}; bring it back up first"))),
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
        let req = MigrateRequest {
            domain: name.clone(),
            target: host.clone(),
            new_name: (original != name).then_some(original),
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
        emit(&tx, HostEvent::Guest(result)).await;
    }
    info!(%host, moved, stayed, "restored");
    emit(&tx, HostEvent::Done { moved, stayed, status: HostStatus::Up }).await;
    Ok(())
}
