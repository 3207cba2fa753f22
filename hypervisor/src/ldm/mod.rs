//! The Oracle VM Server for SPARC backend: tern drives a real server by running `ldm`
//! on its control domain.
//!
//! - [`parse`]: pure parsers of ldm's parseable (`-p`) outputs, tolerant of what varies
//!   between releases and never panicking;
//! - [`inventory`]: parsed outputs plus what ldm does not print -> a [`tern_model::Server`];
//! - [`render`]: the inverse, a server printed as ldm's outputs (fake-ldm's fleet mode);
//! - [`failure`]: ldm's failure messages mapped to SPEC rule ids (LM-xx);
//! - [`run`]: one `ldm` process per command, with a deadline and bounded output;
//! - [`backend`]: [`LdmHypervisor`], the [`crate::Hypervisor`] trait over all of it.
//!
//! `ternctl import-ldm` uses `parse` and `inventory` offline, on captured outputs.

pub mod backend;
pub mod failure;
pub mod inventory;
pub mod parse;
pub mod render;
pub mod run;

pub use backend::{LdmHypervisor, LdmOptions};
pub use failure::{LdmFailure, classify};
pub use inventory::{Captures, InventoryError, ServerFacts, SharedStorage, build_server};
pub use parse::{
    DeviceListing, DomainListing, DomainStatus, ParseError, ServiceListing, parse_device_listing, parse_domain_listing,
    parse_service_listing, parse_status,
};
