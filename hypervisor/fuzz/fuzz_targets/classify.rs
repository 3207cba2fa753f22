//! Fuzz target: `classify` (ldm failure messages -> rule ids) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    // First half as stdout, second half as stderr.
    let mid = text
        .char_indices()
        .map(|(i, _)| i)
        .nth(text.chars().count() / 2)
        .unwrap_or(text.len());
    let (out, err) = text.split_at(mid);
    let _ = tern_hypervisor::ldm::classify(out, err).into_error();
});
