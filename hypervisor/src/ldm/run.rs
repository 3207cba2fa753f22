//! Running `ldm`: one child process per command, with a deadline and bounded output.
//!
//! Every command runs with `LC_ALL=C` (ldm's messages are matched in English, see
//! [`super::failure`]), no standard input, and `kill_on_drop`, so a caller that gives up
//! (a cancelled task, a dropped future) never leaves an `ldm` behind. A command still
//! running at its deadline is killed and reported; one that prints more than the output
//! limit on either stream is killed and refused.

use crate::HvError;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a killed `ldm` may take to be reaped before we stop waiting for it.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// What a finished `ldm` printed and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdmOutput {
    /// Exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl LdmOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// `ldm list-devices -a -p`, for messages and logs.
pub fn show(args: &[String]) -> String {
    let mut s = String::from("ldm");
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

enum ReadFail {
    TooLarge(&'static str),
    Io(&'static str, std::io::Error),
}

async fn read_bounded<R: AsyncRead + Unpin>(r: R, max: usize, stream: &'static str) -> Result<Vec<u8>, ReadFail> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    r.take(limit).read_to_end(&mut buf).await.map_err(|e| ReadFail::Io(stream, e))?;
    if buf.len() > max {
        return Err(ReadFail::TooLarge(stream));
    }
    Ok(buf)
}

/// Runs `path args...` to completion within `deadline`, keeping at most
/// `output_bytes_max` bytes of each stream.
pub async fn run_ldm(
    path: &Path,
    args: &[String],
    deadline: Duration,
    output_bytes_max: usize,
) -> Result<LdmOutput, HvError> {
    let shown = show(args);
    let mut child = tokio::process::Command::new(path)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HvError::Io(format!("cannot run {} for `{shown}`: {e}", path.display())))?;
    let pid = child.id().unwrap_or(0);
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(HvError::Io(format!("`{shown}`: no pipes to read its output from")));
    };
    let finished = tokio::time::timeout(deadline, async {
        let streams = tokio::try_join!(
            read_bounded(out, output_bytes_max, "stdout"),
            read_bounded(err, output_bytes_max, "stderr"),
        );
        match streams {
            Ok((o, e)) => Ok((o, e, child.wait().await)),
            Err(f) => Err(f),
        }
    })
    .await;
    let result = match finished {
        Ok(Ok((o, e, Ok(status)))) => {
            return Ok(LdmOutput {
                code: status.code(),
                stdout: String::from_utf8_lossy(&o).into_owned(),
                stderr: String::from_utf8_lossy(&e).into_owned(),
            });
        }
        Ok(Ok((_, _, Err(e)))) => HvError::Io(format!("`{shown}` (pid {pid}): waiting for it failed: {e}")),
        Ok(Err(ReadFail::TooLarge(stream))) => HvError::Io(format!(
            "`{shown}` (pid {pid}) printed more than {output_bytes_max} bytes on {stream}; killed it"
        )),
        Ok(Err(ReadFail::Io(stream, e))) => HvError::Io(format!("`{shown}` (pid {pid}): reading its {stream}: {e}")),
        Err(_) => {
            tracing::warn!(command = %shown, pid, deadline_ms = deadline.as_millis() as u64, "ldm hung; killing it");
            HvError::Io(format!("`{shown}` (pid {pid}) did not finish within {} ms; killed it", deadline.as_millis()))
        }
    };
    let _ = child.start_kill();
    let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
    Err(result)
}
