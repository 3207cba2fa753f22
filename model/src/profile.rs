//! Rights profiles (OP-04), as ldm names them; a user certificate carries their slugs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A rights profile (OP-04), as ldm's: LDoms Review reads, LDoms Management also
/// changes domains and migrates, System Administrator may do everything.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Profile {
    LdomsReview,
    LdomsManagement,
    SystemAdministrator,
    Other(String),
}

impl Profile {
    pub const LDOMS_REVIEW: &'static str = "LDoms Review";
    pub const LDOMS_MANAGEMENT: &'static str = "LDoms Management";
    pub const SYSTEM_ADMINISTRATOR: &'static str = "System Administrator";
    /// The three profiles that grant rights, weakest first.
    pub const RIGHTS: [Profile; 3] = [Self::LdomsReview, Self::LdomsManagement, Self::SystemAdministrator];

    pub fn as_str(&self) -> &str {
        match self {
            Self::LdomsReview => Self::LDOMS_REVIEW,
            Self::LdomsManagement => Self::LDOMS_MANAGEMENT,
            Self::SystemAdministrator => Self::SYSTEM_ADMINISTRATOR,
            Self::Other(s) => s,
        }
    }

    /// Parses a profile name (or its slug, `ldoms-review`); unknown names are kept as
    /// [`Profile::Other`], which grants nothing.
    pub fn parse(name: &str) -> Self {
        Self::RIGHTS
            .into_iter()
            .find(|p| p.as_str() == name || p.slug() == Some(name))
            .unwrap_or_else(|| Self::Other(name.to_string()))
    }

    /// The profile's name in a user certificate (`urn:tern:profile:SLUG`).
    pub fn slug(&self) -> Option<&'static str> {
        match self {
            Self::LdomsReview => Some("ldoms-review"),
            Self::LdomsManagement => Some("ldoms-management"),
            Self::SystemAdministrator => Some("system-administrator"),
            Self::Other(_) => None,
        }
    }

    /// 0 for none, then 1 (review) to 3 (administrator): each includes the weaker.
    pub fn level(&self) -> u8 {
        match self {
            Self::Other(_) => 0,
            Self::LdomsReview => 1,
            Self::LdomsManagement => 2,
            Self::SystemAdministrator => 3,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Profile {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Ok(Self::parse(&s))
    }
}

impl From<Profile> for String {
    fn from(p: Profile) -> String {
        p.as_str().to_string()
    }
}
