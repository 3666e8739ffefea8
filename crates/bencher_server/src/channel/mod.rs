//! The runner channel: every runner's one WebSocket (`GET /v0/runners/{runner}/channel`)
//! and the job dispatch over it, as `protocol.md` describes. This module is the `Hub`,
//! the in-memory registry of the live channels on this process and of the runners
//! waiting for a job; `connection` runs one channel (socket IO), `timeouts` enforces the
//! heartbeat and hard timeouts (database IO through the store), `notify` carries wake-ups,
//! cancels and closes between server processes on one PostgreSQL database, `output`
//! stores what runners report (blob IO). The database stays the source of truth: the Hub
//! only decides who to wake and where to send.
//!
//! Dispatch is push. A runner's `ready` first tries to claim a job; when there is none
//! it waits, registered as a waiter for its Specs, until a job for one of them is
//! submitted (`Hub::job_available`, which wakes exactly one waiter per job on each
//! process) or its poll timeout passes (`no_job`). The waiter is registered before the
//! claim, so a job submitted in between is never missed, and a wake-up a runner received
//! but did not use (it claimed another job, or it went away) is passed on to the next.
//!
//! Close codes the server sends: `4000` replaced by a newer connection of the same
//! runner, `4001` key rotated or runner archived (reconnecting with the same key is
//! futile), `1001` server shutting down, `1009` message over the request limit, `1011`
//! internal error (reconnect and re-send).

mod connection;
pub(crate) mod notify;
pub mod output;
pub(crate) mod timeouts;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bencher_types::protocol::POLL_TIMEOUT_RANGE;
use bencher_types::{JobUuid, RunnerState, RunnerUuid, SpecUuid};
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

pub use connection::{ChannelContext, serve};

use crate::http::error::error_chain;
use crate::store::Store;
use crate::store::channel::StoredPresence;
use notify::Remote;

/// Close code: a newer connection of the same runner replaced this one.
pub const CLOSE_REPLACED: u16 = 4000;
/// Close code: the runner's key was rotated or the runner archived.
pub const CLOSE_REVOKED: u16 = 4001;
/// The server's default poll timeout when `ready` names none.
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// The poll timeout a `ready` asks for, within the protocol's bounds: out-of-range values
/// are clamped rather than refused, so a runner with a slightly different idea of the
/// bounds still gets jobs.
pub fn poll_timeout(requested: Option<u32>) -> Duration {
    match requested {
        None => DEFAULT_POLL_TIMEOUT,
        Some(secs) => Duration::from_secs(
            secs.clamp(*POLL_TIMEOUT_RANGE.start(), *POLL_TIMEOUT_RANGE.end())
                .into(),
        ),
    }
}

/// How often an open channel refreshes `runner.last_seen` and re-checks that it still
/// holds the runner (key, archive, replacement): a third of the heartbeat timeout, so
/// other processes see a live channel as live, between 1 and 30 seconds.
pub fn keepalive_interval(heartbeat_timeout: Duration) -> Duration {
    (heartbeat_timeout / 3).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// What this process knows of a runner whose channel it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPresence {
    /// The job the runner holds, as far as its messages tell.
    pub current_job: Option<JobUuid>,
    /// The last valid protocol message (or the connection itself).
    pub last_seen: DateTime<Utc>,
}

/// A runner's state for the API: `idle` or `busy` with its job while its channel is open
/// on this process (`local`) or, by the store's records, on another live process (its
/// `last_seen` within one heartbeat timeout), else `offline`. Returns the state, the
/// current job and the last time the runner was seen.
pub fn runner_state(
    local: Option<LocalPresence>,
    stored: Option<StoredPresence>,
    stored_last_seen: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    heartbeat_timeout: Duration,
) -> (RunnerState, Option<JobUuid>, Option<DateTime<Utc>>) {
    let busy_or_idle = |job: Option<JobUuid>| match job {
        Some(_) => RunnerState::Busy,
        None => RunnerState::Idle,
    };
    if let Some(local) = local {
        let last_seen = stored_last_seen.map_or(local.last_seen, |s| s.max(local.last_seen));
        return (
            busy_or_idle(local.current_job),
            local.current_job,
            Some(last_seen),
        );
    }
    let fresh = stored_last_seen.is_some_and(|seen| {
        TimeDelta::from_std(heartbeat_timeout).is_ok_and(|timeout| now - seen <= timeout)
    });
    match stored {
        Some(stored) if stored.connected && fresh => (
            busy_or_idle(stored.current_job),
            stored.current_job,
            stored_last_seen,
        ),
        _ => (RunnerState::Offline, None, stored_last_seen),
    }
}

/// What the Hub asks a connection to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Close the channel with this code and reason.
    Close { code: u16, reason: &'static str },
    /// Send `cancel` if the runner holds `job`.
    Cancel { job: JobUuid },
}

/// A live channel on this process.
struct Live {
    connection: Uuid,
    commands: mpsc::UnboundedSender<Command>,
    current_job: Option<JobUuid>,
    last_seen: DateTime<Utc>,
}

/// A runner waiting for a job of one of `specs`.
struct Waiter {
    id: u64,
    specs: Arc<[SpecUuid]>,
    /// Receives the Spec whose job woke it.
    wake: oneshot::Sender<SpecUuid>,
}

#[derive(Default)]
struct Waiters {
    next_id: u64,
    /// Oldest first: the runner that waited longest gets the next job.
    queue: VecDeque<Waiter>,
}

struct Inner {
    /// Tells this process's notifications from other processes'.
    origin: Uuid,
    store: Store,
    channels: Mutex<HashMap<RunnerUuid, Live>>,
    waiters: Mutex<Waiters>,
    timeouts: Notify,
    /// Wakes the report processing task (`crate::report`) when a job completes.
    reports: Notify,
}

/// The registry of live channels and waiting runners; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// Locks a registry mutex. Its critical sections never panic half-way through a change,
/// so a poisoned lock (a panic elsewhere while held) still guards consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    pub fn new(store: Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                origin: Uuid::new_v4(),
                store,
                channels: Mutex::default(),
                waiters: Mutex::default(),
                timeouts: Notify::new(),
                reports: Notify::new(),
            }),
        }
    }

    /// A job for `spec` was submitted or returned to pending: wakes one waiting runner
    /// of this process and tells the other processes to do the same.
    pub async fn job_available(&self, spec: SpecUuid) {
        self.wake(spec);
        self.publish(Remote::Job { spec }).await;
    }

    /// Sends `cancel` to the runner holding `job`, wherever its channel is.
    pub async fn cancel(&self, runner: RunnerUuid, job: JobUuid) {
        self.command(runner, None, Command::Cancel { job });
        self.publish(Remote::Cancel { runner, job }).await;
    }

    /// Closes the runner's channel at once, on every process: its key was rotated or it
    /// was archived.
    pub async fn revoke(&self, runner: RunnerUuid) {
        self.close_local(
            runner,
            None,
            CLOSE_REVOKED,
            "runner key rotated or runner archived",
        );
        self.publish(Remote::Revoked { runner }).await;
    }

    /// What this process knows of the runner, if its channel is here.
    pub fn presence(&self, runner: RunnerUuid) -> Option<LocalPresence> {
        lock(&self.inner.channels)
            .get(&runner)
            .map(|live| LocalPresence {
                current_job: live.current_job,
                last_seen: live.last_seen,
            })
    }

    /// Closes every channel of this process: the server is shutting down.
    pub fn shut_down(&self) {
        for live in lock(&self.inner.channels).values() {
            let _ = live.commands.send(Command::Close {
                code: 1001,
                reason: "server shutting down",
            });
        }
    }

    /// Waits until every channel of this process closed, at most `limit`.
    pub async fn wait_closed(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !lock(&self.inner.channels).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Makes `connection` the runner's live channel on this process; a previous one is
    /// closed as replaced.
    pub(crate) fn register(
        &self,
        runner: RunnerUuid,
        connection: Uuid,
        now: DateTime<Utc>,
    ) -> mpsc::UnboundedReceiver<Command> {
        let (commands, receiver) = mpsc::unbounded_channel();
        let live = Live {
            connection,
            commands,
            current_job: None,
            last_seen: now,
        };
        if let Some(old) = lock(&self.inner.channels).insert(runner, live) {
            let _ = old.commands.send(Command::Close {
                code: CLOSE_REPLACED,
                reason: "replaced by a newer connection of this runner",
            });
        }
        receiver
    }

    /// Tells the other processes that `connection` now holds the runner's channel.
    pub(crate) async fn announce(&self, runner: RunnerUuid, connection: Uuid) {
        self.publish(Remote::Replaced { runner, connection }).await;
    }

    /// Forgets `connection`, unless a newer one replaced it.
    pub(crate) fn unregister(&self, runner: RunnerUuid, connection: Uuid) {
        let mut channels = lock(&self.inner.channels);
        if channels
            .get(&runner)
            .is_some_and(|live| live.connection == connection)
        {
            channels.remove(&runner);
        }
    }

    /// Records what the runner holds and that it was just heard from.
    pub(crate) fn update(
        &self,
        runner: RunnerUuid,
        connection: Uuid,
        current_job: Option<Option<JobUuid>>,
        seen: Option<DateTime<Utc>>,
    ) {
        if let Some(live) = lock(&self.inner.channels)
            .get_mut(&runner)
            .filter(|live| live.connection == connection)
        {
            if let Some(job) = current_job {
                live.current_job = job;
            }
            if let Some(seen) = seen {
                live.last_seen = live.last_seen.max(seen);
            }
        }
    }

    /// Registers a runner waiting for a job of `specs`; wait on the result after trying
    /// to claim, so a job submitted in between wakes it.
    pub(crate) fn wait_for(&self, specs: &[SpecUuid]) -> Waiting {
        let (wake, woken) = oneshot::channel();
        let specs: Arc<[SpecUuid]> = specs.into();
        let mut waiters = lock(&self.inner.waiters);
        let id = waiters.next_id;
        waiters.next_id += 1;
        if !specs.is_empty() {
            waiters.queue.push_back(Waiter {
                id,
                specs: specs.clone(),
                wake,
            });
        }
        Waiting {
            hub: self.clone(),
            id,
            woken: Some(woken),
        }
    }

    /// Wakes the longest-waiting runner of this process that serves `spec`.
    fn wake(&self, spec: SpecUuid) {
        let mut waiters = lock(&self.inner.waiters);
        while let Some(index) = waiters.queue.iter().position(|w| w.specs.contains(&spec)) {
            let Some(waiter) = waiters.queue.remove(index) else {
                break;
            };
            // A waiter whose runner went away deregisters itself, so a failed send only
            // happens in a race with that; the next waiter gets the job instead.
            if waiter.wake.send(spec).is_ok() {
                break;
            }
        }
    }

    /// Wakes every waiting runner of this process: notifications may have been missed.
    fn wake_all(&self) {
        let mut waiters = lock(&self.inner.waiters);
        for waiter in waiters.queue.drain(..) {
            if let Some(spec) = waiter.specs.first() {
                let _ = waiter.wake.send(*spec);
            }
        }
    }

    /// Asks the timeout task to look at the deadlines again (a job was claimed or
    /// started).
    pub(crate) fn wake_timeouts(&self) {
        self.inner.timeouts.notify_one();
    }

    pub(crate) async fn timeouts_woken(&self) {
        self.inner.timeouts.notified().await;
    }

    pub(crate) fn wake_reports(&self) {
        self.inner.reports.notify_one();
    }

    pub(crate) async fn reports_woken(&self) {
        self.inner.reports.notified().await;
    }

    fn command(&self, runner: RunnerUuid, except: Option<Uuid>, command: Command) {
        if let Some(live) = lock(&self.inner.channels).get(&runner)
            && Some(live.connection) != except
        {
            let _ = live.commands.send(command);
        }
    }

    fn close_local(
        &self,
        runner: RunnerUuid,
        except: Option<Uuid>,
        code: u16,
        reason: &'static str,
    ) {
        self.command(runner, except, Command::Close { code, reason });
    }

    /// Tells the other processes (PostgreSQL only). A lost notification is not fatal:
    /// runners poll again after their poll timeout and channels re-check their hold on
    /// every keepalive.
    async fn publish(&self, event: Remote) {
        let payload = notify::encode(self.inner.origin, &event);
        if let Err(error) = self.inner.store.notify(notify::CHANNEL, &payload).await {
            tracing::warn!(error = %error_chain(&error), ?event, "cannot notify the other server processes");
        }
    }

    /// Applies a notification from another process.
    async fn receive(&self, payload: &str) {
        let (origin, event) = match notify::decode(payload) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::warn!(%error, "ignoring a malformed notification");
                return;
            }
        };
        if origin == self.inner.origin {
            return;
        }
        match event {
            Remote::Job { spec } => self.wake(spec),
            Remote::Cancel { runner, job } => self.command(runner, None, Command::Cancel { job }),
            Remote::Revoked { runner } => {
                self.close_local(
                    runner,
                    None,
                    CLOSE_REVOKED,
                    "runner key rotated or runner archived",
                );
            }
            Remote::Replaced { runner, connection } => {
                let Some(local) = lock(&self.inner.channels)
                    .get(&runner)
                    .map(|live| live.connection)
                else {
                    return;
                };
                if local == connection {
                    return;
                }
                // Two connections may have opened at once on two processes: the one the
                // store names (the last to commit) stays, whichever notification arrives
                // first.
                match self.inner.store.runner_connection(runner).await {
                    Ok(holder) if holder != Some(local) => self.close_local(
                        runner,
                        Some(connection),
                        CLOSE_REPLACED,
                        "replaced by a newer connection of this runner",
                    ),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), %runner, "cannot check who holds a runner's channel");
                    }
                }
            }
        }
    }
}

/// A runner registered as waiting for a job. Dropping it deregisters it; a wake-up it
/// received but nobody awaited is passed on to the next waiter, so no job is left
/// waiting for a runner that went elsewhere.
pub(crate) struct Waiting {
    hub: Hub,
    id: u64,
    /// `None` once the wake-up was received: it is used, and a oneshot must not be
    /// awaited twice.
    woken: Option<oneshot::Receiver<SpecUuid>>,
}

impl Waiting {
    /// Resolves when a job for one of the Specs may be pending; once.
    pub(crate) async fn woken(&mut self) {
        let Some(receiver) = &mut self.woken else {
            return std::future::pending().await;
        };
        let result = receiver.await;
        self.woken = None;
        // An error means the waiter left the queue without a wake-up (never queued, for
        // a runner without Specs): wait forever, the poll timeout ends it.
        if result.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        lock(&self.hub.inner.waiters)
            .queue
            .retain(|waiter| waiter.id != self.id);
        if let Some(mut receiver) = self.woken.take()
            && let Ok(spec) = receiver.try_recv()
        {
            self.hub.wake(spec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeouts_are_clamped() {
        assert_eq!(poll_timeout(None), Duration::from_secs(30));
        assert_eq!(poll_timeout(Some(55)), Duration::from_secs(55));
        assert_eq!(poll_timeout(Some(0)), Duration::from_secs(1));
        assert_eq!(poll_timeout(Some(100_000)), Duration::from_secs(900));
    }

    #[test]
    fn keepalive_is_a_third_of_the_heartbeat_timeout() {
        assert_eq!(
            keepalive_interval(Duration::from_secs(90)),
            Duration::from_secs(30)
        );
        assert_eq!(
            keepalive_interval(Duration::from_secs(6)),
            Duration::from_secs(2)
        );
        assert_eq!(
            keepalive_interval(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            keepalive_interval(Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn runner_states() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let job = JobUuid::new_v4();
        let timeout = Duration::from_secs(90);
        let ago = |secs| Some(now - TimeDelta::seconds(secs));
        // On this process: what its messages said.
        let local = LocalPresence {
            current_job: Some(job),
            last_seen: now,
        };
        assert_eq!(
            runner_state(Some(local), None, ago(500), now, timeout),
            (RunnerState::Busy, Some(job), Some(now))
        );
        let idle = LocalPresence {
            current_job: None,
            ..local
        };
        assert_eq!(
            runner_state(Some(idle), None, None, now, timeout).0,
            RunnerState::Idle
        );
        // On another live process: the store's records.
        let connected = StoredPresence {
            connected: true,
            current_job: Some(job),
        };
        assert_eq!(
            runner_state(None, Some(connected), ago(10), now, timeout),
            (RunnerState::Busy, Some(job), ago(10))
        );
        // A process that crashed left its record: stale after one heartbeat timeout.
        assert_eq!(
            runner_state(None, Some(connected), ago(91), now, timeout),
            (RunnerState::Offline, None, ago(91))
        );
        // Closed channels are offline, whatever jobs are still in flight.
        let closed = StoredPresence {
            connected: false,
            current_job: Some(job),
        };
        assert_eq!(
            runner_state(None, Some(closed), ago(1), now, timeout).0,
            RunnerState::Offline
        );
        assert_eq!(
            runner_state(None, None, None, now, timeout),
            (RunnerState::Offline, None, None)
        );
    }

    async fn hub() -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
        let store = Store::open(&url).await.unwrap();
        // The store keeps its file open; the directory may go.
        drop(dir);
        Hub::new(store)
    }

    /// Takes the wake-up, if one arrived.
    fn woken(waiting: &mut Waiting) -> bool {
        let received = waiting
            .woken
            .as_mut()
            .is_some_and(|receiver| receiver.try_recv().is_ok());
        if received {
            waiting.woken = None;
        }
        received
    }

    #[tokio::test]
    async fn one_waiter_per_job_oldest_first() {
        let hub = hub().await;
        let (a, b) = (SpecUuid::new_v4(), SpecUuid::new_v4());
        let mut first = hub.wait_for(&[a]);
        let mut second = hub.wait_for(&[a, b]);
        let mut third = hub.wait_for(&[b]);
        hub.wake(b);
        assert!(!woken(&mut first) && woken(&mut second) && !woken(&mut third));
        hub.wake(b);
        assert!(woken(&mut third));
        hub.wake(a);
        assert!(woken(&mut first));
        // Nobody left: the wake-up is lost, and the next `ready` claims the job.
        hub.wake(a);
        assert!(lock(&hub.inner.waiters).queue.is_empty());
    }

    #[tokio::test]
    async fn unused_wake_ups_are_passed_on() {
        let hub = hub().await;
        let spec = SpecUuid::new_v4();
        let gone = hub.wait_for(&[spec]);
        let mut next = hub.wait_for(&[spec]);
        hub.wake(spec);
        // The first waiter was woken but dropped without awaiting: the next one gets it.
        drop(gone);
        assert!(woken(&mut next));
        // A waiter dropped before any wake-up just leaves the queue.
        let quiet = hub.wait_for(&[spec]);
        drop(quiet);
        assert!(lock(&hub.inner.waiters).queue.is_empty());
    }

    #[tokio::test]
    async fn a_new_connection_replaces_the_old_one() {
        let hub = hub().await;
        let runner = RunnerUuid::new_v4();
        let now = Utc::now();
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        let mut old_commands = hub.register(runner, old, now);
        let _new_commands = hub.register(runner, new, now);
        assert_eq!(
            old_commands.try_recv().ok(),
            Some(Command::Close {
                code: CLOSE_REPLACED,
                reason: "replaced by a newer connection of this runner"
            })
        );
        // The old connection's cleanup leaves the new one registered.
        hub.unregister(runner, old);
        assert!(hub.presence(runner).is_some());
        hub.unregister(runner, new);
        assert!(hub.presence(runner).is_none());
    }
}
