//! Inventory reporting: the agent registers its host, then keeps the replicated
//! inventory equal to what its hypervisor shows. A change is reported once it has held
//! still for `inventory_debounce_ms`, so a burst of changes is one report.

use crate::node::{Node, backoff};
use std::time::Duration;
use tern_model::{DomainKind, DomainState, Server};
use tern_raft_store::{Command, HostSpec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

fn actor(node: &Node) -> String {
    format!("agent:{}", node.name)
}

/// Registers the host, then keeps its address and declared self-stop (HA-08) as this
/// agent's config says, retrying until the state shows them.
async fn register(node: &Node, shutdown: &CancellationToken) {
    let mut attempt = 0;
    loop {
        let declared = node.config.ha.self_stop();
        let known = node.read(|s| s.host(&node.name).map(|h| (h.address.clone(), h.self_stop)));
        let command = match known {
            Some((addr, self_stop)) if addr == node.address && self_stop == declared => return,
            Some((addr, self_stop)) => Command::UpdateHost {
                name: node.name.clone(),
                address: (addr != node.address).then(|| node.address.clone()),
                self_stop: (self_stop != declared).then_some(declared),
            },
            None => Command::RegisterHost { host: HostSpec { name: node.name.clone(), address: node.address.clone() } },
        };
        match node.propose(&actor(node), command).await {
            Ok(_) => {
                info!(node = %node.name, "host recorded");
                continue; // the next look returns once the state shows all of it
            }
            Err(tern_cluster::Error::Rejected(r)) if r.code == tern_raft_store::RejectCode::MemberRemoved => {
                if attempt % 20 == 0 {
                    warn!(node = %node.name, reason = %r, "this member was removed from the cluster; waiting to be let back");
                }
            }
            Err(e) => debug!(node = %node.name, error = %e, "registering host; will retry"),
        }
        attempt += 1;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff(attempt, node.id)) => {}
        }
    }
}

/// Polls the hypervisor and reports changes until shutdown.
pub async fn run(node: Node, shutdown: CancellationToken) {
    let poll = Duration::from_millis(node.config.timeouts.inventory_poll_ms);
    let debounce = Duration::from_millis(node.config.timeouts.inventory_debounce_ms);
    let mut registered = false;
    let mut last_error: Option<String> = None;
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let server = match node.hypervisor.inventory().await {
            Ok(s) => s,
            Err(e) => {
                warn!(node = %node.name, error = %e, "reading the hypervisor's inventory failed");
                continue;
            }
        };
        // Registered once, and again if the host's record went (an administrator
        // removed this member, then let it back: `ternctl cluster add-member`).
        if !registered || node.read(|s| s.host(&node.name).is_none()) {
            register(&node, &shutdown).await;
            registered = true;
        }
        let server = match retire_stale_copies(&node, server).await {
            Some(s) => s,
            None => continue,
        };
        let recorded = node.read(|s| s.host(&node.name).and_then(|h| h.inventory.clone()));
        if recorded.as_ref() == Some(&server) {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(debounce) => {}
        }
        match node.hypervisor.inventory().await {
            Ok(again) if again == server => {}
            _ => continue, // still changing: report once it settles
        }
        match node.propose(&actor(&node), Command::ReportInventory { server }).await {
            Ok(_) => {
                debug!(node = %node.name, "inventory reported");
                last_error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(&msg) {
                    warn!(node = %node.name, error = %msg, "inventory report refused");
                    last_error = Some(msg);
                }
            }
        }
    }
}

/// HA-09: a guest this server shows that the cluster records on another host, with
/// no operation moving it and nothing pending for it here, was restarted elsewhere
/// while this host was fenced (or lost). This server must never run it again: it is
/// stopped (if it runs, which means two copies already) and unbound here. Returns the
/// inventory afterwards, or `None` when the hypervisor could not be read again.
async fn retire_stale_copies(node: &Node, server: Server) -> Option<Server> {
    let guests: Vec<(String, DomainState)> =
        server.domains.iter().filter(|d| d.kind == DomainKind::Guest).map(|d| (d.name.clone(), d.state)).collect();
    let stale: Vec<(String, DomainState, String)> = node.read(|s| {
        let now = node.now_ms();
        guests
            .iter()
            .filter_map(|(name, state)| {
                let rec = s.domain(name)?;
                let elsewhere = rec.host != node.name;
                let moving = s.running_operation_for_domain(name).is_some();
                let reserved_here = s.active_reservations_on(&node.name, now).any(|r| &r.binding.domain == name);
                // Only a second copy is stale: the recorded host's own report must show
                // the guest too. And a guest that arrived by a migration the cluster did
                // not commit may be the only copy (ldm settles moves itself): never
                // destroyed here; the reports move its record instead.
                let copy_there = s.reports_guest(&rec.host, name);
                let settled_here = s.uncommitted_migration(name).is_some_and(|(_, _, to)| to == node.name);
                (elsewhere && !moving && !reserved_here && copy_there && !settled_here)
                    .then(|| (name.clone(), *state, rec.host.clone()))
            })
            .collect()
    });
    if stale.is_empty() {
        return Some(server);
    }
    let pending = match (node.hypervisor.incoming().await, node.hypervisor.suspended().await) {
        (Ok(i), Ok(s)) => i.into_iter().chain(s).map(|p| p.domain).collect::<Vec<_>>(),
        _ => return None,
    };
    for (name, state, host) in stale.into_iter().filter(|(n, _, _)| !pending.contains(n)) {
        if state == DomainState::Active {
            warn!(node = %node.name, domain = %name, runs_on = %host,
                "HA-09: this server runs a guest the cluster records on another host; stopping this copy");
            if let Err(e) = node.hypervisor.stop(&name).await {
                warn!(node = %node.name, domain = %name, error = %e, "stopping the stale copy failed");
                continue;
            }
        }
        match node.hypervisor.unbind(&name).await {
            Ok(()) => warn!(node = %node.name, domain = %name, runs_on = %host,
                "HA-09: unbound the copy of a guest restarted elsewhere; it will not start here"),
            Err(e) => warn!(node = %node.name, domain = %name, error = %e, "unbinding the stale copy failed"),
        }
    }
    node.hypervisor.inventory().await.ok()
}
