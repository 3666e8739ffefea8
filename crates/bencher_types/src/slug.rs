//! `Slug`: the human-friendly, URL-safe id of a resource, validated once at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::name::ResourceName;

/// At most this many characters, like names.
pub const MAX_SLUG_LEN: usize = 64;

/// Lowercase ASCII letters and digits in groups joined by single hyphens, 1 to 64
/// characters, and never a string that parses as a UUID (so `{resource}` paths that take
/// "UUID or slug" are unambiguous).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, example = "intel-v1"))]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("slug must not be empty")]
    Empty,
    #[error("slug must be at most {MAX_SLUG_LEN} characters, got {0}")]
    TooLong(usize),
    #[error(
        "slug may only contain lowercase letters, digits and single hyphens between them (got `{0}`)"
    )]
    Invalid(String),
    #[error("slug must not be a UUID")]
    LooksLikeUuid,
}

impl Slug {
    /// Derives a slug from a display name: lowercase ASCII letters and digits kept,
    /// every other run of characters becomes one hyphen. `None` when nothing is left
    /// (a name with no ASCII letters or digits), so the caller picks a fallback.
    pub fn derive(name: &ResourceName) -> Option<Self> {
        let mut out = String::with_capacity(name.as_str().len());
        for c in name.as_str().chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        out.truncate(MAX_SLUG_LEN);
        let trimmed = out.trim_end_matches('-');
        trimmed.parse().ok()
    }

    /// This slug with `-suffix` appended, shortened first so the result still fits.
    /// Used to make a derived slug unique.
    pub fn with_suffix(&self, suffix: &str) -> Result<Self, SlugError> {
        let keep = MAX_SLUG_LEN.saturating_sub(suffix.len() + 1);
        let mut base = self.0.clone();
        base.truncate(keep);
        let base = base.trim_end_matches('-');
        format!("{base}-{suffix}").parse()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Slug {
    type Err = SlugError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SlugError::Empty);
        }
        if s.len() > MAX_SLUG_LEN {
            return Err(SlugError::TooLong(s.chars().count()));
        }
        let well_formed = s.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if !well_formed {
            return Err(SlugError::Invalid(s.to_owned()));
        }
        if uuid::Uuid::parse_str(s).is_ok() {
            return Err(SlugError::LooksLikeUuid);
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for Slug {
    type Error = SlugError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Slug> for String {
    fn from(slug: Slug) -> Self {
        slug.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ResourceName {
        s.parse().unwrap()
    }

    #[test]
    fn derives_from_seed_names() {
        assert_eq!(
            Slug::derive(&name("My Runner")).unwrap().as_str(),
            "my-runner"
        );
        assert_eq!(
            Slug::derive(&name("Intel v1")).unwrap().as_str(),
            "intel-v1"
        );
        assert_eq!(
            Slug::derive(&name("  --Foo__Bar!! ")).unwrap().as_str(),
            "foo-bar"
        );
        assert_eq!(Slug::derive(&name("日本")), None);
    }

    #[test]
    fn derived_slug_fits() {
        let long = name(&"ab ".repeat(21));
        let slug = Slug::derive(&long).unwrap();
        assert!(slug.as_str().len() <= MAX_SLUG_LEN);
        assert!(!slug.as_str().ends_with('-'));
        let suffixed = slug.with_suffix("0123abcd").unwrap();
        assert!(suffixed.as_str().len() <= MAX_SLUG_LEN);
        assert!(suffixed.as_str().ends_with("-0123abcd"));
    }

    #[test]
    fn rejects_bad_slugs() {
        assert_eq!("".parse::<Slug>(), Err(SlugError::Empty));
        assert!(matches!(
            "a".repeat(65).parse::<Slug>(),
            Err(SlugError::TooLong(65))
        ));
        for bad in ["My-Runner", "my_runner", "-a", "a-", "a--b", "a b", "é"] {
            assert!(
                matches!(bad.parse::<Slug>(), Err(SlugError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(
            "67e55044-10b1-426f-9247-bb680e5fe0c8".parse::<Slug>(),
            Err(SlugError::LooksLikeUuid)
        );
    }
}
