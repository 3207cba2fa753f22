//! UC-1 hardware maintenance: `host evacuate` moves every guest off a host (each to
//! the server [`tern_model::planner::choose_target`] picks, through an ordinary
//! migration run by the host's own agent, LM-02) and marks it Maintenance; `host
//! restore` marks it Up and brings back the guests it sent away.

use crate::coordinator::{Held, Registry};
use std::sync::Arc;
use tern_cluster::{Cluster, Error, Finding, MigrateRequest, MigrationEvent, MigrationReport, agent_actor};
use tern_model::{DomainKind, Reserved, Server};
use tern_raft_store::{AbortOutcome, Command, HostStatus, OperationKind, Outcome, Phase, Progress};
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
    pub report: Option<Box<MigrationReport>>,
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
    c.propose(&agent_actor(c), Command::SetHostStatus { host: host.to_string(), status, expected: None })
        .await
        .map(|_| ())
}

/// The key a host's evacuation holds in the [`Registry`] while its
/// `BeginOperation` is in flight (domain and host names never collide with it).
pub fn registry_key(host: &str) -> String {
    format!("host:{host}")
}

/// An evacuation or restore recorded as an `Evacuation` operation, so that
/// `list-operations` shows it and, should this agent die mid-way, recovery ends it
/// (the guests already moved stay where they went).
struct Recorded<'a> {
    c: &'a dyn Cluster,
    operation: u64,
    _held: Held<'a>,
}

impl<'a> Recorded<'a> {
    async fn begin(c: &'a dyn Cluster, registry: &'a Registry, host: &str) -> Result<Self, Error> {
        let beginning = registry.beginning(&registry_key(host));
        let kind = OperationKind::Evacuation { host: host.to_string() };
        let operation = match c.propose(&agent_actor(c), Command::BeginOperation { kind }).await? {
            Outcome::OperationBegun { operation } => operation,
            other => return Err(Error::Internal(format!("BeginOperation answered {other:?}"))),
        };
        let held = registry.hold(operation);
        drop(beginning);
        Ok(Self { c, operation, _held: held })
    }

    /// Records that `done` of `total` guests have been dealt with (OP-06 for UC-1).
    async fn advance(&self, done: usize, total: usize) {
        let progress_pct = u8::try_from(done * 100 / total.max(1)).unwrap_or(100).min(99);
        let command = Command::AdvanceOperation {
            operation: self.operation,
            token: None,
            progress: Progress::Transferring { progress_pct },
        };
        if let Err(e) = self.c.propose(&agent_actor(self.c), command).await {
            tracing::warn!(operation = self.operation, error = %e, "recording progress failed");
        }
    }

    /// Ends the operation: Done with `summary`, or Failed with the error that stopped it.
    async fn end(self, result: &Result<String, Error>) {
        let command = match result {
            Ok(summary) => Command::CompleteOperation { operation: self.operation, notes: vec![summary.clone()] },
            Err(e) => Command::AbortOperation {
                operation: self.operation,
                outcome: AbortOutcome::Failed { reason: e.to_string() },
            },
        };
        if let Err(e) = self.c.propose(&agent_actor(self.c), command).await {
            tracing::warn!(operation = self.operation, error = %e, "ending the operation failed; recovery will");
        }
    }
}

fn summary(what: &str, host: &str, moved: u32, stayed: u32) -> String {
    format!("{what} {host}: {moved} guest(s) moved, {stayed} stayed")
}

/// The status of the host `req` names, which must be one of the cluster's.
fn status_of(c: &dyn Cluster, req: &HostRequest) -> Result<HostStatus, Error> {
    if req.host.is_empty() {
        return Err(Error::InvalidInput("name the host".into()));
    }
    c.state()
        .read(|s| s.host(&req.host).map(|h| h.status))
        .ok_or_else(|| Error::NotFound(format!("no host named {:?} in the cluster", req.host)))
}

/// Moves every guest off `req.host`, then marks it Maintenance; recorded as an
/// `Evacuation` operation.
pub async fn evacuate(
    c: Arc<dyn Cluster>,
    registry: Arc<Registry>,
    req: HostRequest,
    tx: HostEvents,
) -> Result<(), Error> {
    let host = req.host.clone();
    match status_of(c.as_ref(), &req)? {
        HostStatus::Up | HostStatus::Maintenance => {}
        other => {
            return Err(Error::Conflict(format!(
                "LM-02 {host} is {other}; migration runs from its control domain, so it cannot be evacuated (HA failover is the path)"
            )));
        }
    }
    recorded(c.as_ref(), &registry, &req, &tx, Work::Evacuate).await
}

/// Which of the two UC-1 halves runs.
#[derive(Clone, Copy)]
enum Work {
    Evacuate,
    Restore,
}

impl Work {
    fn verb(self) -> &'static str {
        match self {
            Self::Evacuate => "evacuated",
            Self::Restore => "restored",
        }
    }

    /// The host's status once the work is done.
    fn after(self) -> HostStatus {
        match self {
            Self::Evacuate => HostStatus::Maintenance,
            Self::Restore => HostStatus::Up,
        }
    }
}

/// Runs `work` on `req.host` recorded as an `Evacuation` operation, then sends the
/// summary.
async fn recorded(
    c: &dyn Cluster,
    registry: &Registry,
    req: &HostRequest,
    tx: &HostEvents,
    work: Work,
) -> Result<(), Error> {
    let host = &req.host;
    let record = Recorded::begin(c, registry, host).await?;
    let result = match work {
        Work::Evacuate => move_guests_off(c, &record, req, tx).await,
        Work::Restore => bring_guests_back(c, &record, req, tx).await,
    };
    record.end(&result.as_ref().map(|(m, s)| summary(work.verb(), host, *m, *s)).map_err(Clone::clone)).await;
    let (moved, stayed) = result?;
    info!(%host, moved, stayed, "{}", work.verb());
    emit(tx, HostEvent::Done { moved, stayed, status: work.after() }).await;
    Ok(())
}

/// Where `guest` of `host` can go, by [`tern_model::planner::choose_target`] over
/// the other Up hosts minus their reservations; `None` when `host` has no inventory.
fn plan_guest(
    c: &dyn Cluster,
    host: &str,
    guest: &str,
) -> Option<Result<tern_model::planner::Choice, tern_model::planner::Refusals>> {
    c.state().read(|s| {
        let now = c.now_ms();
        let source: Option<Server> = s.host(host).and_then(|h| h.inventory.clone());
        let others: Vec<(Server, Reserved)> = s
            .hosts()
            .values()
            .filter(|h| h.name != host && h.status == HostStatus::Up)
            .filter_map(|h| h.inventory.clone().map(|inv| (inv, s.reserved_on(&h.name, now))))
            .collect();
        source.map(|src| {
            let refs: Vec<(&Server, &Reserved)> = others.iter().map(|(a, b)| (a, b)).collect();
            tern_model::planner::choose_target(&src, guest, &refs)
        })
    })
}

/// Migrates each guest of `req.host` where it fits; (moved, stayed).
async fn move_guests_off(
    c: &dyn Cluster,
    record: &Recorded<'_>,
    req: &HostRequest,
    tx: &HostEvents,
) -> Result<(u32, u32), Error> {
    let host = &req.host;
    let guests: Vec<String> = c.state().read(|s| {
        s.host(host)
            .and_then(|h| h.inventory.as_ref())
            .map(|inv| inv.domains.iter().filter(|d| d.kind == DomainKind::Guest).map(|d| d.name.clone()).collect())
            .unwrap_or_default()
    });
    let (mut moved, mut stayed) = (0u32, 0u32);
    for (done, guest) in guests.iter().enumerate() {
        let result = match plan_guest(c, host, guest) {
            None => guest_result(guest, "", Err(Error::NotFound(format!("{host} has no inventory")))),
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
                let migration = MigrateRequest {
                    domain: guest.clone(),
                    target: choice.target.clone(),
                    new_name: None,
                    user: req.user.clone(),
                    password: req.password.clone(),
                    dry_run: false,
                    plan: None,
                    // A ticket names one move; an evacuation picks its targets, so it logs in.
                    ticket: None,
                };
                guest_result(guest, &choice.target, remote_migrate(c, host, migration).await)
            }
        };
        if result.moved {
            moved += 1;
        } else {
            stayed += 1;
        }
        emit(tx, HostEvent::Guest(result)).await;
        record.advance(done + 1, guests.len()).await;
    }
    set_status(c, host, HostStatus::Maintenance).await?;
    Ok((moved, stayed))
}

/// Marks `req.host` Up and brings back every guest whose latest migration took it off
/// this host and which still runs where it went; recorded as an `Evacuation`
/// operation of that host.
pub async fn restore(
    c: Arc<dyn Cluster>,
    registry: Arc<Registry>,
    req: HostRequest,
    tx: HostEvents,
) -> Result<(), Error> {
    let host = req.host.clone();
    match status_of(c.as_ref(), &req)? {
        HostStatus::Maintenance | HostStatus::Up => {}
        other => return Err(Error::Conflict(format!("{host} is {other}; bring it back up first"))),
    }
    recorded(c.as_ref(), &registry, &req, &tx, Work::Restore).await
}

/// (name on its current host, current host, original name) of every guest whose
/// latest migration took it off `host` and which still runs where it went.
fn sent_away(c: &dyn Cluster, host: &str) -> Vec<(String, String, String)> {
    c.state().read(|s| {
        let mut latest: std::collections::BTreeMap<String, (String, String, String)> = Default::default();
        for op in s.operations().values().filter(|o| o.phase == Phase::Done) {
            if let OperationKind::Migration { domain, source, target, new_name, dry_run: false, .. } = &op.kind {
                let now_named = new_name.clone().unwrap_or_else(|| domain.clone());
                latest.remove(domain);
                if source == host {
                    latest.insert(now_named.clone(), (now_named, target.clone(), domain.clone()));
                }
            }
        }
        latest.into_values().filter(|(name, at, _)| s.domain(name).is_some_and(|d| &d.host == at)).collect()
    })
}

/// Marks `req.host` Up, then migrates back what [`sent_away`] finds; (moved, stayed).
async fn bring_guests_back(
    c: &dyn Cluster,
    record: &Recorded<'_>,
    req: &HostRequest,
    tx: &HostEvents,
) -> Result<(u32, u32), Error> {
    let host = &req.host;
    set_status(c, host, HostStatus::Up).await?;
    let away = sent_away(c, host);
    let (mut moved, mut stayed) = (0u32, 0u32);
    for (done, (name, at, original)) in away.iter().enumerate() {
        let migration = MigrateRequest {
            domain: name.clone(),
            target: host.clone(),
            new_name: (original != name).then(|| original.clone()),
            user: req.user.clone(),
            password: req.password.clone(),
            dry_run: false,
            plan: None,
            ticket: None,
        };
        let result = guest_result(name, host, remote_migrate(c, at, migration).await);
        if result.moved {
            moved += 1;
        } else {
            stayed += 1;
        }
        emit(tx, HostEvent::Guest(result)).await;
        record.advance(done + 1, away.len()).await;
    }
    Ok((moved, stayed))
}
