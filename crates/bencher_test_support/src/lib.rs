//! Dev-only helpers.
