//! HA when a control domain is lost (SPEC HA-01..HA-09), as pure decisions: events
//! and the time in, effects out; no clock, no I/O, no async. The agent's leader drives
//! them (a leader duty) and carries the effects out through the replicated state.
//!
//! - [`detector`]: HA-01, a host whose agent stops heartbeating is Suspect, then Lost.

pub mod detector;

pub use detector::{Detector, DetectorConfig, Effect, Event};
