//! Where the OCI runtimes keep their state and the executor its bundles, how
//! containers are named, and the cleanup of what a crashed runner left behind. IO: the
//! state directory (under the system temp dir), the init binary written there, the
//! runtime's `list`, `kill` and `delete`, unmounts of leftover overlays, scratch
//! filesystems and report tmpfs (see `bundle::remove_leftover`).
//!
//! Layout, under `$TMPDIR/bencher-oci/` (0700):
//! - `bencher-oci-init`: the container init (see `oci-init/main.rs`), written once;
//! - `<runtime>/state/`: the runtime's `--root`, holding only our containers;
//! - `<runtime>/bundles/<container id>/`: one iteration's bundle;
//! - `<runtime>/bundles/bencher-<runner pid>-<random>-scratch/`: one job's scratch
//!   filesystem (see `scratch`), holding its iterations' writable layers.
//!
//! A container id is `bencher-<runner pid>-<random>-<iteration>`: several runners (and
//! the tests' parallel jobs) share the directories, and a leftover is a container or
//! bundle whose runner process is gone. A reused pid hides a leftover until that
//! process ends too; it never makes a live job look like one.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Runtime;
use super::bundle::remove_leftover;

/// The init, built by `build.rs`.
const INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bencher-oci-init"));
const PREFIX: &str = "bencher-";

/// The directories of one runtime.
#[derive(Debug, Clone)]
pub(super) struct Dirs {
    /// The runtime's `--root`.
    pub state: PathBuf,
    pub bundles: PathBuf,
    /// The init binary, shared by every container.
    pub init: PathBuf,
}

/// The base directory: `$TMPDIR/bencher-oci`.
fn base() -> PathBuf {
    std::env::temp_dir().join("bencher-oci")
}

impl Dirs {
    pub(super) fn of(runtime: Runtime) -> Dirs {
        let base = base();
        let dir = base.join(runtime.name());
        Dirs {
            state: dir.join("state"),
            bundles: dir.join("bundles"),
            init: base.join("bencher-oci-init"),
        }
    }

    /// Creates the directories and writes the init binary if it is missing or stale.
    pub(super) fn prepare(&self) -> Result<(), String> {
        let base = base();
        let create = |path: &Path| {
            fs::create_dir_all(path)
                .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o700)))
                .map_err(|e| {
                    format!(
                        "cannot create {} (set TMPDIR to move it): {e}",
                        path.display()
                    )
                })
        };
        create(&base)?;
        create(&self.state)?;
        create(&self.bundles)?;
        if fs::read(&self.init).is_ok_and(|bytes| bytes == INIT) {
            return Ok(());
        }
        // Written aside and renamed: a concurrent runner never executes half a file.
        let write = || -> io::Result<()> {
            let mut temp = tempfile::Builder::new()
                .prefix(".bencher-oci-init-")
                .tempfile_in(&base)?;
            io::Write::write_all(&mut temp, INIT)?;
            temp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o755))?;
            temp.persist(&self.init).map_err(|e| e.error)?;
            Ok(())
        };
        write().map_err(|e| format!("cannot write {}: {e}", self.init.display()))
    }
}

/// A fresh container id for iteration `iteration` of a job of this process.
pub(super) fn container_id(iteration: u32) -> String {
    format!(
        "{PREFIX}{}-{:08x}-{iteration}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A fresh name for a job's scratch directory (see `scratch`), beside the bundles and
/// named like them, so the same leftover rule finds it.
pub(super) fn scratch_name() -> String {
    format!(
        "{PREFIX}{}-{:08x}-scratch",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The runner pid a container id or bundle name carries, if it is one of ours.
fn owner(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Whether `name` belongs to a runner process that is gone.
fn is_leftover(name: &str) -> bool {
    owner(name).is_some_and(|pid| {
        pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
    })
}

/// Kills and deletes every container, and removes every bundle, that a runner which
/// is no longer running left behind; returns what it removed. Blocking.
pub(super) fn clean_leftovers(runtime: Runtime, binary: &Path, dirs: &Dirs) -> Vec<String> {
    let mut removed = Vec::new();
    for id in list(runtime, binary, dirs) {
        if is_leftover(&id) {
            stop(runtime, binary, dirs, &id);
            removed.push(id);
        }
    }
    for entry in fs::read_dir(&dirs.bundles).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_leftover(&name) {
            continue;
        }
        // Unmounted (detached) before the removal, so it cannot reach into the
        // image's layers; the scratch's loop device and image go with its unmount.
        remove_leftover(&entry.path());
        if !removed.contains(&name) {
            removed.push(name);
        }
    }
    removed
}

/// The container ids in our state directory.
pub(super) fn list(runtime: Runtime, binary: &Path, dirs: &Dirs) -> Vec<String> {
    let output = Command::new(binary)
        .args(runtime.global_args(dirs, false))
        .args(["list", "--quiet"])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|id| id.starts_with(PREFIX))
            .map(str::to_owned)
            .collect(),
        Ok(output) => {
            tracing::warn!(
                runtime = runtime.name(),
                stderr = %String::from_utf8_lossy(&output.stderr),
                "cannot list containers"
            );
            Vec::new()
        }
        Err(error) => {
            tracing::warn!(runtime = runtime.name(), %error, "cannot list containers");
            Vec::new()
        }
    }
}

/// `kill <id> KILL`, then `delete --force <id>`: the container's init dies, and with it
/// its PID namespace; the runtime removes its state and cgroups. Errors are ignored:
/// the container may already be gone. Blocking.
pub(super) fn stop(runtime: Runtime, binary: &Path, dirs: &Dirs, id: &str) {
    for args in [vec!["kill", id, "KILL"], vec!["delete", "--force", id]] {
        let _ = Command::new(binary)
            .args(runtime.global_args(dirs, false))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_name_their_runner() {
        let id = container_id(3);
        assert!(id.starts_with(&format!("bencher-{}-", std::process::id())));
        assert!(id.ends_with("-3"));
        assert_eq!(owner(&id), Some(std::process::id()));
        assert!(!is_leftover(&id));
        assert_eq!(owner("other"), None);
        assert_eq!(owner("bencher-x-1-1"), None);
        assert!(!is_leftover("someone-elses"));
        // Pid 2^22 + 1 is above every kernel's pid_max: never a live process.
        assert!(is_leftover("bencher-4194305-0000abcd-1"));
        // A job's scratch directory follows the same rule.
        let scratch = scratch_name();
        assert_eq!(owner(&scratch), Some(std::process::id()));
        assert!(scratch.ends_with("-scratch"));
        assert!(!is_leftover(&scratch));
        assert!(is_leftover("bencher-4194305-0000abcd-scratch"));
    }

    #[test]
    fn the_init_is_embedded() {
        assert!(INIT.starts_with(b"\x7fELF"));
    }
}
