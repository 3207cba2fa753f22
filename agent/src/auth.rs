//! Trust per call: who a caller is, proven by its TLS certificate, and what it may do.
//!
//! Every RPC handler starts with [`authorize`], which looks its method up in [`RULES`]
//! (the one authorisation table; a test checks it names every RPC of `tern.proto`),
//! reads the caller's identity from its peer certificate ([`tern_tls::identity_of`]) and
//! refuses with PERMISSION_DENIED what the identity may not do. The [`Caller`] it
//! returns is the actor written to the log: never a field of the request.
//!
//! | need | who passes |
//! |---|---|
//! | `Node` | a node certificate (`urn:tern:node:NAME`) only: Raft, Join, forwarded writes, Prepare/Finish, restarts, heartbeats |
//! | `Review` | a user with LDoms Review or more, or a node (members forward reads to the leader) |
//! | `Management` | a user with LDoms Management or System Administrator |
//! | `ManagementOrNode` | as `Management`, or a node passing a user's call to the agent that runs it (a cancel to the source, an evacuation's migrations) |
//! | `Admin` | a user with System Administrator |
//!
//! A user's profiles are those its certificate carries (signed by the cluster CA) and
//! those the replicated users table gives the same name; the stronger counts.

use crate::call_context::caller_addr;
use crate::node::Node;
use tern_model::Profile;
use tonic::{Request as GrpcRequest, Status};

/// Reads the DER of a call's first peer certificate from its request extensions.
pub type PeerCert = fn(&tonic::Extensions) -> Option<Vec<u8>>;

/// [`PeerCert`] for connections whose tonic connect info is `C` (wrapped in TLS).
pub fn peer_cert_of<C: Clone + Send + Sync + 'static>(ext: &tonic::Extensions) -> Option<Vec<u8>> {
    let info = ext.get::<tonic::transport::server::TlsConnectInfo<C>>()?;
    let certs = info.peer_certs()?;
    certs.first().map(|c| c.to_vec())
}

/// The revocation list in `[tls] revoked`, re-read when its modification time changes;
/// a list that becomes unreadable keeps the last one read (and says so).
pub struct Revoked {
    path: Option<std::path::PathBuf>,
    cache: std::sync::Mutex<(Option<std::time::SystemTime>, std::collections::BTreeSet<String>)>,
}

impl Revoked {
    /// Reads `path` once (an unreadable list is a startup error).
    pub fn load(path: Option<std::path::PathBuf>) -> Result<Self, tern_tls::TlsError> {
        let mut cache = (None, Default::default());
        if let Some(p) = &path {
            cache = (modified(p), tern_tls::read_revoked(p)?);
        }
        Ok(Self { path, cache: std::sync::Mutex::new(cache) })
    }

    /// Whether `serial` is revoked now.
    pub fn contains(&self, serial: &str) -> bool {
        let Some(path) = &self.path else { return false };
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = modified(path);
        if now != cache.0 {
            match tern_tls::read_revoked(path) {
                Ok(list) => *cache = (now, list),
                Err(e) => tracing::warn!(error = %e, "the revocation list is unreadable; keeping the last one read"),
            }
        }
        cache.1.contains(serial)
    }
}

fn modified(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// What an RPC requires of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Node,
    Review,
    Management,
    ManagementOrNode,
    Admin,
}

/// Every RPC and what it needs: the authorisation table.
pub const RULES: &[(&str, Need)] = &[
    ("/tern.v1.Raft/AppendEntries", Need::Node),
    ("/tern.v1.Raft/Vote", Need::Node),
    ("/tern.v1.Raft/InstallSnapshot", Need::Node),
    ("/tern.v1.Cluster/Join", Need::Node),
    ("/tern.v1.Cluster/Status", Need::Review),
    ("/tern.v1.Cluster/Propose", Need::Node),
    ("/tern.v1.Cluster/Heartbeat", Need::Node),
    ("/tern.v1.Cluster/Audit", Need::Admin),
    ("/tern.v1.Cluster/RemoveMember", Need::Admin),
    ("/tern.v1.Cluster/AddMember", Need::Admin),
    ("/tern.v1.Cluster/Snapshot", Need::Admin),
    ("/tern.v1.Inventory/ListDomains", Need::Review),
    ("/tern.v1.Inventory/ListDevices", Need::Review),
    ("/tern.v1.Inventory/ListServices", Need::Review),
    // A node starts a user's migrations on their sources during an evacuation.
    ("/tern.v1.Migration/Migrate", Need::ManagementOrNode),
    ("/tern.v1.Migration/Prepare", Need::Node),
    ("/tern.v1.Migration/Finish", Need::Node),
    ("/tern.v1.Migration/Cancel", Need::ManagementOrNode),
    ("/tern.v1.Migration/ListOperations", Need::Review),
    ("/tern.v1.Users/AddUser", Need::Admin),
    ("/tern.v1.Users/RemoveUser", Need::Admin),
    ("/tern.v1.Users/ListUsers", Need::Admin),
    ("/tern.v1.Hosts/Evacuate", Need::Admin),
    ("/tern.v1.Hosts/Restore", Need::Admin),
    ("/tern.v1.Ha/Restart", Need::Node),
    ("/tern.v1.Ha/Status", Need::Review),
    ("/tern.v1.Ha/Check", Need::Review),
    ("/tern.v1.Ha/SetHost", Need::Admin),
    ("/tern.v1.Ha/SetDomain", Need::Management),
    ("/tern.v1.Rebalance/Plan", Need::Management),
    ("/tern.v1.Rebalance/Apply", Need::Management),
    ("/tern.v1.Rebalance/Cancel", Need::Management),
    ("/tern.v1.Rebalance/Status", Need::Review),
    ("/tern.v1.Rebalance/Configure", Need::Admin),
    // A member passes a user's resize on to the guest's host, which runs it.
    ("/tern.v1.Rebalance/Resize", Need::ManagementOrNode),
];

/// Who called, as its certificate proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Node(String),
    /// `level`: the strongest profile's [`Profile::level`].
    User {
        name: String,
        level: u8,
    },
}

impl Caller {
    /// The actor the audit log records for this caller's writes.
    pub fn actor(&self) -> String {
        match self {
            Self::Node(n) => format!("agent:{n}"),
            Self::User { name, .. } => name.clone(),
        }
    }

    /// The node's name, for checks that a node speaks only for itself.
    pub fn node(&self) -> Option<&str> {
        match self {
            Self::Node(n) => Some(n),
            Self::User { .. } => None,
        }
    }
}

/// The need of `method` (a gRPC path such as `/tern.v1.Inventory/ListDomains`).
pub fn need_of(method: &str) -> Option<Need> {
    RULES.iter().find(|(m, _)| *m == method).map(|(_, n)| *n)
}

/// Whether `caller` may call an RPC that needs `need`; `Err` says what is missing.
pub fn allows(need: Need, caller: &Caller) -> Result<(), String> {
    let level = |min: u8| match caller {
        Caller::User { level, .. } if *level >= min => Ok(()),
        Caller::User { name, .. } => Err(format!("user {name} lacks the {:?} profile", profile_name(min))),
        Caller::Node(n) => Err(format!("node {n} may not make this call; a user certificate must")),
    };
    match (need, caller) {
        (Need::Node, Caller::Node(_)) => Ok(()),
        (Need::Node, Caller::User { name, .. }) => Err(format!("only cluster members make this call, not user {name}")),
        (Need::Review, Caller::Node(_)) | (Need::ManagementOrNode, Caller::Node(_)) => Ok(()),
        (Need::Review, _) => level(Profile::LdomsReview.level()),
        (Need::Management | Need::ManagementOrNode, _) => level(Profile::LdomsManagement.level()),
        (Need::Admin, _) => level(Profile::SystemAdministrator.level()),
    }
}

fn profile_name(level: u8) -> &'static str {
    match level {
        1 => Profile::LDOMS_REVIEW,
        2 => Profile::LDOMS_MANAGEMENT,
        _ => Profile::SYSTEM_ADMINISTRATOR,
    }
}

/// A call refused before it reached the state machine.
#[derive(Clone, Debug)]
pub struct Denied {
    pub at_ms: u64,
    pub method: String,
    /// The certificate's identity, or what is known of it (`serial N`, `-`).
    pub actor: String,
    pub from: String,
    pub why: String,
}

/// This agent's last refused calls, at most [`crate::limits::DENIED_KEPT_MAX`].
#[derive(Default)]
pub struct DeniedLog(std::sync::Mutex<std::collections::VecDeque<Denied>>);

impl DeniedLog {
    pub fn push(&self, d: Denied) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while q.len() >= crate::limits::DENIED_KEPT_MAX {
            q.pop_front();
        }
        q.push_back(d);
    }

    /// Newest first: those at or after `since_ms`, by `actor` when not empty.
    pub fn recent(&self, since_ms: u64, actor: &str, limit: usize) -> Vec<Denied> {
        let q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.iter()
            .rev()
            .filter(|d| d.at_ms >= since_ms && (actor.is_empty() || d.actor == actor))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// The caller of `req`, if it may call `method` (see the module doc). Every refusal
/// is logged and kept in the agent's [`DeniedLog`].
pub fn authorize<T>(node: &Node, req: &GrpcRequest<T>, method: &str) -> Result<Caller, Status> {
    let refuse = |actor: String, status: Status| {
        tracing::warn!(method = %method, caller = %actor, from = %caller_addr(), why = %status.message(), "call refused");
        node.denied.push(Denied {
            at_ms: node.now_ms(),
            method: method.to_string(),
            actor,
            from: caller_addr(),
            why: status.message().to_string(),
        });
        status
    };
    let Some(need) = need_of(method) else {
        let status = Status::permission_denied(format!("{method} is not in the authorisation table"));
        return Err(refuse("-".into(), status));
    };
    let der = (node.peer_cert)(req.extensions())
        .ok_or_else(|| refuse("-".into(), Status::unauthenticated("the call carries no client certificate")))?;
    let caller = identify(node, &der).map_err(|(actor, why)| refuse(actor, Status::permission_denied(why)))?;
    if let Err(why) = allows(need, &caller) {
        // Who was refused, from where: for the admin (the TernCallsDenied alert points
        // here; `ternctl audit --denied` lists them).
        return Err(refuse(caller.actor(), Status::permission_denied(format!("{method}: {why}"))));
    }
    Ok(caller)
}

/// Who the certificate `der` (already known to chain to the cluster CA) names, with a
/// user's strongest profile from the certificate or the user table; `Err` holds what
/// is known of the holder (`-`, `serial N`) and why it is refused (revoked, unreadable,
/// no identity).
pub fn identify(node: &Node, der: &[u8]) -> Result<Caller, (String, String)> {
    let serial = tern_tls::serial_of(der).map_err(|e| ("-".to_string(), e))?;
    if node.revoked.contains(&serial) {
        return Err((format!("serial {serial}"), format!("certificate {serial} is revoked")));
    }
    let holder = tern_tls::identity_of(der).map_err(|e| (format!("serial {serial}"), e))?;
    Ok(match holder {
        tern_tls::Holder::Node(name) => Caller::Node(name),
        tern_tls::Holder::User { name, profiles } => {
            let from_cert = profiles.iter().map(|p| Profile::parse(p).level()).max().unwrap_or(0);
            let from_table = node
                .read(|s| s.user(&name).map(|u| u.profiles.iter().map(Profile::level).max().unwrap_or(0)))
                .unwrap_or(0);
            Caller::User { level: from_cert.max(from_table), name }
        }
    })
}

/// PERMISSION_DENIED unless `caller` is the node `who`.
pub fn must_be(caller: &Caller, who: &str, what: &str) -> Result<(), Status> {
    match caller.node() {
        Some(n) if n == who => Ok(()),
        Some(n) => Err(Status::permission_denied(format!("node {n} may not {what} for {who}"))),
        None => Err(Status::permission_denied(format!("only node {who} may {what}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_the_proto_is_in_the_authorisation_table_once() {
        // Goal: no RPC escapes the table: each `rpc` of tern.proto has exactly one rule, and no rule names a missing RPC.
        let proto = include_str!("../../proto/proto/tern/v1/tern.proto");
        let mut service = "";
        let mut methods = Vec::new();
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().unwrap_or("");
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let name = rest.split('(').next().unwrap_or("").trim();
                methods.push(format!("/tern.v1.{service}/{name}"));
            }
        }
        assert!(methods.len() >= 25, "{methods:?}");
        for m in &methods {
            assert_eq!(RULES.iter().filter(|(r, _)| r == m).count(), 1, "{m} needs one rule");
        }
        for (r, _) in RULES {
            assert!(methods.iter().any(|m| m == r), "rule for unknown RPC {r}");
        }
    }

    #[test]
    fn profiles_grant_rights_weakest_first_and_nodes_only_member_calls_and_reads() {
        // Goal: the table's needs: review < management < administrator; nodes pass member calls and reads only.
        let user = |level| Caller::User { name: "u".into(), level };
        let node = Caller::Node("m10-1-1".into());
        let cases = [
            (Need::Review, user(1), true),
            (Need::Review, user(0), false),
            (Need::Management, user(1), false),
            (Need::Management, user(2), true),
            (Need::Admin, user(2), false),
            (Need::Admin, user(3), true),
            (Need::Node, user(3), false),
            (Need::Node, node.clone(), true),
            (Need::Review, node.clone(), true),
            (Need::ManagementOrNode, node.clone(), true),
            (Need::Management, node.clone(), false),
            (Need::Admin, node, false),
        ];
        for (need, caller, ok) in cases {
            assert_eq!(allows(need, &caller).is_ok(), ok, "{need:?} {caller:?}");
        }
    }
}
