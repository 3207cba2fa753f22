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

/// Words that may stand before the version: the names Solaris prints for itself.
const OS_NAME_WORDS: [&str; 3] = ["oracle", "solaris", "sunos"];
/// Words that may follow it: the platform `/etc/release` and `uname` print.
const OS_PLATFORM_WORDS: [&str; 6] = ["sparc", "x86", "i386", "sun4v", "sun4u", "i86pc"];

impl OsVersion {
    /// Parses the forms people and Solaris itself write:
    ///
    /// | form | from |
    /// |---|---|
    /// | `11.1.17.5.0`, `Solaris 11.1.17.5.0`, `11.4` | layouts, people |
    /// | `Oracle Solaris 11.1 SPARC` | `/etc/release` |
    /// | `Solaris 11.1 SRU 17.5` | people (SRU = support repository update) |
    /// | `SunOS 5.11 11.1`, `SunOS host 5.11 11.1 sun4v sparc ...` | `uname -srv`, `uname -a` |
    /// | `0.5.11 (Oracle Solaris 11.1.17.5.0)`, `0.175.1.17.0.5.0` | `pkg info entire` Version, Branch |
    /// | `Solaris 10 1/13 150817-02`, `Oracle Solaris 10 1/13 s10s_u11wos_24a SPARC` | people, `/etc/release` |
    ///
    /// Anything else is refused with the forms it expects: a word that is neither a
    /// name of Solaris, a platform, a patch nor a build tag is not guessed at.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected =
            "expected e.g. 11.1.17.5.0, Oracle Solaris 11.1 SPARC, SunOS 5.11 11.1 or Solaris 10 1/13 150817-02";
        let words: Vec<&str> =
            text.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ',')).filter(|w| !w.is_empty()).collect();
        if words.is_empty() {
            return Err(format!("OS version {text:?} is empty; {expected}"));
        }
        let lower = |w: &str| w.to_ascii_lowercase();
        // `uname`: `SunOS [host] 5.11 <version> ...`; the release (5.11) comes first.
        if lower(words[0]) == "sunos" {
            return Self::parse_uname(text, &words[1..], expected);
        }
        let mut rest = &words[..];
        // `pkg info entire`: `Version: 0.5.11 (Oracle Solaris 11.1.17.5.0)` or `Branch: 0.175.1.17.0.5.0`.
        if let Some(first) = rest.first()
            && matches!(lower(first).as_str(), "version:" | "branch:")
        {
            rest = &rest[1..];
        }
        if let [branch] = rest
            && let Some(v) = pkg_branch(branch)
        {
            return Ok(Self::Solaris11 { version: v });
        }
        if rest.first() == Some(&"0.5.11") {
            rest = &rest[1..];
        }
        while let Some(w) = rest.first()
            && OS_NAME_WORDS.contains(&lower(w).as_str())
        {
            rest = &rest[1..];
        }
        let Some((&first, tail)) = rest.split_first() else {
            return Err(format!("OS version {text:?} names no release; {expected}"));
        };
        if first == "10" {
            return Self::parse_solaris10(text, tail, expected);
        }
        let version = dotted(first)
            .filter(|v| v.first() == Some(&11))
            .ok_or_else(|| format!("OS version {text:?}: {first:?} is not a Solaris 11 or 10 release; {expected}"))?;
        Self::parse_solaris11_tail(text, version, tail, expected)
    }

    /// After `SunOS`: an optional host name, the release `5.11` or `5.10`, then for
    /// 5.11 the version (`11.1`, `11.4.42.111.0`) and machine words, which are ignored.
    fn parse_uname(text: &str, words: &[&str], expected: &str) -> Result<Self, String> {
        let Some(i) = words.iter().position(|w| *w == "5.11" || *w == "5.10") else {
            return Err(format!("OS version {text:?}: SunOS without release 5.11 or 5.10; {expected}"));
        };
        if i > 1 {
            return Err(format!("OS version {text:?}: unexpected {:?} before SunOS's release; {expected}", words[0]));
        }
        if words[i] == "5.10" {
            return Err(format!(
                "OS version {text:?}: uname does not show the Solaris 10 update and patches; write e.g. Solaris 10 1/13 150817-02"
            ));
        }
        match words.get(i + 1).and_then(|w| dotted(w)) {
            Some(v) if v.first() == Some(&11) => Ok(Self::Solaris11 { version: v }),
            _ => Err(format!("OS version {text:?}: SunOS 5.11 is not followed by its version (e.g. 11.1); {expected}")),
        }
    }

    /// After `11.x`: `SRU 17.5` (or `SRU17.5`) on an `11.x` without an SRU, then platform words.
    fn parse_solaris11_tail(text: &str, mut version: Vec<u32>, tail: &[&str], expected: &str) -> Result<Self, String> {
        let mut i = 0;
        if let Some(w) = tail.first()
            && w.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("sru"))
        {
            let number = if w.len() > 3 { &w[3..] } else { tail.get(1).copied().unwrap_or("") };
            i = if w.len() > 3 { 1 } else { 2 };
            let sru = dotted(number)
                .filter(|s| (1..=2).contains(&s.len()))
                .ok_or_else(|| format!("OS version {text:?}: SRU {number:?} is not e.g. 17.5; {expected}"))?;
            if version.len() != 2 {
                return Err(format!("OS version {text:?}: give the SRU either in the version or after SRU, not both"));
            }
            version.extend(sru);
        }
        if let Some(w) =
            tail[i.min(tail.len())..].iter().find(|w| !OS_PLATFORM_WORDS.contains(&w.to_ascii_lowercase().as_str()))
        {
            return Err(format!("OS version {text:?}: unexpected {w:?} after the version; {expected}"));
        }
        Ok(Self::Solaris11 { version })
    }

    /// After `10`: the update (`1/13`), then patches (`150817-02`), build tags
    /// (`s10s_u11wos_24a`) and platform words, in any order.
    fn parse_solaris10(text: &str, tail: &[&str], expected: &str) -> Result<Self, String> {
        let update = tail
            .first()
            .filter(|u| u.split_once('/').is_some_and(|(m, y)| is_number(m) && is_number(y)))
            .ok_or_else(|| format!("Solaris 10 version {text:?} lacks its update, e.g. 10 1/13"))?;
        let mut patches = Vec::new();
        for w in &tail[1..] {
            let l = w.to_ascii_lowercase();
            if w.split_once('-').is_some_and(|(id, rev)| is_number(id) && is_number(rev)) {
                patches.push(w.to_string());
            } else if !(l == "patch"
                || l == "patches"
                || l.starts_with("s10")
                || OS_PLATFORM_WORDS.contains(&l.as_str()))
            {
                return Err(format!("OS version {text:?}: {w:?} is not a patch (e.g. 150817-02); {expected}"));
            }
        }
        Ok(Self::Solaris10 { update: update.to_string(), patches })
    }

    /// Why this release cannot take part in a live migration (LM-11), as a clause
    /// that follows "runs <release>, ", or `None` when it can.
    pub fn migration_problem(&self) -> Option<String> {
        match self {
            Self::Solaris11 { version } => {
                if cmp_versions(version, &SOLARIS11_MIN) == Ordering::Less {
                    Some("which is older than Solaris 11.1.17.5.0 (11.1 SRU 17.5)".to_string())
                } else {
                    None
                }
            }
            Self::Solaris10 { update, patches } => {
                if update != "1/13" {
                    return Some("which is not Solaris 10 1/13".to_string());
                }
                let (id, rev) = SOLARIS10_PATCH;
                let has_patch = patches.iter().any(|p| {
                    p.split_once('-')
                        .is_some_and(|(a, b)| a.parse() == Ok(id) && b.parse::<u32>().is_ok_and(|r| r >= rev))
                });
                if has_patch {
                    None
                } else {
                    Some(format!("which lacks patch {id}-{rev:02} (Oracle VM Server for SPARC 3.1.1)"))
                }
            }
        }
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `11.1.17.5.0` -> [11, 1, 17, 5, 0]; `None` unless every part is a number.
fn dotted(s: &str) -> Option<Vec<u32>> {
    s.split('.').map(|p| if is_number(p) { p.parse().ok() } else { None }).collect()
}

/// `pkg info entire`'s branch `0.175.1.17.0.5.0` (Solaris 11.0-11.3) -> 11.1.17.5.0:
/// 0.175.<update>.<SRU>.0.<build>.<respin>.
fn pkg_branch(s: &str) -> Option<Vec<u32>> {
    match dotted(s)?.as_slice() {
        [0, 175, update, sru, 0, build, respin] => Some(vec![11, *update, *sru, *build, *respin]),
        _ => None,
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

    #[test]
    fn reads_the_os_forms_solaris_prints() {
        // Goal: /etc/release, uname, pkg info and people's forms parse to the release they name.
        let s11 = |v: &[u32]| OsVersion::Solaris11 { version: v.to_vec() };
        let cases = [
            ("Oracle Solaris 11.1 SPARC", s11(&[11, 1])),
            ("Solaris 11.1.17.5.0", s11(&[11, 1, 17, 5, 0])),
            ("11.1.17.5.0", s11(&[11, 1, 17, 5, 0])),
            ("SunOS 5.11 11.1", s11(&[11, 1])),
            ("SunOS m10-1-1 5.11 11.1 sun4v sparc sun4v", s11(&[11, 1])),
            ("SunOS 5.11 11.4.42.111.0", s11(&[11, 4, 42, 111, 0])),
            ("Oracle Solaris 11.4 SPARC", s11(&[11, 4])),
            ("Solaris 11.1 SRU 17.5", s11(&[11, 1, 17, 5])),
            ("solaris 11.1 sru17.5", s11(&[11, 1, 17, 5])),
            ("0.5.11 (Oracle Solaris 11.1.17.5.0)", s11(&[11, 1, 17, 5, 0])),
            ("Version: 0.5.11 (Oracle Solaris 11.1.17.5.0)", s11(&[11, 1, 17, 5, 0])),
            ("Branch: 0.175.1.17.0.5.0", s11(&[11, 1, 17, 5, 0])),
            ("0.175.1.16.0.4.0", s11(&[11, 1, 16, 4, 0])),
            (
                "Oracle Solaris 10 1/13 s10s_u11wos_24a SPARC",
                OsVersion::Solaris10 { update: "1/13".into(), patches: vec![] },
            ),
            (
                "Solaris 10 1/13 patch 150817-02",
                OsVersion::Solaris10 { update: "1/13".into(), patches: vec!["150817-02".into()] },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(OsVersion::parse(text).as_ref(), Ok(&want), "{text}");
            // What is written reads back the same (layouts written by import-ldm).
            assert_eq!(OsVersion::parse(&want.to_string()).as_ref(), Ok(&want), "{want}");
        }
        // Parsing is not judging: these parse, and LM-11 still refuses what is too old.
        assert!(OsVersion::parse("Oracle Solaris 11.1 SPARC").unwrap().migration_problem().is_some());
        assert!(OsVersion::parse("Solaris 11.1 SRU 17.5").unwrap().migration_problem().is_none());
        let s10 = OsVersion::parse("Oracle Solaris 10 1/13 s10s_u11wos_24a SPARC").unwrap();
        assert!(s10.migration_problem().unwrap().contains("150817-02"));
    }

    #[test]
    fn refuses_os_garbage_with_the_forms_it_expects() {
        // Goal: text that names no Solaris release is refused, and the error names the accepted forms.
        let garbage = [
            "Linux 6.1",
            "Oracle Linux 11.1",
            "Solaris",
            "Solaris eleven",
            "Solaris 11.1 banana",
            "11.1.x.5",
            "Solaris 12.0",
            "SunOS 5.11",
            "SunOS 5.9 Generic",
            "Solaris 10",
            "Solaris 10 1/13 foo",
            "Solaris 11.1.17.5.0 SRU 17.5",
            "Solaris 11.1 SRU",
            "Solaris 11.1 SR\u{e9}",
        ];
        for text in garbage {
            let err = OsVersion::parse(text).expect_err(text);
            assert!(err.contains(&format!("{text:?}")) || err.contains("Solaris 10"), "{text}: {err}");
        }
        let err = OsVersion::parse("Linux 6.1").unwrap_err();
        assert!(err.contains("Oracle Solaris 11.1 SPARC") && err.contains("11.1.17.5.0"), "{err}");
        assert!(OsVersion::parse("SunOS host 5.10 Generic_150400-40 sun4v").unwrap_err().contains("1/13"));
    }
}
