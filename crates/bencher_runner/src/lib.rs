//! The runner agent's library. Today it holds `image`: pulling a job's OCI image by
//! digest into a content-addressed on-disk cache shared by all jobs, and preparing the
//! image's root filesystem from it. IO: see the module.

pub mod image;
