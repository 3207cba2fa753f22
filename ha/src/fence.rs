//! HA-02 power fencing through a standard fence agent (`fence_ipmilan` against the
//! server's XSCF/ILOM, or any agent of the fence-agents family), spoken to with the
//! fence-agent stdin protocol: `key=value` lines (`action=`, `ip=`, `ipport=`,
//! `username=`, `password=`, `lanplus=1`). The password goes on stdin, never on the
//! command line, so other users cannot read it in the process list.
//!
//! A fence counts only when a following `action=status` confirms the power is off:
//! the agent's status exit code is 0 for on, 2 for off, anything else an error, and
//! the confirmed state is judged, never the exit code of `off`. Every run has a
//! deadline (a hung agent is killed) and its output is bounded; `off` + `status` is
//! tried `attempts` times.

use std::path::PathBuf;

/// What a fence agent prints that is kept (for the report).
pub const OUTPUT_BYTES_MAX: usize = 16 * 1024;

/// How to power one server off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PowerFence {
    /// The fence agent's executable, e.g. `/usr/sbin/fence_ipmilan`.
    pub agent: PathBuf,
    /// The service processor (XSCF/ILOM) address.
    pub ip: String,
    pub ipport: Option<u16>,
    pub username: String,
    pub password: String,
    /// IPMI v2.0 (lanplus), as XSCF and ILOM need.
    pub lanplus: bool,
    /// The lanplus cipher suite (`cipher=`), when the BMC needs one other than the
    /// agent's default (OpenIPMI's simulator and many BMCs: 3).
    pub cipher: Option<u8>,
    /// Deadline of one run of the agent.
    pub deadline_ms: u64,
    /// How many times `off` then `status` is tried.
    pub attempts: u32,
}

/// How a fence ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceOutcome {
    /// `status` confirmed the power off: the server's guests are stopped (HA-02).
    ConfirmedOff { attempt: u32 },
    /// Every attempt ended without a confirmed off; nothing may restart. The last
    /// attempt's account.
    NotConfirmed { attempts: u32, last: String },
}

use crate::process::Run;

impl PowerFence {
    /// The stdin lines for `action`.
    fn input(&self, action: &str) -> String {
        let mut lines = vec![format!("action={action}"), format!("ip={}", self.ip)];
        if let Some(port) = self.ipport {
            lines.push(format!("ipport={port}"));
        }
        lines.push(format!("username={}", self.username));
        lines.push(format!("password={}", self.password));
        if self.lanplus {
            lines.push("lanplus=1".into());
        }
        if let Some(c) = self.cipher {
            lines.push(format!("cipher={c}"));
        }
        lines.join("\n") + "\n"
    }

    /// Runs the agent once for `action`, within the deadline.
    async fn run(&self, action: &str) -> Result<Run, String> {
        let input = self.input(action);
        crate::process::run(
            &format!("fence agent ({action})"),
            &self.agent,
            &[],
            input.as_bytes(),
            self.deadline_ms,
            OUTPUT_BYTES_MAX,
        )
        .await
    }

    /// Powers the server off and confirms it (HA-02).
    pub async fn fence(&self) -> FenceOutcome {
        let mut last = String::new();
        let attempts = self.attempts.max(1);
        for attempt in 1..=attempts {
            let off = match self.run("off").await {
                Ok(r) => format!("off exited {:?}: {}", r.code, r.output),
                Err(e) => e,
            };
            match self.run("status").await {
                Ok(Run { code: Some(2), .. }) => return FenceOutcome::ConfirmedOff { attempt },
                Ok(Run { code: Some(0), output }) => {
                    last = format!("{off}; status says the power is still on: {output}")
                }
                Ok(Run { code, output }) => last = format!("{off}; status failed ({code:?}): {output}"),
                Err(e) => last = format!("{off}; {e}"),
            }
        }
        FenceOutcome::NotConfirmed { attempts, last }
    }
}

#[cfg(test)]
mod tests {
    //! The protocol against real processes: small fence agents written as shell
    //! scripts that keep a server's power in a file, as a BMC would.
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The tests write executables and spawn processes: one at a time, or a child
    /// forked by one test may hold another's script open for writing while it is
    /// executed (ETXTBSY).
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// A fence agent whose `off` runs `off_body`, and whose `status` reports the power
    /// file; it records every stdin it got in `stdin.log`.
    fn agent(dir: &std::path::Path, off_body: &str) -> PathBuf {
        let path = dir.join("fence_test");
        let script = format!(
            r#"#!/bin/sh
input=$(cat)
printf '%s\n--\n' "$input" >> "{dir}/stdin.log"
action=$(printf '%s\n' "$input" | sed -n 's/^action=//p')
case "$action" in
  off) {off_body} ;;
  status) if [ "$(cat "{dir}/power" 2>/dev/null)" = off ]; then echo "Status: OFF"; exit 2; else echo "Status: ON"; exit 0; fi ;;
  *) echo "unknown action $action" >&2; exit 1 ;;
esac
"#,
            dir = dir.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn fence(agent: PathBuf) -> PowerFence {
        PowerFence {
            agent,
            ip: "127.0.0.1".into(),
            ipport: Some(9001),
            username: "admin".into(),
            password: "s3cret".into(),
            lanplus: true,
            cipher: None,
            deadline_ms: 5_000,
            attempts: 2,
        }
    }

    #[tokio::test]
    async fn a_fence_counts_once_status_confirms_the_power_off() {
        // Goal: HA-02: off, then status exit 2 (off): confirmed on the first attempt.
        let _serial = SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let a = agent(dir.path(), &format!("echo off > '{}/power'", dir.path().display()));
        assert_eq!(fence(a).fence().await, FenceOutcome::ConfirmedOff { attempt: 1 });
    }

    #[tokio::test]
    async fn the_protocol_goes_on_stdin_with_the_password_never_in_argv() {
        // Goal: key=value lines as fence agents read them: action, ip, ipport, username, password, lanplus.
        let _serial = SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let a = agent(dir.path(), &format!("echo off > '{}/power'", dir.path().display()));
        fence(a).fence().await;
        let log = std::fs::read_to_string(dir.path().join("stdin.log")).unwrap();
        let first = log.split("--").next().unwrap().trim();
        assert_eq!(first, "action=off\nip=127.0.0.1\nipport=9001\nusername=admin\npassword=s3cret\nlanplus=1");
        assert!(log.contains("action=status"), "{log}");
    }

    #[tokio::test]
    async fn an_off_that_claims_success_but_leaves_the_power_on_is_not_a_fence() {
        // Goal: the confirmed state is judged, never the exit code of off.
        let _serial = SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let a = agent(dir.path(), "echo Success: Powered OFF; exit 0");
        let FenceOutcome::NotConfirmed { attempts, last } = fence(a).fence().await else { panic!("fenced") };
        assert_eq!(attempts, 2);
        assert!(last.contains("still on"), "{last}");
    }

    #[tokio::test]
    async fn a_hung_agent_is_killed_at_its_deadline_and_nothing_is_confirmed() {
        // Goal: every run has a deadline; a BMC that never answers confirms nothing.
        let _serial = SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let hung = dir.path().join("fence_hung");
        std::fs::write(&hung, "#!/bin/sh\nexec sleep 600\n").unwrap();
        std::fs::set_permissions(&hung, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut f = fence(hung);
        f.deadline_ms = 200;
        f.attempts = 1;
        let FenceOutcome::NotConfirmed { last, .. } = f.fence().await else { panic!("fenced") };
        assert!(last.contains("deadline"), "{last}");
    }

    #[tokio::test]
    async fn a_missing_agent_is_reported_by_path() {
        // Goal: a wrong agent path says which path, and confirms nothing.
        let _serial = SERIAL.lock().await;
        let f = fence(PathBuf::from("/nonexistent/fence_ipmilan"));
        let FenceOutcome::NotConfirmed { last, .. } = f.fence().await else { panic!("fenced") };
        assert!(last.contains("/nonexistent/fence_ipmilan"), "{last}");
    }
}
