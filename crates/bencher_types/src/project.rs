//! Projects: a project owns its benchmarks and is one repository of the server's OCI
//! registry, addressed as `HOST/<project slug or UUID>`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ProjectUuid, ResourceName, Slug};

/// `POST /v0/projects`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonNewProject {
    pub name: ResourceName,
    /// Derived from the name when omitted. Also the project's registry repository name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<Slug>,
}

/// A project as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonProject {
    pub uuid: ProjectUuid,
    pub name: ResourceName,
    pub slug: Slug,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

/// Filters of `GET /v0/projects`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ProjectQuery {
    /// Exact name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Case-insensitive substring of the name or slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
}
