//! `runner`: the Bencher runner binary. Thin: parses the command line, sets up logging,
//! forwards SIGTERM/SIGINT to the agent, and turns how it stopped into an exit code.
//! IO: stderr (logs, errors), signals; everything else is in the library.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bencher_runner::agent::{self, Exit};
use bencher_runner::cli::{
    Cli, Command, InstallArgs, NoiseArgs, SandboxLogLevel, StatusArgs, UpArgs,
};
use bencher_runner::noise;
use bencher_runner::tuning::Tuning;
use bencher_runner::{executor, service, status};
use bencher_runner::{run_local, update};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse_checked_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(error) => {
            // A binary just installed by an update that does not accept how the runner
            // is started goes back to the previous one (the self-check should have
            // caught it; this covers an environment that changed in between).
            if error.use_stderr()
                && let Ok(exe) = std::env::current_exe()
            {
                let _ = roll_back_update(&exe, anyhow::anyhow!("{error}"));
            }
            error.exit()
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Before any sandbox check, which probes each VMM once.
    match &cli.command {
        Command::Up(args) => {
            executor::configure_firecracker(args.vm.firecracker_config(args.sandbox_log_level));
        }
        Command::Run(args) => {
            executor::configure_firecracker(args.vm.firecracker_config(SandboxLogLevel::Warning));
        }
        _ => {}
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up(*args).await,
            // It handles its own signals: one cancels the job.
            Command::Run(args) => run_local::run(*args).await,
            Command::Noise(args) => noise(args).await,
            Command::Install(args) => install(&args),
            Command::Status(args) => status(&args),
            Command::SelfCheck(args) => self_check(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    // Installed before anything else, so a signal while starting up drains instead of
    // killing the process.
    let signals = forward_signals().context("cannot install the signal handlers")?;
    // Read now: once an update renamed another binary over it, /proc/self/exe names
    // the old, deleted file.
    let exe = std::env::current_exe().context("cannot find the path of this runner binary")?;
    let exit = match agent::up(args, signals).await {
        Ok(exit) => exit,
        Err(error) => return Err(roll_back_update(&exe, error.into())),
    };
    match exit {
        Exit::Drained => {
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Exit::Unauthorized => {
            eprintln!(
                "error: the server refused the runner key (HTTP 401): the key is wrong or was \
                 rotated, or the runner was archived. Check --runner and --key \
                 (BENCHER_RUNNER, BENCHER_RUNNER_KEY)."
            );
            Ok(ExitCode::FAILURE)
        }
        Exit::Updated => {
            // Returns only when the new binary cannot be executed; the service manager
            // restarts us, and a failed start then rolls back.
            let error = update::reexec(&exe);
            Err(anyhow::Error::new(error).context(format!(
                "cannot execute the updated runner binary {}",
                exe.display()
            )))
        }
    }
}

/// `runner self-check [-- ARGS]`: the version, after checking that `ARGS` parse.
fn self_check(args: bencher_runner::cli::SelfCheckArgs) -> anyhow::Result<ExitCode> {
    if !args.args.is_empty() {
        let argv = std::iter::once(std::ffi::OsString::from("runner")).chain(args.args);
        if let Err(error) = Cli::try_parse_checked_from(argv) {
            eprintln!("this runner does not accept the arguments it would be started with");
            error.exit();
        }
    }
    println!("{}", update::VERSION);
    Ok(ExitCode::SUCCESS)
}

/// `runner up` failed to start. When this binary came with an update that was not
/// confirmed yet, the previous binary goes back and runs instead; else `error` is the
/// operator's to see.
fn roll_back_update(exe: &std::path::Path, error: anyhow::Error) -> anyhow::Error {
    match update::roll_back_if_pending(exe) {
        Ok(None) => error,
        Ok(Some(previous)) => {
            eprintln!(
                "error: the updated runner {} failed to start: {error:#}; rolling back to the \
                 previous binary",
                update::VERSION
            );
            let exec_error = update::reexec(&previous);
            anyhow::Error::new(exec_error).context("cannot execute the previous runner binary")
        }
        Err(rollback) => error.context(format!("and the rollback failed: {rollback}")),
    }
}

/// `runner install`: prints what it wrote, never the key.
fn install(args: &InstallArgs) -> anyhow::Result<ExitCode> {
    if args.dry_run {
        let binary = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .context("cannot find the path of this runner binary")?;
        let plan = service::plan(args, &binary)?;
        println!("# {}", plan.unit_path.display());
        print!("{}", plan.unit);
        println!("\n# {} (mode 0600)", plan.env_path.display());
        print!("{}", plan.env_redacted());
        return Ok(ExitCode::SUCCESS);
    }
    let installed = service::install(args)?;
    println!(
        "unit {}: {}",
        installed.plan.unit_path.display(),
        installed.unit
    );
    println!(
        "environment file {} (mode 0600): {}",
        installed.plan.env_path.display(),
        installed.env
    );
    if installed.enabled {
        println!("{} enabled and running", service::SERVICE);
    } else if installed.unit.changed() || installed.env.changed() {
        println!(
            "next: systemctl daemon-reload && systemctl enable {0} && systemctl restart {0}",
            service::SERVICE
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `runner status`: exit 0 when every part could be read, running or not.
fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let spool_dir = match &args.spool_dir {
        Some(dir) => dir.clone(),
        None => {
            bencher_runner::cli::default_dirs()
                .map_err(anyhow::Error::msg)?
                .spool
        }
    };
    let report = status::gather(&spool_dir, &args.tuning_root);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", status::render(&report));
    }
    Ok(if report.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `runner noise`: probes and prints; changes nothing on the host.
async fn noise(args: NoiseArgs) -> anyhow::Result<ExitCode> {
    let size = noise::ProbeSize {
        cpu_samples: args.cpu_samples as usize,
        timer_samples: args.timer_samples as usize,
        ..noise::ProbeSize::FULL
    };
    let (figures, print) = tokio::task::spawn_blocking(move || {
        let observed = Tuning::new("/".into()).observe();
        let print = noise::fingerprint(
            std::path::Path::new("/"),
            None,
            noise::TuningFingerprint::Observed { knobs: observed },
        );
        (noise::probe(size), print)
    })
    .await
    .context("the noise probe failed")?;
    if args.json {
        let json = serde_json::json!({ "noise": figures, "environment": print });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    let line = |name: &str, s: &noise::Stats| {
        println!(
            "{name:<6} samples {:>7}  median {:>9} ns  p99 {:>9} ns  max {:>10} ns  cv {:.4}",
            s.samples, s.median_ns, s.p99_ns, s.max_ns, s.cv
        );
    };
    line("cpu", &figures.cpu);
    line("timer", &figures.timer);
    println!(
        "(cpu: one loop of {} iterations; timer: lateness of a {} ns sleep)",
        figures.cpu_work, figures.timer_sleep_ns
    );
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("cpu model   {}", show(&print.cpu_model));
    println!("microcode   {}", show(&print.microcode));
    println!("cpus        {}", print.cpus);
    println!("kernel      {}", show(&print.kernel));
    println!("governor    {}", show(&print.governor));
    println!("smt         {}", show(&print.smt));
    if let noise::TuningFingerprint::Observed { knobs } = &print.tuning {
        for (knob, value) in knobs {
            match value {
                Ok(value) => println!("{:<22}{value}", knob.name()),
                Err(why) => println!("{:<22}unsupported ({why})", knob.name()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Signals closer together than this are one: `timeout`, a shell or a service manager
/// may deliver the same stop to the process and to its group, and a second signal
/// means "cancel the job now".
const SIGNAL_DEBOUNCE: Duration = Duration::from_secs(1);

/// One `()` per SIGTERM or SIGINT, for as long as the agent listens.
fn forward_signals() -> std::io::Result<mpsc::UnboundedReceiver<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut last: Option<Instant> = None;
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                else => return,
            };
            if last.is_some_and(|at| at.elapsed() < SIGNAL_DEBOUNCE) {
                tracing::debug!(signal = name, "the same stop delivered twice; ignored");
                continue;
            }
            last = Some(Instant::now());
            tracing::info!(signal = name, "signal received");
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

fn init_logging() {
    let filter = EnvFilter::try_from_env("BENCHER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
