//! `ternctl import-ldm` as a user runs it: captures of the seed's source server in,
//! a layout out that `ternctl check` accepts; missing pieces named, never guessed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tern_hypervisor::layout::load_layout;

fn captures() -> PathBuf {
    manifest_dir().join("../hypervisor/tests/fixtures/ldm/seed")
}

fn layouts() -> PathBuf {
    manifest_dir().join("../deploy/layouts")
}

fn ternctl(args: &[&str]) -> (i32, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_ternctl")).args(args).output().expect("ternctl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

/// The full import of m10-1-1 into `dir`, minus the flags named in `without`.
fn import(dir: &Path, without: &[&str]) -> (i32, String) {
    let c = captures();
    let out = dir.join("m10-1-1.toml");
    let all: Vec<(&str, String)> = vec![
        ("--list-domain", c.join("list-domain-l-p.txt").display().to_string()),
        ("--list-bindings", c.join("list-bindings-p.txt").display().to_string()),
        ("--list-devices", c.join("list-devices-a-p.txt").display().to_string()),
        ("--list-services", c.join("list-services-p.txt").display().to_string()),
        ("--model", "SPARC M10-1".into()),
        ("--cpu", "SPARC64 X+".into()),
        ("--frequency-mhz", "3200".into()),
        ("--firmware", "XCP2210".into()),
        ("--os", "Solaris 11.1.17.5.0".into()),
        ("--shared", "/dev/dsk/c0t600000E00D28".into()),
        ("-o", out.display().to_string()),
    ];
    let mut args: Vec<&str> = vec!["import-ldm"];
    for (flag, value) in &all {
        if !without.contains(flag) {
            args.push(flag);
            args.push(value);
        }
    }
    ternctl(&args)
}

#[test]
fn imported_capture_passes_the_seed_migration_check() {
    // Goal: captures of m10-1-1 -> layout; `ternctl check ldom1 m10-1-2` on it passes as on the shipped layout.
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = import(dir.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("16 cores, 7 memory blocks"), "{out}");
    let imported = dir.path().join("m10-1-1.toml");
    let target = layouts().join("m10-1-2.toml");
    let (code, out) = ternctl(&[
        "check",
        "--layout",
        imported.to_str().unwrap(),
        "--layout",
        target.to_str().unwrap(),
        "ldom1",
        "m10-1-2",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ldom1 can migrate from m10-1-1 to m10-1-2"), "{out}");
    assert!(out.contains("CONSOLE  primary-vcc0 port 5001 -> 5000"), "{out}");
}

#[test]
fn imported_layout_matches_the_shipped_one_where_ldm_can_tell() {
    // Goal: cores, CPU bindings, memory table and services equal deploy/layouts/m10-1-1.toml.
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = import(dir.path(), &[]);
    assert_eq!(code, 0, "{out}");
    let got = load_layout(&dir.path().join("m10-1-1.toml")).unwrap();
    let want = load_layout(&layouts().join("m10-1-1.toml")).unwrap();
    assert_eq!(got.cores, want.cores);
    assert_eq!(got.memory, want.memory);
    assert_eq!(got.services, want.services);
    assert_eq!((got.cpu, &got.firmware, &got.os), (want.cpu, &want.firmware, &want.os));
    let (g, w) = (got.domain("ldom1").unwrap(), want.domain("ldom1").unwrap());
    assert_eq!((&g.vdisks, &g.vnets, &g.console, g.cpu_arch), (&w.vdisks, &w.vnets, &w.console, w.cpu_arch));
    // What ldm does not print stays unknown rather than guessed.
    assert_eq!(g.os, None);
    assert_eq!(g.workload.dirty_mib_per_s, 0);
}

#[test]
fn missing_server_facts_name_the_flags_to_pass() {
    // Goal: without --cpu and --frequency-mhz the import stops (exit 2) and says which flags to add.
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = import(dir.path(), &["--cpu", "--frequency-mhz"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("missing --cpu, --frequency-mhz"), "{out}");
    assert!(out.contains("--frequency-mhz 3200"), "{out}");
    assert!(!dir.path().join("m10-1-1.toml").exists());
}

#[test]
fn missing_shared_storage_answer_is_reported() {
    // Goal: ldm cannot tell shared storage (LM-03); the import asks for --shared/--all-shared/--none-shared.
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = import(dir.path(), &["--shared"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--shared DEVICE_PREFIX") && out.contains("--none-shared"), "{out}");
}

#[test]
fn missing_device_listing_names_its_flag() {
    // Goal: without list-devices there are no cores or memory blocks; the error names --list-devices.
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = import(dir.path(), &["--list-devices"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--list-devices FILE"), "{out}");
}

#[test]
fn a_malformed_capture_names_its_file_and_line() {
    // Goal: a damaged capture is refused with the file and the line at fault.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("devices.txt");
    std::fs::write(&bad, "VERSION 1.6\nMEMORY\n|pa=0x10|size=lots|bound=\n").unwrap();
    let out = dir.path().join("h.toml");
    let (code, text) = ternctl(&[
        "import-ldm",
        "--list-devices",
        bad.to_str().unwrap(),
        "--model",
        "SPARC M10-1",
        "--cpu",
        "SPARC64 X+",
        "--frequency-mhz",
        "3200",
        "--firmware",
        "XCP2210",
        "--os",
        "11.4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("devices.txt: line 3: size="), "{text}");
}

/// This package's folder, read at run time first: one target folder serves every checkout.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
