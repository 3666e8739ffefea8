//! The local filesystem backend: blobs as files under their content address, upload
//! sessions as files appended to. The filesystem IO happens here, on tokio's blocking
//! pool (std::fs), never on the async workers for data.
//!
//! Crash safety: data is only ever written under `uploads/`; a blob appears at its
//! address by `rename` from there, after the data was verified and fsynced, and the
//! directory is fsynced after. Every write goes to the page cache without a per-chunk
//! fsync; the one fsync per blob happens just before the rename. A failed or dropped
//! append is truncated away; only a killed process can leave part of an append in a
//! session, which its size then reports (a client resumes from there, and the digest
//! check at the end catches anything else).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bencher_oci::digest::{Digest, DigestAlgorithm, DigestHasher};
use bytes::{Bytes, BytesMut};
use futures::Stream;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::task::{JoinError, JoinHandle};
use uuid::Uuid;

use super::{BlobError, BlobStream, Intake, byte_range, check_digest};

/// Writes go to the blocking pool in batches of this size: large enough that the cost
/// of a hand-off is noise, small enough to overlap with receiving and hashing.
const WRITE_BATCH: usize = 1 << 20;
/// Reads for GET and re-hashing: one chunk in flight ahead of the consumer.
const READ_CHUNK: usize = 1 << 20;

pub(super) struct LocalBackend {
    root: PathBuf,
    blobs: PathBuf,
    uploads: PathBuf,
}

impl LocalBackend {
    pub(super) async fn open(root: &Path) -> Result<Self, BlobError> {
        let backend = Self {
            root: root.to_owned(),
            blobs: root.join("blobs"),
            uploads: root.join("uploads"),
        };
        let (root, blobs, uploads) = (
            backend.root.clone(),
            backend.blobs.clone(),
            backend.uploads.clone(),
        );
        blocking(move || {
            // The algorithm directories exist from the start, so publishing a blob only
            // ever creates a fan-out directory and fsyncs one parent.
            for algorithm in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha512] {
                let dir = blobs.join(algorithm.as_str());
                fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
            }
            fs::create_dir_all(&uploads).map_err(|e| io_error("create", &uploads, e))?;
            sync_dir(&blobs)?;
            sync_dir(&root)
        })
        .await?;
        Ok(backend)
    }

    pub(super) fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn session_dir(&self, session: Uuid) -> PathBuf {
        self.uploads.join(session.to_string())
    }

    pub(super) async fn size(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        let path = self.blob_path(digest);
        blocking(move || match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("inspect", &path, e)),
        })
        .await
    }

    pub(super) async fn get(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BlobStream>, BlobError> {
        let path = self.blob_path(digest);
        let opened = blocking({
            let path = path.clone();
            move || {
                let mut file = match File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io_error("open", &path, e)),
                };
                let meta = file.metadata().map_err(|e| io_error("inspect", &path, e))?;
                if !meta.is_file() {
                    return Ok(None);
                }
                let size = meta.len();
                let (start, len) = byte_range(range, size)?;
                if start > 0 {
                    file.seek(SeekFrom::Start(start))
                        .map_err(|e| io_error("seek in", &path, e))?;
                }
                Ok(Some((file, size, len)))
            }
        })
        .await?;
        Ok(opened.map(|(file, size, len)| BlobStream {
            size,
            stream: read_stream(file, len, path),
        }))
    }

    pub(super) async fn put<S, E>(
        &self,
        expected: &Digest,
        mut intake: Intake<S>,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // A session directory of its own: if this process dies mid-way, what is left
        // is a stale session that the sweeper removes.
        let dir = self.session_dir(Uuid::new_v4());
        let data = dir.join("data");
        let file = blocking({
            let (dir, data) = (dir.clone(), data.clone());
            move || {
                fs::create_dir(&dir).map_err(|e| io_error("create", &dir, e))?;
                File::create_new(&data).map_err(|e| io_error("create", &data, e))
            }
        })
        .await?;
        let shared = SharedFile::new(file);
        // Removes the session directory on every path, also when this future is dropped.
        let cleanup = Rollback::new(shared.clone(), Undo::RemoveSession(dir));
        let mut writer = PipelinedWriter::new(shared.clone(), data.clone());
        let result = async {
            while let Some(chunk) = intake.next().await? {
                writer.write(chunk).await?;
            }
            writer.finish().await?;
            let size = intake.total();
            intake.verify(expected)?;
            let dest = self.blob_path(expected);
            blocking(move || publish(&shared, &data, &dest)).await?;
            Ok(size)
        }
        .await;
        cleanup.run().await;
        result
    }

    pub(super) async fn delete(&self, digest: &Digest) -> Result<bool, BlobError> {
        let path = self.blob_path(digest);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("remove", &path, e)),
        })
        .await
    }

    pub(super) async fn list(&self) -> Result<Vec<(Digest, u64)>, BlobError> {
        let blobs = self.blobs.clone();
        blocking(move || {
            let mut found = Vec::new();
            for algorithm in read_dir_names(&blobs)? {
                let algorithm_dir = blobs.join(&algorithm);
                if !algorithm_dir.is_dir() {
                    continue;
                }
                for fanout in read_dir_names(&algorithm_dir)? {
                    let fanout_dir = algorithm_dir.join(&fanout);
                    if !fanout_dir.is_dir() {
                        continue;
                    }
                    for name in read_dir_names(&fanout_dir)? {
                        // Anything that is not a blob under its own address (a stray
                        // file an operator left) is not a blob.
                        let Ok(digest) = format!("{algorithm}:{name}").parse::<Digest>() else {
                            continue;
                        };
                        if digest.hex()[..2] != fanout {
                            continue;
                        }
                        let path = fanout_dir.join(&name);
                        match fs::metadata(&path) {
                            Ok(meta) if meta.is_file() => found.push((digest, meta.len())),
                            Ok(_) => {}
                            // Deleted while listing.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io_error("inspect", &path, e)),
                        }
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    pub(super) async fn upload_start(&self, session: Uuid) -> Result<(), BlobError> {
        let dir = self.session_dir(session);
        blocking(move || {
            fs::create_dir(&dir).map_err(|e| io_error("create", &dir, e))?;
            let data = dir.join("data");
            File::create_new(&data).map_err(|e| io_error("create", &data, e))?;
            Ok(())
        })
        .await
    }

    pub(super) async fn upload_size(&self, session: Uuid) -> Result<Option<u64>, BlobError> {
        let data = self.session_dir(session).join("data");
        blocking(move || match fs::metadata(&data) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("inspect", &data, e)),
        })
        .await
    }

    /// Appends the body to the session's file; on any failure, and when dropped half
    /// way, truncates it back so the session is as before. Returns the new size and the
    /// intake's hasher.
    pub(super) async fn upload_append<S, E>(
        &self,
        session: Uuid,
        mut intake: Intake<S>,
    ) -> Result<(u64, Option<DigestHasher>), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let data = self.session_dir(session).join("data");
        let start = intake.total();
        let file = blocking({
            let data = data.clone();
            move || {
                let file = match OpenOptions::new().append(true).open(&data) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(BlobError::UnknownSession(session));
                    }
                    Err(e) => return Err(io_error("open", &data, e)),
                };
                let len = file
                    .metadata()
                    .map_err(|e| io_error("inspect", &data, e))?
                    .len();
                if len != start {
                    return Err(BlobError::OffsetMismatch {
                        expected: len,
                        actual: start,
                    });
                }
                Ok(file)
            }
        })
        .await?;
        let shared = SharedFile::new(file);
        let rollback = Rollback::new(
            shared.clone(),
            Undo::Truncate {
                path: data.clone(),
                len: start,
            },
        );
        let mut writer = PipelinedWriter::new(shared, data);
        let result = async {
            while let Some(chunk) = intake.next().await? {
                writer.write(chunk).await?;
            }
            writer.finish().await
        }
        .await;
        match result {
            Ok(()) => {
                rollback.disarm();
                Ok((intake.total(), intake.into_hasher()))
            }
            Err(e) => {
                rollback.run().await;
                Err(e)
            }
        }
    }

    /// Verifies the session's data (with the cached digest, or by re-reading it) and
    /// publishes it; removes the session unless storage itself failed.
    pub(super) async fn upload_finish(
        &self,
        session: Uuid,
        expected: &Digest,
        cached: Option<Digest>,
    ) -> Result<u64, BlobError> {
        let dir = self.session_dir(session);
        let dest = self.blob_path(expected);
        let expected = expected.clone();
        blocking(move || {
            let data = dir.join("data");
            let file = match File::open(&data) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(BlobError::UnknownSession(session));
                }
                Err(e) => return Err(io_error("open", &data, e)),
            };
            let size = file
                .metadata()
                .map_err(|e| io_error("inspect", &data, e))?
                .len();
            let actual = match cached {
                Some(digest) => digest,
                None => hash_file(&file, &data, expected.algorithm())?,
            };
            if let Err(mismatch) = check_digest(&expected, actual) {
                remove_session(&dir)?;
                return Err(mismatch);
            }
            publish(&SharedFile::new(file), &data, &dest)?;
            remove_session(&dir)?;
            Ok(size)
        })
        .await
    }

    pub(super) async fn upload_cancel(&self, session: Uuid) -> Result<(), BlobError> {
        let dir = self.session_dir(session);
        blocking(move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &dir, e)),
        })
        .await
    }

    pub(super) async fn stale_uploads(&self, age: Duration) -> Result<Vec<Uuid>, BlobError> {
        let uploads = self.uploads.clone();
        blocking(move || {
            let now = SystemTime::now();
            let mut stale = Vec::new();
            for name in read_dir_names(&uploads)? {
                let Ok(session) = name.parse::<Uuid>() else {
                    continue;
                };
                let dir = uploads.join(&name);
                // The data file's mtime is the last append; a directory without one
                // (a crash right after creating it) counts from its own mtime.
                let modified = match fs::metadata(dir.join("data")) {
                    Ok(meta) => meta.modified(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        match fs::metadata(&dir) {
                            Ok(meta) => meta.modified(),
                            // Finished or cancelled while listing.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
                .map_err(|e| io_error("inspect", &dir, e))?;
                // A timestamp in the future (clock steps) has idled for zero time.
                let idle = now.duration_since(modified).unwrap_or_default();
                if idle >= age {
                    stale.push(session);
                }
            }
            Ok(stale)
        })
        .await
    }
}

/// A file that a write on the blocking pool and a rollback may both reach: the rollback
/// takes the lock, marks the file cancelled and undoes; a write that starts later sees
/// the mark and does nothing, so nothing lands after a truncation.
#[derive(Clone)]
struct SharedFile(Arc<Mutex<FileState>>);

struct FileState {
    file: File,
    cancelled: bool,
}

impl SharedFile {
    fn new(file: File) -> Self {
        Self(Arc::new(Mutex::new(FileState {
            file,
            cancelled: false,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, FileState> {
        // A panic in a write leaves the file as any failed write would.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes a body to a file in batches, each on the blocking pool while the next batch
/// arrives: receiving and hashing overlap with writing.
struct PipelinedWriter {
    file: SharedFile,
    path: PathBuf,
    batch: BytesMut,
    in_flight: Option<JoinHandle<io::Result<()>>>,
}

impl PipelinedWriter {
    fn new(file: SharedFile, path: PathBuf) -> Self {
        Self {
            file,
            path,
            batch: BytesMut::new(),
            in_flight: None,
        }
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        if self.batch.is_empty() && chunk.len() >= WRITE_BATCH {
            return self.submit(chunk).await;
        }
        if self.batch.is_empty() {
            self.batch.reserve(WRITE_BATCH);
        }
        self.batch.extend_from_slice(&chunk);
        if self.batch.len() >= WRITE_BATCH {
            let batch = self.batch.split().freeze();
            self.submit(batch).await?;
        }
        Ok(())
    }

    /// Writes what is buffered and waits until every write is done.
    async fn finish(&mut self) -> Result<(), BlobError> {
        if !self.batch.is_empty() {
            let batch = self.batch.split().freeze();
            self.submit(batch).await?;
        }
        self.wait().await
    }

    async fn submit(&mut self, batch: Bytes) -> Result<(), BlobError> {
        self.wait().await?;
        let file = self.file.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let mut state = file.lock();
            if state.cancelled {
                return Ok(());
            }
            state.file.write_all(&batch)
        }));
        Ok(())
    }

    async fn wait(&mut self) -> Result<(), BlobError> {
        if let Some(write) = self.in_flight.take() {
            write
                .await
                .map_err(join_error)?
                .map_err(|e| io_error("write", &self.path, e))?;
        }
        Ok(())
    }
}

/// What to undo when a write did not complete.
enum Undo {
    /// Cut an upload session's file back to its size before the append.
    Truncate { path: PathBuf, len: u64 },
    /// Remove a session directory with everything in it.
    RemoveSession(PathBuf),
}

/// Undoes a write: explicitly with `run`, or when dropped armed (the request future was
/// dropped half way). Dropping happens before the session lock is released, so the next
/// request on the session sees the undone state.
struct Rollback {
    file: SharedFile,
    undo: Option<Undo>,
}

impl Rollback {
    fn new(file: SharedFile, undo: Undo) -> Self {
        Self {
            file,
            undo: Some(undo),
        }
    }

    fn disarm(mut self) {
        self.undo = None;
    }

    async fn run(mut self) {
        if let Some(undo) = self.undo.take() {
            let file = self.file.clone();
            // Waiting matters: the caller reports the failure only after the undo. A
            // failed join only means the undo panicked, which `undo` logs cannot.
            let _ = tokio::task::spawn_blocking(move || apply_undo(&file, undo)).await;
        }
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        // Only a dropped request gets here armed. It runs inline because it must finish
        // before the session lock (dropped after this) lets the next append in: one
        // ftruncate or one small directory removal.
        if let Some(undo) = self.undo.take() {
            apply_undo(&self.file, undo);
        }
    }
}

fn apply_undo(file: &SharedFile, undo: Undo) {
    let mut state = file.lock();
    state.cancelled = true;
    match undo {
        Undo::Truncate { path, len } => {
            if let Err(e) = state.file.set_len(len) {
                // The session keeps the extra bytes; its size says so, and the digest
                // check at the end catches a client that does not notice.
                tracing::warn!(path = %path.display(), error = %e, "cannot roll back a failed upload append");
            }
        }
        Undo::RemoveSession(dir) => {
            drop(state);
            if let Err(e) = fs::remove_dir_all(&dir)
                && e.kind() != io::ErrorKind::NotFound
            {
                // Left for the stale-session sweeper.
                tracing::warn!(path = %dir.display(), error = %e, "cannot remove a temporary upload");
            }
        }
    }
}

/// Makes verified data visible at `dest`: fsync the data, rename it into place (unless
/// the blob is already there: same content, the old file is kept), fsync the directory.
fn publish(file: &SharedFile, data: &Path, dest: &Path) -> Result<(), BlobError> {
    file.lock()
        .file
        .sync_all()
        .map_err(|e| io_error("sync", data, e))?;
    let fanout = dest
        .parent()
        .ok_or_else(|| io_error("publish", dest, io::ErrorKind::InvalidInput.into()))?;
    if !fanout.is_dir() {
        fs::create_dir_all(fanout).map_err(|e| io_error("create", fanout, e))?;
        if let Some(algorithm_dir) = fanout.parent() {
            sync_dir(algorithm_dir)?;
        }
    }
    match fs::symlink_metadata(dest) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("inspect", dest, e)),
    }
    fs::rename(data, dest).map_err(|e| io_error("rename into place", dest, e))?;
    sync_dir(fanout)
}

fn remove_session(dir: &Path) -> Result<(), BlobError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove", dir, e)),
    }
}

fn hash_file(
    mut file: &File,
    path: &Path,
    algorithm: DigestAlgorithm,
) -> Result<Digest, BlobError> {
    let mut hasher = DigestHasher::new(algorithm);
    let mut buf = vec![0; READ_CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hasher.finish()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("read", path, e)),
        }
    }
}

/// `len` bytes of `file` from its current position, in large chunks read on the
/// blocking pool, the next one while the consumer sends the last.
fn read_stream(
    file: File,
    len: u64,
    path: PathBuf,
) -> BoxStream<'static, Result<Bytes, BlobError>> {
    struct State {
        next: Option<JoinHandle<io::Result<(File, Bytes)>>>,
        remaining: u64,
        path: PathBuf,
    }
    let first = (len > 0).then(|| read_chunk(file, chunk_len(len)));
    let state = State {
        next: first,
        remaining: len,
        path,
    };
    stream::unfold(state, |mut state| async move {
        let read = state.next.take()?;
        let item = match read.await {
            Ok(Ok((file, bytes))) => {
                state.remaining -= bytes.len() as u64;
                if state.remaining > 0 {
                    state.next = Some(read_chunk(file, chunk_len(state.remaining)));
                }
                Ok(bytes)
            }
            Ok(Err(e)) => Err(io_error("read", &state.path, e)),
            Err(e) => Err(join_error(e)),
        };
        Some((item, state))
    })
    .boxed()
}

fn chunk_len(remaining: u64) -> usize {
    usize::try_from(remaining).map_or(READ_CHUNK, |r| r.min(READ_CHUNK))
}

fn read_chunk(mut file: File, len: usize) -> JoinHandle<io::Result<(File, Bytes)>> {
    tokio::task::spawn_blocking(move || {
        // Reading into spare capacity spares zeroing a buffer that is overwritten anyway.
        let mut buf = Vec::with_capacity(len);
        (&mut file).take(len as u64).read_to_end(&mut buf)?;
        if buf.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the blob file is shorter than its size",
            ));
        }
        Ok((file, Bytes::from(buf)))
    })
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, BlobError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        // Names we create are ASCII; anything else is not ours.
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Makes the entries of `dir` (a rename or a new file in it) durable.
fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync", dir, e))
}

async fn blocking<T, F>(f: F) -> Result<T, BlobError>
where
    F: FnOnce() -> Result<T, BlobError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(join_error)?
}

fn join_error(e: JoinError) -> BlobError {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    BlobError::Io(io::Error::other(e))
}

/// An IO error with the operation and the path it failed on; wrapped in `io::Error` so
/// the kind stays visible to callers of `BlobError::Io`.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}", path.display())]
struct PathError {
    op: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> BlobError {
    let kind = source.kind();
    BlobError::Io(io::Error::new(
        kind,
        PathError {
            op,
            path: path.to_owned(),
            source,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_name_the_operation_and_path() {
        let err = io_error(
            "open",
            Path::new("/x/y"),
            io::ErrorKind::PermissionDenied.into(),
        );
        let BlobError::Io(io) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(io.to_string(), "cannot open /x/y");
    }

    #[test]
    fn chunk_lengths_are_capped() {
        assert_eq!(chunk_len(5), 5);
        assert_eq!(chunk_len(u64::MAX), READ_CHUNK);
    }
}
