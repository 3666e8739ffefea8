//! The OCI image model and safe layer application, shared by the server's registry and
//! the runner's pull: references with Docker's defaults, digests, manifests, indexes
//! and image configs with platform selection, and unpacking layers into a root
//! filesystem without ever touching anything outside it. No network IO; the only IO is
//! the filesystem work of `layer`.

pub mod config;
pub mod digest;
pub mod layer;
pub mod manifest;
pub mod platform;
pub mod reference;
