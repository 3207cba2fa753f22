//! Fuzz target: `parse_service_listing` never panics, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = tern_hypervisor::ldm::parse::parse_service_listing(text);
});
