//! Firmware (LM-10) and operating system (LM-11) versions.
//!
//! Both arrive as text (from a layout file or from `ldm`/`uname`), so each type parses
//! leniently, keeps the original text for messages, and answers the one question the
//! rules ask of it.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// The oldest XCP firmware that supports live migration on SPARC M10 (LM-10).
pub const XCP_MIN: u32 = 2210;
/// The XCP release excluded by LM-10.
pub const XCP_EXCLUDED: u32 = 2230;
/// Solaris 11.1 SRU 11.1.17.5.0, the oldest Solaris 11 allowed by LM-11.
pub const SOLARIS11_MIN: [u32; 5] = [11, 1, 17, 5, 0];
/// The Oracle VM Server for SPARC 3.1.1 patch Solaris 10 needs (LM-11).
pub const SOLARIS10_PATCH: (u32, u32) = (150817, 2);

/// A server's firmware version as reported (`XCP2210`, or Oracle's `Sun System Firmware 8.9.x`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Firmware(pub String);

impl Firmware {
    /// The XCP number of a SPARC M10/M12 firmware (`XCP2210` -> 2210), if it is one.
    pub fn xcp(&self) -> Option<u32> {
        let t = self.0.trim();
        let rest = t.strip_prefix("XCP").or_else(|| t.strip_prefix("xcp"))?.trim();
        rest.parse().ok()
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an XCP firmware is not allowed (LM-10), or `None` when it is.
pub fn xcp_problem(xcp: u32) -> Option<String> {
    if xcp < XCP_MIN {
        Some(format!("XCP{xcp} is older than XCP{XCP_MIN}"))
    } else if xcp == XCP_EXCLUDED {
        Some(format!("XCP{XCP_EXCLUDED} is excluded"))
    } else {
        None
    }
}

/// An Oracle Solaris release as LM-11 needs to see it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum OsVersion {
    /// Solaris 11 with its full SRU version, e.g. `11.1.17.5.0` or `11.4`.
    Solaris11 { version: Vec<u32> },
    /// Solaris 10 with its update (`1/13`) and installed patches (`150817-02`).
    Solaris10 { update: String, patches: Vec<String> },
}

impl OsVersion {
    /// Parses `Solaris 11.1.17.5.0`, `11.4`, `Solaris 10 1/13 150817-02 ...`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let body = t.strip_prefix("Solaris").or_else(|| t.strip_prefix("solaris")).unwrap_or(t).trim();
        let mut words = body.split_whitespace();
        let first = words.next().ok_or_else(|| format!("OS version {text:?} is empty"))?;
        if first == "10" {
            let update =
                words.next().ok_or_else(|| format!("Solaris 10 version {text:?} lacks its update, e.g. 1/13"))?;
            let patches = words.filter(|w| *w != "patch" && *w != "patches").map(str::to_string).collect();
            return Ok(Self::Solaris10 { update: update.to_string(), patches });
        }
        let version: Result<Vec<u32>, _> = first.split('.').map(str::parse).collect();
        match version {
            Ok(v) if v.first() == Some(&11) => Ok(Self::Solaris11 { version: v }),
            _ => Err(format!(
                "OS version {text:?} is not Solaris 11.x (e.g. 11.1.17.5.0) or Solaris 10 (e.g. 10 1/13 150817-02)"
            )),
        }
    }

    /// Why this release cannot take part in a live migration (LM-11), or `None`.
    pub fn migration_problem(&self) -> Option<String> {
        match self {
            Self::Solaris11 { version } => {
                if cmp_versions(version, &SOLARIS11_MIN) == Ordering::Less {
                    Some(format!("{self} is older than Solaris 11.1.17.5.0 (SRU14031)"))
                } else {
                    None
                }
            }
            Self::Solaris10 { update, patches } => {
                if update != "1/13" {
                    return Some(format!("{self} is not Solaris 10 1/13"));
                }
                let (id, rev) = SOLARIS10_PATCH;
                let has_patch = patches.iter().any(|p| {
                    p.split_once('-')
                        .is_some_and(|(a, b)| a.parse() == Ok(id) && b.parse::<u32>().is_ok_and(|r| r >= rev))
                });
                if has_patch { None } else { Some(format!("{self} lacks patch {id}-{rev:02}")) }
            }
        }
    }
}

fn cmp_versions(a: &[u32], b: &[u32]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0)))
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal)
}

impl fmt::Display for OsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Solaris11 { version } => {
                let v: Vec<String> = version.iter().map(u32::to_string).collect();
                write!(f, "Solaris {}", v.join("."))
            }
            Self::Solaris10 { update, patches } => {
                write!(f, "Solaris 10 {update}")?;
                for p in patches {
                    write!(f, " {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl TryFrom<String> for OsVersion {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<OsVersion> for String {
    fn from(v: OsVersion) -> String {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_rule_follows_lm_10() {
        // Goal: XCP2210 and later pass, older and XCP2230 fail.
        assert_eq!(Firmware("XCP2210".into()).xcp(), Some(2210));
        assert_eq!(Firmware("Sun System Firmware 8.9.4".into()).xcp(), None);
        assert!(xcp_problem(2210).is_none());
        assert!(xcp_problem(2290).is_none());
        assert!(xcp_problem(2200).unwrap().contains("older"));
        assert!(xcp_problem(2230).unwrap().contains("excluded"));
    }

    #[test]
    fn os_rule_follows_lm_11() {
        // Goal: Solaris 11.1 SRU 17.5 or later, or Solaris 10 1/13 with 150817-02.
        let ok =
            ["Solaris 11.1.17.5.0", "11.2", "Solaris 11.4.42.111.0", "Solaris 10 1/13 150817-02", "10 1/13 150817-03"];
        for v in ok {
            assert_eq!(OsVersion::parse(v).unwrap().migration_problem(), None, "{v}");
        }
        let bad = ["Solaris 11.1", "11.1.16.0.0", "Solaris 10 8/11 150817-02", "Solaris 10 1/13 150817-01"];
        for v in bad {
            assert!(OsVersion::parse(v).unwrap().migration_problem().is_some(), "{v}");
        }
        assert!(OsVersion::parse("Linux 6.1").is_err());
        assert!(OsVersion::parse("").is_err());
    }
}
