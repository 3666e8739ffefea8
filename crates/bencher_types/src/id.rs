//! Typed UUIDs, so a runner's id can never be passed where a spec's is expected,
//! and `ResourceId`, the "UUID or slug" that every resource path accepts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::slug::Slug;

macro_rules! typed_uuid {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random (v4) id.
            pub fn new_v4() -> Self {
                Self(Uuid::new_v4())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

typed_uuid!(
    /// Identifies a Runner.
    RunnerUuid
);
typed_uuid!(
    /// Identifies a Spec.
    SpecUuid
);
typed_uuid!(
    /// Identifies an API token (not the secret itself).
    TokenUuid
);
typed_uuid!(
    /// Identifies a Job.
    JobUuid
);
typed_uuid!(
    /// Identifies a Project.
    ProjectUuid
);
typed_uuid!(
    /// Identifies a Report (the results of one run on a Branch and Testbed).
    ReportUuid
);
typed_uuid!(
    /// Identifies a Branch of a Project.
    BranchUuid
);
typed_uuid!(
    /// Identifies a Testbed of a Project.
    TestbedUuid
);

typed_uuid!(
    /// Identifies a Benchmark of a Project.
    BenchmarkUuid
);
typed_uuid!(
    /// Identifies a Measure (latency, throughput, ...) of a Project.
    MeasureUuid
);
typed_uuid!(
    /// Identifies a Threshold: a branch, testbed and measure checked against a Model.
    ThresholdUuid
);
typed_uuid!(
    /// Identifies one version of a Threshold's Model.
    ModelUuid
);
typed_uuid!(
    /// Identifies a Metric: one value of a benchmark and measure in a report.
    MetricUuid
);
typed_uuid!(
    /// Identifies a Boundary: the limits a Threshold held one Metric to.
    BoundaryUuid
);
typed_uuid!(
    /// Identifies an Alert raised on a Boundary.
    AlertUuid
);

/// A resource addressed by its UUID or by its slug, as every `{resource}` path segment is.
///
/// Slugs can never parse as a UUID (see [`Slug`]), so the two forms never collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResourceId {
    Uuid(Uuid),
    Slug(Slug),
}

impl FromStr for ResourceId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(uuid) = Uuid::parse_str(s) {
            return Ok(Self::Uuid(uuid));
        }
        s.parse::<Slug>()
            .map(Self::Slug)
            .map_err(|e| format!("`{s}` is neither a UUID nor a valid slug: {e}"))
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uuid(uuid) => uuid.fmt(f),
            Self::Slug(slug) => slug.fmt(f),
        }
    }
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ResourceId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A UUID or a slug"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ResourceId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_wins_over_slug() {
        let id: ResourceId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
        assert!(matches!(id, ResourceId::Uuid(_)));
        let id: ResourceId = "my-runner".parse().unwrap();
        assert_eq!(id, ResourceId::Slug("my-runner".parse().unwrap()));
    }

    #[test]
    fn garbage_is_neither() {
        let err = "My Runner".parse::<ResourceId>().unwrap_err();
        assert!(err.contains("neither a UUID nor a valid slug"), "{err}");
    }
}
