//! Typed async HTTP client of the Bencher REST API and of its OCI registry, shared by
//! the `bencher` CLI and the runner agent.
//!
//! REST: one method per endpoint, taking and returning the bodies of `bencher_types`,
//! so a caller never builds a path or parses JSON itself. Errors keep the server's own
//! message (see [`ClientError`]); the API token is only ever sent in the
//! `Authorization` header, never logged or shown in errors.
//!
//! Registry: [`registry::RegistryClient`] pushes and pulls images under `/v2/`, with the
//! Docker token flow, streamed blob bodies and digest checks. IO: HTTP, and reading the
//! files of blobs being pushed.

mod client;
mod error;
pub mod registry;

pub use client::{Client, Page, USER_AGENT};
pub use error::{ClientError, error_chain};
pub use registry::{
    BlobDownload, BlobSource, FetchedManifest, ManifestInfo, PushOutcome, RegistryClient,
    RegistryCredential, RegistryError,
};
