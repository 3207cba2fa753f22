//! Every ldm parser on arbitrary text and on mutated fixtures: never a panic, and the
//! inventory builder on whatever parses never panics either. (The cargo-fuzz targets in
//! `fuzz/` do the same without a time limit.)

use proptest::prelude::*;
use std::path::PathBuf;
use tern_hypervisor::ldm::classify;
use tern_hypervisor::ldm::inventory::{Captures, ServerFacts, SharedStorage, build_server};
use tern_hypervisor::ldm::parse::{parse_device_listing, parse_domain_listing, parse_service_listing, parse_status};
use tern_model::{CpuFamily, CpuType, Firmware, OsVersion};

fn fixtures() -> Vec<String> {
    let root = manifest_dir().join("tests/fixtures/ldm");
    let mut out = Vec::new();
    for dir in ["oracle", "public", "seed"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        out.extend(files.iter().map(|f| std::fs::read_to_string(f).unwrap()));
    }
    out
}

/// Pieces of ldm's grammar, spliced in to reach the parsers' deeper branches.
const TOKENS: &[&str] = &[
    "|",
    "=",
    "\n",
    "|\n",
    "VERSION 1.6\n",
    "DOMAIN|name=x|state=active\n",
    "VCPU\n",
    "MEMORY\n",
    "CORE\n",
    "VDS|name=v\n",
    "|vol=a|dev=/d\n",
    "VCC|name=c|port-range=1-2\n",
    "STATUS\n",
    "|op=migration|progress=",
    "0x",
    "-",
    "(",
    ")",
    ",",
    "@",
    "%",
    "99999999999999999999999",
    "18446744073709551616",
    "0-4294967295",
    "VARIABLES\n",
    "\u{feff}",
    "é",
    "\r\n",
    "OPERATION PROGRESS SOURCE\n",
];

fn run_all(text: &str) {
    let domains = parse_domain_listing(text).ok();
    let devices = parse_device_listing(text).ok();
    let services = parse_service_listing(text).ok();
    let _ = parse_status(text);
    let _ = classify(text, text);
    let facts = ServerFacts {
        model: "SPARC M10-1".into(),
        cpu: CpuType { family: CpuFamily::Sparc64XPlus, frequency_mhz: 3200 },
        firmware: Firmware("XCP2210".into()),
        os: OsVersion::parse("11.4").unwrap(),
    };
    let captures = Captures {
        list_domain: domains.clone(),
        list_bindings: domains,
        list_devices: devices,
        list_services: services,
    };
    let _ = build_server("h", &facts, &captures, &SharedStorage::default(), &[1, 2]);
}

#[derive(Clone, Debug)]
enum Edit {
    Delete(usize),
    Insert(usize, char),
    Replace(usize, char),
    Splice(usize, usize),
    DuplicateLine(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), any::<char>()).prop_map(|(p, c)| Edit::Insert(p, c)),
        (any::<usize>(), any::<char>()).prop_map(|(p, c)| Edit::Replace(p, c)),
        (any::<usize>(), any::<usize>()).prop_map(|(p, t)| Edit::Splice(p, t)),
        any::<usize>().prop_map(Edit::DuplicateLine),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let len = chars.len().max(1);
        match *e {
            Edit::Delete(p) if !chars.is_empty() => {
                chars.remove(p % chars.len());
            }
            Edit::Delete(_) => {}
            Edit::Insert(p, c) => chars.insert(p % (chars.len() + 1), c),
            Edit::Replace(p, c) if !chars.is_empty() => chars[p % len] = c,
            Edit::Replace(..) => {}
            Edit::Splice(p, t) => {
                let at = p % (chars.len() + 1);
                let token = TOKENS[t % TOKENS.len()];
                chars.splice(at..at, token.chars());
            }
            Edit::DuplicateLine(p) => {
                let s: String = chars.iter().collect();
                let lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let i = p % lines.len();
                    let mut out: Vec<&str> = lines.clone();
                    out.insert(i, lines[i]);
                    chars = (out.join("\n") + "\n").chars().collect();
                }
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_on_arbitrary_text(text in any::<String>()) {
        // Goal: any Unicode text is either parsed or refused, never a panic.
        run_all(&text);
    }

    #[test]
    fn parsers_never_panic_on_record_shaped_noise(parts in prop::collection::vec(0..TOKENS.len(), 0..40)) {
        // Goal: text made of ldm's own tokens in random order is parsed or refused, never a panic.
        let text: String = parts.iter().map(|&i| TOKENS[i]).collect();
        run_all(&text);
    }

    #[test]
    fn parsers_never_panic_on_mutated_fixtures(which in any::<usize>(), edits in prop::collection::vec(edit(), 1..12)) {
        // Goal: every fixture, damaged by deletions, insertions and spliced tokens, never panics a parser.
        let all = fixtures();
        let text = apply(&all[which % all.len()], &edits);
        run_all(&text);
    }
}

/// This package's folder, read at run time first: one target folder serves every checkout.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
