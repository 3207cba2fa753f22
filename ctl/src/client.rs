//! Reaching an agent: its address and the certificates ternctl presents.

use anyhow::{Context, anyhow};
use std::path::PathBuf;
use std::time::Duration;
use tern_tls::TlsFiles;
use tonic::transport::{Channel, Endpoint};

/// Where the agent is and who we are. Flags win over the environment.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// The agent to talk to (host:port).
    #[arg(long, env = "TERN_AGENT", value_name = "ADDR", global = true)]
    pub agent: Option<String>,
    /// Folder with ca.pem and the client certificate (see `ternctl certs`).
    #[arg(long, env = "TERN_CERTS_DIR", value_name = "DIR", global = true)]
    pub certs_dir: Option<PathBuf>,
    /// Name of the client certificate in the certificates folder (NAME.pem, NAME-key.pem).
    #[arg(long, env = "TERN_CERT_NAME", default_value = "ternctl", value_name = "NAME", global = true)]
    pub cert_name: String,
    /// Deadline of each request to the agent, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS", global = true)]
    pub timeout_ms: u64,
}

impl AgentArgs {
    /// The client certificate's files (`--certs-dir`, `--cert-name`).
    pub fn identity(&self) -> anyhow::Result<TlsFiles> {
        let dir = self
            .certs_dir
            .as_ref()
            .ok_or_else(|| anyhow!("no certificates given: pass --certs-dir DIR or set TERN_CERTS_DIR"))?;
        Ok(TlsFiles::in_dir(dir, &self.cert_name))
    }

    /// A TLS channel to the agent; fails with a message that says which flag is missing.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let addr =
            self.agent.as_deref().ok_or_else(|| anyhow!("no agent given: pass --agent HOST:PORT or set TERN_AGENT"))?;
        tern_tls::install_crypto_provider();
        let tls = self.identity()?.client_config()?;
        let timeout = Duration::from_millis(self.timeout_ms);
        Endpoint::from_shared(format!("https://{addr}"))
            .with_context(|| format!("agent address {addr:?}"))?
            .tls_config(tls)?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect()
            .await
            .with_context(|| format!("connecting to agent {addr}"))
    }
}

/// A gRPC error as one line a person can act on.
pub fn status_message(s: &tonic::Status) -> String {
    use tonic::Code;
    let what = match s.code() {
        Code::NotFound | Code::InvalidArgument | Code::PermissionDenied | Code::FailedPrecondition => "",
        Code::Unavailable => "agent unavailable: ",
        Code::DeadlineExceeded | Code::Cancelled => "timed out: ",
        _ => "agent error: ",
    };
    format!("{what}{}", s.message())
}
