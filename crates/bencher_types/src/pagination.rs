//! Pagination of list endpoints: `per_page`, `page`, `sort`, `direction`.

use serde::{Deserialize, Serialize};

pub const DEFAULT_PER_PAGE: u32 = 25;
pub const MAX_PER_PAGE: u32 = 255;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    #[default]
    Name,
    Created,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Asc,
    Desc,
}

/// Query parameters shared by every list endpoint. The total count of matching items is
/// returned in the `X-Total-Count` header.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct Pagination {
    /// Items per page, 1 to 255 (default 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_page: Option<u32>,
    /// Page number, from 1 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// Sort key (default `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<SortBy>,
    /// Sort direction (default `asc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

impl Pagination {
    /// `(limit, offset)` for the query, or why the parameters are out of range.
    pub fn limit_offset(&self) -> Result<(u32, u64), String> {
        let per_page = self.per_page.unwrap_or(DEFAULT_PER_PAGE);
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(format!(
                "per_page must be between 1 and {MAX_PER_PAGE}, got {per_page}"
            ));
        }
        let page = self.page.unwrap_or(1);
        if page == 0 {
            return Err("page starts at 1".to_owned());
        }
        Ok((per_page, u64::from(page - 1) * u64::from(per_page)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_offset() {
        assert_eq!(Pagination::default().limit_offset(), Ok((25, 0)));
        let p = Pagination {
            per_page: Some(10),
            page: Some(3),
            ..Default::default()
        };
        assert_eq!(p.limit_offset(), Ok((10, 20)));
        let p = Pagination {
            per_page: Some(0),
            ..Default::default()
        };
        assert!(p.limit_offset().is_err());
        let p = Pagination {
            per_page: Some(256),
            ..Default::default()
        };
        assert!(p.limit_offset().is_err());
        let p = Pagination {
            page: Some(0),
            ..Default::default()
        };
        assert!(p.limit_offset().is_err());
    }
}
