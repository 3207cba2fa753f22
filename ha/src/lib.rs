//! HA when a control domain is lost (SPEC HA-01..HA-09). Decisions are pure: events
//! and the time in, effects out; no clock, no I/O, no async (except [`fence`], which
//! runs the fence agent). The agent's leader drives
//! them (a leader duty) and carries the effects out through the replicated state.
//!
//! - [`detector`]: HA-01, a host whose agent stops heartbeating is Suspect, then Lost.
//! - [`fence`]: HA-02, powering a lost server off through a standard fence agent and
//!   confirming it off (the one module here that runs a process).
//! - [`failover`]: HA-02..HA-06 on the leader: fence, then restart by priority through
//!   reservations (or hand off), round by round, driven by the replicated state.
//! - [`restart`]: HA-04/05, where a lost host's guests restart, by priority, with the
//!   same preflight and fitting as a migration, never over-committing.

pub mod detector;
pub mod failover;
pub mod fence;
pub mod process;
pub mod restart;

pub use detector::{Detector, DetectorConfig, Effect, Event};
pub use failover::{Failover, FailoverConfig, Fence, FenceState, HandOff, HostFailover, Mode};
pub use fence::{FenceOutcome, PowerFence};
pub use restart::{RestartPlan, plan_restarts};
