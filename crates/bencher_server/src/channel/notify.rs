//! Notifications between server processes on one PostgreSQL database (`LISTEN`/`NOTIFY`
//! on `bencher_jobs`): a job became available for a Spec, a job's runner must get
//! `cancel`, a runner's channel moved to another connection or lost its key. Each
//! process applies them to its own `Hub`. The payload is JSON tagged with the sending
//! process, which ignores its own (it already acted locally). Database IO goes through
//! `store::channel`; with SQLite nothing is sent and nobody listens.

use std::time::Duration;

use bencher_types::{JobUuid, RunnerUuid, SpecUuid};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Hub;
use crate::http::error::error_chain;
use crate::store::channel::Listener;

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "bencher_jobs";

/// What one process tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Remote {
    /// A job for `spec` is pending: wake one waiting runner.
    Job { spec: SpecUuid },
    /// Send `cancel` to `runner` if it holds `job`.
    Cancel { runner: RunnerUuid, job: JobUuid },
    /// `connection` now holds the runner's channel; close any other.
    Replaced {
        runner: RunnerUuid,
        connection: Uuid,
    },
    /// The runner's key was rotated or the runner archived: close its channel.
    Revoked { runner: RunnerUuid },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: Uuid,
    #[serde(flatten)]
    event: Remote,
}

pub(crate) fn encode(origin: Uuid, event: &Remote) -> String {
    serde_json::to_string(&Envelope {
        origin,
        event: event.clone(),
    })
    .unwrap_or_default()
}

pub(crate) fn decode(payload: &str) -> Result<(Uuid, Remote), serde_json::Error> {
    let envelope: Envelope = serde_json::from_str(payload)?;
    Ok((envelope.origin, envelope.event))
}

/// Listens for the other processes' notifications until the task is aborted,
/// reconnecting with a backoff. Whenever notifications may have been lost (before the
/// first connection, after a lost one) every waiting runner is woken to look for jobs
/// itself.
pub(crate) async fn listen_forever(database_url: String, hub: Hub) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match Listener::connect(&database_url, CHANNEL).await {
            Ok(mut listener) => {
                backoff = Duration::from_secs(1);
                hub.wake_all();
                loop {
                    match listener.next().await {
                        Ok(Some(payload)) => hub.receive(&payload).await,
                        Ok(None) => {
                            tracing::warn!("lost the notification connection; reconnecting");
                            hub.wake_all();
                        }
                        Err(error) => {
                            tracing::warn!(error = %error_chain(&error), "notification connection failed");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot listen for notifications");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let origin = Uuid::new_v4();
        for event in [
            Remote::Job {
                spec: SpecUuid::new_v4(),
            },
            Remote::Cancel {
                runner: RunnerUuid::new_v4(),
                job: JobUuid::new_v4(),
            },
            Remote::Replaced {
                runner: RunnerUuid::new_v4(),
                connection: Uuid::new_v4(),
            },
            Remote::Revoked {
                runner: RunnerUuid::new_v4(),
            },
        ] {
            let payload = encode(origin, &event);
            // PostgreSQL limits payloads to 8000 bytes.
            assert!(payload.len() < 8000);
            assert_eq!(decode(&payload).unwrap(), (origin, event));
        }
        assert!(decode(r#"{"origin":"x","kind":"job"}"#).is_err());
    }
}
