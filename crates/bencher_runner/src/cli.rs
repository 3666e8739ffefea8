//! The `runner` command line: `runner up` with the flags and environment variables of
//! the self-hosted runner guide (a public contract: names, defaults and env vars stay
//! exactly as documented), each value parsed into its validated type here; also
//! `run`, `noise`, `install` (which takes `up`'s settings, and records which were
//! given) and `status`. IO: only `default_dirs`, which looks at the process's user and
//! environment.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use bencher_types::protocol::POLL_TIMEOUT_RANGE;
use bencher_types::{ByteSize, ResourceId, RunnerKey};
use clap::builder::{BoolishValueParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use url::Url;

use crate::run_local::RunArgs;

pub const DEFAULT_HOST: &str = "https://api.bencher.dev";
/// Where a runner started as root keeps its state.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/bencher-runner";
/// The name of the runner's directories under the XDG base directories.
const APP_DIR: &str = "bencher-runner";

#[derive(Debug, Parser)]
#[command(
    name = "runner",
    version = crate::update::VERSION,
    about = "The Bencher runner: claims benchmark Jobs from a Bencher API server and runs them on this machine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the runner, polling for and executing benchmark Jobs
    ///
    /// This is the long-running command used to operate a Self-Hosted Runner. The runner
    /// opens a single WebSocket connection to the API server, claims Jobs that match its
    /// Specs, executes them, and reports the results back.
    Up(Box<UpArgs>),
    Run(Box<RunArgs>),
    /// Measure this host's timer and CPU jitter, and print them with an environment
    /// fingerprint
    ///
    /// Changes nothing: it reports the host as it is, with the current value of every
    /// knob host tuning would set.
    Noise(NoiseArgs),
    /// Print this binary's version and exit: what a runner that downloaded it as an
    /// update runs before installing it
    #[command(hide = true)]
    SelfCheck(SelfCheckArgs),
    /// Install the runner as a systemd service: a unit and its environment file
    ///
    /// Takes the same settings as `runner up` (flags or environment variables). The
    /// key, host and runner go into an environment file readable by root alone
    /// (/etc/bencher-runner/env, mode 0600), never onto the command line; the unit
    /// (/etc/systemd/system/bencher-runner.service) runs `runner up` with the other
    /// settings, restarts it, and gives it the drain timeout to stop. Re-running it
    /// with the same settings changes nothing; files that differ are replaced only with
    /// --force.
    Install(Box<InstallArgs>),
    /// Show what the runner on this host is doing: the connection, the current job,
    /// results waiting in the spool and the host tuning state
    ///
    /// Reads the status file a running `runner up` keeps in its spool directory, the
    /// spool and the tuning state; changes nothing. Exits 0 when it could read them,
    /// whether a runner runs or not.
    Status(StatusArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub up: UpArgs,
    /// Write the files under this directory instead of / (to build an image, or to
    /// look at them first)
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Replace a unit or environment file that differs from what would be written
    #[arg(long)]
    pub force: bool,
    /// Then reload systemd, enable the service and (re)start it with systemctl
    #[arg(long)]
    pub enable: bool,
    /// Print the unit and the environment file (key hidden) instead of writing them
    #[arg(long)]
    pub dry_run: bool,
    /// The `up` settings given on the command line or in the environment, as typed
    /// (never the key), found by `Cli::try_parse_checked_from`.
    #[arg(skip)]
    pub given: Vec<GivenSetting>,
}

/// One `runner up` setting given to `runner install`, to be written into the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenSetting {
    /// clap's id, the field name (`drain_timeout`).
    pub id: String,
    /// The flag without dashes (`drain-timeout`).
    pub long: String,
    /// The environment variable `runner up` also reads it from, if any.
    pub env: Option<String>,
    /// The value as typed; `None` for a flag that is set (`--aslr`).
    pub value: Option<OsString>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The spool directory of the runner to look at, where it keeps its status file
    /// [default: as `runner up`]
    #[arg(long)]
    pub spool_dir: Option<PathBuf>,
    /// The root under which the tuning state is kept. For tests: a fake tree.
    #[arg(long, hide = true, default_value = "/")]
    pub tuning_root: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SelfCheckArgs {
    /// The arguments the updating runner was started with (after `runner`): they must
    /// parse here too
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct NoiseArgs {
    /// How many fixed busy loops to time
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub cpu_samples: u32,
    /// How many 100 µs sleeps to time
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub timer_samples: u32,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// The Bencher API server to connect to
    #[arg(long, env = "BENCHER_HOST", default_value = DEFAULT_HOST)]
    pub host: Url,
    /// The UUID or slug of the Runner to operate as
    #[arg(long, env = "BENCHER_RUNNER")]
    pub runner: ResourceId,
    /// The Runner authentication key (`bencher_runner_...`) returned when the Runner was
    /// created
    #[arg(
        long,
        env = "BENCHER_RUNNER_KEY",
        hide_env_values = true,
        value_parser = SecretParser::<RunnerKey>::new("--key", "BENCHER_RUNNER_KEY")
    )]
    pub key: RunnerKey,
    /// The long-poll timeout in seconds while waiting for a Job, between 1 and 900
    #[arg(
        long,
        default_value_t = 55,
        value_parser = clap::value_parser!(u32)
            .range(i64::from(*POLL_TIMEOUT_RANGE.start())..=i64::from(*POLL_TIMEOUT_RANGE.end()))
    )]
    pub poll_timeout: u32,
    /// Allow executing Jobs without a Sandbox
    ///
    /// Without this flag, a Job whose Spec has no Sandbox is rejected at runtime.
    /// Non-sandboxed Jobs run directly on the host, so only enable this for trusted
    /// workloads.
    #[arg(
        long,
        env = "BENCHER_DANGER_ALLOW_NO_SANDBOX",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub danger_allow_no_sandbox: bool,
    /// The log level for the sandbox process
    ///
    /// Firecracker's `--level`; what it logs ends up in the job's error message when
    /// the VM fails.
    #[arg(long, value_enum, default_value_t = SandboxLogLevel::Warning)]
    pub sandbox_log_level: SandboxLogLevel,
    /// Disable automatic updates from the server
    ///
    /// By default, the runner updates itself between Jobs when the server offers a new
    /// version.
    #[arg(
        long,
        env = "BENCHER_NO_AUTO_UPDATE",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub no_auto_update: bool,
    /// The maximum download size in bytes for self-update binaries [default: 500MiB]
    ///
    /// Conflicts with --no-auto-update.
    // Checked in `Cli::check`, not with clap's `conflicts_with`, which would also fire
    // for BENCHER_NO_AUTO_UPDATE=false.
    #[arg(long)]
    pub max_download_size: Option<ByteSize>,
    /// The ed25519 public key self-update binaries must be signed with (base64 of its
    /// 32 bytes); without it, the runner does not update itself
    #[arg(long, env = "BENCHER_UPDATE_PUBLIC_KEY")]
    pub update_public_key: Option<crate::update::UpdateKey>,
    /// The maximum size in bytes for collected stdout and stderr (25 MiB by default)
    #[arg(long, default_value = "25MiB")]
    pub max_output_size: ByteSize,
    /// The maximum number of output files to decode
    #[arg(long, default_value_t = 255)]
    pub max_file_count: u32,
    /// The maximum number of symlinks to follow during path resolution, matching the
    /// Linux kernel MAXSYMLINKS limit. Only used in non-sandboxed mode.
    #[arg(long, default_value_t = 40)]
    pub max_symlinks: u32,
    /// The grace period in seconds after the benchmark exits before final output
    /// collection
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub grace_period: u64,
    /// The image cache directory [default: /var/lib/bencher-runner/cache as root, else
    /// $XDG_CACHE_HOME/bencher-runner]
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// The size the image cache is kept within
    #[arg(long, default_value = "20GiB")]
    pub max_cache_size: ByteSize,
    /// Where results wait until the server acknowledged them [default:
    /// /var/lib/bencher-runner/spool as root, else $XDG_STATE_HOME/bencher-runner/spool]
    #[arg(long)]
    pub spool_dir: Option<PathBuf>,
    /// On SIGTERM or SIGINT, how many seconds the current Job may still run before it
    /// is canceled; a second signal cancels it at once
    #[arg(long, default_value_t = 60)]
    pub drain_timeout: u64,
    #[command(flatten)]
    pub vm: VmArgs,
    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// Where the VMMs of the VM sandboxes are (QEMU's is `BENCHER_QEMU`, else on `PATH`).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct VmArgs {
    /// The `firecracker` binary for Specs with sandbox `firecracker` [default:
    /// `firecracker` on PATH]
    #[arg(long, env = "BENCHER_FIRECRACKER", value_name = "PATH")]
    pub firecracker: Option<PathBuf>,
    /// Firecracker's `jailer` [default: `jailer` beside the firecracker binary, else on
    /// PATH; without one the runner jails the VMM itself]
    #[arg(long, env = "BENCHER_JAILER", value_name = "PATH")]
    pub jailer: Option<PathBuf>,
}

impl VmArgs {
    /// How Firecracker runs, its log at `level`.
    pub fn firecracker_config(&self, level: SandboxLogLevel) -> crate::executor::FirecrackerConfig {
        crate::executor::FirecrackerConfig {
            firecracker: self.firecracker.clone(),
            jailer: self.jailer.clone(),
            log_level: Some(level.as_firecracker_level()),
        }
    }
}

/// The documented default of `--max-download-size`.
pub const DEFAULT_MAX_DOWNLOAD_SIZE: u64 = 500 << 20;

impl Cli {
    /// Parses the process's arguments; on a usage error, prints it and exits with 2.
    pub fn parse_checked() -> Self {
        match Self::try_parse_checked_from(std::env::args_os()) {
            Ok(cli) => cli,
            Err(error) => error.exit(),
        }
    }

    /// Parses `args`, then checks what clap cannot.
    pub fn try_parse_checked_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = <Self as clap::CommandFactory>::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let mut cli = <Self as clap::FromArgMatches>::from_arg_matches(&matches)
            .map_err(|error| error.format(&mut command))?;
        if let (Command::Install(install), Some(("install", matches))) =
            (&mut cli.command, matches.subcommand())
        {
            install.given = given_settings(matches);
        }
        let up = match &cli.command {
            Command::Up(up) => Some(&**up),
            Command::Install(install) => Some(&install.up),
            _ => None,
        };
        if let Some(up) = up
            && up.no_auto_update
            && up.max_download_size.is_some()
        {
            return Err(<Self as clap::CommandFactory>::command().error(
                ErrorKind::ArgumentConflict,
                "the argument '--max-download-size <MAX_DOWNLOAD_SIZE>' cannot be used with \
                 '--no-auto-update' (or BENCHER_NO_AUTO_UPDATE)",
            ));
        }
        Ok(cli)
    }
}

/// The `runner up` settings in `matches` that came from the command line or the
/// environment, not from defaults, in the order `up` declares them. Generic over
/// `UpArgs`, so a flag added to `up` is carried into the service without a change here.
/// The key is left out: it is taken parsed, never as typed.
fn given_settings(matches: &clap::ArgMatches) -> Vec<GivenSetting> {
    use clap::parser::ValueSource;
    let up = <UpArgs as clap::Args>::augment_args(clap::Command::new("up"));
    let mut given = Vec::new();
    for arg in up.get_arguments() {
        let id = arg.get_id().as_str();
        let (Some(long), true) = (arg.get_long(), id != "key") else {
            continue;
        };
        if !matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let value = if arg.get_action().takes_values() {
            match matches.get_raw(id).and_then(|mut values| values.next()) {
                Some(value) => Some(value.to_owned()),
                None => continue,
            }
        } else {
            // A switch: only when it is on (BENCHER_NO_AUTO_UPDATE=false is given, off).
            if !matches.get_one::<bool>(id).copied().unwrap_or(false) {
                continue;
            }
            None
        };
        given.push(GivenSetting {
            id: id.to_owned(),
            long: long.to_owned(),
            env: arg.get_env().map(|env| env.to_string_lossy().into_owned()),
            value,
        });
    }
    given
}

impl UpArgs {
    pub fn max_download_size(&self) -> u64 {
        self.max_download_size
            .map_or(DEFAULT_MAX_DOWNLOAD_SIZE, ByteSize::bytes)
    }

    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout)
    }
}

/// Host tuning, applied before each benchmark and restored after it (`crate::tuning`).
/// The seed's flags keep one optimization at the host's default each; so do the
/// flags after them, for the knobs this runner tunes beyond the seed's.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Host Tuning")]
pub struct TuningArgs {
    /// Disable all host tuning optimizations
    #[arg(long)]
    pub no_tuning: bool,
    /// Keep ASLR enabled (default: disabled for benchmarks)
    #[arg(long)]
    pub aslr: bool,
    /// Keep the NMI watchdog enabled (default: disabled for benchmarks)
    #[arg(long)]
    pub nmi_watchdog: bool,
    /// Keep SMT / hyper-threading enabled (default: disabled for benchmarks)
    #[arg(long)]
    pub smt: bool,
    /// Keep turbo boost enabled (default: disabled for benchmarks)
    #[arg(long)]
    pub turbo: bool,
    /// Set the swappiness value (0 to 200)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=200))]
    pub swappiness: u8,
    /// Set the CPU scaling governor
    #[arg(long, default_value = "performance", value_parser = parse_governor)]
    pub governor: String,
    /// Set the perf_event_paranoid value (-1 to 3)
    #[arg(
        long,
        default_value_t = -1,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(i32).range(-1..=3)
    )]
    pub perf_event_paranoid: i32,
    /// Keep deep CPU idle states (C-states) allowed (default: held off through
    /// /dev/cpu_dma_latency while a benchmark runs)
    #[arg(long)]
    pub cstates: bool,
    /// Keep transparent huge pages at the host default (default: never for benchmarks)
    #[arg(long)]
    pub thp: bool,
    /// Keep automatic NUMA balancing at the host default (default: disabled for
    /// benchmarks)
    #[arg(long)]
    pub numa_balancing: bool,
    /// Keep timer migration enabled (default: disabled for benchmarks)
    #[arg(long)]
    pub timer_migration: bool,
    /// Keep kernel samepage merging (KSM) at the host default (default: stopped for
    /// benchmarks)
    #[arg(long)]
    pub ksm: bool,
    /// Keep the soft lockup watchdog enabled (default: disabled for benchmarks)
    #[arg(long)]
    pub soft_watchdog: bool,
    /// Keep IRQ and workqueue affinity at the host default (default: moved to the first
    /// online CPU, the housekeeping CPU, for benchmarks)
    #[arg(long)]
    pub irq_affinity: bool,
    /// Keep the host's CPU placement (default: the benchmark gets its own CPUs in a
    /// cpuset, while the runner's threads stay on the housekeeping CPUs)
    #[arg(long)]
    pub cpuset: bool,
    /// The root under which /proc, /sys and /dev are tuned, and the tuning state and
    /// lock (var/lib/bencher-runner/tuning) are kept. For tests: a fake tree.
    #[arg(long, hide = true, default_value = "/")]
    pub tuning_root: PathBuf,
}

impl Default for TuningArgs {
    /// The documented defaults: every optimization on.
    fn default() -> Self {
        Self {
            no_tuning: false,
            aslr: false,
            nmi_watchdog: false,
            smt: false,
            turbo: false,
            swappiness: 10,
            governor: "performance".to_owned(),
            perf_event_paranoid: -1,
            cstates: false,
            thp: false,
            numa_balancing: false,
            timer_migration: false,
            ksm: false,
            soft_watchdog: false,
            irq_affinity: false,
            cpuset: false,
            tuning_root: PathBuf::from("/"),
        }
    }
}

/// Firecracker's log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxLogLevel {
    Off,
    Error,
    Warning,
    Info,
    Debug,
    Trace,
}

impl SandboxLogLevel {
    /// The level as Firecracker's `--level` takes it.
    pub fn as_firecracker_level(self) -> &'static str {
        match self {
            SandboxLogLevel::Off => "Off",
            SandboxLogLevel::Error => "Error",
            SandboxLogLevel::Warning => "Warning",
            SandboxLogLevel::Info => "Info",
            SandboxLogLevel::Debug => "Debug",
            SandboxLogLevel::Trace => "Trace",
        }
    }
}

/// A cpufreq governor name as sysfs lists them: `[a-z0-9_]`, at most 15 characters.
fn parse_governor(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 15
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(value.to_owned())
    } else {
        Err("a governor name is 1 to 15 characters of [a-z0-9_], such as `performance`".into())
    }
}

/// Parses a secret (`RunnerKey`, `ApiToken`) without ever echoing it, even when it is
/// malformed: clap's own error for a bad value repeats the value, and a malformed key
/// is often a real secret with a typo. `flag` and `env` name where it came from.
#[derive(Clone)]
pub(crate) struct SecretParser<T> {
    pub flag: &'static str,
    pub env: &'static str,
    _secret: std::marker::PhantomData<fn() -> T>,
}

impl<T> SecretParser<T> {
    pub(crate) const fn new(flag: &'static str, env: &'static str) -> Self {
        Self {
            flag,
            env,
            _secret: std::marker::PhantomData,
        }
    }
}

impl<T> TypedValueParser for SecretParser<T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        // Trimmed because `$(cat key-file)` and copy-paste bring stray whitespace.
        let reason = match value.to_str().map(str::trim) {
            Some("") => format!("it is empty; pass a value or unset {}", self.env),
            Some(text) => match text.parse::<T>() {
                Ok(secret) => return Ok(secret),
                Err(e) => e.to_string(),
            },
            None => "it is not valid UTF-8".to_owned(),
        };
        let name = arg.map_or_else(|| self.flag.to_owned(), ToString::to_string);
        let message = format!(
            "invalid value for '{name}': {reason} (the value is not shown because it is secret)\n"
        );
        Err(clap::Error::raw(ErrorKind::ValueValidation, message).with_cmd(cmd))
    }
}

/// The runner's state directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    pub cache: PathBuf,
    pub spool: PathBuf,
}

/// Where the cache and the spool go when not given: under `/var/lib/bencher-runner` for
/// root (a system service), else under the user's XDG cache and state directories.
pub fn default_dirs() -> Result<Dirs, String> {
    dirs_for(rustix::process::geteuid().is_root(), |name| {
        std::env::var_os(name)
    })
}

fn dirs_for(root: bool, env: impl Fn(&str) -> Option<OsString>) -> Result<Dirs, String> {
    if root {
        let base = PathBuf::from(SYSTEM_STATE_DIR);
        return Ok(Dirs {
            cache: base.join("cache"),
            spool: base.join("spool"),
        });
    }
    // The XDG spec: relative paths in these variables are invalid and ignored.
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let home = || {
        absolute("HOME").ok_or_else(|| {
            "cannot tell where to keep the image cache and the spool: HOME is not set; pass \
             --cache-dir and --spool-dir"
                .to_owned()
        })
    };
    let cache = match absolute("XDG_CACHE_HOME") {
        Some(dir) => dir,
        None => home()?.join(".cache"),
    };
    let state = match absolute("XDG_STATE_HOME") {
        Some(dir) => dir,
        None => home()?.join(".local/state"),
    };
    Ok(Dirs {
        cache: cache.join(APP_DIR),
        spool: state.join(APP_DIR).join("spool"),
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use std::path::Path;

    const KEY: &str = "bencher_runner_0123456789abcdefghijABCDEFGHIJ";

    fn parse(args: &[&str]) -> Result<UpArgs, clap::Error> {
        let mut argv = vec!["runner", "up"];
        argv.extend_from_slice(args);
        Cli::try_parse_checked_from(argv).map(|cli| match cli.command {
            Command::Up(args) => *args,
            _ => panic!("parsed `up` as another command"),
        })
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_guide() {
        let args = parse(&["--runner", "my-runner", "--key", KEY]).unwrap();
        assert_eq!(args.host.as_str(), "https://api.bencher.dev/");
        assert_eq!(args.runner.to_string(), "my-runner");
        assert_eq!(args.key.expose_secret(), KEY);
        assert_eq!(args.poll_timeout, 55);
        assert!(!args.danger_allow_no_sandbox);
        assert_eq!(args.sandbox_log_level, SandboxLogLevel::Warning);
        assert!(!args.no_auto_update);
        assert_eq!(args.max_download_size(), 500 << 20);
        assert_eq!(args.max_output_size.bytes(), 25 << 20);
        assert_eq!(args.max_file_count, 255);
        assert_eq!(args.max_symlinks, 40);
        assert_eq!(args.tuning, TuningArgs::default());
        assert!(!args.tuning.no_tuning && !args.tuning.cstates && !args.tuning.irq_affinity);
        assert_eq!(args.tuning.swappiness, 10);
        assert_eq!(args.tuning.governor, "performance");
        assert_eq!(args.tuning.perf_event_paranoid, -1);
    }

    #[test]
    fn every_documented_flag_is_accepted() {
        let args = parse(&[
            "--host",
            "https://api.bencher.example.com",
            "--runner",
            "my-runner",
            "--key",
            KEY,
            "--poll-timeout",
            "900",
            "--danger-allow-no-sandbox",
            "--sandbox-log-level",
            "debug",
            "--max-download-size",
            "1048576",
            "--max-output-size",
            "1MiB",
            "--max-file-count",
            "10",
            "--max-symlinks",
            "8",
            "--grace-period",
            "5",
            "--no-tuning",
            "--aslr",
            "--nmi-watchdog",
            "--smt",
            "--turbo",
            "--swappiness",
            "60",
            "--governor",
            "schedutil",
            "--perf-event-paranoid",
            "2",
            "--cstates",
            "--thp",
            "--numa-balancing",
            "--timer-migration",
            "--ksm",
            "--soft-watchdog",
            "--irq-affinity",
            "--cpuset",
            "--cache-dir",
            "/tmp/cache",
            "--spool-dir",
            "/tmp/spool",
            "--firecracker",
            "/opt/fc/firecracker",
        ])
        .unwrap();
        assert_eq!(args.poll_timeout, 900);
        assert!(args.danger_allow_no_sandbox);
        assert_eq!(args.sandbox_log_level, SandboxLogLevel::Debug);
        let firecracker = args.vm.firecracker_config(args.sandbox_log_level);
        assert_eq!(
            firecracker.firecracker.as_deref(),
            Some(Path::new("/opt/fc/firecracker"))
        );
        assert_eq!(firecracker.jailer, None);
        assert_eq!(firecracker.log_level, Some("Debug"));
        assert_eq!(args.max_download_size(), 1 << 20);
        assert_eq!(args.max_output_size.bytes(), 1 << 20);
        assert_eq!(args.grace_period(), Duration::from_secs(5));
        assert!(args.tuning.no_tuning && args.tuning.aslr && args.tuning.turbo);
        assert_eq!(args.tuning.swappiness, 60);
        assert_eq!(args.tuning.governor, "schedutil");
        assert_eq!(args.tuning.perf_event_paranoid, 2);
        assert!(args.tuning.cstates && args.tuning.thp && args.tuning.numa_balancing);
        assert!(args.tuning.timer_migration && args.tuning.ksm && args.tuning.soft_watchdog);
        assert!(args.tuning.irq_affinity && args.tuning.cpuset);
        assert_eq!(args.cache_dir, Some(PathBuf::from("/tmp/cache")));
        assert_eq!(args.spool_dir, Some(PathBuf::from("/tmp/spool")));
        // The documented default, written out, is accepted too.
        let args = parse(&["--runner", "r", "--key", KEY, "--perf-event-paranoid", "-1"]).unwrap();
        assert_eq!(args.tuning.perf_event_paranoid, -1);
    }

    #[test]
    fn out_of_range_values_are_usage_errors() {
        for bad in [
            &["--poll-timeout", "0"][..],
            &["--poll-timeout", "901"],
            &["--swappiness", "201"],
            &["--perf-event-paranoid", "-2"],
            &["--governor", "../../etc"],
            &["--max-output-size", "0"],
            &["--sandbox-log-level", "loud"],
            &["--host", "not a url"],
            &["--runner", "Not A Slug"],
        ] {
            let mut args = vec!["--key", KEY];
            if bad[0] != "--runner" {
                args.extend(["--runner", "r"]);
            }
            args.extend_from_slice(bad);
            let error = parse(&args).unwrap_err();
            assert!(
                matches!(
                    error.kind(),
                    ErrorKind::ValueValidation | ErrorKind::InvalidValue
                ),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn max_download_size_conflicts_with_no_auto_update() {
        let error = parse(&[
            "--runner",
            "r",
            "--key",
            KEY,
            "--no-auto-update",
            "--max-download-size",
            "1MiB",
        ])
        .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
        assert!(parse(&["--runner", "r", "--key", KEY, "--no-auto-update"]).is_ok());
    }

    #[test]
    fn a_bad_key_is_never_echoed() {
        let secret = "bencher_runner_tooShortButSecret";
        let error = parse(&["--runner", "r", "--key", secret]).unwrap_err();
        let text = error.to_string();
        assert!(!text.contains("tooShortButSecret"), "{text}");
        assert!(text.contains("--key"), "{text}");
        let error = parse(&["--runner", "r", "--key", "  "]).unwrap_err();
        assert!(error.to_string().contains("empty"));
    }

    #[test]
    fn runner_and_key_are_required() {
        assert_eq!(
            parse(&["--key", KEY]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["--runner", "r"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn default_dirs_for_root_and_users() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            dirs_for(true, env(&[("HOME", "/home/u")])).unwrap(),
            Dirs {
                cache: "/var/lib/bencher-runner/cache".into(),
                spool: "/var/lib/bencher-runner/spool".into(),
            }
        );
        assert_eq!(
            dirs_for(false, env(&[("HOME", "/home/u")])).unwrap(),
            Dirs {
                cache: "/home/u/.cache/bencher-runner".into(),
                spool: "/home/u/.local/state/bencher-runner/spool".into(),
            }
        );
        assert_eq!(
            dirs_for(
                false,
                env(&[
                    ("HOME", "/home/u"),
                    ("XDG_CACHE_HOME", "/c"),
                    ("XDG_STATE_HOME", "relative/ignored"),
                ])
            )
            .unwrap(),
            Dirs {
                cache: "/c/bencher-runner".into(),
                spool: "/home/u/.local/state/bencher-runner/spool".into(),
            }
        );
        assert!(dirs_for(false, env(&[])).is_err());
    }
}
