//! Typed HTTP client of the Bencher REST API.
