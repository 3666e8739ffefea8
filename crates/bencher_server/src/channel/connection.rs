//! One runner channel: the protocol loop over an upgraded WebSocket (socket IO), from
//! registration to close. It reads the runner's messages, answers them through the store
//! (database IO), the output module (blob IO) and the Hub, and sends what the Hub asks
//! (cancel, close). The lifecycle decisions are `queue`'s; this loop only sequences them.
//!
//! Acknowledgements: terminal messages (`completed`, `failed`) and `canceled` get
//! `ack {job}` once handled (for `completed`/`failed`: once the output is durably
//! stored); `running` gets a bare `ack` (no `job`, so it is never mistaken for the
//! acknowledgement of a terminal message sent right after it); `heartbeat` gets nothing.
//! A message about a job the runner does not hold (another runner's, or one the store
//! does not know) changes nothing and is logged; a terminal message still gets its
//! `ack {job}`, without effect, because re-sending it can never succeed and a runner
//! keeps sending unacknowledged terminal messages (and no `ready`) until they are
//! acknowledged; a `running` gets `cancel`: the runner must not run a job it was not
//! given.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bencher_types::protocol::{
    IterationResult, JobEnvironment, MAX_ENVIRONMENT_SIZE, ParseError, RunnerMessage, ServerMessage,
};
use bencher_types::{
    Capabilities, JobStatus, JobUuid, JsonSpec, ResourceId, RunnerUuid, Slug, SpecUuid,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::output::{OutputDocument, OutputError, read_output, store_output};
use super::{
    CLOSE_REPLACED, CLOSE_REVOKED, Command, Hub, Waiting, keepalive_interval, poll_timeout,
};
use crate::blobs::BlobStore;
use crate::clock::Clock;
use crate::http::error::error_chain;
use crate::queue::{self, JobEvent, RunningAnswer, TerminalOutcome, Timeouts};
use crate::registry::token::RegistryTokens;
use crate::store::jobs::{Claimant, Job, JobChange, TransitionError};
use crate::store::{Store, StoreError};

/// A job's pull token outlives the job's hard limit by this much: the runner pulls at
/// the start, but a job may sit in `claimed` (pulling) up to that limit.
const PULL_TOKEN_MARGIN: Duration = Duration::from_secs(300);
const CLOSE_INTERNAL: u16 = 1011;
const CLOSE_TOO_BIG: u16 = 1009;

/// Everything a channel needs, resolved by the HTTP handler before the upgrade.
pub struct ChannelContext {
    pub hub: Hub,
    pub store: Store,
    pub blobs: BlobStore,
    pub clock: Clock,
    pub tokens: RegistryTokens,
    pub timeouts: Timeouts,
    pub runner: RunnerUuid,
    pub slug: Slug,
    /// The hash of the key the runner authenticated with; the channel closes when it is
    /// no longer the runner's.
    pub key_hash: String,
    /// The server's origin as the runner reached it: the registry jobs name.
    pub registry: String,
    /// Largest uploaded output document read back (`max_output_size`).
    pub max_output_size: u64,
    /// Runner self-update offers; `None` without `[update]`.
    pub releases: Option<std::sync::Arc<crate::update::Releases>>,
}

#[derive(Debug, thiserror::Error)]
enum ChannelError {
    #[error("cannot send to the runner")]
    Send(#[source] axum::Error),
    /// The runner stopped reading: a send did not complete within half the heartbeat
    /// timeout.
    #[error("a send to the runner did not complete within {} s", .0.as_secs())]
    SendTimeout(Duration),
    #[error("cannot encode a message")]
    Encode(#[source] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transition(TransitionError),
    #[error(transparent)]
    Output(#[from] OutputError),
    /// `upload` extension: the referenced document is missing or does not fit the
    /// message; the channel closes so the runner re-sends (and uploads again).
    #[error("{0}")]
    Upload(String),
}

/// How a channel ends.
enum End {
    /// The runner closed it or the connection broke: nothing more to send.
    Gone,
    /// The server closes it with this code and reason.
    Close { code: u16, reason: &'static str },
}

/// A `ready` waiting for a job.
struct Poll {
    deadline: Instant,
    specs: Vec<SpecUuid>,
    waiting: Waiting,
}

enum PollEvent {
    Woken,
    Expired,
}

async fn poll_event(poll: &mut Option<Poll>) -> PollEvent {
    match poll {
        Some(poll) => tokio::select! {
            () = poll.waiting.woken() => PollEvent::Woken,
            () = tokio::time::sleep_until(poll.deadline) => PollEvent::Expired,
        },
        None => std::future::pending().await,
    }
}

struct Channel {
    socket: WebSocket,
    ctx: ChannelContext,
    connection: Uuid,
    commands: mpsc::UnboundedReceiver<Command>,
    /// The job the runner holds, as far as its messages (and our `job`) tell.
    current: Option<JobUuid>,
    poll: Option<Poll>,
}

/// Runs the runner's channel until it closes.
pub async fn serve(socket: WebSocket, ctx: ChannelContext) {
    let connection = Uuid::new_v4();
    // Registered before the store records it, so a rotation or replacement committed
    // after the record always finds this connection to close.
    let commands = ctx.hub.register(ctx.runner, connection, ctx.clock.now());
    tracing::info!(runner = %ctx.runner, slug = %ctx.slug, %connection, "runner channel open");
    let mut channel = Channel {
        socket,
        ctx,
        connection,
        commands,
        current: None,
        poll: None,
    };
    let end = channel.run().await;
    let Channel {
        mut socket,
        ctx,
        poll,
        ..
    } = channel;
    // Deregister the wait first: a wake-up it holds goes to another runner.
    drop(poll);
    if let End::Close { code, reason } = end {
        tracing::info!(runner = %ctx.runner, %connection, code, reason, "closing runner channel");
        let close = socket.send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })));
        // Best effort, and bounded like every send: the socket is dropped either way.
        let _ = tokio::time::timeout(send_timeout(ctx.timeouts), close).await;
    } else {
        tracing::info!(runner = %ctx.runner, %connection, "runner channel closed");
    }
    if let Err(error) = ctx
        .store
        .runner_disconnected(ctx.runner, connection, ctx.clock.now())
        .await
    {
        tracing::warn!(runner = %ctx.runner, error = %error_chain(&error), "cannot record a closed channel");
    }
    // Last: a shutting-down server waits for the registry to empty before closing the
    // store.
    ctx.hub.unregister(ctx.runner, connection);
}

/// The longest one send to the runner may take.
fn send_timeout(timeouts: Timeouts) -> Duration {
    timeouts.heartbeat / 2
}

impl Channel {
    async fn run(&mut self) -> End {
        let ctx = &self.ctx;
        match ctx
            .store
            .runner_connected(ctx.runner, self.connection, &ctx.key_hash, ctx.clock.now())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return End::Close {
                    code: CLOSE_REVOKED,
                    reason: "runner key rotated or runner archived",
                };
            }
            Err(error) => return self.internal(&error.into()),
        }
        ctx.hub.announce(ctx.runner, self.connection).await;

        let period = keepalive_interval(ctx.timeouts.heartbeat);
        let mut keepalive = tokio::time::interval_at(Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                // Commands first: `Hub::revoke` queues `Close` before the rotation's
                // request returns, so a job submitted afterwards may wake this channel's
                // poll while the `Close` waits. An unbiased select could then pick the
                // poll, claim the job and send it to a runner whose key is no longer
                // valid (seen in tests/faults.rs `key_rotation_stops_an_idle_runner`).
                // The same holds for a replaced connection. Commands are few, so they
                // never starve the rest.
                biased;
                command = self.commands.recv() => self.command(command).await,
                frame = self.socket.recv() => self.frame(frame).await,
                event = poll_event(&mut self.poll) => self.poll_event(event).await,
                _ = keepalive.tick() => self.keepalive().await,
            };
            match step {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(error @ (ChannelError::Send(_) | ChannelError::SendTimeout(_))) => {
                    tracing::info!(runner = %self.ctx.runner, error = %error_chain(&error), "runner channel broke");
                    return End::Gone;
                }
                Err(error) => return self.internal(&error),
            }
        }
    }

    /// A server-side failure: logged, and the channel closed so the runner reconnects
    /// and re-sends what was not acknowledged.
    fn internal(&self, error: &ChannelError) -> End {
        tracing::error!(runner = %self.ctx.runner, error = %error_chain(error), "runner channel failed");
        End::Close {
            code: CLOSE_INTERNAL,
            reason: "internal server error; reconnect and re-send",
        }
    }

    async fn send(&mut self, message: &ServerMessage) -> Result<(), ChannelError> {
        let text = serde_json::to_string(message).map_err(ChannelError::Encode)?;
        // Bounded: a runner that stops reading (stopped, wedged, its network gone
        // without a reset) would otherwise hold this task, and any job being sent, for
        // as long as TCP keeps the connection. Half the heartbeat timeout, so a `job`
        // that cannot be delivered is unclaimed before the timeout would fail it.
        let limit = send_timeout(self.ctx.timeouts);
        match tokio::time::timeout(limit, self.socket.send(Message::Text(text.into()))).await {
            Ok(sent) => sent.map_err(ChannelError::Send),
            Err(_) => Err(ChannelError::SendTimeout(limit)),
        }
    }

    fn set_current(&mut self, job: Option<JobUuid>) {
        self.current = job;
        self.ctx
            .hub
            .update(self.ctx.runner, self.connection, Some(job), None);
    }

    async fn frame(
        &mut self,
        frame: Option<Result<Message, axum::Error>>,
    ) -> Result<Option<End>, ChannelError> {
        let message = match frame {
            None | Some(Ok(Message::Close(_))) => return Ok(Some(End::Gone)),
            Some(Err(error)) => return Ok(Some(read_error(self.ctx.runner, &error))),
            Some(Ok(message)) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                tracing::warn!(runner = %self.ctx.runner, "ignoring a binary frame: the protocol is JSON text");
                return Ok(None);
            }
            // Answered by the WebSocket layer; not a sign of life for jobs.
            Message::Ping(_) | Message::Pong(_) => return Ok(None),
            Message::Close(_) => return Ok(Some(End::Gone)),
        };
        match RunnerMessage::parse(text.as_str()) {
            Ok(message) => {
                self.ctx.hub.update(
                    self.ctx.runner,
                    self.connection,
                    None,
                    Some(self.ctx.clock.now()),
                );
                self.message(message).await.map(|()| None)
            }
            Err(ParseError::UnknownEvent(event)) => {
                tracing::info!(runner = %self.ctx.runner, %event, "ignoring an unknown event");
                Ok(None)
            }
            Err(ParseError::Malformed(why)) => {
                tracing::warn!(runner = %self.ctx.runner, %why, "ignoring a malformed message");
                Ok(None)
            }
        }
    }

    async fn message(&mut self, message: RunnerMessage) -> Result<(), ChannelError> {
        if let Some(offer) = self.update_offer(&message) {
            // The update answers this `ready` as `no_job` would: the runner is idle, and
            // nothing is claimed for it. It re-execs (a new channel) or sends `ready`
            // again without the `update` feature.
            self.set_current(None);
            self.poll = None;
            return self.send(&offer).await;
        }
        match message {
            RunnerMessage::Ready {
                poll_timeout: requested,
                runner,
                features,
                capabilities,
            } => {
                if let Some(meta) = runner {
                    tracing::debug!(
                        runner = %self.ctx.runner, os = %meta.os, arch = %meta.arch,
                        version = %meta.version, ?features, "runner ready"
                    );
                }
                // The runner is idle: whatever it held is over for it.
                self.set_current(None);
                self.poll = None;
                let linked = self
                    .ctx
                    .store
                    .runner_specs(&ResourceId::Uuid(self.ctx.runner.as_uuid()))
                    .await?;
                let specs = self.servable(linked, capabilities.as_ref());
                let deadline = Instant::now() + poll_timeout(requested);
                self.dispatch(deadline, specs).await
            }
            RunnerMessage::Running { job } => self.running(job).await,
            RunnerMessage::Heartbeat => self.heartbeat().await,
            RunnerMessage::Completed {
                job,
                results,
                output,
                environment,
            } => {
                let environment = environment_json(job, environment);
                self.terminal(job, results, None, output, environment).await
            }
            RunnerMessage::Failed {
                job,
                results,
                error,
                output,
            } => self.terminal(job, results, Some(error), output, None).await,
            RunnerMessage::Canceled { job } => {
                if self.current == Some(job) {
                    self.set_current(None);
                }
                self.send(&ServerMessage::Ack { job: Some(job) }).await
            }
        }
    }

    /// The `update` answering a `ready`, if `[update]` offers one to this runner.
    fn update_offer(&self, message: &RunnerMessage) -> Option<ServerMessage> {
        let offer = self
            .ctx
            .releases
            .as_ref()?
            .offer(self.ctx.runner, message)?;
        if let (
            RunnerMessage::Ready {
                runner: Some(meta), ..
            },
            ServerMessage::Update {
                version, checksum, ..
            },
        ) = (message, &offer)
        {
            tracing::info!(
                runner = %self.ctx.runner, os = %meta.os, arch = %meta.arch,
                from = %meta.version, to = %version, %checksum, "offering a runner update"
            );
        }
        Some(offer)
    }

    /// The runner's Specs it can serve. A runner that announced no capabilities gets
    /// every linked Spec (the base protocol) and refuses what it cannot run.
    fn servable(
        &self,
        linked: Vec<JsonSpec>,
        capabilities: Option<&Capabilities>,
    ) -> Vec<SpecUuid> {
        linked
            .into_iter()
            .filter(|spec| match capabilities.map(|c| c.serves(spec)) {
                None | Some(Ok(())) => true,
                Some(Err(why)) => {
                    tracing::debug!(
                        runner = %self.ctx.runner, spec = %spec.slug, %why,
                        "not dispatching this Spec's jobs to the runner"
                    );
                    false
                }
            })
            .map(|spec| spec.uuid)
            .collect()
    }

    /// Claims the best job for the runner's Specs and sends it, or waits for one until
    /// `deadline`. The wait is registered before the claim, so a job submitted while
    /// claiming wakes it.
    async fn dispatch(
        &mut self,
        deadline: Instant,
        specs: Vec<SpecUuid>,
    ) -> Result<(), ChannelError> {
        let waiting = self.ctx.hub.wait_for(&specs);
        let claimed = self
            .ctx
            .store
            .claim_next(&self.claimant(), &specs, self.ctx.clock.now())
            .await?;
        match claimed {
            Some(job) => {
                drop(waiting);
                self.poll = None;
                self.send_job(job).await
            }
            None => {
                self.poll = Some(Poll {
                    deadline,
                    specs,
                    waiting,
                });
                Ok(())
            }
        }
    }

    /// This channel as the store checks it at each claim.
    fn claimant(&self) -> Claimant {
        Claimant {
            runner: self.ctx.runner,
            connection: self.connection,
            key_hash: self.ctx.key_hash.clone(),
        }
    }

    async fn send_job(&mut self, job: Job) -> Result<(), ChannelError> {
        let ctx = &self.ctx;
        let now = ctx.clock.now();
        let ttl =
            Duration::from_secs(job.config.timeout.into()) + ctx.timeouts.grace + PULL_TOKEN_MARGIN;
        let mut config = job.config.clone();
        config.registry.clone_from(&ctx.registry);
        let message = ServerMessage::Job {
            uuid: job.uuid,
            spec: job.spec.clone(),
            timeout: config.timeout,
            config,
            oci_token: ctx.tokens.job_pull_token(job.uuid, job.project, ttl, now),
            created: job.created,
        };
        match self.send(&message).await {
            Ok(()) => {
                tracing::info!(runner = %self.ctx.runner, job = %job.uuid, "job sent to runner");
                self.set_current(Some(job.uuid));
                self.ctx.hub.wake_timeouts();
                Ok(())
            }
            Err(error) => {
                // Never leave the claim dangling: back to pending, for another runner.
                let ctx = &self.ctx;
                match ctx
                    .store
                    .unclaim(job.uuid, ctx.runner, ctx.clock.now())
                    .await
                {
                    Ok(_) => ctx.hub.job_available(job.spec.uuid).await,
                    Err(unclaim) => tracing::error!(
                        job = %job.uuid, error = %error_chain(&unclaim),
                        "cannot undo the claim of a job the runner did not get; it will time out"
                    ),
                }
                Err(error)
            }
        }
    }

    async fn poll_event(&mut self, event: PollEvent) -> Result<Option<End>, ChannelError> {
        let Some(poll) = self.poll.take() else {
            return Ok(None);
        };
        match event {
            PollEvent::Woken => {
                let Poll {
                    deadline, specs, ..
                } = poll;
                self.dispatch(deadline, specs).await?;
            }
            PollEvent::Expired => {
                drop(poll);
                self.send(&ServerMessage::NoJob).await?;
            }
        }
        Ok(None)
    }

    async fn command(&mut self, command: Option<Command>) -> Result<Option<End>, ChannelError> {
        match command {
            // The Hub dropped this connection's sender: it was replaced.
            None => Ok(Some(End::Close {
                code: CLOSE_REPLACED,
                reason: "replaced by a newer connection of this runner",
            })),
            Some(Command::Close { code, reason }) => Ok(Some(End::Close { code, reason })),
            Some(Command::Cancel { job }) => {
                // Only the job it holds; a runner that said nothing since it connected
                // may hold it too. An idle runner (polling) holds nothing.
                let holds =
                    self.current == Some(job) || (self.current.is_none() && self.poll.is_none());
                if holds {
                    tracing::info!(runner = %self.ctx.runner, %job, "sending cancel");
                    self.send(&ServerMessage::Cancel).await?;
                }
                Ok(None)
            }
        }
    }

    async fn keepalive(&mut self) -> Result<Option<End>, ChannelError> {
        let ctx = &self.ctx;
        let now = ctx.clock.now();
        if ctx
            .store
            .runner_keepalive(ctx.runner, self.connection, &ctx.key_hash, now)
            .await?
        {
            return Ok(None);
        }
        // A notification was lost (or is late): the store says this channel is over.
        let replaced = ctx.store.runner_connection(ctx.runner).await? != Some(self.connection);
        Ok(Some(if replaced {
            End::Close {
                code: CLOSE_REPLACED,
                reason: "replaced by a newer connection of this runner",
            }
        } else {
            End::Close {
                code: CLOSE_REVOKED,
                reason: "runner key rotated or runner archived",
            }
        }))
    }

    /// The job a message without a job UUID is about: the one the runner holds, or,
    /// right after a reconnect, the newest one the store says it holds.
    async fn resolve_current(&mut self) -> Result<Option<JobUuid>, ChannelError> {
        if let Some(job) = self.current {
            return Ok(Some(job));
        }
        let job = self.ctx.store.in_flight_job_of(self.ctx.runner).await?;
        if job.is_some() {
            self.set_current(job);
        }
        Ok(job)
    }

    async fn running(&mut self, job: Option<JobUuid>) -> Result<(), ChannelError> {
        let uuid = match job {
            Some(job) => job,
            None => match self.resolve_current().await? {
                Some(job) => job,
                None => {
                    tracing::warn!(runner = %self.ctx.runner, "`running` without a job to run ignored");
                    return Ok(());
                }
            },
        };
        // Two rounds: a change between reading the job and starting it (a cancel) is
        // answered from the new status.
        for _ in 0..2 {
            let Some(job) = self.ctx.own_job(uuid, "running").await? else {
                return self.send(&ServerMessage::Cancel).await;
            };
            let ctx = &self.ctx;
            let now = ctx.clock.now();
            match queue::running_answer(job.status, job.last_event) {
                RunningAnswer::Start => {
                    let change = JobChange {
                        runner: Some(ctx.runner),
                        ..JobChange::default()
                    };
                    match ctx
                        .store
                        .transition_job(uuid, JobEvent::Running, &change, now)
                        .await
                    {
                        Ok(_) => {
                            ctx.hub.wake_timeouts();
                            self.set_current(Some(uuid));
                            return self.send(&ServerMessage::Ack { job: None }).await;
                        }
                        Err(TransitionError::Invalid(_)) => continue,
                        Err(TransitionError::Store(error)) => return Err(error.into()),
                        Err(error) => {
                            tracing::warn!(runner = %ctx.runner, job = %uuid, error = %error, "`running` refused");
                            return Ok(());
                        }
                    }
                }
                RunningAnswer::Resume => {
                    ctx.store.touch_job(uuid, ctx.runner, now).await?;
                    self.set_current(Some(uuid));
                    return self.send(&ServerMessage::Ack { job: None }).await;
                }
                RunningAnswer::Continue => {
                    self.set_current(Some(uuid));
                    return self.send(&ServerMessage::Ack { job: None }).await;
                }
                RunningAnswer::Stop => {
                    tracing::info!(runner = %ctx.runner, job = %uuid, status = %job.status, "job is over; telling the runner to stop");
                    self.set_current(None);
                    return self.send(&ServerMessage::Cancel).await;
                }
            }
        }
        tracing::warn!(runner = %self.ctx.runner, job = %uuid, "`running` kept racing other changes; ignored");
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<(), ChannelError> {
        let Some(job) = self.resolve_current().await? else {
            return Ok(());
        };
        let ctx = &self.ctx;
        if !ctx
            .store
            .touch_job(job, ctx.runner, ctx.clock.now())
            .await?
        {
            tracing::debug!(runner = %ctx.runner, %job, "heartbeat for a job no longer in flight");
        }
        Ok(())
    }

    /// `completed` (no `error`) or `failed`: the output is stored durably first, then the
    /// job changes, then the runner gets its `ack`.
    async fn terminal(
        &mut self,
        uuid: JobUuid,
        results: Vec<IterationResult>,
        error: Option<String>,
        uploaded: Option<String>,
        environment: Option<String>,
    ) -> Result<(), ChannelError> {
        let event_name = if error.is_some() {
            "failed"
        } else {
            "completed"
        };
        let Some(job) = self.ctx.own_job(uuid, event_name).await? else {
            return self.send(&ServerMessage::Ack { job: Some(uuid) }).await;
        };
        let ctx = &self.ctx;
        let outcome = queue::terminal_outcome(
            job.status,
            job.last_event,
            error.is_none(),
            job.output_digest.is_some(),
        );
        // `upload` extension: the document was stored by `PUT …/jobs/{job}/output`; it
        // must be there and be an output document whose error agrees with the message.
        // Only when it is used: a re-send about a job whose output is recorded is
        // acknowledged whatever it references.
        let used = matches!(
            outcome,
            TerminalOutcome::Apply(_)
                | TerminalOutcome::Keep {
                    record_output: true
                }
        );
        let stored = match &uploaded {
            None => None,
            Some(_) if !used => None,
            Some(digest) => match read_output(&ctx.blobs, digest, ctx.max_output_size).await {
                Ok(Some(document)) if document.error.is_some() == error.is_some() => {
                    Some(digest.clone())
                }
                Ok(Some(_)) => {
                    return Err(ChannelError::Upload(format!(
                        "the uploaded output `{digest}` does not match this `{event_name}`"
                    )));
                }
                Ok(None) => {
                    return Err(ChannelError::Upload(format!(
                        "no uploaded output `{digest}` for job {uuid}"
                    )));
                }
                Err(error) => return Err(error.into()),
            },
        };
        let output = OutputDocument {
            results,
            error: error.clone(),
        };
        match outcome {
            TerminalOutcome::Apply(event) => {
                let digest = match &stored {
                    Some(digest) => digest.clone(),
                    None => store_output(&ctx.blobs, &output).await?,
                };
                let change = JobChange {
                    runner: Some(ctx.runner),
                    error,
                    output_digest: Some(digest.clone()),
                    environment,
                };
                let now = ctx.clock.now();
                match ctx.store.transition_job(uuid, event, &change, now).await {
                    Ok(after) => {
                        tracing::info!(runner = %ctx.runner, job = %uuid, status = %after.job().status, "job finished");
                        if after.job().status == JobStatus::Completed {
                            ctx.hub.wake_reports();
                        }
                    }
                    // It ended otherwise meanwhile; its output is kept all the same.
                    Err(TransitionError::Invalid(_)) => {
                        ctx.store
                            .record_output(uuid, ctx.runner, &digest, now)
                            .await?;
                    }
                    Err(TransitionError::Store(error)) => return Err(error.into()),
                    Err(
                        error @ (TransitionError::NotClaimedBy { .. }
                        | TransitionError::NotFound(_)),
                    ) => {
                        // Another runner got it meanwhile (it cannot, short of a bug):
                        // the same answer as for any job this runner does not hold.
                        tracing::warn!(runner = %ctx.runner, job = %uuid, error = %error, "terminal message refused");
                    }
                    Err(error @ TransitionError::ClaimWithoutRunner) => {
                        return Err(ChannelError::Transition(error));
                    }
                }
            }
            TerminalOutcome::Keep { record_output } => {
                if record_output {
                    let digest = match &stored {
                        Some(digest) => digest.clone(),
                        None => store_output(&ctx.blobs, &output).await?,
                    };
                    ctx.store
                        .record_output(uuid, ctx.runner, &digest, ctx.clock.now())
                        .await?;
                }
                tracing::info!(
                    runner = %ctx.runner, job = %uuid, status = %job.status, event = event_name,
                    "terminal message changes nothing; acknowledged"
                );
            }
        }
        if self.current == Some(uuid) {
            self.set_current(None);
        }
        self.send(&ServerMessage::Ack { job: Some(uuid) }).await
    }
}

impl ChannelContext {
    /// The job `uuid` if this runner holds it; `None` (logged: the message changes
    /// nothing) when another runner holds it or the store does not know it.
    async fn own_job(&self, uuid: JobUuid, event: &str) -> Result<Option<Job>, ChannelError> {
        let job = match self.store.get_job(uuid).await {
            Ok(job) => job,
            Err(StoreError::NotFound(_)) => {
                tracing::warn!(runner = %self.runner, job = %uuid, event, "message about an unknown job ignored");
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        if job.runner != Some(self.runner) {
            tracing::warn!(
                runner = %self.runner, job = %uuid, holder = ?job.runner, event,
                "message about a job this runner does not hold ignored"
            );
            return Ok(None);
        }
        Ok(Some(job))
    }
}

/// A frame that could not be read: over the size limit (the runner is told with 1009),
/// or a broken connection.
fn read_error(runner: RunnerUuid, error: &axum::Error) -> End {
    let too_big = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|error| matches!(error, tungstenite::Error::Capacity(_)));
    if too_big {
        tracing::warn!(%runner, error = %error_chain(error), "runner message over the size limit");
        End::Close {
            code: CLOSE_TOO_BIG,
            reason: "message larger than the server's request limit",
        }
    } else {
        tracing::info!(%runner, error = %error_chain(error), "cannot read from the runner channel");
        End::Gone
    }
}

/// A `completed.environment` as stored with the job: JSON up to
/// [`MAX_ENVIRONMENT_SIZE`]; a larger one is dropped with a warning (it describes the
/// job, it is not its result, so it never fails the job).
fn environment_json(job: JobUuid, environment: Option<JobEnvironment>) -> Option<String> {
    let text = serde_json::to_string(&environment?).ok()?;
    if text.len() > MAX_ENVIRONMENT_SIZE {
        tracing::warn!(%job, size = text.len(), "the job's environment is too large; not recorded");
        return None;
    }
    Some(text)
}
