//! Running an outside program the way HA needs it (a fence agent, a hand-off
//! command): input on stdin, output bounded, killed at its deadline.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How one run ended by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// `None` when it did not exit by itself (a signal).
    pub code: Option<i32>,
    /// Its stdout then stderr, each cut at `output_max` bytes, trimmed.
    pub output: String,
}

/// Runs `program args` with `input` on stdin within `deadline_ms`; `what` names it in
/// errors ("fence agent", "hand-off command"). A program that does not finish in time
/// is killed and reported as an error.
pub async fn run(
    what: &str,
    program: &Path,
    args: &[String],
    input: &[u8],
    deadline_ms: u64,
    output_max: usize,
) -> Result<Run, String> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {what} {}: {e}", program.display()))?;
    let mut stdin = child.stdin.take().ok_or_else(|| format!("the {what} has no stdin"))?;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let work = async {
        // A program may exit without reading everything: a broken pipe is its answer.
        let _ = stdin.write_all(input).await;
        drop(stdin);
        let mut text = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.take(output_max as u64).read_to_end(&mut text).await;
        }
        if let Some(e) = err.as_mut() {
            let _ = e.take(output_max as u64).read_to_end(&mut text).await;
        }
        (child.wait().await, text)
    };
    match tokio::time::timeout(Duration::from_millis(deadline_ms), work).await {
        Ok((Ok(status), text)) => {
            Ok(Run { code: status.code(), output: String::from_utf8_lossy(&text).trim().to_string() })
        }
        Ok((Err(e), _)) => Err(format!("waiting for {what} {}: {e}", program.display())),
        Err(_) => Err(format!("{what} {} passed its {deadline_ms} ms deadline", program.display())),
    }
}
