//! Typed async HTTP client of the Bencher REST API, shared by the `bencher` CLI and the
//! runner agent.
//!
//! One method per endpoint, taking and returning the bodies of `bencher_types`, so a
//! caller never builds a path or parses JSON itself. Errors keep the server's own
//! message (see [`ClientError`]); the API token is only ever sent in the
//! `Authorization` header, never logged or shown in errors.

mod client;
mod error;

pub use client::{Client, Page, USER_AGENT};
pub use error::ClientError;
