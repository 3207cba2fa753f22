//! ldm's failure messages, mapped to SPEC rule ids where they correspond.
//!
//! ldm prints one line per failed condition and ends a failed migration with
//! `Domain Migration of LDom <name> failed` (or, for a dry run, `... would fail if
//! attempted`). Each line is matched against a table of phrases; the first rule that
//! matches any line is the failure's rule. The message is always kept verbatim, so a
//! phrase this table does not know still reaches the user as ldm wrote it.
//!
//! Phrases documented in Oracle's guides (cited in `tests/fixtures/ldm/README.md`):
//! - `Unable to bind 2G memory region at real address 0x8000000` (LDoms 1.3
//!   Administration Guide, "Migrating Memory in an Active Domain") -> LM-09;
//! - `Free memory layout and congruency requirements prevent binding the memory block
//!   with PA ..., RA ..., and size 6G` (Oracle VM Server for SPARC 3.2 Administration
//!   Guide, "Migration Requirements for Memory") -> LM-09;
//! - `LDom "ldom1" was not found` (the seed, OP-06) -> the domain is unknown.
//!
//! The other phrases are matched loosely (lower case, substrings) because their exact
//! wording changes between releases.

use crate::HvError;
use tern_model::Rule;

/// A failed ldm command, understood as far as the table allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdmFailure {
    /// The SPEC rule the failure corresponds to, if any.
    pub rule: Option<Rule>,
    /// ldm's own words (stderr, else stdout), trimmed, lines joined with "; ".
    pub message: String,
    /// The domain ldm says does not exist (`LDom "x" was not found`).
    pub not_found: Option<String>,
    /// A dry run (`-n`) reported the migration would fail.
    pub dry_run: bool,
}

/// Substrings (lower case) that identify a rule. Order matters: the first match wins,
/// so the specific memory-layout phrases come before the generic "memory" ones.
const RULES: &[(&str, Rule)] = &[
    ("unable to bind", Rule::Lm(9)),
    ("congruency", Rule::Lm(9)),
    ("memory layout", Rule::Lm(9)),
    ("not enough free memory", Rule::Lm(8)),
    ("insufficient memory", Rule::Lm(8)),
    ("insufficient free memory", Rule::Lm(8)),
    ("not enough free cpu", Rule::Lm(6)),
    ("not enough free core", Rule::Lm(6)),
    ("insufficient cpu", Rule::Lm(6)),
    ("insufficient number of", Rule::Lm(6)),
    ("invalid cpu-arch", Rule::Lm(7)),
    ("cpu-arch", Rule::Lm(7)),
    ("cpu type", Rule::Lm(7)),
    ("processor type", Rule::Lm(7)),
    ("cpu frequency", Rule::Lm(7)),
    ("incompatible cpu", Rule::Lm(7)),
    ("firmware", Rule::Lm(10)),
    ("service domain", Rule::Lm(4)),
    ("virtual disk server", Rule::Lm(4)),
    ("virtual switch", Rule::Lm(4)),
    ("vds", Rule::Lm(4)),
    ("vsw", Rule::Lm(4)),
    ("vcc", Rule::Lm(4)),
    ("volume", Rule::Lm(4)),
    ("backend", Rule::Lm(3)),
    ("vdisk", Rule::Lm(3)),
    ("virtual disk", Rule::Lm(3)),
    ("physical i/o", Rule::Lm(1)),
    ("authentication", Rule::Op(4)),
    ("not authorized", Rule::Op(4)),
];

/// Understands ldm's output of a failed command.
pub fn classify(stdout: &str, stderr: &str) -> LdmFailure {
    let text = if stderr.trim().is_empty() { stdout } else { stderr };
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let message = lines.join("; ");
    let lower = message.to_ascii_lowercase();
    let dry_run = lower.contains("would fail if attempted");
    let not_found = lines.iter().find_map(|l| ldom_not_found(l));
    // The closing line names the domain ("Domain Migration of LDom x failed"); it says
    // nothing about why, so it never decides the rule.
    let rule = lines
        .iter()
        .map(|l| l.to_ascii_lowercase())
        .filter(|l| !l.starts_with("domain migration of ldom"))
        .find_map(|l| RULES.iter().find(|(p, _)| l.contains(p)).map(|(_, r)| *r));
    LdmFailure { rule: if not_found.is_some() { None } else { rule }, message, not_found, dry_run }
}

/// `LDom "ldom1" was not found` -> `ldom1`.
fn ldom_not_found(line: &str) -> Option<String> {
    let rest = line.strip_prefix("LDom \"")?;
    let (name, tail) = rest.split_once('"')?;
    tail.trim().starts_with("was not found").then(|| name.to_string())
}

impl LdmFailure {
    /// The error for the caller: a missing domain, or ldm's words prefixed with the
    /// rule id (`LM-09 Unable to bind ...`) when one corresponds.
    pub fn into_error(self) -> HvError {
        if let Some(d) = self.not_found {
            return HvError::NotFound(d);
        }
        let lower = self.message.to_ascii_lowercase();
        if lower.contains("in progress") || lower.contains("is busy") {
            return HvError::Busy(self.message);
        }
        match self.rule {
            Some(r) => HvError::Failed(format!("{r} {}", self.message)),
            None => HvError::Failed(self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_rules_or_pass_through() {
        // Goal: a table of ldm messages and the rule each corresponds to.
        let cases: &[(&str, Option<Rule>)] = &[
            (
                "Unable to bind 2G memory region at real address 0x8000000\nDomain Migration of LDom ldg-src failed",
                Some(Rule::Lm(9)),
            ),
            (
                "Free memory layout and congruency requirements prevent binding the memory block with PA 0x880000000, RA 0x400000000, and size 6G\nDomain Migration of LDom ldg1 would fail if attempted",
                Some(Rule::Lm(9)),
            ),
            ("Not enough free CPUs on target\nDomain Migration of LDom ldom1 failed", Some(Rule::Lm(6))),
            ("Invalid cpu-arch for the target machine", Some(Rule::Lm(7))),
            ("Something nobody has seen\nDomain Migration of LDom ldom1 failed", None),
        ];
        for (text, rule) in cases {
            assert_eq!(classify("", text).rule, *rule, "{text}");
            // The rule survives into the error the coordinator reads it from.
            assert_eq!(classify("", text).into_error().rule(), *rule, "{text}");
        }
        let f = classify("", "LDom \"ldom1\" was not found");
        assert_eq!(f.not_found.as_deref(), Some("ldom1"));
        assert!(matches!(f.into_error(), HvError::NotFound(d) if d == "ldom1"));
        assert!(classify("", "x\nDomain Migration of LDom ldg1 would fail if attempted").dry_run);
    }
}
