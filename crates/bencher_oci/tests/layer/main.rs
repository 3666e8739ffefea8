//! Integration tests of `bencher_oci::layer`: layers built in code applied to real
//! temp directories. `normal` covers the changeset semantics, `escape` the malicious
//! suite (every case checks that nothing outside the root changed). IO: temp dirs.

mod escape;
mod normal;
mod support;
