//! `ResourceName`: a display name, validated once at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub const MAX_NAME_LEN: usize = 64;

/// 1 to 64 characters after trimming surrounding whitespace, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, example = "Intel v1"))]
#[serde(try_from = "String", into = "String")]
pub struct ResourceName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name must be at most {MAX_NAME_LEN} characters, got {0}")]
    TooLong(usize),
    #[error("name must not contain control characters")]
    ControlCharacter,
}

impl ResourceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ResourceName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        let len = s.chars().count();
        if len > MAX_NAME_LEN {
            return Err(NameError::TooLong(len));
        }
        if s.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for ResourceName {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ResourceName> for String {
    fn from(name: ResourceName) -> Self {
        name.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert_eq!(
            " My Runner ".parse::<ResourceName>().unwrap().as_str(),
            "My Runner"
        );
        assert_eq!("   ".parse::<ResourceName>(), Err(NameError::Empty));
        assert_eq!(
            "é".repeat(64)
                .parse::<ResourceName>()
                .unwrap()
                .as_str()
                .chars()
                .count(),
            64
        );
        assert_eq!(
            "é".repeat(65).parse::<ResourceName>(),
            Err(NameError::TooLong(65))
        );
        assert_eq!(
            "a\nb".parse::<ResourceName>(),
            Err(NameError::ControlCharacter)
        );
    }
}
