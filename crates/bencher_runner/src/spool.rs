//! The spool: terminal messages (`completed`, `failed`, `canceled`) that the server has
//! not acknowledged yet, one JSON file per job in a directory, so a result survives a
//! lost connection, a crash or a restart and is re-sent before the next `ready`.
//! IO: the spool directory, and nothing else; all calls block (call them off the async
//! runtime).
//!
//! # What holds
//!
//! - A file named `<job uuid>.json` is a complete message: it is written to a temporary
//!   file (`.tmp-…`) in the same directory, fsynced, renamed over its name, and the
//!   directory is fsynced, so a crash leaves either the old state or the new one.
//! - Only `<uuid>.json` files are read back; temporary files are never mistaken for
//!   messages, and the next `open` removes them.
//! - A file that cannot be read as a terminal message (disk damage, a hand edit) is
//!   renamed to `<name>.unreadable` and reported, never sent and never fatal.
//! - One process per spool: `open` takes an exclusive `flock` on `spool.lock`, so two
//!   runners pointed at the same directory cannot re-send or delete each other's
//!   messages.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bencher_types::JobUuid;
use bencher_types::protocol::RunnerMessage;
use rustix::fs::{FlockOperation, flock};

/// The lock file that makes one process own the spool.
const LOCK_FILE: &str = "spool.lock";
/// Prefix of work-in-progress files: never a message.
const TMP_PREFIX: &str = ".tmp-";
const EXTENSION: &str = "json";
/// Suffix given to files that are not readable messages, to keep them for inspection.
const UNREADABLE_SUFFIX: &str = "unreadable";
/// Suffix given to messages the server never acknowledged, kept for an operator.
const PARKED_SUFFIX: &str = "unacknowledged";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot {action} the spool at {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the spool at {} is in use by another runner process; give each runner its own --spool-dir",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("only terminal messages (completed, failed, canceled) are spooled, not {event}")]
    NotTerminal { event: &'static str },
    #[error("cannot encode the message for job {job}")]
    Encode {
        job: JobUuid,
        #[source]
        source: serde_json::Error,
    },
}

/// A message read back from the spool.
#[derive(Debug, Clone, PartialEq)]
pub struct Spooled {
    pub job: JobUuid,
    pub message: RunnerMessage,
}

/// What `load` found besides the messages.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Oldest first: the order they were written in.
    pub messages: Vec<Spooled>,
    /// Files that were not readable messages, renamed aside (`*.unreadable`).
    pub set_aside: Vec<PathBuf>,
}

/// An open spool directory, owned by this process until dropped.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Holds the exclusive `flock`; never read.
    _lock: File,
}

/// The job a terminal message is about; `None` for every other message.
pub fn terminal_job(message: &RunnerMessage) -> Option<JobUuid> {
    match message {
        RunnerMessage::Completed { job, .. }
        | RunnerMessage::Failed { job, .. }
        | RunnerMessage::Canceled { job } => Some(*job),
        RunnerMessage::Ready { .. } | RunnerMessage::Running { .. } | RunnerMessage::Heartbeat => {
            None
        }
    }
}

fn event_name(message: &RunnerMessage) -> &'static str {
    match message {
        RunnerMessage::Ready { .. } => "ready",
        RunnerMessage::Running { .. } => "running",
        RunnerMessage::Heartbeat => "heartbeat",
        RunnerMessage::Completed { .. } => "completed",
        RunnerMessage::Failed { .. } => "failed",
        RunnerMessage::Canceled { .. } => "canceled",
    }
}

impl Spool {
    /// Opens (creating, mode 0700: results may hold benchmark output) the spool at
    /// `dir`, takes it for this process, and removes temporary files that an
    /// interrupted write left behind.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| SpoolError::Io {
                action,
                path,
                source,
            }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open the lock of", &lock_path))?;
        match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(SpoolError::Locked {
                    path: dir.to_owned(),
                });
            }
            Err(errno) => return Err(io("lock", &lock_path)(errno.into())),
        }
        let spool = Spool {
            dir: dir.to_owned(),
            _lock: lock,
        };
        for entry in fs::read_dir(dir).map_err(io("list", dir))? {
            let entry = entry.map_err(io("list", dir))?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let path = entry.path();
                fs::remove_file(&path).map_err(io("remove a temporary file of", &path))?;
            }
        }
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, job: JobUuid) -> PathBuf {
        self.dir.join(format!("{job}.{EXTENSION}"))
    }

    fn io(&self, action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError {
        let path = path.to_owned();
        move |source| SpoolError::Io {
            action,
            path,
            source,
        }
    }

    /// Writes a terminal message durably, replacing an earlier one for the same job.
    /// When this returns `Ok`, the message survives a crash.
    pub fn write(&self, message: &RunnerMessage) -> Result<(), SpoolError> {
        let job = terminal_job(message).ok_or(SpoolError::NotTerminal {
            event: event_name(message),
        })?;
        let json =
            serde_json::to_vec(message).map_err(|source| SpoolError::Encode { job, source })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(self.io("create a temporary file in", &self.dir))?;
        tmp.write_all(&json)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(self.io("write", tmp.path()))?;
        let path = self.path(job);
        // On failure the temporary file deletes itself.
        tmp.persist(&path)
            .map_err(|e| e.error)
            .map_err(self.io("rename into", &path))?;
        self.sync_dir()
    }

    /// Forgets the message of `job` (the server acknowledged it). Removing a message that
    /// is not there is not an error: an acknowledgement may come twice.
    pub fn remove(&self, job: JobUuid) -> Result<(), SpoolError> {
        let path = self.path(job);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(self.io("remove", &path)(error)),
        }
    }

    /// Sets the message of `job` aside as `<job>.json.unacknowledged`: kept for an
    /// operator, never loaded or sent again. Returns where it went.
    pub fn park(&self, job: JobUuid) -> Result<PathBuf, SpoolError> {
        let path = self.path(job);
        let parked = self.dir.join(format!("{job}.{EXTENSION}.{PARKED_SUFFIX}"));
        fs::rename(&path, &parked).map_err(self.io("set aside", &path))?;
        self.sync_dir()?;
        Ok(parked)
    }

    /// The messages waiting for an acknowledgement, oldest first. Files that are not
    /// readable messages are set aside (renamed) and listed, not returned.
    pub fn load(&self) -> Result<Loaded, SpoolError> {
        let mut found: Vec<(SystemTime, String, Spooled)> = Vec::new();
        let mut loaded = Loaded::default();
        for entry in fs::read_dir(&self.dir).map_err(self.io("list", &self.dir))? {
            let entry = entry.map_err(self.io("list", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only `<uuid>.json`: temporary, lock and set-aside files never count.
            let Some(stem) = name.strip_suffix(&format!(".{EXTENSION}")) else {
                continue;
            };
            let Ok(job) = stem.parse::<JobUuid>() else {
                continue;
            };
            let path = entry.path();
            let metadata = entry.metadata().map_err(self.io("read", &path))?;
            if !metadata.is_file() {
                continue;
            }
            let modified = metadata.modified().map_err(self.io("read", &path))?;
            let bytes = fs::read(&path).map_err(self.io("read", &path))?;
            match decode(job, &bytes) {
                Some(message) => found.push((modified, name, Spooled { job, message })),
                None => {
                    let aside = self.dir.join(format!("{name}.{UNREADABLE_SUFFIX}"));
                    fs::rename(&path, &aside).map_err(self.io("set aside", &path))?;
                    loaded.set_aside.push(aside);
                }
            }
        }
        if !loaded.set_aside.is_empty() {
            self.sync_dir()?;
        }
        // Ties (coarse timestamps) are broken by name, so the order is stable.
        found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        loaded.messages = found.into_iter().map(|(_, _, spooled)| spooled).collect();
        Ok(loaded)
    }

    fn sync_dir(&self) -> Result<(), SpoolError> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(self.io("sync", &self.dir))
    }
}

/// What a spool file is, as [`list`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListedKind {
    /// Waits for an acknowledgement; sent on every connection.
    Pending,
    /// The server never acknowledged it; kept for an operator, no longer sent.
    Unacknowledged,
    /// Not a readable message; set aside.
    Unreadable,
}

/// One file of the spool, for `runner status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    /// `None` for an unreadable file whose name is no job's.
    pub job: Option<JobUuid>,
    pub kind: ListedKind,
    /// `completed`, `failed` or `canceled`, when readable.
    pub event: Option<&'static str>,
    pub path: PathBuf,
    pub modified: SystemTime,
}

/// Lists the spool at `dir` without opening it: no lock, nothing renamed or removed,
/// so it is safe while a runner owns the spool. A missing directory is an empty spool
/// (no runner has run with it). Oldest first.
pub fn list(dir: &Path) -> Result<Vec<Listed>, SpoolError> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| SpoolError::Io {
            action,
            path,
            source,
        }
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("list", dir)(e)),
    };
    let mut listed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let (stem, kind) = if let Some(stem) = name.strip_suffix(&format!(".{EXTENSION}")) {
            (stem, ListedKind::Pending)
        } else if let Some(stem) = name.strip_suffix(&format!(".{EXTENSION}.{PARKED_SUFFIX}")) {
            (stem, ListedKind::Unacknowledged)
        } else if let Some(stem) = name.strip_suffix(&format!(".{UNREADABLE_SUFFIX}")) {
            (
                stem.strip_suffix(&format!(".{EXTENSION}")).unwrap_or(stem),
                ListedKind::Unreadable,
            )
        } else {
            continue;
        };
        let job = stem.parse::<JobUuid>().ok();
        // `other.json` and the like: not a job's file.
        if job.is_none() && kind != ListedKind::Unreadable {
            continue;
        }
        let path = entry.path();
        let metadata = match entry.metadata() {
            Ok(metadata) => metadata,
            // Acknowledged and removed between the listing and now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("read", &path)(e)),
        };
        if !metadata.is_file() {
            continue;
        }
        let modified = metadata.modified().map_err(io("read", &path))?;
        let event = match (kind, job) {
            (ListedKind::Unreadable, _) | (_, None) => None,
            (_, Some(job)) => match fs::read(&path) {
                Ok(bytes) => decode(job, &bytes).map(|message| event_name(&message)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read", &path)(e)),
            },
        };
        // A pending file that does not decode is one the runner sets aside on its next
        // start.
        let kind = if kind == ListedKind::Pending && event.is_none() {
            ListedKind::Unreadable
        } else {
            kind
        };
        listed.push(Listed {
            job,
            kind,
            event,
            path,
            modified,
        });
    }
    listed.sort_by(|a, b| (a.modified, &a.path).cmp(&(b.modified, &b.path)));
    Ok(listed)
}

/// A terminal message about `job`, or `None` when the bytes are anything else.
fn decode(job: JobUuid, bytes: &[u8]) -> Option<RunnerMessage> {
    let text = std::str::from_utf8(bytes).ok()?;
    let message = RunnerMessage::parse(text).ok()?;
    (terminal_job(&message) == Some(job)).then_some(message)
}

#[cfg(test)]
mod tests {
    use bencher_types::protocol::IterationResult;

    use super::*;

    fn completed(job: JobUuid) -> RunnerMessage {
        RunnerMessage::Completed {
            job,
            results: vec![IterationResult {
                exit_code: 0,
                stdout: Some("bench 1 ns/iter".into()),
                ..Default::default()
            }],
            output: None,
            environment: None,
        }
    }

    #[test]
    fn list_reads_without_taking_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(list(&dir.path().join("missing")).unwrap(), Vec::new());
        let spool = Spool::open(dir.path()).unwrap();
        let (a, b) = (JobUuid::new_v4(), JobUuid::new_v4());
        spool.write(&completed(a)).unwrap();
        spool.write(&RunnerMessage::Canceled { job: b }).unwrap();
        spool.park(b).unwrap();
        fs::write(dir.path().join("other.json"), b"{}").unwrap();
        let junk = dir.path().join(format!("{}.json", JobUuid::new_v4()));
        fs::write(&junk, b"junk").unwrap();
        // While the spool is open (locked) by this process.
        let mut listed = list(dir.path()).unwrap();
        listed.sort_by_key(|l| l.kind as u8);
        let summary: Vec<_> = listed.iter().map(|l| (l.kind, l.event)).collect();
        assert_eq!(
            summary,
            [
                (ListedKind::Pending, Some("completed")),
                (ListedKind::Unacknowledged, Some("canceled")),
                (ListedKind::Unreadable, None),
            ]
        );
        assert_eq!(listed[0].job, Some(a));
        assert_eq!(listed[1].job, Some(b));
        // Nothing was renamed or removed: only `load` sets the junk aside.
        assert!(junk.exists());
        assert_eq!(spool.load().unwrap().messages.len(), 1);
    }

    #[test]
    fn write_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let (a, b) = (JobUuid::new_v4(), JobUuid::new_v4());
        spool.write(&completed(a)).unwrap();
        // Distinct modification times, so the order is the write order.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let canceled = RunnerMessage::Canceled { job: b };
        spool.write(&canceled).unwrap();
        let loaded = spool.load().unwrap();
        assert_eq!(
            loaded.messages,
            vec![
                Spooled {
                    job: a,
                    message: completed(a)
                },
                Spooled {
                    job: b,
                    message: canceled
                }
            ]
        );
        spool.remove(a).unwrap();
        // Twice is fine: acknowledgements can repeat.
        spool.remove(a).unwrap();
        let loaded = spool.load().unwrap();
        assert_eq!(loaded.messages.len(), 1);
        assert_eq!(loaded.messages[0].job, b);
    }

    #[test]
    fn survives_reopen_and_replaces_per_job() {
        let dir = tempfile::tempdir().unwrap();
        let job = JobUuid::new_v4();
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool
                .write(&RunnerMessage::Failed {
                    job,
                    results: vec![],
                    error: "first".into(),
                    output: None,
                })
                .unwrap();
            spool.write(&completed(job)).unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        let loaded = spool.load().unwrap();
        assert_eq!(
            loaded.messages,
            vec![Spooled {
                job,
                message: completed(job)
            }]
        );
    }

    #[test]
    fn parked_messages_are_kept_but_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let job = JobUuid::new_v4();
        spool.write(&completed(job)).unwrap();
        let parked = spool.park(job).unwrap();
        assert!(parked.is_file());
        assert!(spool.load().unwrap().messages.is_empty());
    }

    #[test]
    fn refuses_non_terminal_messages() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert!(matches!(
            spool.write(&RunnerMessage::Heartbeat),
            Err(SpoolError::NotTerminal { event: "heartbeat" })
        ));
        assert!(spool.load().unwrap().messages.is_empty());
    }

    #[test]
    fn temporary_files_are_never_messages() {
        let dir = tempfile::tempdir().unwrap();
        let job = JobUuid::new_v4();
        let valid = serde_json::to_vec(&completed(job)).unwrap();
        // What a crash between create and rename leaves: a complete temporary file, and
        // a truncated one. Neither is a message.
        fs::write(dir.path().join(format!("{TMP_PREFIX}{job}")), &valid).unwrap();
        fs::write(dir.path().join(format!("{TMP_PREFIX}abc")), &valid[..10]).unwrap();
        {
            let spool = Spool::open(dir.path()).unwrap();
            assert!(spool.load().unwrap().messages.is_empty());
        }
        // `open` cleared them.
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![LOCK_FILE.to_owned()]);
    }

    #[test]
    fn temporary_files_of_a_live_writer_are_skipped_by_load() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let job = JobUuid::new_v4();
        let valid = serde_json::to_vec(&completed(job)).unwrap();
        fs::write(dir.path().join(format!("{TMP_PREFIX}{job}.json")), &valid).unwrap();
        assert!(spool.load().unwrap().messages.is_empty());
    }

    #[test]
    fn unreadable_files_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let (good, torn, wrong_job, not_terminal) = (
            JobUuid::new_v4(),
            JobUuid::new_v4(),
            JobUuid::new_v4(),
            JobUuid::new_v4(),
        );
        spool.write(&completed(good)).unwrap();
        let valid = serde_json::to_vec(&completed(torn)).unwrap();
        fs::write(spool.path(torn), &valid[..valid.len() / 2]).unwrap();
        // A message whose job is not the one its name says: never sent as that job.
        fs::write(
            spool.path(wrong_job),
            serde_json::to_vec(&completed(good)).unwrap(),
        )
        .unwrap();
        fs::write(spool.path(not_terminal), br#"{"event":"heartbeat"}"#).unwrap();
        // Names that are not `<uuid>.json` are not ours to judge.
        fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
        fs::write(dir.path().join("not-a-uuid.json"), b"{}").unwrap();

        let loaded = spool.load().unwrap();
        assert_eq!(loaded.messages.len(), 1);
        assert_eq!(loaded.messages[0].job, good);
        let mut aside: Vec<String> = loaded
            .set_aside
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        aside.sort();
        let mut expected = vec![
            format!("{torn}.json.unreadable"),
            format!("{wrong_job}.json.unreadable"),
            format!("{not_terminal}.json.unreadable"),
        ];
        expected.sort();
        assert_eq!(aside, expected);
        // Set aside once; the next load finds only the good one.
        let again = spool.load().unwrap();
        assert_eq!(again.messages.len(), 1);
        assert!(again.set_aside.is_empty());
    }

    #[test]
    fn one_process_per_spool() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(dir.path()).unwrap();
        // flock is per open file description, so a second open in this process
        // conflicts just like another process would.
        assert!(matches!(
            Spool::open(dir.path()),
            Err(SpoolError::Locked { .. })
        ));
    }

    #[test]
    fn directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/spool");
        let _spool = Spool::open(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
