//! Secret keys (`RunnerKey`, `ApiToken`): format-checked at the edge, and never printed.
//!
//! Neither type implements `Display`, and `Debug` shows only the prefix, so a key that
//! ends up in a log line or a panic message leaks nothing. The secret is reachable only
//! through the explicit [`RunnerKey::expose_secret`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Number of random `[0-9A-Za-z]` characters after the prefix.
pub const SECRET_LEN: usize = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{kind} must start with `{prefix}`")]
    Prefix {
        kind: &'static str,
        prefix: &'static str,
    },
    #[error("{kind} must have exactly {SECRET_LEN} characters of [0-9A-Za-z] after `{prefix}`")]
    Body {
        kind: &'static str,
        prefix: &'static str,
    },
}

macro_rules! secret_key {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = String, example = json!(concat!($prefix, "..."))))]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Builds a key from its random part (exactly [`SECRET_LEN`] characters of
            /// `[0-9A-Za-z]`). Generating that part with a CSPRNG is the caller's job.
            pub fn from_random(random: &str) -> Result<Self, KeyError> {
                format!("{}{random}", Self::PREFIX).parse()
            }

            /// The secret itself. Call only to send it where it belongs, or to hash it.
            pub fn expose_secret(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = KeyError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let Some(body) = s.strip_prefix(Self::PREFIX) else {
                    return Err(KeyError::Prefix { kind: $kind, prefix: Self::PREFIX });
                };
                if body.len() != SECRET_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(KeyError::Body { kind: $kind, prefix: Self::PREFIX });
                }
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = KeyError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(key: $name) -> Self {
                key.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(", $prefix, "<redacted>)"))
            }
        }
    };
}

secret_key!(
    /// The secret a runner authenticates with: `bencher_runner_` + 30 characters.
    RunnerKey,
    "runner key",
    "bencher_runner_"
);
secret_key!(
    /// An API token for users and admins: `bencher_user_` + 30 characters.
    ApiToken,
    "API token",
    "bencher_user_"
);

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "bencher_runner_0123456789abcdefghijABCDEFGHIJ";

    #[test]
    fn parses_the_documented_format() {
        let key: RunnerKey = GOOD.parse().unwrap();
        assert_eq!(key.expose_secret(), GOOD);
        assert_eq!(
            RunnerKey::from_random("0123456789abcdefghijABCDEFGHIJ").unwrap(),
            key
        );
    }

    #[test]
    fn rejects_malformed_keys() {
        for bad in [
            "",
            "bencher_runner_",
            "bencher_runner_0123456789abcdefghijABCDEFGHI", // 29
            "bencher_runner_0123456789abcdefghijABCDEFGHIJK", // 31
            "bencher_runner_0123456789abcdefghijABCDEFGHI-",
            "bencher_user_0123456789abcdefghijABCDEFGHIJ",
            "BENCHER_RUNNER_0123456789abcdefghijABCDEFGHIJ",
        ] {
            assert!(bad.parse::<RunnerKey>().is_err(), "{bad}");
        }
        assert!(
            "bencher_runner_0123456789abcdefghijABCDEFGHIJ"
                .parse::<ApiToken>()
                .is_err()
        );
    }

    #[test]
    fn never_prints_the_secret() {
        let key: RunnerKey = GOOD.parse().unwrap();
        let debug = format!("{key:?} {:?}", Some(&key));
        assert!(!debug.contains("0123456789"), "{debug}");
        assert!(debug.contains("bencher_runner_<redacted>"), "{debug}");
    }

    #[test]
    fn serde_validates() {
        let json = format!("\"{GOOD}\"");
        let key: RunnerKey = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&key).unwrap(), json);
        assert!(serde_json::from_str::<RunnerKey>("\"bencher_runner_short\"").is_err());
    }
}
