//! The timeout task: applies `queue`'s heartbeat, claim and hard timeouts to in-flight
//! jobs, and sends `cancel` to the runner of a job canceled by its hard limit. It reads
//! the in-flight jobs from the store (database IO) at the earliest deadline, at least
//! once a second (the injected clock may jump, and other processes claim jobs too), and
//! when a connection says a job was claimed or started. Starting with the store's jobs
//! is what re-arms the timeouts after a restart; a job whose runner never came back is
//! handled by the same rules. Every change is a conditional transition, so several
//! processes sweeping one database never apply a timeout twice.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Hub;
use crate::clock::Clock;
use crate::http::error::error_chain;
use crate::queue::{self, JobEvent, Timeouts};
use crate::store::jobs::{JobChange, TransitionError, Transitioned};
use crate::store::{Store, StoreError};

/// Longest sleep between two looks at the deadlines.
const TICK: Duration = Duration::from_secs(1);
/// Shortest sleep, so a deadline that keeps being due (a transition that keeps losing a
/// race) cannot spin.
const MIN_SLEEP: Duration = Duration::from_millis(10);

/// Runs until the task is aborted.
pub(crate) async fn enforce_forever(store: Store, hub: Hub, clock: Clock, timeouts: Timeouts) {
    loop {
        let now = clock.now();
        let next = match sweep(&store, &hub, now, &timeouts).await {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "checking job timeouts failed");
                None
            }
        };
        let sleep = next
            .map_or(TICK, |deadline| {
                (deadline - now).to_std().unwrap_or(Duration::ZERO)
            })
            .clamp(MIN_SLEEP, TICK);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = hub.timeouts_woken() => {}
        }
    }
}

/// Applies every timeout due at `now`; returns the next deadline of the jobs left.
pub(crate) async fn sweep(
    store: &Store,
    hub: &Hub,
    now: DateTime<Utc>,
    timeouts: &Timeouts,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let mut next: Option<DateTime<Utc>> = None;
    for job in store.in_flight_jobs().await? {
        let clock = job.clock();
        let Some(event) = queue::timeout_event(&clock, now, timeouts) else {
            if let Some(deadline) = queue::next_deadline(&clock, timeouts) {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
            continue;
        };
        let change = JobChange {
            error: queue::timeout_message(event, &clock, timeouts),
            ..JobChange::default()
        };
        match store.transition_job(job.uuid, event, &change, now).await {
            Ok(Transitioned::Changed(after)) => {
                tracing::warn!(
                    job = %after.uuid, runner = ?after.runner, %event, status = %after.status,
                    "job timed out"
                );
                if event == JobEvent::HardTimeout
                    && let Some(runner) = after.runner
                {
                    hub.cancel(runner, after.uuid).await;
                }
            }
            Ok(Transitioned::Unchanged(_)) => {}
            // Another writer (the runner, a user, another process) changed it first.
            Err(TransitionError::Invalid(_) | TransitionError::NotFound(_)) => {}
            Err(TransitionError::Store(error)) => return Err(error),
            Err(
                error
                @ (TransitionError::NotClaimedBy { .. } | TransitionError::ClaimWithoutRunner),
            ) => {
                tracing::error!(job = %job.uuid, error = %error, "unexpected refusal of a timeout");
            }
        }
    }
    Ok(next)
}
