//! The tuning state file: the host's original values, written before any knob changes
//! so a runner that dies mid-benchmark (kill -9, power loss, self-update) leaves what
//! the next start needs to put them back. IO: the state file and its directory only;
//! every call blocks.
//!
//! The file is replaced atomically (temporary file, fsync, rename, fsync of the
//! directory), so it is either absent or complete.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::knob::{Format, Knob};

/// The file's name in the tuning directory.
pub const STATE_FILE: &str = "state.json";
const FORMAT_VERSION: u32 = 1;

/// One kernel file changed, and the value to put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    pub knob: Knob,
    /// Relative to the tuning root.
    pub path: PathBuf,
    /// As the file takes it (normalized with `format`).
    pub value: String,
    #[serde(with = "format_name")]
    pub format: Format,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    /// The kernel's boot id when written: after a reboot the kernel started from its
    /// own defaults, so there is nothing to put back.
    pub boot_id: Option<String>,
    /// The process that wrote it, for the log.
    pub pid: u32,
    /// In the order applied; restored backwards.
    pub originals: Vec<Original>,
    /// Changes that are not a file's value (a cgroup created), in the order made;
    /// undone backwards, after the originals. Absent in files of older runners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undo: Vec<Undo>,
}

/// How to undo one change that writing an original value back cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Undo {
    /// Remove this runner-owned cgroup (relative to the tuning root) and any below it.
    RemoveCgroup { knob: Knob, path: PathBuf },
    /// Write this value, whatever the file reads (`-cpuset` to a `subtree_control`,
    /// whose read form is not its write form).
    Write {
        knob: Knob,
        path: PathBuf,
        value: String,
    },
}

impl SavedState {
    pub fn new(boot_id: Option<String>, originals: Vec<Original>, undo: Vec<Undo>) -> Self {
        Self {
            version: FORMAT_VERSION,
            boot_id,
            pid: std::process::id(),
            originals,
            undo,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.originals.is_empty() && self.undo.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} the tuning state file {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the tuning state file {} is not readable state", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads the state file in `dir`, if there is one.
pub fn load(dir: &Path) -> Result<Option<SavedState>, StateError> {
    let path = dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                action: "read",
                path,
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Decode { path, source })
}

/// Writes `state` durably: on return it survives a power loss.
pub fn save(dir: &Path, state: &SavedState) -> Result<(), StateError> {
    let path = dir.join(STATE_FILE);
    let io = |action, source| StateError::Io {
        action,
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(state).map_err(|source| StateError::Decode {
        path: path.clone(),
        source,
    })?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".state-")
        .tempfile_in(dir)
        .map_err(|e| io("create", e))?;
    tmp.write_all(&bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io("write", e))?;
    tmp.persist(&path).map_err(|e| io("rename", e.error))?;
    sync_dir(dir).map_err(|e| io("sync the directory of", e))
}

/// Removes the state file durably; absent is fine (restoring is idempotent).
pub fn remove(dir: &Path) -> Result<(), StateError> {
    let path = dir.join(STATE_FILE);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StateError::Io {
                action: "remove",
                path,
                source,
            });
        }
    }
    sync_dir(dir).map_err(|source| StateError::Io {
        action: "sync the directory of",
        path,
        source,
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

mod format_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Format;

    pub fn serialize<S: Serializer>(format: &Format, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match format {
            Format::Plain => "plain",
            Format::Choice => "choice",
            Format::CpuMask => "cpumask",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Format, D::Error> {
        match String::deserialize(d)?.as_str() {
            "plain" => Ok(Format::Plain),
            "choice" => Ok(Format::Choice),
            "cpumask" => Ok(Format::CpuMask),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["plain", "choice", "cpumask"],
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let state = SavedState::new(
            Some("boot".into()),
            vec![Original {
                knob: Knob::TransparentHugepages,
                path: "sys/kernel/mm/transparent_hugepage/enabled".into(),
                value: "madvise".into(),
                format: Format::Choice,
            }],
            vec![Undo::RemoveCgroup {
                knob: Knob::Cpuset,
                path: "sys/fs/cgroup/cpuset/bencher-runner".into(),
            }],
        );
        save(dir.path(), &state).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(state));
        // Only the state file: the temporary file was renamed.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        remove(dir.path()).unwrap();
        remove(dir.path()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), b"{ not json").unwrap();
        assert!(matches!(load(dir.path()), Err(StateError::Decode { .. })));
    }
}
