//! CPU types and the cpu-arch compatibility table (LM-07).
//!
//! A guest's `cpu-arch` decides which CPU features it may use and therefore which
//! servers it can move between without a restart:
//!
//! | cpu-arch           | source and target may be                                          |
//! |--------------------|-------------------------------------------------------------------|
//! | `native`           | the same CPU family **and** the same frequency                    |
//! | `sparc64-class1`   | any two of the SPARC64 X family (SPARC64 X, X+, XII)              |
//! | `migration-class1` | any two of Oracle's SPARC T4 and later (T4, T5, T7, T8, M5..M8, S7) |
//! | `generic`          | any two SPARC servers (e.g. SPARC M10 <-> SPARC T4)               |
//!
//! The seed (Fujitsu's guide) names native, sparc64-class1 and generic for SPARC M10;
//! migration-class1 is Oracle's family for T4 and later and is not offered on SPARC64
//! processors, so it never matches a SPARC64 server.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A processor family as `ldm` and `prtdiag` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CpuFamily {
    Sparc64X,
    Sparc64XPlus,
    Sparc64XII,
    SparcT3,
    SparcT4,
    SparcT5,
    SparcT7,
    SparcT8,
    SparcM5,
    SparcM6,
    SparcM7,
    SparcM8,
    SparcS7,
}

impl CpuFamily {
    const NAMES: [(CpuFamily, &'static str); 13] = [
        (CpuFamily::Sparc64X, "SPARC64 X"),
        (CpuFamily::Sparc64XPlus, "SPARC64 X+"),
        (CpuFamily::Sparc64XII, "SPARC64 XII"),
        (CpuFamily::SparcT3, "SPARC T3"),
        (CpuFamily::SparcT4, "SPARC T4"),
        (CpuFamily::SparcT5, "SPARC T5"),
        (CpuFamily::SparcT7, "SPARC T7"),
        (CpuFamily::SparcT8, "SPARC T8"),
        (CpuFamily::SparcM5, "SPARC M5"),
        (CpuFamily::SparcM6, "SPARC M6"),
        (CpuFamily::SparcM7, "SPARC M7"),
        (CpuFamily::SparcM8, "SPARC M8"),
        (CpuFamily::SparcS7, "SPARC S7"),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(f, _)| *f == self).map(|(_, n)| *n).unwrap_or("SPARC")
    }

    /// Fujitsu's SPARC64 X line (SPARC M10 and M12 servers).
    pub fn is_sparc64(self) -> bool {
        matches!(self, Self::Sparc64X | Self::Sparc64XPlus | Self::Sparc64XII)
    }

    /// Whether a guest on a server of this family must hold whole cores: on SPARC M10
    /// (SPARC64 X line) a migrating guest needs whole cores (LM-05), on its source and
    /// on its target alike.
    pub fn needs_whole_cores(self) -> bool {
        self.is_sparc64()
    }

    /// Oracle's SPARC T4 and later, the members of `migration-class1`.
    pub fn is_migration_class1(self) -> bool {
        !self.is_sparc64() && self != Self::SparcT3
    }
}

impl fmt::Display for CpuFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CpuFamily {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = |x: &str| x.to_ascii_uppercase().replace([' ', '-', '_'], "");
        let want = norm(s);
        Self::NAMES.iter().find(|(_, n)| norm(n) == want).map(|(f, _)| *f).ok_or_else(|| {
            let known: Vec<&str> = Self::NAMES.iter().map(|(_, n)| *n).collect();
            format!("unknown CPU {s:?}; known: {}", known.join(", "))
        })
    }
}

/// CPU type in the seed's sense: the processor's name and its frequency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CpuType {
    pub family: CpuFamily,
    pub frequency_mhz: u32,
}

impl fmt::Display for CpuType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ghz = f64::from(self.frequency_mhz) / 1000.0;
        write!(f, "{} {ghz}GHz", self.family)
    }
}

/// The guest property `cpu-arch` (LM-07).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuArch {
    #[default]
    Native,
    Sparc64Class1,
    Generic,
    MigrationClass1,
}

impl CpuArch {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Sparc64Class1 => "sparc64-class1",
            Self::Generic => "generic",
            Self::MigrationClass1 => "migration-class1",
        }
    }

    /// Whether a guest with this cpu-arch may move from `source` to `target` (LM-07).
    pub fn allows(self, source: CpuType, target: CpuType) -> bool {
        match self {
            Self::Native => source == target,
            Self::Sparc64Class1 => source.family.is_sparc64() && target.family.is_sparc64(),
            Self::MigrationClass1 => source.family.is_migration_class1() && target.family.is_migration_class1(),
            Self::Generic => true,
        }
    }

    /// The narrowest cpu-arch that would allow the move, for the error message.
    pub fn needed(source: CpuType, target: CpuType) -> CpuArch {
        [Self::Native, Self::Sparc64Class1, Self::MigrationClass1]
            .into_iter()
            .find(|a| a.allows(source, target))
            .unwrap_or(Self::Generic)
    }
}

impl fmt::Display for CpuArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CpuArch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "native" => Ok(Self::Native),
            "sparc64-class1" => Ok(Self::Sparc64Class1),
            "generic" => Ok(Self::Generic),
            "migration-class1" => Ok(Self::MigrationClass1),
            other => {
                Err(format!("unknown cpu-arch {other:?}; expected native, sparc64-class1, generic or migration-class1"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CpuArch::*;
    use CpuFamily::*;

    fn t(family: CpuFamily, mhz: u32) -> CpuType {
        CpuType { family, frequency_mhz: mhz }
    }

    #[test]
    fn cpu_arch_table_follows_lm_07() {
        // Goal: each row of the seed's cpu-arch table (and Oracle's migration-class1) holds.
        let x_plus = t(Sparc64XPlus, 3200);
        let x_plus_37 = t(Sparc64XPlus, 3700);
        let x = t(Sparc64X, 2800);
        let t4 = t(SparcT4, 2850);
        let t5 = t(SparcT5, 3600);
        let cases = [
            (Native, x_plus, x_plus, true),
            (Native, x_plus, x_plus_37, false), // frequency differs
            (Native, x, x_plus, false),
            (Sparc64Class1, x, x_plus, true),
            (Sparc64Class1, x_plus, t4, false),
            (Generic, x_plus, t4, true),
            (MigrationClass1, t4, t5, true),
            (MigrationClass1, x_plus, t4, false),
            (Native, t4, t4, true),
        ];
        for (arch, s, d, ok) in cases {
            assert_eq!(arch.allows(s, d), ok, "{arch} {s} -> {d}");
        }
        assert_eq!(CpuArch::needed(x, x_plus), Sparc64Class1);
        assert_eq!(CpuArch::needed(x_plus, t4), Generic);
        assert_eq!(CpuArch::needed(t4, t5), MigrationClass1);
    }

    #[test]
    fn parses_cpu_names_loosely() {
        // Goal: layouts may write "SPARC64 X+", "sparc64-x+" or "SPARC T4".
        assert_eq!("SPARC64 X+".parse::<CpuFamily>().unwrap(), Sparc64XPlus);
        assert_eq!("sparc64-x+".parse::<CpuFamily>().unwrap(), Sparc64XPlus);
        assert_eq!("SPARC T4".parse::<CpuFamily>().unwrap(), SparcT4);
        assert!("Itanium".parse::<CpuFamily>().unwrap_err().contains("known"));
    }
}
