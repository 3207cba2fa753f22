//! The pure model of tern: servers as Oracle VM Server for SPARC shows them, and the
//! live-migration rules of SPEC.md (LM-*).
//!
//! No I/O, no async, no clock, no randomness: every function here is a function of
//! its arguments, so every Raft member, planner and test computes the same answer.
//!
//! - [`server`]: cores and strands, memory blocks, services, domains.
//! - [`binding`]: the one check of a binding against a server (LM-06, LM-09, LM-12, LM-13).
//! - [`preflight`]: every LM rule as its own check, all violations reported.
//! - [`fit`]: exact memory-block fitting (LM-09).
//! - [`planner`]: choosing a target among servers (evacuation; later HA and rebalancing).
//! - [`placement`]: concrete CIDs and console ports on a target (LM-06, LM-12, LM-13).
//! - [`cpu`]: CPU types and the cpu-arch table (LM-07).
//! - [`version`]: firmware (LM-10) and OS (LM-11) versions.
//! - [`precopy`]: the pre-copy migration timing model (LM-17).
//! - [`rebalance`]: load-based rebalancing and make-room planning (RB-01..RB-05).
//! - [`resize`]: a guest's growth where it runs (UC-2, RB-06).
//! - [`units`]: sizes and ranges in ldm's vocabulary.
//! - [`profile`]: the rights profiles (LDoms Review, LDoms Management, System Administrator).

pub mod binding;
pub mod cpu;
pub mod fit;
pub mod placement;
pub mod planner;
pub mod precopy;
pub mod preflight;
pub mod profile;
pub mod rebalance;
pub mod resize;
pub mod server;
pub mod units;
pub mod version;

pub use binding::{BindingError, GuestShape, Resource};
pub use cpu::{CpuArch, CpuFamily, CpuType};
pub use fit::{FitError, MemoryFit, fit_memory};
pub use placement::Binding;
pub use precopy::{PrecopyParams, PrecopyPlan, precopy_plan};
pub use preflight::{Code, MigrationQuery, Report, Rule, Violation, preflight};
pub use profile::Profile;
pub use resize::{Amount, Resize, ResizeError, plan_resize};
pub use server::{
    BindError, Console, Core, CpuHolding, Domain, DomainKind, DomainState, FailurePolicy, MemoryBlock, Owner, Reserved,
    Server, Services, Strand, VDisk, VNet, Vcc, Vds, Volume, Vsw, Workload,
};
pub use units::{Range, Size};
pub use version::{Firmware, OsVersion};
