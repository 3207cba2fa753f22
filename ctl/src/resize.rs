//! UC-2 growth where the guest runs (RB-06), in ldm's verbs: `add-core N ldom`,
//! `set-core N ldom`, `remove-core N ldom`, `add-memory SIZE ldom`, `set-memory SIZE
//! ldom`, `remove-memory SIZE ldom`. tern picks the cores and ranges (the lowest free
//! CIDs, one free range if one holds it all), reserves them through the replicated
//! state, and the guest's host applies them by name.

use crate::EXIT_NO;
use crate::client::{AgentArgs, status_message};
use crate::migrate::join;
use anyhow::{anyhow, bail};
use tern_model::units::{Size, parse_size};
use tern_proto::limits::MessageLimits;
use tern_proto::v1 as pb;

/// Which resource a verb changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Cores,
    Memory,
}

/// `add`, `set` or `remove`, as the proto spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Add,
    Set,
    Remove,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Set => "set",
            Self::Remove => "remove",
        }
    }
}

/// The amount as ldm takes it: a number of whole cores, or a size (`8G`, `512M`).
fn amount(resource: Resource, verb: Verb, text: &str) -> anyhow::Result<u64> {
    let n = match resource {
        Resource::Cores => {
            if text.starts_with("cid=") {
                bail!("tern picks the cores itself (the lowest free CIDs); give a number of cores, not {text}");
            }
            text.parse::<u64>().map_err(|_| anyhow!("{text:?} is not a whole number of cores"))?
        }
        Resource::Memory => {
            if text.starts_with("mblock=") {
                bail!("tern picks the memory blocks itself; give a size such as 8G, not {text}");
            }
            parse_size(text).map_err(|e| anyhow!("{text:?}: {e}"))?
        }
    };
    if n == 0 {
        bail!("{} {text}: the amount must be above zero", verb.as_str());
    }
    Ok(n)
}

/// Runs one verb; exit 0 when done, 1 when the cluster refuses it (too few free cores
/// or memory, a running operation, a host not up), 2 for bad input.
pub async fn run(
    agent: &AgentArgs,
    resource: Resource,
    verb: Verb,
    text: &str,
    domain: &str,
    json: bool,
) -> anyhow::Result<i32> {
    let n = amount(resource, verb, text)?;
    let mut req = pb::ResizeRequest { domain: domain.to_string(), ..Default::default() };
    match resource {
        Resource::Cores => (req.cores_verb, req.cores) = (verb.as_str().into(), n),
        Resource::Memory => (req.memory_verb, req.memory_bytes) = (verb.as_str().into(), n),
    }
    let mut client = pb::rebalance_client::RebalanceClient::new(agent.connect().await?).with_message_limits();
    let r = match client.resize(req).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            eprintln!("ternctl: {}", status_message(&s));
            if s.message().contains("-unavailable]") {
                eprintln!(
                    "hint: `ternctl rebalance plan --grow {domain} cores=N memory=SIZE` shows the moves that make room"
                );
            }
            return Ok(EXIT_NO);
        }
        Err(s) => return Err(anyhow!(status_message(&s))),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report_json(&r))?);
    } else {
        print!("{}", render(&r));
    }
    Ok(0)
}

fn ranges(v: &[pb::MemoryRange]) -> String {
    v.iter().map(|r| format!("{:#x}:{}", r.pa, Size(r.size))).collect::<Vec<_>>().join(", ")
}

/// What a resize did, in ldm's words.
pub fn render(r: &pb::ResizeResponse) -> String {
    let change = |old: String, new: String| if old == new { old } else { format!("{old} -> {new}") };
    let mut out = format!(
        "{} on {}: {} core(s), memory {} (operation {})\n",
        r.domain,
        r.host,
        change(r.old_cids.len().to_string(), r.new_cids.len().to_string()),
        change(Size(r.old_memory_bytes).to_string(), Size(r.new_memory_bytes).to_string()),
        r.operation_id
    );
    if r.old_cids != r.new_cids {
        out.push_str(&format!("  cid {} -> {}\n", join(&r.old_cids), join(&r.new_cids)));
    }
    let what = |cids: &[u32], memory: &[pb::MemoryRange]| {
        let mut parts = Vec::new();
        if !cids.is_empty() {
            parts.push(format!("cid {}", join(cids)));
        }
        if !memory.is_empty() {
            parts.push(format!("memory {}", ranges(memory)));
        }
        parts.join(", ")
    };
    if !r.added_cids.is_empty() || !r.added_memory.is_empty() {
        out.push_str(&format!("  added (reserved first): {}\n", what(&r.added_cids, &r.added_memory)));
    }
    if !r.removed_cids.is_empty() || !r.removed_memory.is_empty() {
        out.push_str(&format!("  given back: {}\n", what(&r.removed_cids, &r.removed_memory)));
    }
    for n in &r.notes {
        out.push_str(&format!("  {n}\n"));
    }
    out
}

fn report_json(r: &pb::ResizeResponse) -> serde_json::Value {
    let ranges = |v: &[pb::MemoryRange]| -> Vec<serde_json::Value> {
        v.iter().map(|m| serde_json::json!({"pa": m.pa, "size": m.size})).collect()
    };
    serde_json::json!({
        "operation": r.operation_id, "domain": r.domain, "host": r.host,
        "old_cids": r.old_cids, "new_cids": r.new_cids,
        "old_memory_bytes": r.old_memory_bytes, "new_memory_bytes": r.new_memory_bytes,
        "added": {"cids": r.added_cids, "memory": ranges(&r.added_memory)},
        "removed": {"cids": r.removed_cids, "memory": ranges(&r.removed_memory)},
        "notes": r.notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_as_ldm_writes_them_and_named_resources_are_refused() {
        // Goal: `add-core 2`, `set-memory 8G` parse; zero, cid= and mblock= get a clear error.
        assert_eq!(amount(Resource::Cores, Verb::Add, "2").unwrap(), 2);
        assert_eq!(amount(Resource::Memory, Verb::Set, "8G").unwrap(), 8 << 30);
        let zero = amount(Resource::Cores, Verb::Set, "0").unwrap_err().to_string();
        assert!(zero.contains("above zero"), "{zero}");
        let named = amount(Resource::Cores, Verb::Add, "cid=8,9").unwrap_err().to_string();
        assert!(named.contains("tern picks the cores"), "{named}");
        let blocks = amount(Resource::Memory, Verb::Add, "mblock=0x10000000:8G").unwrap_err().to_string();
        assert!(blocks.contains("memory blocks itself"), "{blocks}");
        assert!(amount(Resource::Memory, Verb::Add, "lots").is_err());
    }
}
