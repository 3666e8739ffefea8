//! The agent's driver: feeds the protocol core (`core::step`) with what happens and
//! performs the effects it returns, in order. IO: the spool (on the blocking pool), the
//! WebSocket through the `link` task, job tasks through a [`JobBackend`], and a one
//! second clock tick.
//!
//! Tasks: one loop owns the core's state; the link task owns the socket; a ticker task
//! sends `Tick` every second (which the core turns into heartbeats); each job runs on
//! its own task. A benchmark saturating the CPU delays none of them beyond what the
//! scheduler does to any process, and nothing in the loop waits for a job.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bencher_types::JobUuid;
use bencher_types::protocol::RunnerMessage;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::core::{self, Assignment, Effect, Exit, Input, JobOutcome, Note, State};
use super::link::{self, LinkConfig, LinkEvent, Outgoing};
use crate::spool::{Spool, SpoolError};
use crate::status::file::StatusFile;
use crate::update::Updater;

/// How often the core gets a `Tick`: the heartbeat period.
pub const TICK: Duration = Duration::from_secs(1);
/// How long an update (download, checks, install) may take before it counts as failed
/// and jobs resume.
const UPDATE_BOUND: Duration = Duration::from_secs(30 * 60);

/// What runs jobs: the driver calls it on job tasks, never on its own loop.
pub trait JobBackend: Send + Sync + 'static {
    /// What preparing a job yields for executing it (the pulled image, its root
    /// filesystem).
    type Prepared: Send + 'static;

    /// Pulls the image and prepares the root filesystem. When the job is canceled
    /// meanwhile, `cancel` fires and the driver drops the future, so it must leave
    /// nothing behind when dropped, and stop work it handed to other tasks on `cancel`.
    /// The error is sent to the server as the job's failure.
    fn prepare(
        &self,
        assignment: Assignment,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<Self::Prepared, String>> + Send;

    /// Runs the job. On `cancel`, it stops the benchmark promptly (within a second) and
    /// returns what it collected as `JobOutcome::Canceled`.
    fn execute(
        &self,
        prepared: Self::Prepared,
        cancel: CancellationToken,
    ) -> impl Future<Output = JobOutcome> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read the spool")]
    Spool(#[source] SpoolError),
    #[error("the spool reading task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Runs the agent until it exits (after a signal, or when the server refuses the key).
///
/// `signals` carries one `()` per SIGTERM/SIGINT (the first drains, the second stops
/// at once); the binary forwards the real signals, tests send their own.
pub async fn run<B: JobBackend>(
    core_config: core::Config,
    link_config: LinkConfig,
    backend: Arc<B>,
    spool: Spool,
    updater: Option<Arc<Updater>>,
    mut signals: mpsc::UnboundedReceiver<()>,
) -> Result<Exit, AgentError> {
    let spool = Arc::new(spool);
    let loaded = {
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || spool.load())
            .await
            .map_err(AgentError::Task)?
            .map_err(AgentError::Spool)?
    };
    for path in &loaded.set_aside {
        tracing::error!(path = %path.display(), "a spool file is not a readable terminal message; set aside, not sent");
    }
    if !loaded.messages.is_empty() {
        tracing::info!(
            count = loaded.messages.len(),
            "terminal messages from an earlier run wait for an acknowledgement; they are sent first"
        );
    }
    let spooled = loaded.messages.into_iter().map(|s| s.message).collect();
    let mut state = State::new(core_config, spooled);

    let (inputs_tx, mut inputs) = mpsc::unbounded_channel::<Event<B::Prepared>>();
    let (link_tx, mut link_events) = mpsc::unbounded_channel();
    let (outgoing_tx, outgoing_rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    // Before the link moves: the status file names the channel (never the key).
    let mut status = StatusFile::start(spool.dir(), &link_config.url);
    let link_task = tokio::spawn(link::run(link_config, link_tx, outgoing_rx, stop.clone()));
    let ticker = tokio::spawn(tick(inputs_tx.clone(), stop.clone()));

    let mut driver = Driver {
        backend,
        spool,
        events: inputs_tx,
        outgoing: outgoing_tx,
        conn: None,
        jobs: HashMap::new(),
        updater,
    };
    let exit = loop {
        let input = tokio::select! {
            Some(event) = inputs.recv() => match event {
                Event::Input(input) => input,
                Event::Prepared { job, prepared } => {
                    if let Some(slot) = driver.jobs.get_mut(&job) {
                        slot.prepared = Some(prepared);
                    }
                    Input::Prepared { job }
                }
            },
            Some(event) = link_events.recv() => { status.on_link(&event); match event {
                LinkEvent::Connected { id } => {
                    driver.conn = Some(id);
                    Input::Connected
                }
                LinkEvent::ConnectFailed { .. } => continue,
                LinkEvent::Disconnected { id, .. } => {
                    if driver.conn == Some(id) {
                        driver.conn = None;
                    }
                    Input::Disconnected
                }
                LinkEvent::Message(Ok(message)) => Input::Message(message),
                LinkEvent::Message(Err(error)) => Input::Unreadable(error),
                LinkEvent::Unauthorized => {
                    driver.conn = None;
                    Input::Unauthorized
                }
            }},
            Some(()) = signals.recv() => Input::Signal,
        };
        let mut exit = None;
        for effect in core::step(&mut state, input) {
            status.on_effect(&effect);
            if let Effect::Exit(how) = effect {
                exit = Some(how);
                break;
            }
            driver.perform(effect).await;
        }
        if let Some(exit) = exit {
            break exit;
        }
    };

    // The link closes its connection gracefully when stopped.
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), link_task).await;
    ticker.abort();
    for (_, slot) in driver.jobs.drain() {
        if let Some(task) = slot.task {
            task.abort();
        }
    }
    Ok(exit)
}

#[expect(
    clippy::large_enum_variant,
    reason = "a server message lives only between the socket and one step; boxing buys nothing"
)]
enum Event<P> {
    Input(Input),
    /// Preparation succeeded; the driver keeps `prepared` until `Execute`.
    Prepared {
        job: JobUuid,
        prepared: P,
    },
}

struct Driver<B: JobBackend> {
    backend: Arc<B>,
    spool: Arc<Spool>,
    events: mpsc::UnboundedSender<Event<B::Prepared>>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    /// The connection the core believes is up.
    conn: Option<u64>,
    jobs: HashMap<JobUuid, Slot<B::Prepared>>,
    updater: Option<Arc<Updater>>,
}

struct Slot<P> {
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    prepared: Option<P>,
}

async fn tick<P>(events: mpsc::UnboundedSender<Event<P>>, stop: CancellationToken) {
    let start = Instant::now();
    let mut interval = tokio::time::interval(TICK);
    // After a stall, one tick, not a burst of heartbeats.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now = start.elapsed();
        if events.send(Event::Input(Input::Tick { now })).is_err() {
            return;
        }
    }
}

impl<B: JobBackend> Driver<B> {
    async fn perform(&mut self, effect: Effect) {
        match effect {
            Effect::Send(message) => self.send(&message),
            Effect::Spool(message) => {
                let spool = self.spool.clone();
                let result = tokio::task::spawn_blocking(move || spool.write(&message)).await;
                // Sent anyway: delivering a result beats keeping it only in memory.
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::error!(
                        error = %crate::agent::error_chain(&error),
                        "cannot spool a terminal message; sending it without a copy on disk"
                    ),
                    Err(error) => tracing::error!(error = %error, "the spool task failed"),
                }
            }
            Effect::Unspool(job) => {
                let spool = self.spool.clone();
                match tokio::task::spawn_blocking(move || spool.remove(job)).await {
                    Ok(Ok(())) => {}
                    // It will be re-sent on the next start, which the server acknowledges
                    // again: harmless.
                    Ok(Err(error)) => tracing::error!(
                        job = %job,
                        error = %crate::agent::error_chain(&error),
                        "cannot delete an acknowledged message from the spool"
                    ),
                    Err(error) => tracing::error!(error = %error, "the spool task failed"),
                }
            }
            Effect::Park(job) => {
                let spool = self.spool.clone();
                match tokio::task::spawn_blocking(move || spool.park(job)).await {
                    Ok(Ok(path)) => tracing::error!(
                        job = %job,
                        path = %path.display(),
                        "the server never acknowledged this job's result; kept on disk and no longer sent"
                    ),
                    Ok(Err(error)) => tracing::error!(
                        job = %job,
                        error = %crate::agent::error_chain(&error),
                        "cannot set aside an unacknowledged message"
                    ),
                    Err(error) => tracing::error!(error = %error, "the spool task failed"),
                }
            }
            Effect::Update(offer) => self.update(offer),
            Effect::Prepare(assignment) => self.prepare(*assignment),
            Effect::Execute(job) => self.execute(job),
            Effect::Cancel(job) => {
                if let Some(slot) = self.jobs.get(&job) {
                    slot.cancel.cancel();
                }
            }
            Effect::Abort(job) => {
                if let Some(task) = self.jobs.get_mut(&job).and_then(|slot| slot.task.take()) {
                    task.abort();
                }
                let _ = self.events.send(Event::Input(Input::Finished {
                    job,
                    outcome: JobOutcome::Canceled {
                        results: Vec::new(),
                    },
                }));
            }
            Effect::Release(job) => {
                self.jobs.remove(&job);
            }
            Effect::Close => {
                if let Some(conn) = self.conn {
                    let _ = self.outgoing.send(Outgoing::Close { conn });
                }
            }
            Effect::Note(note) => log(&note),
            // Handled by the loop.
            Effect::Exit(_) => {}
        }
    }

    /// Runs the update on its own task: the loop keeps heartbeating the connection. The
    /// core sends no `ready` until it hears back, so every way the task can end (a
    /// stalled download past the bound, a panic) reports `UpdateFailed`.
    fn update(&self, offer: crate::update::Offer) {
        let events = self.events.clone();
        let updater = self.updater.clone();
        tokio::spawn(async move {
            let version = offer.version.clone();
            let mut attempt = tokio::spawn(async move {
                match updater {
                    Some(updater) => updater
                        .apply(&offer)
                        .await
                        .map_err(|error| crate::agent::error_chain(&error)),
                    None => Err("this runner has no updater".to_owned()),
                }
            });
            let result = match tokio::time::timeout(UPDATE_BOUND, &mut attempt).await {
                Ok(Ok(result)) => result,
                Ok(Err(error)) => Err(format!("the update task failed: {error}")),
                // Stops a stalled download; an install already on the blocking pool
                // finishes (it is atomic) and takes effect at the next start.
                Err(_) => {
                    attempt.abort();
                    Err(format!(
                        "the update did not finish within {} minutes",
                        UPDATE_BOUND.as_secs() / 60
                    ))
                }
            };
            let input = match result {
                Ok(()) => Input::UpdateInstalled { version },
                Err(error) => Input::UpdateFailed { version, error },
            };
            let _ = events.send(Event::Input(input));
        });
    }

    fn send(&self, message: &RunnerMessage) {
        let Some(conn) = self.conn else { return };
        match serde_json::to_string(message) {
            Ok(text) => {
                let _ = self.outgoing.send(Outgoing::Text { conn, text });
            }
            Err(error) => tracing::error!(error = %error, "cannot encode a message"),
        }
    }

    fn prepare(&mut self, assignment: Assignment) {
        let job = assignment.job;
        let cancel = CancellationToken::new();
        let backend = self.backend.clone();
        let events = self.events.clone();
        let token = cancel.clone();
        let task = tokio::spawn(async move {
            let event = tokio::select! {
                () = token.cancelled() => Event::Input(Input::Finished {
                    job,
                    outcome: JobOutcome::Canceled { results: Vec::new() },
                }),
                prepared = backend.prepare(assignment, token.clone()) => match prepared {
                    Ok(prepared) => Event::Prepared { job, prepared },
                    Err(error) => Event::Input(Input::Finished {
                        job,
                        outcome: JobOutcome::Failed { results: Vec::new(), error },
                    }),
                },
            };
            let _ = events.send(event);
        });
        self.jobs.insert(
            job,
            Slot {
                cancel,
                task: Some(task),
                prepared: None,
            },
        );
    }

    fn execute(&mut self, job: JobUuid) {
        let Some(slot) = self.jobs.get_mut(&job) else {
            return;
        };
        let events = self.events.clone();
        let Some(prepared) = slot.prepared.take() else {
            // Unreachable by the core's rules; still, the job must end.
            let _ = events.send(Event::Input(Input::Finished {
                job,
                outcome: JobOutcome::Failed {
                    results: Vec::new(),
                    error: "internal error: the job was not prepared".to_owned(),
                },
            }));
            return;
        };
        let backend = self.backend.clone();
        let cancel = slot.cancel.clone();
        slot.task = Some(tokio::spawn(async move {
            let outcome = backend.execute(prepared, cancel).await;
            let _ = events.send(Event::Input(Input::Finished { job, outcome }));
        }));
    }
}

fn log(note: &Note) {
    match note {
        Note::Connected { resending } => {
            tracing::info!(resending, "connected to the server");
        }
        Note::UnknownEvent(event) => {
            tracing::warn!(event = %event, "ignored a message with an unknown event");
        }
        Note::Malformed(error) => {
            tracing::warn!(error = %error, "ignored a malformed message from the server");
        }
        Note::UpdateIgnored { version, reason } => tracing::info!(
            version = %version,
            reason,
            "the server offers another runner version; not updating"
        ),
        Note::UpdateStarted { version } => {
            tracing::info!(version = %version, "updating the runner binary");
        }
        Note::UpdateInstalled { version } => tracing::info!(
            version = %version,
            "runner binary updated; restarting it with the same arguments"
        ),
        Note::UpdateFailed {
            version,
            error,
            retry_in,
        } => tracing::warn!(
            version = %version,
            error = %error,
            retry_in_s = retry_in.as_secs(),
            "update failed; the running binary is unchanged and keeps running jobs"
        ),
        Note::JobAssigned { job } => tracing::info!(job = %job, "job assigned; pulling its image"),
        Note::JobRefused { job, reason } => {
            tracing::warn!(job = %job, reason = %reason, "job refused");
        }
        Note::JobRunning { job } => tracing::info!(job = %job, "job running"),
        Note::JobFinished { job, event } => {
            tracing::info!(job = %job, result = event, "job finished")
        }
        Note::CancelRequested { job } => tracing::info!(job = %job, "the server canceled the job"),
        Note::CancelWithoutJob => tracing::info!("ignored a cancel: no job is running"),
        Note::Acknowledged { job } => {
            tracing::debug!(job = %job, "the server acknowledged the job's result");
        }
        Note::UnmatchedAck { job } => {
            tracing::debug!(job = ?job, "an ack matched nothing outstanding")
        }
        Note::ServerAcksEverything => {
            tracing::debug!("the server acknowledges every message; tracking them all");
        }
        Note::Resending { job } => {
            tracing::warn!(job = %job, "no acknowledgement for the job's result; sending it again");
        }
        Note::Parked { job } => {
            tracing::error!(job = %job, "giving up on an acknowledgement for the job's result");
        }
        Note::StaleJobInput { job } => {
            tracing::debug!(job = %job, "ignored news of a job that is over")
        }
        Note::JobAborted { job } => {
            tracing::warn!(job = %job, "the job did not stop after cancel; aborting its task");
        }
        Note::Draining { within } => tracing::info!(
            within_s = within.as_secs(),
            "draining: no new jobs; the current one may finish (signal again to stop at once)"
        ),
        Note::DrainTimedOut => tracing::warn!("drain bound reached; canceling the job"),
        Note::Stopping => tracing::warn!("stopping: canceling the job"),
        Note::Unauthorized => tracing::error!(
            "the server refused the runner key (HTTP 401): the key is wrong or was rotated, or \
             the runner was archived; stopping"
        ),
        Note::ExitingWithUnacknowledged { jobs } => tracing::warn!(
            jobs = ?jobs,
            "exiting before the server acknowledged these results; they stay in the spool and \
             are sent on the next start"
        ),
    }
}
