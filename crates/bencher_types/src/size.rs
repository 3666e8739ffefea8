//! `ByteSize`: memory and disk sizes in bytes, parsed from `51539607552` or `48GiB`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Sizes stay below 2^53 so that every JSON client (JavaScript included) reads them exactly.
pub const MAX_BYTE_SIZE: u64 = (1 << 53) - 1;

/// A positive number of bytes, at most [`MAX_BYTE_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = u64, example = 51539607552u64))]
#[serde(try_from = "u64", into = "u64")]
pub struct ByteSize(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("size must be at least 1 byte")]
    Zero,
    #[error("size must be at most {MAX_BYTE_SIZE} bytes")]
    TooLarge,
    #[error(
        "`{0}` is not a size: use bytes (51539607552) or a whole number with a unit (48GiB, 512MiB, 2TB)"
    )]
    Syntax(String),
}

const UNITS: [(&str, u64); 9] = [
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

impl ByteSize {
    pub fn new(bytes: u64) -> Result<Self, SizeError> {
        match bytes {
            0 => Err(SizeError::Zero),
            b if b > MAX_BYTE_SIZE => Err(SizeError::TooLarge),
            b => Ok(Self(b)),
        }
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The largest binary unit that divides the size exactly, for tables: `48 GiB`.
    pub fn human(self) -> String {
        for (unit, factor) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0.is_multiple_of(factor) {
                return format!("{} {unit}", self.0 / factor);
            }
        }
        format!("{} B", self.0)
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || SizeError::Syntax(s.to_owned());
        let trimmed = s.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        if digits.is_empty() {
            return Err(syntax());
        }
        let number: u64 = digits.parse().map_err(|_| SizeError::TooLarge)?;
        let unit = unit.trim().to_ascii_lowercase();
        let factor = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, factor)| *factor)
                .ok_or_else(syntax)?
        };
        Self::new(number.checked_mul(factor).ok_or(SizeError::TooLarge)?)
    }
}

impl TryFrom<u64> for ByteSize {
    type Error = SizeError;

    fn try_from(bytes: u64) -> Result<Self, Self::Error> {
        Self::new(bytes)
    }
}

impl From<ByteSize> for u64 {
    fn from(size: ByteSize) -> Self {
        size.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes_and_units() {
        assert_eq!("51539607552".parse::<ByteSize>().unwrap().bytes(), 48 << 30);
        assert_eq!("48GiB".parse::<ByteSize>().unwrap().bytes(), 48 << 30);
        assert_eq!("48 gib".parse::<ByteSize>().unwrap().bytes(), 48 << 30);
        assert_eq!(
            "128GiB".parse::<ByteSize>().unwrap().bytes(),
            137_438_953_472
        );
        assert_eq!(
            "2TB".parse::<ByteSize>().unwrap().bytes(),
            2_000_000_000_000
        );
        assert_eq!("512MiB".parse::<ByteSize>().unwrap().human(), "512 MiB");
        assert_eq!(ByteSize::new(1536).unwrap().human(), "1536 B");
    }

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!("0".parse::<ByteSize>(), Err(SizeError::Zero));
        assert_eq!("0GiB".parse::<ByteSize>(), Err(SizeError::Zero));
        assert!(matches!(
            "GiB".parse::<ByteSize>(),
            Err(SizeError::Syntax(_))
        ));
        assert!(matches!(
            "1.5GiB".parse::<ByteSize>(),
            Err(SizeError::Syntax(_))
        ));
        assert!(matches!(
            "12 parsecs".parse::<ByteSize>(),
            Err(SizeError::Syntax(_))
        ));
        assert!(matches!(
            "-1".parse::<ByteSize>(),
            Err(SizeError::Syntax(_))
        ));
        assert_eq!(
            "99999999999999999999".parse::<ByteSize>(),
            Err(SizeError::TooLarge)
        );
        assert_eq!("9000TiB".parse::<ByteSize>(), Err(SizeError::TooLarge));
        assert_eq!(ByteSize::new(MAX_BYTE_SIZE + 1), Err(SizeError::TooLarge));
    }
}
