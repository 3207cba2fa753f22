//! Servers' power and their fences, modelled (HA-02): each server has a BMC a fence
//! can ask to power it off. Powering off stops every guest on the server, whatever
//! its agent is doing, and takes the control domain down with it.
//!
//! A fence runs inside the leader's simulated host, so it cannot crash another
//! host itself: it raises the server's power-off request and waits; the driver, which
//! owns the simulation, serves the request between steps ([`serve_requests`]): it
//! crashes that host if it runs, cuts the server's power (its guests stop) and powers
//! it on again at once (an admin who switched it back on: its agent then finds its
//! old guests bound and must never start them, HA-09). Deterministic: everything
//! happens at steps and on simulated time.

use crate::cluster::Shared;
use crate::nemesis::Nemesis;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tern_ha::{Fence, FenceOutcome};
use turmoil::Sim;

/// How the servers' BMCs answer a fence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FenceModel {
    /// No fence is configured: lost hosts' guests wait for an admin.
    #[default]
    None,
    /// The BMC powers the server off and status confirms it.
    Works,
    /// The BMC never answers: no fence is ever confirmed.
    Fails,
}

/// How long a fence waits for its power-off to be served.
const FENCE_WAIT_MS: u64 = 10_000;

/// The fence of one simulated server.
pub struct ChaosFence {
    pub shared: Weak<Shared>,
    pub host: String,
    pub model: FenceModel,
}

#[tonic::async_trait]
impl Fence for ChaosFence {
    fn describe(&self) -> String {
        format!("chaos BMC of {} ({:?})", self.host, self.model)
    }

    async fn fence(&self) -> FenceOutcome {
        if self.model != FenceModel::Works {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return FenceOutcome::NotConfirmed { attempts: 1, last: "chaos: the BMC does not answer".into() };
        }
        let Some(shared) = self.shared.upgrade() else {
            return FenceOutcome::NotConfirmed { attempts: 1, last: "chaos: the simulation ended".into() };
        };
        let Some(slot) = shared.host(&self.host) else {
            return FenceOutcome::NotConfirmed { attempts: 1, last: format!("chaos: no server {}", self.host) };
        };
        let before = slot.power_offs.load(Ordering::SeqCst);
        slot.power_off_requested.store(true, Ordering::SeqCst);
        let mut waited = 0;
        while waited < FENCE_WAIT_MS {
            if slot.power_offs.load(Ordering::SeqCst) > before {
                return FenceOutcome::ConfirmedOff { attempt: 1 };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += 100;
        }
        FenceOutcome::NotConfirmed { attempts: 1, last: "chaos: the power-off was not served".into() }
    }
}

/// The fences of every server under `model` (`None` for [`FenceModel::None`]).
pub fn fences(shared: &Arc<Shared>) -> Option<std::collections::BTreeMap<String, Arc<dyn Fence>>> {
    let model = shared.opts.fences;
    if model == FenceModel::None {
        return None;
    }
    Some(
        shared
            .hosts
            .iter()
            .map(|h| {
                let fence = ChaosFence { shared: Arc::downgrade(shared), host: h.name.clone(), model };
                (h.name.clone(), Arc::new(fence) as Arc<dyn Fence>)
            })
            .collect(),
    )
}

/// Serves every raised power-off request (see the module doc).
pub fn serve_requests(sim: &mut Sim<'_>, shared: &Shared, nemesis: &mut Nemesis, now_ms: u64) {
    for slot in &shared.hosts {
        if !slot.power_off_requested.swap(false, Ordering::SeqCst) {
            continue;
        }
        let running = sim.is_host_running(slot.name.as_str());
        let mut lost = String::new();
        if running {
            slot.clear_raft();
            sim.crash(slot.name.as_str());
            lost = nemesis.power_loss(slot);
        }
        let stopped = slot.power_off_now();
        slot.power_offs.fetch_add(1, Ordering::SeqCst);
        nemesis.note(
            now_ms,
            format!(
                "fence: power off {} (its agent {}){lost}; stopped {stopped:?}",
                slot.name,
                if running { "running" } else { "down" }
            ),
        );
        if running {
            // Switched on again at once; its agent boots on the powered-off server.
            sim.bounce(slot.name.as_str());
            nemesis.note(now_ms, format!("power on {}", slot.name));
        }
    }
}
