//! The `--per-page`, `--page`, `--sort` and `--direction` flags every list command shares.

use bencher_types::{Direction, MAX_PER_PAGE, Pagination, SortBy};
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct PaginationArgs {
    /// Items per page, 1 to 255 [default: 25]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PER_PAGE)))]
    pub per_page: Option<u32>,
    /// Page number, from 1 [default: 1]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub page: Option<u32>,
    /// Sort key [default: name]
    #[arg(long, value_enum)]
    pub sort: Option<Sort>,
    /// Sort direction [default: asc]
    #[arg(long, value_enum)]
    pub direction: Option<Order>,
}

// `bencher_types` stays free of clap, so the CLI mirrors its two small enums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sort {
    Name,
    Created,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Order {
    Asc,
    Desc,
}

impl From<&PaginationArgs> for Pagination {
    fn from(args: &PaginationArgs) -> Self {
        Self {
            per_page: args.per_page,
            page: args.page,
            sort: args.sort.map(|sort| match sort {
                Sort::Name => SortBy::Name,
                Sort::Created => SortBy::Created,
            }),
            direction: args.direction.map(|order| match order {
                Order::Asc => Direction::Asc,
                Order::Desc => Direction::Desc,
            }),
        }
    }
}

/// Pagination flags of lists ordered by time only (reports, alerts, thresholds): no
/// `--sort`, since these have no name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct TimePaginationArgs {
    /// Items per page, 1 to 255 [default: 25]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PER_PAGE)))]
    pub per_page: Option<u32>,
    /// Page number, from 1 [default: 1]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub page: Option<u32>,
    /// Order by time [default: newest first for reports and alerts, oldest first for
    /// thresholds]
    #[arg(long, value_enum)]
    pub direction: Option<Order>,
}

impl From<&TimePaginationArgs> for Pagination {
    fn from(args: &TimePaginationArgs) -> Self {
        Self {
            per_page: args.per_page,
            page: args.page,
            sort: None,
            direction: args.direction.map(|order| match order {
                Order::Asc => Direction::Asc,
                Order::Desc => Direction::Desc,
            }),
        }
    }
}
