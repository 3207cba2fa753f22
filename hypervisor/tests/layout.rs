//! Layout files: the seed's servers load exactly, and bad files say where they are bad.

use std::path::PathBuf;
use tern_hypervisor::layout::{load_layout, parse_layout};
use tern_model::units::{GIB, MIB};
use tern_model::{Range, Reserved};

fn deploy(name: &str) -> PathBuf {
    manifest_dir().join("../deploy/layouts").join(name)
}

#[test]
fn loads_every_shipped_layout() {
    // Goal: every file in deploy/layouts parses and validates; the host is the stem.
    for name in ["m10-1-1", "m10-1-2", "m10-1-3", "m10-1-fragmented", "t4-1"] {
        let server = load_layout(&deploy(&format!("{name}.toml"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(server.name, name);
    }
}

#[test]
fn m10_1_1_reproduces_the_seed() {
    // Goal: the seed's source server: 64 GB, ldom1 with 4 cores and 248M + 16136M, 39416M free.
    let s = load_layout(&deploy("m10-1-1.toml")).unwrap();
    assert_eq!(s.cores.len(), 16);
    assert_eq!(s.threads_per_core, 2);
    assert_eq!(s.cpu_of("primary").cids, vec![0, 1, 2, 3]);
    let ldom1 = s.cpu_of("ldom1");
    assert!(ldom1.whole_cores);
    assert_eq!(ldom1.cids.len(), 4);
    let blocks: Vec<u64> = s.memory_of("ldom1").iter().map(|r| r.size).collect();
    assert_eq!(blocks, vec![248 * MIB, 16136 * MIB]);
    assert_eq!(s.free_ranges(&Reserved::default()), vec![Range::new(0x7e06_6080_0000, 39416 * MIB)]);
    assert_eq!(s.domain("ldom1").unwrap().console.as_ref().unwrap().port, 5001);
}

#[test]
fn fragmented_target_has_twenty_gigabytes_in_two_ranges() {
    // Goal: the seed's LM-09 counter-example: 20 GB free as 10 GB + 10 GB.
    let s = load_layout(&deploy("m10-1-fragmented.toml")).unwrap();
    let free = s.free_ranges(&Reserved::default());
    assert_eq!(free.iter().map(|r| r.size).collect::<Vec<_>>(), vec![10 * GIB, 10 * GIB]);
}

const GOOD: &str = r#"
[server]
model = "SPARC M10-1"
cpu = "SPARC64 X+"
frequency_mhz = 3200
firmware = "XCP2210"
os = "Solaris 11.1.17.5.0"
threads_per_core = 2

[cpu]
cids = "0-3"

[memory]
blocks = [
  { pa = 0x0, size = "1G", bound = "primary" },
  { pa = 0x40000000, size = "3G" },
]

[[domain]]
name = "primary"
kind = "control"
cores = "0-1"
"#;

#[test]
fn minimal_layout_parses() {
    // Goal: the smallest useful layout is accepted (the fixture the error tests bend).
    let s = parse_layout("h", GOOD).unwrap();
    assert_eq!(s.total_memory(), 4 * GIB);
}

#[test]
fn bad_domain_entry_is_reported_with_its_line() {
    // Goal: a semantic error names the entry and the line it starts on.
    let bad = GOOD.replace("cores = \"0-1\"", "cores = \"0-9\"");
    let err = parse_layout("h", &bad).unwrap_err();
    assert!(err.contains("line 19"), "{err}"); // the [[domain]] header
    assert!(err.contains("domain \"primary\"") && err.contains("CID 4"), "{err}");
}

#[test]
fn unknown_field_is_refused_with_its_line() {
    // Goal: typos do not pass silently: unknown keys are refused, with the line.
    let bad = GOOD.replace("threads_per_core = 2", "threads_per_core = 2\ncolour = \"red\"");
    let err = parse_layout("h", &bad).unwrap_err();
    assert!(err.contains("colour") && err.contains("line 9"), "{err}");
}

#[test]
fn core_bound_to_two_domains_is_refused() {
    // Goal: a strand cannot belong to two domains.
    let bad = format!("{GOOD}\n[[domain]]\nname = \"g\"\nkind = \"guest\"\ncores = \"1\"\n");
    let err = parse_layout("h", &bad).unwrap_err();
    assert!(err.contains("already bound to primary"), "{err}");
}

#[test]
fn overlapping_memory_blocks_are_refused() {
    // Goal: two blocks sharing a byte make the layout invalid.
    let bad = GOOD.replace("pa = 0x40000000", "pa = 0x3ff00000");
    let err = parse_layout("h", &bad).unwrap_err();
    assert!(err.contains("overlap"), "{err}");
}

#[test]
fn overlapping_memory_blocks_name_the_line_of_the_second_block() {
    // Goal: a whole-server error (overlap) points at the block at fault, once.
    let bad = GOOD.replace("pa = 0x40000000", "pa = 0x3ff00000");
    let err = parse_layout("h", &bad).unwrap_err();
    assert!(err.starts_with("line 16: memory block at 0x3ff00000: overlaps the block at 0x0 (1G)"), "{err}");
    assert_eq!(err.matches("overlap").count(), 1, "{err}");
}

#[test]
fn memory_bound_to_an_unknown_domain_names_its_line() {
    // Goal: a block bound to a domain no [[domain]] defines is reported at the block's line.
    let bad = GOOD.replace("size = \"3G\" }", "size = \"3G\", bound = \"ghost\" }");
    let err = parse_layout("h", &bad).unwrap_err();
    assert!(err.starts_with("line 16: memory block at 0x40000000: bound to unknown domain \"ghost\""), "{err}");
}

#[test]
fn service_of_an_unknown_domain_names_its_line() {
    // Goal: a [[vsw]] provided by a domain that does not exist is reported at its entry.
    let bad = format!("{GOOD}\n[[vsw]]\nname = \"vsw0\"\ndomain = \"ghost\"\nnic = \"net0\"\n");
    let err = parse_layout("h", &bad).unwrap_err();
    assert!(err.starts_with("line 24: vsw \"vsw0\": provided by unknown domain \"ghost\""), "{err}");
}

#[test]
fn domain_on_a_core_without_licence_is_reported_once_with_its_line() {
    // Goal: cores without activation are one error at the domain's line, not one per CPU.
    let bad = GOOD.replace("cids = \"0-3\"", "cids = \"0-3\"\nactivated = \"1-3\"");
    let err = parse_layout("h", &bad).unwrap_err();
    assert!(err.contains("line 20: domain \"primary\": cores: CID 0 is not in [cpu] activated"), "{err}");
    assert_eq!(err.matches("activated").count(), 1, "{err}");
}

#[test]
fn guest_with_cores_but_no_memory_is_refused_with_its_line() {
    // Goal: a bound domain holds CPUs and memory together (as ldm binds them); CPUs alone are refused.
    let bad = format!("{GOOD}\n[[domain]]\nname = \"g\"\nkind = \"guest\"\ncores = \"2-3\"\n");
    let err = parse_layout("h", &bad).unwrap_err();
    assert!(err.starts_with("line 24: domain \"g\": is active with CPUs but no memory block"), "{err}");
    let inactive = format!("{GOOD}\n[[domain]]\nname = \"g\"\nkind = \"guest\"\nstate = \"inactive\"\n");
    parse_layout("h", &inactive).expect("an inactive domain holds nothing");
}

#[test]
fn file_errors_name_the_file() {
    // Goal: an unreadable or invalid file is named in the error.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    assert!(load_layout(&missing).unwrap_err().to_string().contains("nope.toml"));
    let garbage = dir.path().join("g.toml");
    std::fs::write(&garbage, "this is [not toml").unwrap();
    let err = load_layout(&garbage).unwrap_err().to_string();
    assert!(err.contains("g.toml") && err.contains("line 1"), "{err}");
}

/// This package's folder, read at run time first: one target folder serves every checkout.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
