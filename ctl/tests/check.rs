//! `ternctl check` and `list-devices` as a user runs them: the real binary on the
//! shipped layouts, its output and its exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn layouts() -> PathBuf {
    manifest_dir().join("../deploy/layouts")
}

fn ternctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ternctl")).args(args).output().expect("ternctl runs")
}

fn check(domain: &str, target: &str) -> (i32, String) {
    let dir = layouts();
    let out = ternctl(&["check", "--layouts", dir.to_str().unwrap(), domain, target]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

#[test]
fn seed_migration_passes_and_prints_the_binding() {
    // Goal: ldom1 -> m10-1-2 passes; the output names new CIDs, PA ranges and port 5001 -> 5000.
    let (code, out) = check("ldom1", "m10-1-2");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ldom1 can migrate from m10-1-1 to m10-1-2"), "{out}");
    assert!(out.contains("CONSOLE  primary-vcc0 port 5001 -> 5000"), "{out}");
    assert!(out.contains("MEMORY   0x7e0270000000 16136M -> 0x7e0270000000 16136M"), "{out}");
}

#[test]
fn fragmented_target_is_refused_with_lm_09() {
    // Goal: the seed's 10G + 10G target: exit 1 and the LM-09 line with the numbers.
    let (code, out) = check("ldom1", "m10-1-fragmented");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "LM-09 m10-1-fragmented cannot hold ldom1's 16136M block: largest free range 10G (20G free in 2 ranges)"
        ),
        "{out}"
    );
}

#[test]
fn every_violated_rule_gets_its_own_line() {
    // Goal: m10-1-3 lacks vol1 and free cores: both LM-04 and LM-06 are reported.
    let (code, out) = check("ldom1", "m10-1-3");
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().any(|l| l.starts_with("LM-04 ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("LM-06 ")), "{out}");
}

#[test]
fn cross_cpu_native_guest_is_refused_with_lm_07() {
    // Goal: SPARC64 X+ -> SPARC T4 needs cpu-arch=generic.
    let (code, out) = check("ldom1", "t4-1");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("LM-07") && out.contains("cpu-arch=generic"), "{out}");
}

#[test]
fn json_report_names_rules_as_in_the_text_output() {
    // Goal: --json writes "rule": "LM-04", the id the text output prints, not {"Lm": 4}.
    let dir = layouts();
    let out = ternctl(&["--json", "check", "--layouts", dir.to_str().unwrap(), "ldom1", "m10-1-3"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let rules: Vec<&str> = report["errors"].as_array().unwrap().iter().map(|e| e["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["LM-04", "LM-06"], "{report}");
}

#[test]
fn unknown_domain_and_target_are_usage_errors() {
    // Goal: exit 2 with a message naming what was not found.
    let (code, out) = check("nosuch", "m10-1-2");
    assert_eq!(code, 2);
    assert!(out.contains("LDom \"nosuch\" was not found"), "{out}");
    let (code, out) = check("ldom1", "nohost");
    assert_eq!(code, 2);
    assert!(out.contains("no layout for target host \"nohost\""), "{out}");
}

#[test]
fn unknown_domain_is_bad_input_with_or_without_source() {
    // Goal: a domain that does not exist exits 2 (bad input) whether --source is given or not.
    let dir = layouts();
    let dir = dir.to_str().unwrap();
    let out = ternctl(&["check", "--layouts", dir, "--source", "m10-1-2", "nosuch", "m10-1-1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("LDom \"nosuch\" was not found on m10-1-2"), "{err}");
    assert!(out.stdout.is_empty(), "no report for a question that cannot be asked");
    let out = ternctl(&["check", "--layouts", dir, "nosuch", "m10-1-1"]);
    assert_eq!(out.status.code(), Some(2));
    // --source naming a server that lacks the guest: the guest exists elsewhere, still exit 2.
    let out = ternctl(&["check", "--layouts", dir, "--source", "m10-1-2", "ldom1", "m10-1-3"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_help_documents_the_exit_codes() {
    // Goal: `check --help` says that an unknown domain is bad input, exit 2.
    let out = ternctl(&["check", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 bad input") && text.contains("DOMAIN no layout holds (also with --source)"), "{text}");
}

#[test]
fn invalid_layout_file_is_named_with_its_line() {
    // Goal: exit 2 and the file and line of the bad entry.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text =
        std::fs::read_to_string(layouts().join("m10-1-2.toml")).unwrap().replace("cores = \"0-3\"", "cores = \"0-99\"");
    std::fs::write(&bad, text).unwrap();
    let out = ternctl(&["check", "--layout", bad.to_str().unwrap(), "primary", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("bad.toml") && err.contains("line ") && err.contains("CID 16"), "{err}");
}

#[test]
fn list_devices_prints_the_seeds_memory_table() {
    // Goal: OP-07: the PA / SIZE / BOUND table of the seed, row for row.
    let file = layouts().join("m10-1-1.toml");
    let out = ternctl(&["list-devices", "-a", "memory", "--layout", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().skip(2).map(|l| l.split_whitespace().collect()).collect();
    let want = [
        vec!["0x7e0000800000", "1G", "_sys_"],
        vec!["0x7e0040800000", "384M", "_sys_"],
        vec!["0x7e0058800000", "128M", "_sys_"],
        vec!["0x7e0060800000", "8G", "primary"],
        vec!["0x7e0260800000", "248M", "ldom1"],
        vec!["0x7e0270000000", "16136M", "ldom1"],
        vec!["0x7e0660800000", "39416M"],
    ];
    assert_eq!(rows, want, "{text}");
}

/// A copy of deploy/layouts with `from` replaced by `to` in `file`.
fn layouts_with(file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(layouts()).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if path.file_name().unwrap() == file {
            assert!(text.contains(from), "{file} has no {from:?}");
            text = text.replace(from, to);
        }
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    dir
}

fn check_in(dir: &std::path::Path, domain: &str, target: &str) -> (i32, String) {
    let out = ternctl(&["check", "--layouts", dir.to_str().unwrap(), domain, target]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

#[test]
fn layouts_may_give_the_os_as_solaris_prints_it() {
    // Goal: os = "Oracle Solaris 11.4 SPARC" or uname's "SunOS 5.11 11.4.42.111.0" is read, not exit 2.
    for os in ["Oracle Solaris 11.4 SPARC", "SunOS 5.11 11.4.42.111.0"] {
        let dir = layouts_with("m10-1-2.toml", "os = \"Solaris 11.1.17.5.0\"", &format!("os = {os:?}"));
        let (code, out) = check_in(dir.path(), "ldom1", "m10-1-2");
        assert_eq!(code, 0, "{os}: {out}");
    }
    let dir = layouts_with("m10-1-2.toml", "os = \"Solaris 11.1.17.5.0\"", "os = \"Oracle Solaris 11.1 SPARC\"");
    let (code, out) = check_in(dir.path(), "ldom1", "m10-1-2");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("LM-11 m10-1-2's control domain runs Solaris 11.1, which is older than"), "{out}");
    let dir = layouts_with("m10-1-2.toml", "os = \"Solaris 11.1.17.5.0\"", "os = \"Windows 11\"");
    let (code, out) = check_in(dir.path(), "ldom1", "m10-1-2");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("m10-1-2.toml") && out.contains("\"Windows 11\""), "{out}");
}

#[test]
fn guest_with_cores_but_no_memory_is_bad_input() {
    // Goal: a layout guest with cores and no memory block is refused (exit 2, its line), not passed.
    let dir = layouts_with("m10-1-1.toml", ", bound = \"ldom1\"", "");
    let (code, out) = check_in(dir.path(), "ldom1", "m10-1-2");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("m10-1-1.toml: line ") && out.contains("CPUs but no memory block"), "{out}");
    assert!(!out.contains("can migrate"), "{out}");
}

/// This package's folder, read at run time first: one target folder serves every checkout.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
