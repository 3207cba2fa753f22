//! The layout writer: every shipped layout survives layout -> Server -> TOML -> Server.

use std::path::PathBuf;
use tern_hypervisor::layout::{load_layout, parse_layout, write_layout};
use tern_model::{Core, Strand};

#[test]
fn every_shipped_layout_round_trips_through_the_writer() {
    // Goal: write_layout(load(x)) parses back to the very same Server, for each deploy/layouts file.
    let dir = manifest_dir().join("../deploy/layouts");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 5);
    for f in files {
        let server = load_layout(&f).unwrap();
        let text = write_layout(&server).unwrap();
        let again = parse_layout(&server.name, &text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", f.display()));
        assert_eq!(again, server, "{}", f.display());
    }
}

#[test]
fn a_core_the_format_cannot_describe_is_refused() {
    // Goal: a CPUSET that is not cid*threads_per_core.. is an error, never a silently different layout.
    let dir = manifest_dir().join("../deploy/layouts");
    let mut server = load_layout(&dir.join("m10-1-2.toml")).unwrap();
    server.cores.push(Core {
        cid: 99,
        activated: true,
        strands: vec![Strand { id: 500, bound: None }, Strand { id: 501, bound: None }],
    });
    let e = write_layout(&server).unwrap_err();
    assert!(e.contains("core 99"), "{e}");
}

/// This package's folder, read at run time first: one target folder serves every checkout.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
