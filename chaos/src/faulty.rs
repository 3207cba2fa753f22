//! A server whose hypervisor stops answering (issue 15, chaos breadth): the sim
//! hypervisor behind a switch that makes every call fail at once (ldmd down: `ldm`
//! exits with an error), or hang until the backend's own deadline passes and then fail
//! (a hung `ldm`, killed by the runner). The server itself is untouched: guests keep
//! running, and the checker still reads the real sim.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use tern_hypervisor::sim::SimHypervisor;
use tern_hypervisor::{HvError, Hypervisor, Incoming, MigrateOut, MigrationOutcome, Pending, Progress};
use tern_model::{Binding, Domain, Resize, Server};
use tokio::sync::mpsc;

/// How a host's hypervisor answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HvFault {
    Works = 0,
    /// Every call fails at once.
    Fails = 1,
    /// Every call waits [`HANG_MS`], then fails as timed out.
    Hangs = 2,
}

/// How long a hung call waits before the backend's deadline fails it (simulated ms).
pub const HANG_MS: u64 = 15_000;

/// The switch and counter one host's [`FaultyHypervisor`] shares with the harness.
#[derive(Debug, Default)]
pub struct HvSwitch {
    fault: AtomicU8,
    /// Calls refused (failed or hung) so far.
    pub refused: AtomicU64,
}

impl HvSwitch {
    pub fn set(&self, fault: HvFault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    fn get(&self) -> HvFault {
        match self.fault.load(Ordering::SeqCst) {
            1 => HvFault::Fails,
            2 => HvFault::Hangs,
            _ => HvFault::Works,
        }
    }
}

/// The sim hypervisor behind an [`HvSwitch`].
pub struct FaultyHypervisor {
    pub inner: Arc<SimHypervisor>,
    pub switch: Arc<HvSwitch>,
}

impl FaultyHypervisor {
    /// Lets a call through, or refuses it as the switch says.
    async fn gate(&self, call: &str) -> Result<(), HvError> {
        match self.switch.get() {
            HvFault::Works => Ok(()),
            HvFault::Fails => {
                self.switch.refused.fetch_add(1, Ordering::SeqCst);
                Err(HvError::Io(format!("chaos: {call}: the hypervisor does not answer (ldmd is down)")))
            }
            HvFault::Hangs => {
                self.switch.refused.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(HANG_MS)).await;
                Err(HvError::Io(format!("chaos: {call}: no answer within {HANG_MS} ms; the command was killed")))
            }
        }
    }
}

#[tonic::async_trait]
impl Hypervisor for FaultyHypervisor {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn inventory(&self) -> Result<Server, HvError> {
        self.gate("inventory").await?;
        self.inner.inventory().await
    }

    async fn bind(&self, domain: Domain, binding: &Binding) -> Result<(), HvError> {
        self.gate("bind").await?;
        self.inner.bind(domain, binding).await
    }

    async fn unbind(&self, domain: &str) -> Result<(), HvError> {
        self.gate("unbind").await?;
        self.inner.unbind(domain).await
    }

    async fn resize(&self, resize: &Resize) -> Result<(), HvError> {
        self.gate("resize").await?;
        self.inner.resize(resize).await
    }

    async fn start(&self, domain: &str) -> Result<(), HvError> {
        self.gate("start").await?;
        self.inner.start(domain).await
    }

    async fn stop(&self, domain: &str) -> Result<(), HvError> {
        self.gate("stop").await?;
        self.inner.stop(domain).await
    }

    async fn receive(&self, incoming: Incoming) -> Result<(), HvError> {
        self.gate("receive").await?;
        self.inner.receive(incoming).await
    }

    async fn finish_receive(&self, domain: &str, ok: bool) -> Result<(), HvError> {
        self.gate("finish_receive").await?;
        self.inner.finish_receive(domain, ok).await
    }

    /// Not gated: the simulator's dry run adds nothing to the model's preflight, so a
    /// fault here would only refuse dry runs, which the scenarios do not ask about.
    async fn check_migrate_out(&self, req: &MigrateOut) -> Result<(), HvError> {
        self.inner.check_migrate_out(req).await
    }

    async fn migrate_out(
        &self,
        req: MigrateOut,
        progress: mpsc::Sender<Progress>,
    ) -> Result<MigrationOutcome, HvError> {
        self.gate("migrate_out").await?;
        self.inner.migrate_out(req, progress).await
    }

    async fn finish_migrate_out(&self, domain: &str, committed: bool) -> Result<(), HvError> {
        self.gate("finish_migrate_out").await?;
        self.inner.finish_migrate_out(domain, committed).await
    }

    async fn incoming(&self) -> Result<Vec<Pending>, HvError> {
        self.gate("incoming").await?;
        self.inner.incoming().await
    }

    async fn suspended(&self) -> Result<Vec<Pending>, HvError> {
        self.gate("suspended").await?;
        self.inner.suspended().await
    }

    async fn cancel_migration(&self, domain: &str) -> Result<(), HvError> {
        self.gate("cancel_migration").await?;
        self.inner.cancel_migration(domain).await
    }

    async fn utilisation(&self) -> Result<BTreeMap<String, u32>, HvError> {
        self.gate("utilisation").await?;
        self.inner.utilisation().await
    }
}
