//! What `ternd` tells the service manager that started it, and what it learns from it.
//!
//! **Readiness** (`Type=notify`, see `deploy/systemd/ternd.service`): systemd passes the
//! path of a unix datagram socket in `NOTIFY_SOCKET` (a leading `@` names a Linux
//! abstract socket, whose name starts with a NUL byte) and waits for `READY=1` on it
//! before it counts the service as started. [`notify`] sends such a state, as
//! `sd_notify(3)` does; without `NOTIFY_SOCKET` (a terminal, SMF, a test) it does
//! nothing. [`crate::run`] sends `READY=1` once the agent serves and has written
//! `<data_dir>/ternd.addr`, and `STOPPING=1` when shutdown begins.
//!
//! **Logs**: [`stderr_is_journal`] tells whether stderr is a stream to systemd's
//! journal (`JOURNAL_STREAM`, `systemd.exec(5)`), where lines need neither timestamps
//! nor colours: the journal stamps every line itself.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::net::UnixDatagram;

/// The state sent once the agent serves.
pub const READY: &str = "READY=1";
/// The state sent when shutdown begins.
pub const STOPPING: &str = "STOPPING=1";

/// Sends `state` (newline-separated `KEY=VALUE` assignments, e.g. `READY=1`) to the
/// socket named by `NOTIFY_SOCKET`. `Ok(false)` when the variable is unset or empty:
/// nobody listens.
pub fn notify(state: &str) -> io::Result<bool> {
    notify_socket(std::env::var_os("NOTIFY_SOCKET"), state)
}

/// [`notify`], logging a failure instead of returning it: a service manager that
/// cannot be told is no reason to stop serving.
pub fn notify_or_warn(state: &str) {
    match notify(state) {
        Ok(true) => tracing::debug!(state, "told the service manager"),
        Ok(false) => {}
        Err(e) => tracing::warn!(state, error = %e, "telling the service manager (NOTIFY_SOCKET)"),
    }
}

/// [`notify`] to the socket named `socket` (`NOTIFY_SOCKET`'s value) instead.
pub fn notify_socket(socket: Option<OsString>, state: &str) -> io::Result<bool> {
    let Some(socket) = socket.filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    // The receiver reads promptly; if its queue is ever full, fail rather than block
    // the agent.
    sock.set_nonblocking(true)?;
    let sent = send_to(&sock, &socket, state.as_bytes())?;
    if sent != state.len() {
        return Err(io::Error::other(format!("sent {sent} of {} bytes", state.len())));
    }
    Ok(true)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_to(sock: &UnixDatagram, socket: &OsStr, message: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::SocketAddr;
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => sock.send_to_addr(message, &SocketAddr::from_abstract_name(name)?),
        None => sock.send_to(message, socket),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_to(sock: &UnixDatagram, socket: &OsStr, message: &[u8]) -> io::Result<usize> {
    use std::os::unix::ffi::OsStrExt;
    if socket.as_bytes().starts_with(b"@") {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "abstract sockets exist on Linux only"));
    }
    sock.send_to(message, socket)
}

/// Whether this process's stderr is a stream to the journal: `JOURNAL_STREAM`
/// (`DEVICE:INODE`, set by systemd for a service whose output goes to the journal) names
/// the file stderr is. A child that inherited the variable but whose stderr was
/// redirected elsewhere does not match.
pub fn stderr_is_journal() -> bool {
    journal_stream_is(std::env::var_os("JOURNAL_STREAM").as_deref(), stderr_id())
}

/// The decision of [`stderr_is_journal`]: `journal_stream` (the variable's value)
/// names the file `stderr` (its device and inode, when known).
pub fn journal_stream_is(journal_stream: Option<&OsStr>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(value), Some(stderr)) = (journal_stream.and_then(OsStr::to_str), stderr) else {
        return false;
    };
    let Some((dev, ino)) = value.trim().split_once(':') else {
        return false;
    };
    matches!((dev.parse::<u64>(), ino.parse::<u64>()), (Ok(d), Ok(i)) if (d, i) == stderr)
}

/// The device and inode of the file open as stderr.
fn stderr_id() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("a datagram within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// A state is delivered whole, as one datagram, to the socket file NOTIFY_SOCKET names.
    #[test]
    fn notify_sends_the_state_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let sent = notify_socket(Some(path.clone().into_os_string()), "READY=1\nSTATUS=serving").unwrap();
        assert!(sent, "a socket was named, so the state is sent");
        assert_eq!(receive(&listener), "READY=1\nSTATUS=serving");
    }

    /// NOTIFY_SOCKET=@name is the abstract socket "\0name" (Linux), as systemd passes it.
    #[cfg(target_os = "linux")]
    #[test]
    fn notify_reaches_an_abstract_socket_named_with_an_at_sign() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("tern-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        assert!(notify_socket(Some(format!("@{name}").into()), STOPPING).unwrap());
        assert_eq!(receive(&listener), STOPPING);
    }

    /// Without NOTIFY_SOCKET (or with it empty) nothing is sent and nothing fails.
    #[test]
    fn notify_without_a_socket_does_nothing() {
        assert!(!notify_socket(None, READY).unwrap());
        assert!(!notify_socket(Some(OsString::new()), READY).unwrap());
    }

    /// A socket that does not exist is an error to report, not a silent success.
    #[test]
    fn notify_to_a_missing_socket_fails() {
        let dir = tempfile::tempdir().unwrap();
        assert!(notify_socket(Some(dir.path().join("absent").into_os_string()), READY).is_err());
    }

    /// Journal-style logs only when JOURNAL_STREAM names stderr's own device and inode.
    #[test]
    fn the_journal_is_recognised_only_when_journal_stream_names_stderr() {
        let stderr = Some((64769, 123456));
        let is = |v: Option<&str>, s| journal_stream_is(v.map(OsStr::new), s);
        assert!(is(Some("64769:123456"), stderr));
        assert!(is(Some("64769:123456\n"), stderr), "surrounding whitespace is tolerated");
        assert!(!is(None, stderr), "not started by systemd");
        assert!(!is(Some("64769:999"), stderr), "stderr redirected away from the inherited stream");
        assert!(!is(Some("1:123456"), stderr), "another device");
        assert!(!is(Some("64769:123456"), None), "stderr is closed");
        for bad in ["", "64769", "64769:", ":123456", "x:y", "64769:123456:7", "-1:123456"] {
            assert!(!is(Some(bad), stderr), "{bad:?} is not DEVICE:INODE");
        }
    }

    /// stderr's identity is read from the open file itself (here: whatever the test harness gave).
    #[test]
    fn stderr_id_is_the_device_and_inode_of_the_open_stderr() {
        let meta = std::fs::metadata("/dev/fd/2").or_else(|_| std::fs::metadata("/proc/self/fd/2"));
        if let (Ok(meta), Some(id)) = (meta, stderr_id()) {
            assert_eq!(id, (meta.dev(), meta.ino()));
        } else {
            assert!(stderr_id().is_some(), "the test runs with a stderr");
        }
    }
}
