//! `-p FILE` (OP-03) guards the target password like ssh guards a private key.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn refuses_a_password_file_others_can_read() {
    // Goal: a password file readable by group or others is refused before anything is sent.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pass.txt");
    std::fs::write(&file, "secret\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ternctl"))
        .args(["migrate-domain", "-p", file.to_str().unwrap(), "ldom1", "m10-1-2"])
        .env("TERN_AGENT", "127.0.0.1:1")
        .env("TERN_CERTS_DIR", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("readable by group or others") && err.contains("chmod 600"), "{err}");
}

#[test]
fn asks_for_a_file_when_there_is_no_terminal() {
    // Goal: user@target without -p and without a terminal: ternctl says how to pass the password. (With neither
    // user@ nor -p it logs in by a certificate ticket and asks for no password.)
    let out = Command::new(env!("CARGO_BIN_EXE_ternctl"))
        .args(["migrate-domain", "ldom1", "root@m10-1-2"])
        .env("TERN_AGENT", "127.0.0.1:1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("pass -p FILE"), "{err}");
}
