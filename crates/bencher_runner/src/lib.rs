//! The runner agent's library behind the thin `runner` binary: `image` (pulls by
//! digest into a shared, bounded cache, and root filesystems), `agent` (the protocol
//! core without IO, its driver and WebSocket link, drain), `spool` (unacknowledged
//! results on disk), `executor` (runs a job in its sandbox; `none` today),
//! `run_local` (`runner run`), `service` (`runner install`: the systemd unit and
//! its environment file), `status` (`runner status`, and the status file the agent
//! publishes), `tuning` (host tuning: the only writer of `/proc` and
//! `/sys`) and `noise` (the noise probe and environment fingerprint). IO: see each module.

pub mod agent;
pub mod cli;
pub mod executor;
pub mod image;
pub mod noise;
pub mod run_local;
pub mod service;
pub mod spool;
pub mod status;
pub mod tuning;
pub mod update;
