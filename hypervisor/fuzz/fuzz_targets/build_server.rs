//! Fuzz target: whatever the parsers accept, building a server from it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_hypervisor::ldm::inventory::{Captures, ServerFacts, SharedStorage, build_server};
use tern_hypervisor::ldm::parse::{parse_device_listing, parse_domain_listing, parse_service_listing};
use tern_model::{CpuFamily, CpuType, Firmware, OsVersion};

fuzz_target!(|text: &str| {
    let Ok(os) = OsVersion::parse("11.4") else { return };
    let facts = ServerFacts {
        model: "SPARC M10-1".into(),
        cpu: CpuType {
            family: CpuFamily::Sparc64XPlus,
            frequency_mhz: 3200,
        },
        firmware: Firmware("XCP2210".into()),
        os,
    };
    let domains = parse_domain_listing(text).ok();
    let captures = Captures {
        list_domain: domains.clone(),
        list_bindings: domains,
        list_devices: parse_device_listing(text).ok(),
        list_services: parse_service_listing(text).ok(),
    };
    let _ = build_server(
        "fuzz",
        &facts,
        &captures,
        &SharedStorage {
            all: true,
            device_prefixes: vec![],
        },
        &[],
    );
});
