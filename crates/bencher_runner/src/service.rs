//! `runner install`: the systemd unit that runs `runner up` as a service, and the
//! environment file holding its key. IO: the two files (and their directories) under
//! the install root, and `systemctl` when `--enable` asks for it.
//!
//! # What holds
//!
//! - The key is only in the environment file, which is created with mode 0600 (a
//!   temporary file opened with that mode, then renamed), so it is never readable by
//!   others, not even for a moment; it is never on the command line (where any user
//!   reads it in `/proc/PID/cmdline`), never printed, never logged.
//! - Both files are replaced atomically (temporary file, fsync, rename, fsync of the
//!   directory). Nothing is written before both are checked: a file that exists and
//!   differs from what would be written is refused (unless `--force`), so an install
//!   never half-happens and never clobbers a unit someone else wrote.
//! - Re-running with the same settings writes nothing.
//! - `TimeoutStopSec` is the drain timeout plus [`STOP_MARGIN_SECS`], and the unit
//!   passes `--drain-timeout` itself, so the two cannot disagree.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::{GivenSetting, InstallArgs};

/// The service's name.
pub const SERVICE: &str = "bencher-runner.service";
/// The unit, relative to the install root.
pub const UNIT_PATH: &str = "etc/systemd/system/bencher-runner.service";
/// The environment file's directory and the file, relative to the install root.
pub const ENV_DIR: &str = "etc/bencher-runner";
pub const ENV_PATH: &str = "etc/bencher-runner/env";
/// What the runner still does after the drain bound before it exits: cancel the job
/// (within a second), restore the host tuning, spool and send the result, close the
/// connection (the link waits up to 10 s). systemd sends SIGKILL after it.
pub const STOP_MARGIN_SECS: u64 = 30;
/// Settings `install` writes itself, from their parsed values.
const WRITTEN_APART: &[&str] = &["host", "runner", "key", "drain_timeout"];

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot find the path of this runner binary")]
    CurrentExe(#[source] io::Error),
    #[error("the value of --{flag} is not valid UTF-8, which a unit file cannot hold")]
    NotUtf8 { flag: String },
    #[error(
        "the value of --{flag} holds a line break or another control character, which a \
         unit file cannot hold"
    )]
    ControlCharacter { flag: String },
    #[error("cannot make the path of --{flag} absolute")]
    Absolute {
        flag: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} exists and differs from what `runner install` would write{}; compare with \
         `runner install --dry-run` and pass --force to replace it",
        path.display(),
        if *secret { " (it holds the key, so it is not shown)" } else { "" }
    )]
    Differs { path: PathBuf, secret: bool },
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "--enable manages this host's systemd, so it cannot be combined with --root {}",
        root.display()
    )]
    EnableWithRoot { root: PathBuf },
    #[error("--enable needs systemctl, which is not on PATH; start the service by hand")]
    NoSystemctl,
    #[error("cannot run `systemctl {command}`")]
    SystemctlSpawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`systemctl {command}` failed ({status})")]
    Systemctl {
        command: String,
        status: std::process::ExitStatus,
    },
}

/// The two files `install` writes, as text. `env` holds the key: never print it; use
/// [`Plan::env_redacted`].
pub struct Plan {
    pub unit_path: PathBuf,
    pub unit: String,
    pub env_path: PathBuf,
    env: String,
    env_redacted: String,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("unit_path", &self.unit_path)
            .field("env_path", &self.env_path)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// The environment file with the key replaced by `<hidden>`.
    pub fn env_redacted(&self) -> &str {
        &self.env_redacted
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Unchanged,
    /// It differed, and `--force` replaced it.
    Replaced,
    /// Same content; its mode was not 0600 (or 0644 for the unit) and was set.
    ModeFixed,
}

impl Written {
    pub fn changed(self) -> bool {
        self != Written::Unchanged
    }
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Written::Created => "created",
            Written::Unchanged => "unchanged",
            Written::Replaced => "replaced (--force)",
            Written::ModeFixed => "permissions fixed",
        })
    }
}

#[derive(Debug)]
pub struct Installed {
    pub plan: Plan,
    pub unit: Written,
    pub env: Written,
    /// `--enable` ran systemctl.
    pub enabled: bool,
}

/// The unit and environment file for `args`, running `binary` (absolute).
pub fn plan(args: &InstallArgs, binary: &Path) -> Result<Plan, InstallError> {
    let up = &args.up;
    let mut env_lines = vec![
        ("BENCHER_HOST".to_owned(), up.host.to_string()),
        ("BENCHER_RUNNER".to_owned(), up.runner.to_string()),
    ];
    let mut exec = vec![
        binary.to_string_lossy().into_owned(),
        "up".to_owned(),
        "--drain-timeout".to_owned(),
        up.drain_timeout.to_string(),
    ];
    for setting in args
        .given
        .iter()
        .filter(|s| !WRITTEN_APART.contains(&s.id.as_str()))
    {
        let value = setting_value(setting)?;
        match (&setting.env, value) {
            // A switch `up` also reads from the environment: there, as `true`.
            (Some(env), None) => env_lines.push((env.clone(), "true".to_owned())),
            (Some(env), Some(value)) => env_lines.push((env.clone(), value)),
            (None, None) => exec.push(format!("--{}", setting.long)),
            (None, Some(value)) => {
                exec.push(format!("--{}", setting.long));
                exec.push(value);
            }
        }
    }
    if let Some(word) = exec.iter().find(|w| w.chars().any(char::is_control)) {
        // Only the binary's path can get here: values were checked above.
        return Err(InstallError::ControlCharacter {
            flag: format!("(the binary path {word:?})"),
        });
    }
    let env_file = |key: &str| {
        let mut text = format!(
            "# Written by `runner install`: the environment of {SERVICE}.\n\
             # It holds the runner key, so it is root's alone (mode 0600); the unit reads it\n\
             # with EnvironmentFile=, which keeps the key off the command line.\n"
        );
        for (name, value) in &env_lines {
            text.push_str(&format!("{name}={}\n", env_value(value)));
        }
        text.push_str(&format!("BENCHER_RUNNER_KEY={}\n", env_value(key)));
        text
    };
    let drain = up.drain_timeout;
    let stop = drain.saturating_add(STOP_MARGIN_SECS);
    let exec_start = exec
        .iter()
        .map(|word| unit_word(word))
        .collect::<Vec<_>>()
        .join(" ");
    let unit = format!(
        "# Written by `runner install`. The key and the server are in\n\
         # /{ENV_PATH}; re-run `runner install` to change the settings.\n\
         [Unit]\n\
         Description=Bencher self-hosted benchmark runner\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         # Root: the runner tunes /proc and /sys, mounts, creates namespaces and runs runc,\n\
         # runsc and QEMU.\n\
         User=root\n\
         # The key stays in this file (0600), never on the command line below, which every\n\
         # user of the host can read.\n\
         EnvironmentFile=/{ENV_PATH}\n\
         ExecStart={exec_start}\n\
         # Always: a crash, a failed start or a self-update that exits all bring it back\n\
         # (a refused key too, every RestartSec, until the environment file is fixed).\n\
         Restart=always\n\
         RestartSec=5\n\
         # On SIGTERM the runner drains: no new job, the current one may run for\n\
         # --drain-timeout ({drain} s), then it is canceled, the host tuning restored and\n\
         # the result spooled and sent. TimeoutStopSec is that bound plus {STOP_MARGIN_SECS} s for the\n\
         # rest, so systemd's SIGKILL never cuts a drain short.\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec={stop}\n\
         # SIGTERM to the runner only: with the default (control-group) the benchmark's\n\
         # own processes would get it too and the job would end at once instead of draining.\n\
         # The SIGKILL after TimeoutStopSec still reaches every process of the service.\n\
         KillMode=mixed\n\
         # Results, spool and state are private; no core dump may carry the key.\n\
         UMask=0077\n\
         LimitCORE=0\n\
         # Deliberately absent, because each breaks the runner: ProtectKernelTunables\n\
         # (tuning writes /proc/sys and /sys), ProtectControlGroups (container limits),\n\
         # ProtectKernelModules (QEMU's initramfs reads /lib/modules), PrivateDevices and\n\
         # DevicePolicy (/dev/kvm, /dev/cpu_dma_latency), NoNewPrivileges,\n\
         # RestrictNamespaces, ProtectHostname and SystemCallFilter (sandboxes create\n\
         # namespaces and set hostnames), LockPersonality, RestrictRealtime and\n\
         # MemoryDenyWriteExecute (benchmarks use setarch, real-time scheduling and JITs).\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
    );
    Ok(Plan {
        unit_path: args.root.join(UNIT_PATH),
        unit,
        env_path: args.root.join(ENV_PATH),
        env: env_file(up.key.expose_secret()),
        env_redacted: env_file("<hidden>"),
    })
}

/// A given setting's value as text for the unit: UTF-8, no control characters, paths
/// absolute (the service runs in /, not where `install` ran).
fn setting_value(setting: &GivenSetting) -> Result<Option<String>, InstallError> {
    let Some(value) = &setting.value else {
        return Ok(None);
    };
    let flag = || setting.long.clone();
    let text = value
        .to_str()
        .ok_or_else(|| InstallError::NotUtf8 { flag: flag() })?;
    if text.chars().any(char::is_control) {
        return Err(InstallError::ControlCharacter { flag: flag() });
    }
    if setting.id.ends_with("_dir") || setting.id.ends_with("_root") {
        let absolute = std::path::absolute(text).map_err(|source| InstallError::Absolute {
            flag: flag(),
            source,
        })?;
        let text = absolute
            .to_str()
            .ok_or_else(|| InstallError::NotUtf8 { flag: flag() })?;
        return Ok(Some(text.to_owned()));
    }
    Ok(Some(text.to_owned()))
}

/// One word of `ExecStart=`: quoted unless plainly safe; `%` and `$` doubled, since
/// systemd expands specifiers and variables there.
fn unit_word(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@+,-".contains(c));
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if safe {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// A value in an `EnvironmentFile=`: double-quoted, with `\` and `"` escaped.
fn env_value(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `runner install`: checks both files, writes what changed, then runs systemctl when
/// `--enable` asks for it.
pub fn install(args: &InstallArgs) -> Result<Installed, InstallError> {
    if args.enable && args.root != Path::new("/") {
        return Err(InstallError::EnableWithRoot {
            root: args.root.clone(),
        });
    }
    let binary = std::env::current_exe()
        .and_then(fs::canonicalize)
        .map_err(InstallError::CurrentExe)?;
    let plan = plan(args, &binary)?;
    let env_state = existing(&plan.env_path, &plan.env, 0o600)?;
    let unit_state = existing(&plan.unit_path, &plan.unit, 0o644)?;
    for (state, path, secret) in [
        (env_state, &plan.env_path, true),
        (unit_state, &plan.unit_path, false),
    ] {
        if state == Existing::Differs && !args.force {
            return Err(InstallError::Differs {
                path: path.clone(),
                secret,
            });
        }
    }
    let env_dir = args.root.join(ENV_DIR);
    create_dirs(&env_dir, 0o700)?;
    let env = apply(env_state, &plan.env_path, &plan.env, 0o600)?;
    if let Some(dir) = plan.unit_path.parent() {
        create_dirs(dir, 0o755)?;
    }
    let unit = apply(unit_state, &plan.unit_path, &plan.unit, 0o644)?;
    let enabled = if args.enable {
        enable(unit.changed() || env.changed())?;
        true
    } else {
        false
    };
    Ok(Installed {
        plan,
        unit,
        env,
        enabled,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    Absent,
    Same,
    SameWrongMode,
    Differs,
}

fn existing(path: &Path, content: &str, mode: u32) -> Result<Existing, InstallError> {
    let io = |action| {
        move |source| InstallError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) => return Err(io("read")(e)),
    };
    if bytes != content.as_bytes() {
        return Ok(Existing::Differs);
    }
    let actual = fs::metadata(path).map_err(io("read"))?.permissions().mode() & 0o7777;
    Ok(if actual == mode {
        Existing::Same
    } else {
        Existing::SameWrongMode
    })
}

fn create_dirs(dir: &Path, mode: u32) -> Result<(), InstallError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|source| InstallError::Io {
            action: "create the directory",
            path: dir.to_owned(),
            source,
        })
}

fn apply(state: Existing, path: &Path, content: &str, mode: u32) -> Result<Written, InstallError> {
    match state {
        Existing::Same => Ok(Written::Unchanged),
        Existing::Absent => write_atomic(path, content, mode).map(|()| Written::Created),
        Existing::Differs => write_atomic(path, content, mode).map(|()| Written::Replaced),
        Existing::SameWrongMode => write_atomic(path, content, mode).map(|()| Written::ModeFixed),
    }
}

/// Writes `content` to `path` through a temporary file created with `mode` from the
/// start (so a secret is never readable by others), then renames it over `path`.
fn write_atomic(path: &Path, content: &str, mode: u32) -> Result<(), InstallError> {
    let io = |action| {
        move |source| InstallError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut tmp = tempfile::Builder::new()
        .prefix(".runner-install-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(io("create a temporary file beside"))?;
    // The umask may have taken bits from `mode` (never added any): set it exactly.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io("set the mode of a temporary file beside"))?;
    tmp.write_all(content.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io("write a temporary file beside"))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .map_err(io("rename into"))?;
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io("sync the directory of"))
}

/// `systemctl daemon-reload`, `enable`, then `restart` when a file changed (a running
/// service keeps its old settings otherwise) or `start`.
fn enable(changed: bool) -> Result<(), InstallError> {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("systemctl").is_file())
    });
    if !found {
        return Err(InstallError::NoSystemctl);
    }
    let start = if changed { "restart" } else { "start" };
    for args in [
        &["daemon-reload"][..],
        &["enable", SERVICE],
        &[start, SERVICE],
    ] {
        let command = args.join(" ");
        let status = Command::new("systemctl")
            .args(args)
            .status()
            .map_err(|source| InstallError::SystemctlSpawn {
                command: command.clone(),
                source,
            })?;
        if !status.success() {
            return Err(InstallError::Systemctl { command, status });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    const KEY: &str = "bencher_runner_0123456789abcdefghijABCDEFGHIJ";

    fn args(extra: &[&str]) -> InstallArgs {
        let mut argv = vec!["runner", "install", "--runner", "r", "--key", KEY];
        argv.extend_from_slice(extra);
        match Cli::try_parse_checked_from(argv).unwrap().command {
            Command::Install(args) => *args,
            _ => panic!("parsed `install` as another command"),
        }
    }

    #[test]
    fn settings_go_to_the_unit_or_the_environment_and_the_key_only_there() {
        let args = args(&[
            "--host",
            "http://127.0.0.1:6610",
            "--drain-timeout",
            "90",
            "--danger-allow-no-sandbox",
            "--aslr",
            "--swappiness",
            "20",
            "--spool-dir",
            "/srv/spool dir",
        ]);
        let plan = plan(&args, Path::new("/usr/local/bin/runner")).unwrap();
        assert!(!plan.unit.contains(KEY));
        assert!(!plan.env_redacted().contains(KEY));
        assert!(plan.env.contains(&format!("BENCHER_RUNNER_KEY=\"{KEY}\"")));
        assert!(plan.env.contains("BENCHER_HOST=\"http://127.0.0.1:6610/\""));
        assert!(plan.env.contains("BENCHER_RUNNER=\"r\""));
        assert!(
            plan.env
                .contains("BENCHER_DANGER_ALLOW_NO_SANDBOX=\"true\"")
        );
        assert!(
            plan.unit.contains(
                "ExecStart=/usr/local/bin/runner up --drain-timeout 90 --spool-dir \"/srv/spool dir\" \
                 --aslr --swappiness 20\n"
            ),
            "{}",
            plan.unit
        );
        assert!(plan.unit.contains("TimeoutStopSec=120\n"));
        // Defaults are not frozen into the unit, except the drain bound.
        assert!(!plan.unit.contains("--poll-timeout"));
    }

    #[test]
    fn every_up_setting_lands_somewhere() {
        // Each `up` flag given: it must appear in the unit or the environment file.
        let args = args(&[
            "--poll-timeout",
            "30",
            "--no-auto-update",
            "--sandbox-log-level",
            "debug",
            "--max-output-size",
            "1MiB",
            "--max-file-count",
            "3",
            "--max-symlinks",
            "4",
            "--grace-period",
            "2",
            "--cache-dir",
            "/c",
            "--max-cache-size",
            "1GiB",
            "--no-tuning",
            "--governor",
            "schedutil",
            "--perf-event-paranoid",
            "-1",
        ]);
        let plan = plan(&args, Path::new("/bin/runner")).unwrap();
        for flag in [
            "--poll-timeout 30",
            "--sandbox-log-level debug",
            "--max-output-size 1MiB",
            "--max-file-count 3",
            "--max-symlinks 4",
            "--grace-period 2",
            "--cache-dir /c",
            "--max-cache-size 1GiB",
            "--no-tuning",
            "--governor schedutil",
            "--perf-event-paranoid -1",
        ] {
            assert!(plan.unit.contains(flag), "{flag}: {}", plan.unit);
        }
        assert!(plan.env.contains("BENCHER_NO_AUTO_UPDATE=\"true\""));
    }

    #[test]
    fn unit_words_are_quoted_for_systemd() {
        assert_eq!(unit_word("/usr/bin/runner"), "/usr/bin/runner");
        assert_eq!(unit_word("a b"), "\"a b\"");
        assert_eq!(unit_word("100%"), "\"100%%\"");
        assert_eq!(unit_word("$HOME"), "\"$$HOME\"");
        assert_eq!(unit_word("a\"b\\"), "\"a\\\"b\\\\\"");
        assert_eq!(unit_word(""), "\"\"");
    }
}
