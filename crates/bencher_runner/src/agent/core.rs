//! The protocol core of the runner agent: a state machine that turns inputs (connection
//! events, server messages, job progress, signals, clock ticks) into effects (messages
//! to send, spool writes, job tasks to start or cancel). No IO and no clock reads: time
//! comes in as `Input::Tick`, and the driver (`super::driver`) performs the effects in
//! the order they are returned.
//!
//! # What holds
//!
//! - A terminal message (`completed`, `failed`, `canceled`) is written to the spool
//!   before it is sent (`Effect::Spool` comes before its `Effect::Send`), and forgotten
//!   (`Effect::Unspool`) only when the server acknowledged it.
//! - On every connection, the unacknowledged terminal messages are sent first, and
//!   `ready` only once all of them are acknowledged.
//! - Every job the server assigns gets exactly one terminal message, including jobs the
//!   runner refuses (no sandbox, wrong platform, busy, shutting down), which are never
//!   started.
//! - An `update` is acted on only between jobs, with nothing left to deliver: while it
//!   is downloaded and checked no `ready` is sent, so no job can arrive; a failed one
//!   is retried after a growing pause, during which `ready` omits the `update` feature
//!   and jobs run as usual.
//! - After a signal the runner sends no more `ready`; it lets the current job finish
//!   within the drain bound, cancels it after that (or at once on a second signal), and
//!   exits once its terminal message is acknowledged or the bound passed (the spool
//!   keeps it for the next start).
//!
//! # Acknowledgements
//!
//! `ack` carries an optional `job`, and protocol.md says `running` and terminal messages
//! are acknowledged. So the core keeps, per connection, the messages that may be
//! acknowledged in the order they were sent: an `ack` with a job takes the first entry
//! for that job (a `running` before its terminal message), an `ack` without one takes the
//! oldest entry. A server that also acknowledges other messages (`ready`, `heartbeat`)
//! shows itself by an `ack` when nothing is outstanding; from then on those are tracked
//! too, so such an `ack` cannot be taken for a terminal message's. Entries other than
//! terminal messages are dropped after `Timing::ack_window` (a server that does not
//! acknowledge `running`), and a terminal message still unacknowledged after
//! `Timing::resend` is sent again (re-sending is always safe). A wrong guess therefore
//! costs a re-send, never a lost result.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use bencher_types::protocol::{
    IterationResult, JobConfig, JobEnvironment, ParseError, RunnerMessage, RunnerMetadata,
    ServerMessage,
};
use bencher_types::{Architecture, Capabilities, JobUuid, JsonSpec, Os, Sandbox};

use crate::spool::terminal_job;
use crate::update::Offer;

/// The flag that lets a runner run jobs without a sandbox; named in refusals.
pub const ALLOW_NO_SANDBOX_FLAG: &str = "--danger-allow-no-sandbox";

/// Durations the core counts against `Input::Tick` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// After the first signal, how long the current job may still run before it is
    /// canceled.
    pub drain: Duration,
    /// After a job is canceled (or the runner is stopping), how long to try to deliver
    /// its terminal message before exiting anyway; the spool keeps it.
    pub linger: Duration,
    /// How long a canceled job's task may take to stop before it is aborted.
    pub abort: Duration,
    /// How long a terminal message may stay unacknowledged before it is sent again.
    pub resend: Duration,
    /// How long an `ack` for a message other than a terminal one is waited for.
    pub ack_window: Duration,
    /// After this many `resend` periods without an acknowledgement over a live
    /// connection, a terminal message is parked (kept on disk, no longer sent): the
    /// server received it and will not acknowledge it (a job of another runner identity,
    /// say), and waiting for it forever would keep the runner from taking jobs.
    pub resend_limit: u32,
    /// After a failed update, the first pause before the `update` feature is offered
    /// again; it doubles with each failure up to `update_backoff_max`.
    pub update_backoff: Duration,
    pub update_backoff_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            drain: Duration::from_secs(60),
            linger: Duration::from_secs(10),
            abort: Duration::from_secs(5),
            resend: Duration::from_secs(30),
            ack_window: Duration::from_secs(10),
            resend_limit: 10,
            update_backoff: Duration::from_secs(60),
            update_backoff_max: Duration::from_secs(6 * 3600),
        }
    }
}

/// What the core knows about the runner, fixed at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Sent in `ready` (1..=900 s).
    pub poll_timeout: u32,
    pub metadata: RunnerMetadata,
    /// Protocol extensions this runner speaks.
    pub features: Vec<String>,
    /// Whether this runner updates itself when the server offers it (auto-update on and
    /// a public key configured); `ready` then lists the `update` feature.
    pub auto_update: bool,
    /// The host, in Spec terms; `None` when it is not one a Spec can name.
    pub os: Option<Os>,
    pub architecture: Option<Architecture>,
    /// Whether jobs whose Spec has no sandbox may run, on the host.
    pub no_sandbox: NoSandbox,
    /// The sandboxes this runner found working at start.
    pub sandboxes: Vec<Sandbox>,
    /// Those of `sandboxes` that give jobs no network.
    pub sandboxes_without_network: Vec<Sandbox>,
    /// The host's CPUs, memory and disk, which a Spec must fit.
    pub machine: Machine,
    pub timing: Timing,
}

/// The host's size, measured at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub cpus: u32,
    /// Bytes of RAM.
    pub memory: u64,
    /// Bytes of the filesystem holding the image cache.
    pub disk: u64,
}

impl Config {
    /// What `ready` announces (extension `capabilities`), so the server dispatches only
    /// jobs this runner can run.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            os: self
                .os
                .map_or_else(|| std::env::consts::OS.to_owned(), |os| os.to_string()),
            arch: self.architecture.map_or_else(
                || std::env::consts::ARCH.to_owned(),
                |arch| arch.to_string(),
            ),
            no_sandbox: self.no_sandbox == NoSandbox::Allowed,
            sandboxes: self.sandboxes.iter().map(ToString::to_string).collect(),
            sandboxes_without_network: self
                .sandboxes_without_network
                .iter()
                .map(ToString::to_string)
                .collect(),
            cpus: self.machine.cpus,
            memory: self.machine.memory,
            disk: self.machine.disk,
        }
    }
}

/// Whether this runner runs jobs whose Spec has no sandbox (directly on the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSandbox {
    /// Started without `--danger-allow-no-sandbox`: such jobs are refused (the default).
    Refused,
    /// Allowed, but the host cannot run them; the executor's check says why.
    Unavailable(String),
    Allowed,
}

/// The short-lived registry token of a job: never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct OciToken(String);

impl OciToken {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// The token itself, to hand to the registry client.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OciToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OciToken(<redacted>)")
    }
}

/// A job the server assigned (the `job` message).
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub job: JobUuid,
    pub spec: JsonSpec,
    pub config: JobConfig,
    pub oci_token: OciToken,
    /// Seconds.
    pub timeout: u32,
}

/// How a job's task ended; mirrors the executor's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Completed {
        results: Vec<IterationResult>,
        /// The noise probe and fingerprint taken before the benchmark, when taken.
        environment: Option<JobEnvironment>,
    },
    Failed {
        results: Vec<IterationResult>,
        error: String,
    },
    Canceled {
        results: Vec<IterationResult>,
    },
    TimedOut {
        results: Vec<IterationResult>,
    },
}

/// What the driver tells the core.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a server message lives only between the socket and one step; boxing buys nothing"
)]
pub enum Input {
    /// About once a second: monotonic time since the driver started.
    Tick {
        now: Duration,
    },
    /// A WebSocket to the server is open.
    Connected,
    /// The WebSocket closed or failed (or a `Close` finished).
    Disconnected,
    Message(ServerMessage),
    /// A text frame that is not a message we know.
    Unreadable(ParseError),
    /// The job's image is pulled and its root filesystem ready.
    Prepared {
        job: JobUuid,
    },
    /// The job's task ended (preparing or executing).
    Finished {
        job: JobUuid,
        outcome: JobOutcome,
    },
    /// SIGTERM or SIGINT: the first drains, the second stops at once.
    Signal,
    /// The server refused the runner's key (HTTP 401 on the upgrade).
    Unauthorized,
    /// The offered update is installed: the runner re-executes itself.
    UpdateInstalled {
        version: String,
    },
    /// The offered update was not installed; the running binary is unchanged.
    UpdateFailed {
        version: String,
        error: String,
    },
}

/// What the core asks the driver to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send(RunnerMessage),
    /// Write the terminal message to the spool, durably; before its `Send`.
    Spool(RunnerMessage),
    /// The server acknowledged the job's terminal message: delete it from the spool.
    Unspool(JobUuid),
    /// The server will not acknowledge the job's terminal message: set it aside in the
    /// spool (kept for an operator, never sent again).
    Park(JobUuid),
    /// Pull the image and prepare the root filesystem, then report `Prepared` or
    /// `Finished`.
    Prepare(Box<Assignment>),
    /// Run the prepared job on its own task, then report `Finished`.
    Execute(JobUuid),
    /// Download, verify and install the update, then report `UpdateInstalled` or
    /// `UpdateFailed`.
    Update(Offer),
    /// Ask the job's task to stop (it still reports `Finished`).
    Cancel(JobUuid),
    /// The task did not stop in time: abort it and report `Finished` with
    /// `JobOutcome::Canceled` on its behalf.
    Abort(JobUuid),
    /// The job is over: drop what the driver holds for it.
    Release(JobUuid),
    /// Close the WebSocket gracefully and report `Disconnected` when the server
    /// answered (frames that arrive meanwhile are still reported).
    Close,
    Note(Note),
    /// Stop the agent. The last effect the core returns.
    Exit(Exit),
}

/// Why the agent stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// After a signal: every job finished and reported (or spooled for the next start).
    Drained,
    /// The server refused the key: rotated, or the runner archived.
    Unauthorized,
    /// A new binary is installed: re-execute it with the same arguments.
    Updated,
}

/// Something worth logging; the driver picks the level.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    Connected {
        resending: usize,
    },
    UnknownEvent(String),
    Malformed(String),
    /// `update` while this runner does not update itself, or is busy.
    UpdateIgnored {
        version: String,
        reason: &'static str,
    },
    UpdateStarted {
        version: String,
    },
    UpdateInstalled {
        version: String,
    },
    UpdateFailed {
        version: String,
        error: String,
        retry_in: Duration,
    },
    JobAssigned {
        job: JobUuid,
    },
    JobRefused {
        job: JobUuid,
        reason: String,
    },
    JobRunning {
        job: JobUuid,
    },
    JobFinished {
        job: JobUuid,
        event: &'static str,
    },
    CancelRequested {
        job: JobUuid,
    },
    /// `cancel` while no job runs.
    CancelWithoutJob,
    Acknowledged {
        job: JobUuid,
    },
    UnmatchedAck {
        job: Option<JobUuid>,
    },
    /// The server acknowledged something untracked: it acknowledges every message.
    ServerAcksEverything,
    Resending {
        job: JobUuid,
    },
    Parked {
        job: JobUuid,
    },
    /// A `Prepared` or `Finished` for a job that is not the current one.
    StaleJobInput {
        job: JobUuid,
    },
    JobAborted {
        job: JobUuid,
    },
    /// `within`: the drain bound.
    Draining {
        within: Duration,
    },
    DrainTimedOut,
    Stopping,
    Unauthorized,
    /// Exiting with terminal messages still unacknowledged; they stay spooled.
    ExitingWithUnacknowledged {
        jobs: Vec<JobUuid>,
    },
}

/// The agent's state; change it only through [`step`].
#[derive(Debug)]
pub struct State {
    config: Config,
    now: Duration,
    link: Link,
    job: Option<Job>,
    /// Spooled terminal messages not acknowledged yet, oldest first.
    outbox: Vec<Unacked>,
    stop: Stop,
    /// Learned: the server acknowledges every message, not only the documented ones.
    acks_everything: bool,
    /// An update is being downloaded and installed.
    updating: bool,
    /// Failed updates in a row, and when the `update` feature is offered again.
    update_failures: u32,
    update_retry_at: Duration,
    exited: bool,
}

#[derive(Debug)]
enum Link {
    Down,
    Up(Conn),
    /// We sent a Close and wait for the server's; messages still arrive, none leave.
    Closing(Conn),
}

#[derive(Debug, Default)]
struct Conn {
    /// Messages that may be acknowledged, in send order.
    awaiting: VecDeque<Awaited>,
    /// A `ready` is outstanding (no `job` or `no_job` yet).
    polling: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ready,
    Running,
    Heartbeat,
    Terminal,
}

#[derive(Debug, Clone, Copy)]
struct Awaited {
    kind: Kind,
    job: Option<JobUuid>,
    sent: Duration,
}

#[derive(Debug)]
struct Unacked {
    job: JobUuid,
    message: RunnerMessage,
    /// When it was last sent on the current connection.
    sent: Option<Duration>,
    /// `resend` periods it went unacknowledged over a live connection.
    timeouts: u32,
}

#[derive(Debug)]
struct Job {
    uuid: JobUuid,
    timeout: u32,
    phase: Phase,
    cancel: Option<Cancel>,
    aborted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preparing,
    Executing,
}

#[derive(Debug, Clone, Copy)]
struct Cancel {
    reason: CancelReason,
    at: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelReason {
    /// The server sent `cancel`: answered with `canceled`.
    Server,
    /// The runner is stopping: answered with `failed`, since no one asked for a cancel.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    No,
    /// First signal: no new `ready`; the job may run until `deadline`.
    Drain {
        deadline: Duration,
    },
    /// Second signal, drain deadline, or a refused key: the job is canceled; exit once
    /// its terminal message is delivered or `deadline` passed.
    Finish {
        deadline: Duration,
        exit: Exit,
    },
}

impl State {
    /// The state at start, with the terminal messages the spool still holds (oldest
    /// first); anything else in `spooled` is ignored.
    pub fn new(config: Config, spooled: Vec<RunnerMessage>) -> Self {
        let outbox = spooled
            .into_iter()
            .filter_map(|message| {
                terminal_job(&message).map(|job| Unacked {
                    job,
                    message,
                    sent: None,
                    timeouts: 0,
                })
            })
            .collect();
        Self {
            config,
            now: Duration::ZERO,
            link: Link::Down,
            job: None,
            outbox,
            stop: Stop::No,
            acks_everything: false,
            updating: false,
            update_failures: 0,
            update_retry_at: Duration::ZERO,
            exited: false,
        }
    }

    /// The current job, if any.
    pub fn job(&self) -> Option<JobUuid> {
        self.job.as_ref().map(|job| job.uuid)
    }

    /// Jobs whose terminal message waits for an acknowledgement, oldest first.
    pub fn unacknowledged(&self) -> Vec<JobUuid> {
        self.outbox.iter().map(|o| o.job).collect()
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up(_))
    }

    pub fn has_exited(&self) -> bool {
        self.exited
    }
}

/// Advances the state by one input; the returned effects are to be performed in order.
pub fn step(state: &mut State, input: Input) -> Vec<Effect> {
    let mut fx = Effects(Vec::new());
    if state.exited {
        return fx.0;
    }
    match input {
        Input::Tick { now } => state.tick(now, &mut fx),
        Input::Connected => state.connected(&mut fx),
        Input::Disconnected => state.disconnected(),
        Input::Message(message) => state.message(message, &mut fx),
        Input::Unreadable(ParseError::UnknownEvent(event)) => {
            fx.note(Note::UnknownEvent(event));
        }
        Input::Unreadable(ParseError::Malformed(error)) => fx.note(Note::Malformed(error)),
        Input::Prepared { job } => state.prepared(job, &mut fx),
        Input::Finished { job, outcome } => state.finished(job, outcome, &mut fx),
        Input::Signal => state.signal(&mut fx),
        Input::Unauthorized => {
            fx.note(Note::Unauthorized);
            state.link = Link::Down;
            state.stop = Stop::Finish {
                deadline: state.now,
                exit: Exit::Unauthorized,
            };
            state.cancel_job(CancelReason::Stop, &mut fx);
        }
        Input::UpdateInstalled { version } => state.update_installed(version, &mut fx),
        Input::UpdateFailed { version, error } => state.update_failed(version, error, &mut fx),
    }
    state.settle(&mut fx);
    fx.0
}

struct Effects(Vec<Effect>);

impl Effects {
    fn push(&mut self, effect: Effect) {
        self.0.push(effect);
    }

    fn note(&mut self, note: Note) {
        self.0.push(Effect::Note(note));
    }
}

impl State {
    fn conn_mut(&mut self) -> Option<&mut Conn> {
        match &mut self.link {
            Link::Up(conn) | Link::Closing(conn) => Some(conn),
            Link::Down => None,
        }
    }

    /// Sends `message` if a connection is up, tracking it when it may be acknowledged.
    fn send(&mut self, message: RunnerMessage, fx: &mut Effects) -> bool {
        let acks_everything = self.acks_everything;
        let now = self.now;
        let Link::Up(conn) = &mut self.link else {
            return false;
        };
        let (kind, job) = match &message {
            RunnerMessage::Ready { .. } => (Kind::Ready, None),
            RunnerMessage::Running { job } => (Kind::Running, *job),
            RunnerMessage::Heartbeat => (Kind::Heartbeat, self.job.as_ref().map(|j| j.uuid)),
            terminal => (Kind::Terminal, terminal_job(terminal)),
        };
        let tracked = match kind {
            Kind::Running | Kind::Terminal => true,
            Kind::Ready | Kind::Heartbeat => acks_everything,
        };
        if tracked {
            conn.awaiting.push_back(Awaited {
                kind,
                job,
                sent: now,
            });
        }
        if kind == Kind::Ready {
            conn.polling = true;
        }
        fx.push(Effect::Send(message));
        true
    }

    fn send_outbox_entry(&mut self, index: usize, fx: &mut Effects) {
        let message = self.outbox[index].message.clone();
        if self.send(message, fx) {
            self.outbox[index].sent = Some(self.now);
        }
    }

    fn connected(&mut self, fx: &mut Effects) {
        self.link = Link::Up(Conn::default());
        for outgoing in &mut self.outbox {
            outgoing.sent = None;
        }
        fx.note(Note::Connected {
            resending: self.outbox.len(),
        });
        // Unacknowledged results first: before `ready`, and before anything about the
        // current job.
        for index in 0..self.outbox.len() {
            self.send_outbox_entry(index, fx);
        }
        // A job that kept running while the connection was down: `running` again
        // refreshes the server's liveness for it. A job still preparing is `claimed` on
        // the server, and heartbeats alone keep it alive.
        if let Some(job) = &self.job
            && job.phase == Phase::Executing
        {
            let uuid = job.uuid;
            self.send(RunnerMessage::Running { job: Some(uuid) }, fx);
        }
    }

    fn disconnected(&mut self) {
        self.link = Link::Down;
        for outgoing in &mut self.outbox {
            outgoing.sent = None;
        }
    }

    fn tick(&mut self, now: Duration, fx: &mut Effects) {
        self.now = self.now.max(now);
        let now = self.now;
        let timing = self.config.timing;

        if let Some(conn) = self.conn_mut() {
            conn.awaiting
                .retain(|a| a.kind == Kind::Terminal || now < a.sent + timing.ack_window);
        }
        if matches!(self.link, Link::Up(_)) {
            if self.job.is_some() {
                self.send(RunnerMessage::Heartbeat, fx);
            }
            let mut parked = Vec::new();
            for index in 0..self.outbox.len() {
                let outgoing = &mut self.outbox[index];
                if let Some(sent) = outgoing.sent
                    && now >= sent + timing.resend
                {
                    outgoing.timeouts += 1;
                    if outgoing.timeouts >= timing.resend_limit {
                        parked.push(index);
                        continue;
                    }
                    fx.note(Note::Resending { job: outgoing.job });
                    self.send_outbox_entry(index, fx);
                }
            }
            for index in parked.into_iter().rev() {
                let job = self.outbox.remove(index).job;
                fx.note(Note::Parked { job });
                fx.push(Effect::Park(job));
            }
        }

        if let Some(job) = &mut self.job
            && let Some(cancel) = job.cancel
            && !job.aborted
            && now >= cancel.at + timing.abort
        {
            job.aborted = true;
            fx.note(Note::JobAborted { job: job.uuid });
            fx.push(Effect::Abort(job.uuid));
        }

        if let Stop::Drain { deadline } = self.stop
            && now >= deadline
        {
            fx.note(Note::DrainTimedOut);
            self.stop = Stop::Finish {
                deadline: now + timing.linger,
                exit: Exit::Drained,
            };
            self.cancel_job(CancelReason::Stop, fx);
        }
    }

    fn message(&mut self, message: ServerMessage, fx: &mut Effects) {
        match message {
            ServerMessage::Ack { job } => self.ack(job, fx),
            ServerMessage::NoJob => self.answered_ready(),
            ServerMessage::Job {
                uuid,
                spec,
                config,
                oci_token,
                timeout,
                created: _,
            } => {
                self.answered_ready();
                self.assigned(
                    Assignment {
                        job: uuid,
                        spec,
                        config,
                        oci_token: OciToken(oci_token),
                        timeout,
                    },
                    fx,
                );
            }
            ServerMessage::Cancel => match &self.job {
                Some(job) => {
                    fx.note(Note::CancelRequested { job: job.uuid });
                    self.cancel_job(CancelReason::Server, fx);
                }
                None => fx.note(Note::CancelWithoutJob),
            },
            ServerMessage::Update {
                version,
                url,
                checksum,
                signature,
            } => self.update_offered(
                Offer {
                    version,
                    url,
                    checksum,
                    signature,
                },
                fx,
            ),
        }
    }

    /// `update` answers a `ready` like `no_job`; it is acted on only when this runner
    /// asked for it and is idle.
    fn update_offered(&mut self, offer: Offer, fx: &mut Effects) {
        let polling = self.conn_mut().is_some_and(|conn| conn.polling);
        self.answered_ready();
        let reason = if !self.config.auto_update {
            Some("self-update is off (--no-auto-update, or no --update-public-key)")
        } else if self.updating {
            Some("an update is already in progress")
        } else if !polling || self.job.is_some() || !self.outbox.is_empty() {
            Some("it arrived while the runner was busy; updates wait for an idle moment")
        } else if self.stop != Stop::No {
            Some("the runner is stopping")
        } else {
            None
        };
        if let Some(reason) = reason {
            fx.note(Note::UpdateIgnored {
                version: offer.version,
                reason,
            });
            return;
        }
        self.updating = true;
        fx.note(Note::UpdateStarted {
            version: offer.version.clone(),
        });
        fx.push(Effect::Update(offer));
    }

    fn update_installed(&mut self, version: String, fx: &mut Effects) {
        self.updating = false;
        fx.note(Note::UpdateInstalled { version });
        // Idle by construction (no `ready` went out meanwhile), so this exits at once;
        // a signal that came first keeps its own exit.
        if self.stop == Stop::No {
            self.stop = Stop::Finish {
                deadline: self.now,
                exit: Exit::Updated,
            };
        }
    }

    fn update_failed(&mut self, version: String, error: String, fx: &mut Effects) {
        self.updating = false;
        self.update_failures = self.update_failures.saturating_add(1);
        let timing = self.config.timing;
        let doublings = self.update_failures.saturating_sub(1).min(20);
        let retry_in = timing
            .update_backoff
            .saturating_mul(1 << doublings)
            .min(timing.update_backoff_max);
        self.update_retry_at = self.now + retry_in;
        fx.note(Note::UpdateFailed {
            version,
            error,
            retry_in,
        });
    }

    /// `job` or `no_job` answered the outstanding `ready`.
    fn answered_ready(&mut self) {
        if let Some(conn) = self.conn_mut() {
            conn.polling = false;
            // A server that acknowledges `ready` did so before answering it.
            if let Some(index) = conn.awaiting.iter().position(|a| a.kind == Kind::Ready) {
                conn.awaiting.remove(index);
            }
        }
    }

    fn ack(&mut self, job: Option<JobUuid>, fx: &mut Effects) {
        let learned = !self.acks_everything;
        let Some(conn) = self.conn_mut() else {
            fx.note(Note::UnmatchedAck { job });
            return;
        };
        if conn.awaiting.is_empty() {
            if learned {
                self.acks_everything = true;
                fx.note(Note::ServerAcksEverything);
            }
            fx.note(Note::UnmatchedAck { job });
            return;
        }
        let index = match job {
            Some(job) => conn.awaiting.iter().position(|a| a.job == Some(job)),
            None => Some(0),
        };
        let Some(index) = index else {
            fx.note(Note::UnmatchedAck { job });
            return;
        };
        // Entries sent before the acknowledged one will not be acknowledged any more
        // (acknowledgements come in order); a terminal message among them stays in the
        // outbox and is re-sent.
        let Some(acked) = conn.awaiting.drain(..=index).next_back() else {
            return;
        };
        if acked.kind != Kind::Terminal {
            return;
        }
        let Some(job) = acked.job else { return };
        if let Some(index) = self.outbox.iter().position(|o| o.job == job) {
            self.outbox.remove(index);
            fx.note(Note::Acknowledged { job });
            fx.push(Effect::Unspool(job));
        }
    }

    fn assigned(&mut self, assignment: Assignment, fx: &mut Effects) {
        let job = assignment.job;
        let refusal = if let Some(current) = &self.job {
            Some(format!(
                "the runner is busy with job {}; the server assigned a second job",
                current.uuid
            ))
        } else if matches!(self.stop, Stop::Finish { .. }) {
            Some("the runner is shutting down".to_owned())
        } else {
            self.admit(&assignment).err()
        };
        if let Some(reason) = refusal {
            fx.note(Note::JobRefused {
                job,
                reason: reason.clone(),
            });
            self.terminal(
                RunnerMessage::Failed {
                    job,
                    results: Vec::new(),
                    error: reason,
                    output: None,
                },
                fx,
            );
            return;
        }
        fx.note(Note::JobAssigned { job });
        self.job = Some(Job {
            uuid: job,
            timeout: assignment.timeout,
            phase: Phase::Preparing,
            cancel: None,
            aborted: false,
        });
        fx.push(Effect::Prepare(Box::new(assignment)));
    }

    /// Whether this runner may and can run the job; the reason for the server if not.
    fn admit(&self, assignment: &Assignment) -> Result<(), String> {
        let config = &self.config;
        let spec = &assignment.spec;
        assignment
            .config
            .validate()
            .map_err(|e| format!("invalid job configuration: {e}"))?;
        if assignment.timeout == 0 {
            return Err("invalid job: the timeout is 0 seconds".to_owned());
        }
        if config.os != Some(spec.os) || config.architecture != Some(spec.architecture) {
            let host = |name: Option<String>| name.unwrap_or_else(|| "unknown".to_owned());
            return Err(format!(
                "the job's spec `{}` is for {}/{}, and this runner is {}/{}",
                spec.slug,
                spec.os,
                spec.architecture,
                host(config.os.map(|os| os.to_string())),
                host(config.architecture.map(|arch| arch.to_string())),
            ));
        }
        let sandbox_allowed = match spec.sandbox {
            None => match &config.no_sandbox {
                NoSandbox::Refused => Err(format!(
                    "the job's spec `{}` has no sandbox, and this runner only runs sandboxed \
                     jobs; start it with {ALLOW_NO_SANDBOX_FLAG} to run jobs without a \
                     sandbox directly on the host (trusted workloads only)",
                    spec.slug
                )),
                NoSandbox::Unavailable(reason) => Err(format!(
                    "the job's spec `{}` has no sandbox, and this runner cannot run jobs on \
                     its host: {reason}",
                    spec.slug
                )),
                NoSandbox::Allowed => Ok(()),
            },
            Some(sandbox) if !config.sandboxes.contains(&sandbox) => {
                let available = if config.sandboxes.is_empty() {
                    "none".to_owned()
                } else {
                    config
                        .sandboxes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Err(format!(
                    "the job's spec `{}` needs the {sandbox} sandbox, which this runner does \
                     not have (available: {available})",
                    spec.slug
                ))
            }
            Some(_) => Ok(()),
        };
        sandbox_allowed?;
        // The platform and sandbox pass: what is left is the Spec's size.
        config.capabilities().serves(spec).map_err(|why| {
            format!(
                "this runner cannot run the job's spec `{}`: {why}",
                spec.slug
            )
        })
    }

    fn prepared(&mut self, uuid: JobUuid, fx: &mut Effects) {
        let Some(job) = self.job.as_mut().filter(|j| j.uuid == uuid) else {
            fx.note(Note::StaleJobInput { job: uuid });
            return;
        };
        if job.phase != Phase::Preparing {
            fx.note(Note::StaleJobInput { job: uuid });
            return;
        }
        if job.cancel.is_some() {
            // Canceled while the image was pulled: nothing runs, so the job is over.
            self.finished(
                uuid,
                JobOutcome::Canceled {
                    results: Vec::new(),
                },
                fx,
            );
            return;
        }
        job.phase = Phase::Executing;
        fx.note(Note::JobRunning { job: uuid });
        self.send(RunnerMessage::Running { job: Some(uuid) }, fx);
        fx.push(Effect::Execute(uuid));
    }

    fn finished(&mut self, uuid: JobUuid, outcome: JobOutcome, fx: &mut Effects) {
        let Some(job) = self.job.take_if(|j| j.uuid == uuid) else {
            fx.note(Note::StaleJobInput { job: uuid });
            return;
        };
        fx.push(Effect::Release(uuid));
        let message = terminal_message(&job, outcome);
        fx.note(Note::JobFinished {
            job: uuid,
            event: match message {
                RunnerMessage::Completed { .. } => "completed",
                RunnerMessage::Canceled { .. } => "canceled",
                _ => "failed",
            },
        });
        self.terminal(message, fx);
    }

    /// Spools a terminal message, then sends it if connected (else on the next
    /// connection).
    fn terminal(&mut self, message: RunnerMessage, fx: &mut Effects) {
        let Some(job) = terminal_job(&message) else {
            return;
        };
        fx.push(Effect::Spool(message.clone()));
        self.outbox.retain(|o| o.job != job);
        self.outbox.push(Unacked {
            job,
            message,
            sent: None,
            timeouts: 0,
        });
        let index = self.outbox.len() - 1;
        self.send_outbox_entry(index, fx);
    }

    fn cancel_job(&mut self, reason: CancelReason, fx: &mut Effects) {
        let now = self.now;
        let Some(job) = &mut self.job else { return };
        match &mut job.cancel {
            None => {
                job.cancel = Some(Cancel { reason, at: now });
                fx.push(Effect::Cancel(job.uuid));
            }
            // Already stopping: a server cancel still decides the answer (`canceled`).
            Some(cancel) => {
                if reason == CancelReason::Server {
                    cancel.reason = CancelReason::Server;
                }
            }
        }
    }

    fn signal(&mut self, fx: &mut Effects) {
        match self.stop {
            Stop::No => {
                let within = self.config.timing.drain;
                fx.note(Note::Draining { within });
                self.stop = Stop::Drain {
                    deadline: self.now + within,
                };
            }
            Stop::Drain { .. } => {
                fx.note(Note::Stopping);
                self.stop = Stop::Finish {
                    deadline: self.now + self.config.timing.linger,
                    exit: Exit::Drained,
                };
                self.cancel_job(CancelReason::Stop, fx);
            }
            Stop::Finish { .. } => fx.note(Note::Stopping),
        }
    }

    /// After every input: ask for a job when idle, or finish stopping.
    fn settle(&mut self, fx: &mut Effects) {
        if self.exited {
            return;
        }
        let (exit, give_up) = match self.stop {
            Stop::No => {
                let idle = self.job.is_none() && self.outbox.is_empty() && !self.updating;
                if idle
                    && let Link::Up(conn) = &self.link
                    && !conn.polling
                {
                    let mut features = self.config.features.clone();
                    if self.config.auto_update && self.now >= self.update_retry_at {
                        features.push("update".to_owned());
                    }
                    let ready = RunnerMessage::Ready {
                        poll_timeout: Some(self.config.poll_timeout),
                        runner: Some(self.config.metadata.clone()),
                        features,
                        capabilities: Some(self.config.capabilities()),
                    };
                    self.send(ready, fx);
                }
                return;
            }
            Stop::Drain { .. } => (Exit::Drained, false),
            Stop::Finish { deadline, exit } => {
                (exit, exit == Exit::Unauthorized || self.now >= deadline)
            }
        };
        if self.job.is_some() {
            return;
        }
        if !self.outbox.is_empty() && !give_up {
            // Delivered over this connection or the next one.
            return;
        }
        match &self.link {
            // A `ready` is outstanding: a job may be on its way. Close, and handle what
            // arrives before the server's Close; the server undoes a claim it could not
            // send.
            Link::Up(conn) if conn.polling => {
                let Link::Up(conn) = std::mem::replace(&mut self.link, Link::Down) else {
                    return;
                };
                self.link = Link::Closing(conn);
                fx.push(Effect::Close);
            }
            Link::Closing(_) => {}
            Link::Up(_) | Link::Down => {
                if !self.outbox.is_empty() {
                    fx.note(Note::ExitingWithUnacknowledged {
                        jobs: self.unacknowledged(),
                    });
                }
                self.exited = true;
                fx.push(Effect::Exit(exit));
            }
        }
    }
}

/// The terminal message for a job that ended with `outcome`.
fn terminal_message(job: &Job, outcome: JobOutcome) -> RunnerMessage {
    let uuid = job.uuid;
    let reason = job.cancel.map(|c| c.reason);
    if reason == Some(CancelReason::Server) {
        return RunnerMessage::Canceled { job: uuid };
    }
    match outcome {
        JobOutcome::Completed {
            results,
            environment,
        } => RunnerMessage::Completed {
            job: uuid,
            results,
            output: None,
            environment,
        },
        JobOutcome::Failed { results, error } => RunnerMessage::Failed {
            job: uuid,
            results,
            error,
            output: None,
        },
        JobOutcome::TimedOut { results } => RunnerMessage::Failed {
            job: uuid,
            results,
            error: format!("the job timed out after {} s", job.timeout),
            output: None,
        },
        JobOutcome::Canceled { results } => RunnerMessage::Failed {
            job: uuid,
            results,
            error: if reason == Some(CancelReason::Stop) {
                "the runner was stopped before the job finished".to_owned()
            } else {
                "the job was canceled by the runner".to_owned()
            },
            output: None,
        },
    }
}

#[cfg(test)]
mod tests;
