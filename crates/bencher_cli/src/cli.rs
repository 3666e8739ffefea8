//! The command line itself: global options, the command tree, dispatch, and the hints
//! printed under an error.

use std::ffi::OsStr;

use bencher_client::{Client, ClientError, RegistryError};
use bencher_types::ApiToken;
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use url::Url;

use crate::alert::{self, AlertCommand};
use crate::image::{self, ImageCommand};
use crate::job::{self, JobCommand};
use crate::output::Format;
use crate::perf::{self, PerfArgs};
use crate::project::{self, ProjectCommand};
use crate::report::{self, ReportCommand};
use crate::run::{self, RunArgs};
use crate::runner::{self, RunnerCommand};
use crate::server::{self, ServerCommand};
use crate::spec::{self, SpecCommand};
use crate::threshold::{self, ThresholdCommand};
use crate::token::{self, TokenCommand};

const DEFAULT_HOST: &str = "http://localhost:6610";
/// Help heading of the options every command accepts.
const GLOBAL: &str = "Global Options";

#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "bencher",
    version,
    about = "Manage a self-hosted Bencher API server"
)]
pub struct Cli {
    // Global, so `bencher runner create --host …` works as the docs write it.
    /// The Bencher API server
    #[arg(
        long,
        global = true,
        env = "BENCHER_HOST",
        default_value = DEFAULT_HOST,
        help_heading = GLOBAL
    )]
    pub host: Url,
    /// API token (`bencher_user_…`)
    #[arg(
        long,
        global = true,
        env = "BENCHER_API_TOKEN",
        hide_env_values = true,
        value_parser = ApiTokenParser,
        help_heading = GLOBAL,
    )]
    pub token: Option<ApiToken>,
    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Human, help_heading = GLOBAL)]
    pub format: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Runners: the machines that execute benchmark jobs
    #[command(subcommand)]
    Runner(RunnerCommand),
    /// Specs: the hardware a runner provides
    #[command(subcommand)]
    Spec(SpecCommand),
    /// API tokens for users and admins
    #[command(subcommand)]
    Token(TokenCommand),
    /// Projects, each also a registry repository for benchmark images
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Benchmark images in a project's registry repository
    #[command(subcommand)]
    Image(ImageCommand),
    /// Run a benchmark image as a job on a runner and follow it (Ctrl-C cancels it)
    // Boxed: the run flags dwarf every other command's.
    Run(Box<RunArgs>),
    /// Jobs: benchmark runs submitted with `bencher run`
    #[command(subcommand)]
    Job(JobCommand),
    /// Reports: the results of runs, per iteration, benchmark and measure
    #[command(subcommand)]
    Report(ReportCommand),
    /// The history of benchmarks: branches × testbeds × benchmarks × measures
    Perf(PerfArgs),
    /// Thresholds: what counts as a regression on a branch, testbed and measure
    #[command(subcommand)]
    Threshold(ThresholdCommand),
    /// Alerts raised on regressions
    #[command(subcommand)]
    Alert(AlertCommand),
    /// The API server itself
    #[command(subcommand)]
    Server(ServerCommand),
}

/// What every command needs: where to send requests and how to print the answer.
pub struct Context {
    pub client: Client,
    pub format: Format,
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        // `image` talks to the registry with a client of its own, which needs the token.
        let registry_token = self.token.clone();
        let ctx = Context {
            client: Client::new(self.host, self.token)?,
            format: self.format,
        };
        match self.command {
            Command::Runner(command) => runner::run(&ctx, command).await,
            Command::Spec(command) => spec::run(&ctx, command).await,
            Command::Token(command) => token::run(&ctx, command).await,
            Command::Project(command) => project::run(&ctx, command).await,
            Command::Image(command) => image::run(&ctx, registry_token, command).await,
            Command::Run(args) => run::run(&ctx, *args).await,
            Command::Job(command) => job::run(&ctx, command).await,
            Command::Report(command) => report::run(&ctx, command).await,
            Command::Perf(args) => perf::run(&ctx, args).await,
            Command::Threshold(command) => threshold::run(&ctx, command).await,
            Command::Alert(command) => alert::run(&ctx, command).await,
            Command::Server(command) => server::run(&ctx, command).await,
        }
    }

    pub fn hints(&self) -> Hints {
        Hints {
            host: self.host.to_string(),
            has_token: self.token.is_some(),
        }
    }
}

/// `--set` / `--unset` flag pairs (clap keeps them exclusive) as a PATCH field.
pub fn flag_pair(set: bool, unset: bool) -> Option<bool> {
    match (set, unset) {
        (true, _) => Some(true),
        (false, true) => Some(false),
        (false, false) => None,
    }
}

/// Parses `--token` without ever echoing it: clap's own error for a bad value repeats
/// the value, and a malformed token is often a real secret with a typo.
#[derive(Debug, Clone, Copy)]
struct ApiTokenParser;

impl TypedValueParser for ApiTokenParser {
    type Value = ApiToken;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<ApiToken, clap::Error> {
        // Trimmed because `$(cat token-file)` and copy-paste bring stray whitespace.
        let reason = match value.to_str().map(str::trim) {
            Some("") => "it is empty; pass a token or unset BENCHER_API_TOKEN".to_owned(),
            Some(text) => match text.parse::<ApiToken>() {
                Ok(token) => return Ok(token),
                Err(e) => e.to_string(),
            },
            None => "it is not valid UTF-8".to_owned(),
        };
        let name = arg.map_or_else(|| "--token".to_owned(), ToString::to_string);
        let message = format!(
            "invalid value for '{name}': {reason} (the value is not shown because it is secret)\n"
        );
        Err(clap::Error::raw(ErrorKind::ValueValidation, message).with_cmd(cmd))
    }
}

/// What is known before running, to suggest a next step when a request fails.
pub struct Hints {
    host: String,
    has_token: bool,
}

impl Hints {
    pub fn for_error(&self, err: &anyhow::Error) -> Option<String> {
        if let Some(registry_error) = err.chain().find_map(|e| e.downcast_ref::<RegistryError>()) {
            return image::hint(registry_error, self.has_token);
        }
        let client_error = err.chain().find_map(|e| e.downcast_ref::<ClientError>())?;
        match client_error {
            ClientError::Transport { source, .. } if source.is_connect() => Some(format!(
                "is a Bencher API server running at {}? Point to it with --host or BENCHER_HOST.",
                self.host
            )),
            ClientError::Api { status: 401, .. } if !self.has_token => {
                Some("pass an API token with --token or BENCHER_API_TOKEN.".to_owned())
            }
            ClientError::Api { status: 403, .. } => {
                Some("this needs an admin token (`bencher token create --admin`).".to_owned())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use bencher_types::{Architecture, ByteSize, Cpu, JsonNewSpec, JsonUpdateRunner, Os, Sandbox};
    use clap::CommandFactory;

    use super::*;
    use crate::pagination::{Order, PaginationArgs, Sort};
    use crate::runner::{AddSpecArgs, RunnerSpecCommand};

    const HOST: &str = "https://api.bencher.example.com";
    const TOKEN: &str = "bencher_user_0123456789abcdefghijABCDEFGHIJ";

    fn parse(line: &[&str]) -> Cli {
        Cli::try_parse_from(line).unwrap_or_else(|e| panic!("{line:?} should parse: {e}"))
    }

    fn parse_err(line: &[&str]) -> String {
        match Cli::try_parse_from(line) {
            Ok(cli) => panic!("{line:?} should be rejected, parsed as {cli:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn host() -> Url {
        Url::parse(HOST).expect("test host parses")
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    /// A subcommand argument sharing an id with a global option makes clap panic at
    /// parse time, which `debug_assert` does not catch.
    #[test]
    fn no_argument_shadows_a_global_option() {
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                assert!(
                    !["host", "token", "format"].contains(&id),
                    "`{path}` has an argument `{id}` that clashes with the global option"
                );
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        for sub in Cli::command().get_subcommands() {
            walk(sub, sub.get_name());
        }
    }

    #[test]
    fn seed_runner_create() {
        let cli = parse(&[
            "bencher",
            "runner",
            "create",
            "--host",
            HOST,
            "--name",
            "My Runner",
        ]);
        assert_eq!(cli.host, host());
        assert_eq!(cli.format, Format::Human);
        assert_eq!(
            cli.command,
            Command::Runner(RunnerCommand::Create(runner::CreateArgs {
                name: "My Runner".parse().expect("name"),
                slug: None,
            }))
        );
    }

    #[test]
    fn seed_spec_create() {
        let cli = parse(&[
            "bencher",
            "spec",
            "create",
            "--host",
            HOST,
            "--name",
            "Intel v1",
            "--os",
            "linux",
            "--architecture",
            "x86_64",
            "--sandbox",
            "firecracker",
            "--cpu",
            "4",
            "--memory",
            "51539607552",
            "--disk",
            "137438953472",
        ]);
        assert_eq!(cli.host, host());
        let Command::Spec(SpecCommand::Create(args)) = cli.command else {
            panic!("expected spec create, got {:?}", cli.command);
        };
        let body = JsonNewSpec::from(args);
        assert_eq!(body.name.as_str(), "Intel v1");
        assert_eq!(body.slug, None);
        assert_eq!(body.os, Os::Linux);
        assert_eq!(body.architecture, Architecture::X86_64);
        assert_eq!(body.sandbox, Some(Sandbox::Firecracker));
        assert_eq!(body.cpu, Cpu::new(4).expect("cpu"));
        assert_eq!(body.memory.bytes(), 51_539_607_552);
        assert_eq!(body.disk.bytes(), 137_438_953_472);
        assert!(!body.network && !body.fallback);
    }

    #[test]
    fn seed_runner_spec_add() {
        let cli = parse(&[
            "bencher",
            "runner",
            "spec",
            "add",
            "my-runner",
            "--host",
            HOST,
            "--spec",
            "intel-v1",
        ]);
        assert_eq!(cli.host, host());
        assert_eq!(
            cli.command,
            Command::Runner(RunnerCommand::Spec(RunnerSpecCommand::Add(AddSpecArgs {
                runner: "my-runner".parse().expect("id"),
                spec: "intel-v1".parse().expect("id"),
            })))
        );
    }

    #[test]
    fn sizes_accept_units() {
        let cli = parse(&[
            "bencher",
            "spec",
            "create",
            "--name",
            "Arm",
            "--os",
            "linux",
            "--architecture",
            "aarch64",
            "--cpu",
            "8",
            "--memory",
            "48GiB",
            "--disk",
            "1TiB",
            "--network",
            "--fallback",
        ]);
        let Command::Spec(SpecCommand::Create(args)) = cli.command else {
            panic!("expected spec create, got {:?}", cli.command);
        };
        assert_eq!(args.memory, ByteSize::new(48 << 30).expect("size"));
        assert_eq!(args.memory.human(), "48 GiB");
        assert_eq!(args.disk.bytes(), 1 << 40);
        assert_eq!(args.sandbox, None);
        assert!(args.network && args.fallback);
    }

    /// The error of a valid `spec create` line with one flag's value replaced (or added).
    fn spec_create_with(flag: &str, value: &str) -> String {
        let mut line = vec!["bencher", "spec", "create"];
        let mut replaced = false;
        for (name, default) in [
            ("--name", "X"),
            ("--os", "linux"),
            ("--architecture", "x86_64"),
            ("--cpu", "4"),
            ("--memory", "1GiB"),
            ("--disk", "1GiB"),
        ] {
            let value = if name == flag {
                replaced = true;
                value
            } else {
                default
            };
            line.extend([name, value]);
        }
        if !replaced {
            line.extend([flag, value]);
        }
        parse_err(&line)
    }

    #[test]
    fn rejects_bad_spec_values_with_clear_messages() {
        let err = spec_create_with("--cpu", "0");
        assert!(
            err.contains("cpu must be between 1 and 4096, got 0"),
            "{err}"
        );
        let err = spec_create_with("--os", "plan9");
        assert!(
            err.contains(
                "unknown operating system `plan9`; expected one of: linux, macos, windows"
            ),
            "{err}"
        );
        let err = spec_create_with("--sandbox", "docker");
        assert!(
            err.contains("expected one of: firecracker, qemu, gvisor, container"),
            "{err}"
        );
        let err = spec_create_with("--memory", "1.5GiB");
        assert!(err.contains("is not a size"), "{err}");
        let err = spec_create_with("--disk", "0");
        assert!(err.contains("at least 1 byte"), "{err}");
        let err = spec_create_with("--slug", "Not A Slug");
        assert!(err.contains("slug may only contain"), "{err}");
    }

    #[test]
    fn archive_and_unarchive_are_exclusive() {
        let err = parse_err(&[
            "bencher",
            "runner",
            "update",
            "r1",
            "--archive",
            "--unarchive",
        ]);
        assert!(err.contains("cannot be used with"), "{err}");
        let err = parse_err(&[
            "bencher",
            "spec",
            "update",
            "s1",
            "--archive",
            "--unarchive",
        ]);
        assert!(err.contains("cannot be used with"), "{err}");
        let err = parse_err(&[
            "bencher",
            "spec",
            "update",
            "s1",
            "--fallback",
            "--no-fallback",
        ]);
        assert!(err.contains("cannot be used with"), "{err}");
    }

    #[test]
    fn update_needs_a_change() {
        let err = parse_err(&["bencher", "runner", "update", "r1"]);
        assert!(
            err.contains("required arguments were not provided"),
            "{err}"
        );
        let err = parse_err(&["bencher", "spec", "update", "s1"]);
        assert!(
            err.contains("required arguments were not provided"),
            "{err}"
        );
    }

    #[test]
    fn update_flags_become_patch_fields() {
        let cli = parse(&[
            "bencher",
            "runner",
            "update",
            "r1",
            "--unarchive",
            "--slug",
            "r2",
        ]);
        let Command::Runner(RunnerCommand::Update(args)) = cli.command else {
            panic!("expected runner update, got {:?}", cli.command);
        };
        let body = JsonUpdateRunner::from(args);
        assert_eq!(body.archived, Some(false));
        assert_eq!(body.slug, Some("r2".parse().expect("slug")));
        assert_eq!(body.name, None);

        let cli = parse(&["bencher", "spec", "update", "s1", "--no-fallback"]);
        let Command::Spec(SpecCommand::Update(args)) = cli.command else {
            panic!("expected spec update, got {:?}", cli.command);
        };
        let body = bencher_types::JsonUpdateSpec::from(args);
        assert_eq!((body.fallback, body.archived), (Some(false), None));
    }

    #[test]
    fn malformed_token_is_rejected_without_echoing_it() {
        let secretish = "bencher_user_0123456789abcdefghijABCDEFGHI"; // one character short
        let err = parse_err(&["bencher", "server", "version", "--token", secretish]);
        assert!(
            err.contains("API token must have exactly 30 characters"),
            "{err}"
        );
        assert!(err.contains("--token"), "{err}");
        assert!(!err.contains("0123456789"), "{err}");

        let err = parse_err(&["bencher", "--token", "hunter2", "server", "health"]);
        assert!(err.contains("must start with `bencher_user_`"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn globals_parse_anywhere() {
        let padded = format!(" {TOKEN}\n");
        let cli = parse(&[
            "bencher",
            "--format",
            "json",
            "token",
            "list",
            "--token",
            &padded,
            "--per-page",
            "10",
            "--sort",
            "created",
            "--direction",
            "desc",
        ]);
        assert_eq!(cli.format, Format::Json);
        assert_eq!(cli.token, Some(TOKEN.parse().expect("token")));
        assert_eq!(
            cli.command,
            Command::Token(TokenCommand::List(token::ListArgs {
                pagination: PaginationArgs {
                    per_page: Some(10),
                    page: None,
                    sort: Some(Sort::Created),
                    direction: Some(Order::Desc),
                },
            }))
        );
    }

    #[test]
    fn token_revoke_takes_a_uuid_beside_the_global_token() {
        let uuid = "22222222-10b1-426f-9247-bb680e5fe0c8";
        let cli = parse(&["bencher", "token", "revoke", uuid, "--token", TOKEN]);
        assert_eq!(cli.token, Some(TOKEN.parse().expect("token")));
        assert_eq!(
            cli.command,
            Command::Token(TokenCommand::Revoke(token::RevokeArgs {
                uuid: uuid.parse().expect("uuid"),
            }))
        );
    }

    #[test]
    fn rejects_bad_ids_and_pages() {
        let err = parse_err(&["bencher", "runner", "view", "My Runner"]);
        assert!(err.contains("neither a UUID nor a valid slug"), "{err}");
        let err = parse_err(&["bencher", "token", "revoke", "my-token"]);
        assert!(err.contains("invalid value"), "{err}");
        let err = parse_err(&["bencher", "runner", "list", "--per-page", "256"]);
        assert!(err.contains("256 is not in 1..=255"), "{err}");
        let err = parse_err(&["bencher", "spec", "list", "--page", "0"]);
        assert!(err.contains("0 is not in 1.."), "{err}");
        let err = parse_err(&["bencher", "token", "create", "--name", "ci", "--ttl", "0"]);
        assert!(err.contains("0 is not in 1.."), "{err}");
        let err = parse_err(&["bencher", "runner", "create", "--name", "  "]);
        assert!(err.contains("name must not be empty"), "{err}");
    }

    #[test]
    fn help_never_shows_the_token_from_the_environment() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("BENCHER_API_TOKEN"), "{help}");
        assert!(help.contains("[default: http://localhost:6610]"), "{help}");
        // hide_env_values: even with the variable set, clap would print only its name.
        let token_arg = Cli::command()
            .get_arguments()
            .find(|arg| arg.get_id() == "token")
            .map(clap::Arg::is_hide_env_values_set);
        assert_eq!(token_arg, Some(true));
    }

    #[test]
    fn hints_follow_the_error() {
        let hints = Hints {
            host: DEFAULT_HOST.to_owned(),
            has_token: false,
        };
        let unauthorized = anyhow::Error::new(ClientError::Api {
            status: 401,
            code: "unauthorized".to_owned(),
            message: "missing API token".to_owned(),
        });
        let hint = hints.for_error(&unauthorized).expect("a hint");
        assert!(hint.contains("BENCHER_API_TOKEN"), "{hint}");
        let other = anyhow::anyhow!("something else");
        assert_eq!(hints.for_error(&other), None);
    }
}
