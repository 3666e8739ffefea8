//! The runner agent's library behind the thin `runner` binary: `image` (pulls by
//! digest into a shared, bounded cache, and root filesystems), `agent` (the protocol
//! core without IO, its driver and WebSocket link, drain), `spool` (unacknowledged
//! results on disk), `executor` (runs a job in its sandbox; `none` today) and
//! `run_local` (`runner run`). IO: see each module.

pub mod agent;
pub mod cli;
pub mod executor;
pub mod image;
pub mod run_local;
pub mod spool;
