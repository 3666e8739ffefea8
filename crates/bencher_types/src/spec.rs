//! Specs: the hardware a runner provides (OS, architecture, sandbox, CPUs, memory,
//! disk, network), and their REST bodies.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ByteSize, ResourceName, Slug, SpecUuid};

/// Declares a closed, string-valued enum whose wire form, `FromStr` and `Display`
/// agree, and whose parse error lists the accepted values.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok(Self::$variant),)+
                    _ => Err(format!(
                        concat!("unknown ", $what, " `{}`; expected one of: {}"),
                        s,
                        [$($wire),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        // Written by hand: the derive does not see serde renames made inside a macro.
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($wire),+]))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

wire_enum!(
    /// Operating system of a Spec.
    Os, "operating system" { Linux => "linux", Macos => "macos", Windows => "windows" }
);
wire_enum!(
    /// CPU architecture of a Spec.
    Architecture, "architecture" { X86_64 => "x86_64", Aarch64 => "aarch64" }
);
wire_enum!(
    /// How a Spec's jobs are isolated. A Spec without one runs on the host, and only on
    /// runners started with `--danger-allow-no-sandbox`.
    Sandbox, "sandbox" {
        Firecracker => "firecracker",
        Qemu => "qemu",
        Gvisor => "gvisor",
        Container => "container",
    }
);

/// Upper bound on a Spec's CPU count; well above any machine sold today.
pub const MAX_CPU: u32 = 4096;

/// Number of CPUs, 1 to [`MAX_CPU`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = u32, example = 4))]
#[serde(try_from = "u32", into = "u32")]
pub struct Cpu(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cpu must be between 1 and {MAX_CPU}, got {0}")]
pub struct CpuError(pub u64);

impl Cpu {
    pub fn new(count: u32) -> Result<Self, CpuError> {
        if (1..=MAX_CPU).contains(&count) {
            Ok(Self(count))
        } else {
            Err(CpuError(count.into()))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Cpu {
    type Error = CpuError;

    fn try_from(count: u32) -> Result<Self, Self::Error> {
        Self::new(count)
    }
}

impl From<Cpu> for u32 {
    fn from(cpu: Cpu) -> Self {
        cpu.0
    }
}

impl FromStr for Cpu {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let count: u64 = s.trim().parse().map_err(|_| {
            format!("cpu must be a whole number between 1 and {MAX_CPU}, got `{s}`")
        })?;
        u32::try_from(count)
            .map_err(|_| CpuError(count))
            .and_then(Self::new)
            .map_err(|e| e.to_string())
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `POST /v0/specs`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonNewSpec {
    pub name: ResourceName,
    /// Derived from the name when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<Slug>,
    pub os: Os,
    pub architecture: Architecture,
    /// Omitted: no sandbox (runs on the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    pub cpu: Cpu,
    /// Bytes.
    pub memory: ByteSize,
    /// Bytes.
    pub disk: ByteSize,
    /// Whether jobs on this Spec may use the network.
    #[serde(default)]
    pub network: bool,
    /// Make this the fallback Spec (the previous fallback, if any, stops being one).
    #[serde(default)]
    pub fallback: bool,
}

/// A Spec as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonSpec {
    pub uuid: SpecUuid,
    pub name: ResourceName,
    pub slug: Slug,
    pub os: Os,
    pub architecture: Architecture,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    pub cpu: Cpu,
    pub memory: ByteSize,
    pub disk: ByteSize,
    pub network: bool,
    pub fallback: bool,
    /// When the Spec was archived; absent while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

/// `PATCH /v0/specs/{spec}`. Hardware fields are immutable: a Spec is a record of what
/// reports were measured on, so different hardware is a new Spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonUpdateSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ResourceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<Slug>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
}

/// Filters of `GET /v0/specs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct SpecQuery {
    /// Exact name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Case-insensitive substring of the name or slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// `true`: only archived Specs; default: only active ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip() {
        for os in Os::ALL {
            assert_eq!(os.as_str().parse::<Os>().unwrap(), *os);
            assert_eq!(serde_json::to_string(os).unwrap(), format!("\"{os}\""));
        }
        assert_eq!(
            "x86_64".parse::<Architecture>().unwrap(),
            Architecture::X86_64
        );
        let err = "amd64".parse::<Architecture>().unwrap_err();
        assert_eq!(
            err,
            "unknown architecture `amd64`; expected one of: x86_64, aarch64"
        );
    }

    #[test]
    fn new_spec_rejects_bad_bodies() {
        let good = r#"{"name":"Intel v1","os":"linux","architecture":"x86_64","sandbox":"firecracker","cpu":4,"memory":51539607552,"disk":137438953472}"#;
        let spec: JsonNewSpec = serde_json::from_str(good).unwrap();
        assert_eq!(spec.sandbox, Some(Sandbox::Firecracker));
        assert!(!spec.network && !spec.fallback);

        for (bad, why) in [
            (
                good.replace("\"cpu\":4", "\"cpu\":0"),
                "cpu must be between",
            ),
            (
                good.replace("\"cpu\":4", "\"cpu\":4097"),
                "cpu must be between",
            ),
            (good.replace("51539607552", "0"), "at least 1 byte"),
            (good.replace("\"linux\"", "\"plan9\""), "unknown variant"),
            (
                good.replace("\"firecracker\"", "\"docker\""),
                "unknown variant",
            ),
            (good.replace("}", ",\"gpu\":1}"), "unknown field"),
        ] {
            let err = serde_json::from_str::<JsonNewSpec>(&bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
