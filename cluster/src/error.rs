//! The seam's error: each variant is the decision it asks of the caller.

use tern_hypervisor::HvError;
use tern_raft_store::Rejection;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// This member is not the leader: send the request to `leader` (an agent
    /// address) when it is known, or retry once one is elected.
    #[error("not the leader{}", leader.as_ref().map(|a| format!("; the leader is at {a}")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    /// The state machine refused the command, with the rule and code that decide it.
    /// Fix the input or give up; never retry as is (a lost race is the one
    /// exception: plan again against the new state).
    #[error(transparent)]
    Rejected(Rejection),
    /// The current state forbids the request (a busy domain, a hypervisor that
    /// refused): change the state first.
    #[error("{0}")]
    Conflict(String),
    /// Overload, partition, a peer or Raft that is not there: retry later or elsewhere.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The deadline passed; the request may or may not have taken effect.
    #[error("timed out: {0}")]
    Timeout(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or over a limit: fix it.
    #[error("{0}")]
    InvalidInput(String),
    /// The caller may not do this (OP-04).
    #[error("{0}")]
    PermissionDenied(String),
    /// A bug or a broken invariant on this side: give up and report it.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the same request may succeed if simply sent again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::NotLeader { .. } | Self::Unavailable(_) | Self::Timeout(_))
    }

    /// The state machine's rejection, if that is what this is.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Self::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

impl From<Rejection> for Error {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

impl From<tern_raft_store::Error> for Error {
    fn from(e: tern_raft_store::Error) -> Self {
        use tern_raft_store::Error as E;
        match e {
            E::NotLeader { address, .. } => Self::NotLeader { leader: address },
            E::Rejected(r) => Self::Rejected(r),
            E::Unavailable(m) => Self::Unavailable(m),
            E::Password(m) => Self::InvalidInput(format!("password: {m}")),
            e @ (E::Storage { .. } | E::Codec(_)) => Self::Internal(e.to_string()),
        }
    }
}

impl From<HvError> for Error {
    fn from(e: HvError) -> Self {
        match e {
            HvError::NotFound(_) => Self::NotFound(e.to_string()),
            HvError::Invalid(m) => Self::InvalidInput(m),
            HvError::Busy(_) | HvError::Cancelled(_) | HvError::Failed(_) | HvError::Settled(_) => {
                Self::Conflict(e.to_string())
            }
            HvError::Io(m) => Self::Unavailable(m),
        }
    }
}
