//! Applies one layer's entries to the root with the OCI changeset rules: whiteouts and
//! opaque whiteouts that spare this layer's own entries, replacement of a path by an
//! entry of another type, and directory metadata set once the layer is complete.
//! IO: filesystem calls on fds from `root` (never a path resolved by the process) and
//! reads of the layer stream through `archive`.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{
    AtFlags, Mode, OFlags, Timespec, Timestamps, chownat, fchmod, fchown, fstat, futimens, linkat,
    mkdirat, symlinkat, utimensat,
};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use super::LayerStats;
use super::archive::{Archive, Budget, Entry, Kind, Mtime, display_path};
use super::error::LayerError;
use super::path::{components, join};
use super::root::{self, DirHandle};

/// The whiteout prefix and the opaque marker of the OCI image spec.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// `.wh..wh.` names other than the opaque marker are aufs bookkeeping (`.wh..wh.plnk`,
/// `.wh..wh.orph`): skipped, with anything below them, as Docker does.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// Copy buffer size for file data.
const COPY_CHUNK: usize = 128 * 1024;

/// A name in a directory, identified by the directory's `(dev, ino)`: the identity of
/// something this layer created or wrote through. Keyed by inode rather than by path so
/// that an entry written through a symlinked directory is recognised where it landed.
type Touched = (u64, u64, Box<[u8]>);

/// Directory metadata applied when the layer ends, so that creating children does not
/// move the mtime afterwards and a read-only mode does not block them.
struct DeferredDir {
    /// Cleaned path from the root, for re-resolution.
    path: Vec<u8>,
    /// As the archive spells it, for messages.
    raw: Vec<u8>,
    dev: u64,
    ino: u64,
    mode: u32,
    mtime: Mtime,
}

/// Applies the entries of `reader` and returns what it did.
pub(super) fn apply_layer<R: Read>(
    root: &Arc<DirHandle>,
    chown: bool,
    budget: &mut Budget,
    reader: R,
) -> Result<LayerStats, LayerError> {
    let mut archive = Archive::new(reader);
    let mut layer = Layer {
        root: Arc::clone(root),
        chown,
        stats: LayerStats::default(),
        touched: HashSet::new(),
        deferred: Vec::new(),
        parent_cache: None,
        buf: vec![0; COPY_CHUNK],
    };
    while let Some(entry) = archive.next_entry(budget)? {
        layer.apply(&entry, &mut archive)?;
    }
    layer.finish_dirs()?;
    archive.finish(budget)?;
    Ok(layer.stats)
}

struct Layer {
    root: Arc<DirHandle>,
    chown: bool,
    stats: LayerStats,
    touched: HashSet<Touched>,
    deferred: Vec<DeferredDir>,
    /// The last resolved parent directory and its cleaned path. Only a removal can
    /// change what an existing path resolves to, so every removal clears it.
    parent_cache: Option<(Vec<u8>, Arc<DirHandle>)>,
    buf: Vec<u8>,
}

/// Whether resolving a parent path creates missing directories (entries) or reports
/// that there is nothing there (whiteouts, hard link targets).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Missing {
    Create,
    Absent,
}

impl Layer {
    fn apply<R: Read>(
        &mut self,
        entry: &Entry,
        archive: &mut Archive<R>,
    ) -> Result<(), LayerError> {
        let comps = components(&entry.path).map_err(|reason| invalid(entry, reason))?;
        let Some((name, parents)) = comps.split_last() else {
            // The root itself (`./`): the caller owns the root directory's mode and
            // owner, so its metadata is left alone.
            return match entry.kind {
                Kind::Dir => Ok(()),
                _ => Err(invalid(entry, "the path names the root directory")),
            };
        };
        let aufs_meta = |c: &&[u8]| c.starts_with(AUFS_META_PREFIX);
        if parents.iter().any(aufs_meta) || (aufs_meta(name) && *name != OPAQUE_MARKER) {
            self.stats.skipped_unknown += 1;
            return Ok(());
        }
        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(entry, parents, target);
        }
        if parents.iter().any(|c| c.starts_with(WHITEOUT_PREFIX)) {
            return Err(invalid(
                entry,
                "a directory in the path uses the reserved whiteout prefix .wh.",
            ));
        }

        match entry.kind {
            Kind::Special => self.stats.skipped_special += 1,
            Kind::Unknown(_) => self.stats.skipped_unknown += 1,
            Kind::Dir => self.dir(entry, parents, name)?,
            Kind::File => self.file(entry, parents, name, archive)?,
            Kind::Symlink => self.symlink(entry, parents, name)?,
            Kind::HardLink => self.hard_link(entry, parents, name)?,
        }
        Ok(())
    }

    /// `.wh.<name>` deletes `<name>` from the lower layers; `.wh..wh..opq` empties the
    /// directory of everything this layer did not write. Neither is materialized, and
    /// neither deletes anything this layer wrote, whatever the order in the archive.
    /// Like Docker, the name decides, whatever the entry's type.
    fn whiteout(
        &mut self,
        entry: &Entry,
        parents: &[&[u8]],
        target: &[u8],
    ) -> Result<(), LayerError> {
        if target == b".wh..opq" {
            self.stats.opaque_whiteouts += 1;
            // Nothing to hide if the directory does not exist (or is not a directory).
            let Some(dir) = self.resolve(entry, parents, Missing::Absent, true)? else {
                return Ok(());
            };
            self.parent_cache = None;
            return self
                .empty_lower(&dir)
                .map_err(fs_error(entry, "apply the opaque whiteout"));
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(invalid(entry, "a whiteout without a valid name to delete"));
        }
        self.stats.whiteouts += 1;
        let Some(dir) = self.resolve(entry, parents, Missing::Absent, true)? else {
            return Ok(());
        };
        if self.touched.contains(&key(&dir, target)) {
            // Written by this layer: a whiteout only applies to lower layers.
            return Ok(());
        }
        if root::remove_at(dir.fd(), target).map_err(fs_error(entry, "apply the whiteout"))? {
            self.parent_cache = None;
        }
        Ok(())
    }

    fn dir(&mut self, entry: &Entry, parents: &[&[u8]], name: &[u8]) -> Result<(), LayerError> {
        let parent = self.resolve_create(entry, parents)?;
        let existing = root::lstat_at(parent.fd(), name)
            .map_err(fs_error(entry, "inspect the existing path"))?;
        match existing {
            // A directory over a directory merges with it.
            Some(stat) if root::is_dir(&stat) => {}
            other => {
                if other.is_some() {
                    self.remove_existing(entry, &parent, name)?;
                }
                // Writable for us until the deferred mode is applied.
                mkdirat(parent.fd(), name, Mode::from_raw_mode(0o700))
                    .map_err(|e| fs_error(entry, "create the directory")(e.into()))?;
            }
        }
        self.touch(&parent, name);
        let fd = root::open_child_dir(parent.fd(), name)
            .map_err(fs_error(entry, "open the directory"))?;
        self.set_owner_fd(entry, &fd)?;
        let (dev, ino) = fstat(&fd)
            .map(|stat| root::identity(&stat))
            .map_err(|e| fs_error(entry, "inspect the directory")(e.into()))?;
        let mut path = join(parents);
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        self.deferred.push(DeferredDir {
            path,
            raw: entry.path.clone(),
            dev,
            ino,
            mode: entry.mode,
            mtime: entry.mtime,
        });
        self.stats.dirs += 1;
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &Entry,
        parents: &[&[u8]],
        name: &[u8],
        archive: &mut Archive<R>,
    ) -> Result<(), LayerError> {
        let parent = self.resolve_create(entry, parents)?;
        // Replace, never write in place: the old inode may be hard linked elsewhere.
        self.remove_existing(entry, &parent, name)?;
        let mut file =
            root::create_file(parent.fd(), name).map_err(fs_error(entry, "create the file"))?;
        self.touch(&parent, name);

        let mut written: u64 = 0;
        loop {
            let n = archive.read_data(&mut self.buf)?;
            if n == 0 {
                break;
            }
            written = written.saturating_add(n as u64);
            if written > entry.size {
                // The archive bounds the data by the declared size, which the budget
                // already covers; this guards that bound, should it ever break.
                return Err(LayerError::InvalidEntry {
                    path: entry.display_path(),
                    reason: format!("more data than the declared {} bytes", entry.size),
                });
            }
            file.write_all(&self.buf[..n])
                .map_err(fs_error(entry, "write the file"))?;
        }
        if written < entry.size {
            return Err(LayerError::Truncated {
                path: entry.display_path(),
                declared: entry.size,
                read: written,
            });
        }

        // Owner before mode: chown clears setuid and setgid.
        self.set_owner_fd(entry, &file)?;
        fchmod(&file, Mode::from_raw_mode(entry.mode))
            .map_err(|e| fs_error(entry, "set the file mode")(e.into()))?;
        futimens(&file, &timestamps(entry.mtime))
            .map_err(|e| fs_error(entry, "set the file mtime")(e.into()))?;
        self.stats.files += 1;
        self.stats.bytes += written;
        Ok(())
    }

    fn symlink(&mut self, entry: &Entry, parents: &[&[u8]], name: &[u8]) -> Result<(), LayerError> {
        let target = link_target(entry)?;
        let (uid, gid) = owner(entry)?;
        let parent = self.resolve_create(entry, parents)?;
        self.remove_existing(entry, &parent, name)?;
        // The target is stored verbatim: it is only ever followed by this module (with
        // RESOLVE_IN_ROOT) or inside the sandbox, where the root is `/`.
        symlinkat(target, parent.fd(), name)
            .map_err(|e| fs_error(entry, "create the symlink")(e.into()))?;
        self.touch(&parent, name);
        if self.chown {
            chownat(
                parent.fd(),
                name,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| fs_error(entry, "set the symlink owner")(e.into()))?;
        }
        utimensat(
            parent.fd(),
            name,
            &timestamps(entry.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| fs_error(entry, "set the symlink mtime")(e.into()))?;
        self.stats.symlinks += 1;
        Ok(())
    }

    /// A hard link to a path resolved inside the root like any other; its final
    /// component is not followed, so linking to a symlink links the symlink.
    fn hard_link(
        &mut self,
        entry: &Entry,
        parents: &[&[u8]],
        name: &[u8],
    ) -> Result<(), LayerError> {
        let target = link_target(entry)?;
        let target_comps = components(target).map_err(|reason| invalid(entry, reason))?;
        let Some((target_name, target_parents)) = target_comps.split_last() else {
            return Err(invalid(entry, "a hard link to the root directory"));
        };
        let missing =
            || fs_error(entry, "find the hard link target")(io::Error::from(Errno::NOENT));
        let target_dir = self
            .resolve(entry, target_parents, Missing::Absent, false)?
            .ok_or_else(missing)?;
        root::lstat_at(target_dir.fd(), target_name)
            .map_err(fs_error(entry, "find the hard link target"))?
            .ok_or_else(missing)?;
        let parent = self.resolve_create(entry, parents)?;
        if (parent.dev, parent.ino, name) == (target_dir.dev, target_dir.ino, *target_name) {
            // A link to itself: the existing path already is what it names.
            self.touch(&parent, name);
            self.stats.hardlinks += 1;
            return Ok(());
        }
        self.remove_existing(entry, &parent, name)?;
        linkat(
            target_dir.fd(),
            *target_name,
            parent.fd(),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| fs_error(entry, "create the hard link")(e.into()))?;
        self.touch(&parent, name);
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// Removes whatever is at `name` before an entry of any type but a merging
    /// directory takes its place.
    fn remove_existing(
        &mut self,
        entry: &Entry,
        parent: &DirHandle,
        name: &[u8],
    ) -> Result<(), LayerError> {
        if root::remove_at(parent.fd(), name)
            .map_err(fs_error(entry, "replace the existing path"))?
        {
            self.parent_cache = None;
        }
        Ok(())
    }

    fn resolve_create(
        &mut self,
        entry: &Entry,
        parents: &[&[u8]],
    ) -> Result<Arc<DirHandle>, LayerError> {
        self.resolve(entry, parents, Missing::Create, true)?
            .ok_or_else(|| {
                fs_error(entry, "create the parent directory")(io::Error::from(Errno::NOENT))
            })
    }

    /// Resolves the directory at `parents` inside the root, component by component so
    /// that each one can be recorded as written by this layer (`record`) and missing
    /// ones created. Every step is a fresh `RESOLVE_IN_ROOT` resolution from the root.
    fn resolve(
        &mut self,
        entry: &Entry,
        parents: &[&[u8]],
        missing: Missing,
        record: bool,
    ) -> Result<Option<Arc<DirHandle>>, LayerError> {
        let path = join(parents);
        // Only recording resolutions use the cache, so a hit never skips recording.
        if record
            && let Some((cached, dir)) = &self.parent_cache
            && *cached == path
        {
            return Ok(Some(Arc::clone(dir)));
        }
        let mut dir = Arc::clone(&self.root);
        for (i, name) in parents.iter().enumerate() {
            if record {
                self.touch(&dir, name);
            }
            let prefix = join(&parents[..=i]);
            let next = match root::open_dir_in_root(self.root.fd(), &prefix) {
                Ok(next) => next,
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                    if missing == Missing::Absent {
                        return Ok(None);
                    }
                    // If something is there after all (a dangling symlink), resolving
                    // again fails with the kernel's reason, which we report.
                    root::make_implicit_dir(dir.fd(), name)
                        .map_err(fs_error(entry, "create a parent directory"))?;
                    root::open_dir_in_root(self.root.fd(), &prefix)
                        .map_err(fs_error(entry, "resolve a parent directory"))?
                }
                Err(e)
                    if missing == Missing::Absent
                        && e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(fs_error(entry, "resolve a parent directory")(e)),
            };
            dir = Arc::new(next);
        }
        if record {
            self.parent_cache = Some((path, Arc::clone(&dir)));
        }
        Ok(Some(dir))
    }

    /// The opaque whiteout: removes every child of `dir` this layer did not write, and
    /// inside kept directories, recursively, every grandchild it did not write (a lower
    /// directory this layer wrote into is still hidden below the opaque one). Depth
    /// first with one fd per level; every level opened `O_NOFOLLOW`.
    fn empty_lower(&self, dir: &DirHandle) -> io::Result<()> {
        struct Level {
            fd: OwnedFd,
            dev: u64,
            ino: u64,
            children: Vec<CString>,
        }
        let open_level = |fd: OwnedFd| -> io::Result<Level> {
            let (dev, ino) = root::identity(&fstat(&fd)?);
            let children = root::child_names(&fd)?;
            Ok(Level {
                fd,
                dev,
                ino,
                children,
            })
        };
        let start = rustix::fs::openat(
            dir.fd(),
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut stack = vec![open_level(start)?];
        while let Some(level) = stack.last_mut() {
            let Some(child) = level.children.pop() else {
                stack.pop();
                continue;
            };
            let name = child.as_bytes();
            let key: Touched = (level.dev, level.ino, name.into());
            if !self.touched.contains(&key) {
                root::remove_at(level.fd.as_fd(), name)?;
                continue;
            }
            if let Some(stat) = root::lstat_at(level.fd.as_fd(), name)?
                && root::is_dir(&stat)
            {
                let fd = root::open_child_dir(level.fd.as_fd(), name)?;
                let next = open_level(fd)?;
                stack.push(next);
            }
        }
        Ok(())
    }

    /// Applies deferred directory modes and mtimes, children before parents, each
    /// directory once (its last entry wins). A directory that a later entry of the
    /// layer replaced or removed is skipped: it is re-resolved without following its
    /// final component and must still be the same inode.
    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        let mut done = HashSet::new();
        for dir in self.deferred.iter().rev() {
            if !done.insert((dir.dev, dir.ino)) {
                continue;
            }
            let fd = match root::open_in_root(
                self.root.fd(),
                &dir.path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            ) {
                Ok(fd) => fd,
                Err(e)
                    if [Errno::NOENT, Errno::NOTDIR, Errno::LOOP]
                        .iter()
                        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error())) =>
                {
                    continue;
                }
                Err(e) => return Err(dir_error(dir, "reopen the directory")(e)),
            };
            let stat = fstat(&fd).map_err(|e| dir_error(dir, "inspect the directory")(e.into()))?;
            if root::identity(&stat) != (dir.dev, dir.ino) {
                continue;
            }
            fchmod(&fd, Mode::from_raw_mode(dir.mode))
                .map_err(|e| dir_error(dir, "set the directory mode")(e.into()))?;
            futimens(&fd, &timestamps(dir.mtime))
                .map_err(|e| dir_error(dir, "set the directory mtime")(e.into()))?;
        }
        Ok(())
    }

    fn set_owner_fd(&self, entry: &Entry, fd: &impl AsFd) -> Result<(), LayerError> {
        let (uid, gid) = owner(entry)?;
        if self.chown {
            fchown(fd, Some(uid), Some(gid))
                .map_err(|e| fs_error(entry, "set the owner")(e.into()))?;
        }
        Ok(())
    }

    fn touch(&mut self, dir: &DirHandle, name: &[u8]) {
        self.touched.insert(key(dir, name));
    }
}

fn key(dir: &DirHandle, name: &[u8]) -> Touched {
    (dir.dev, dir.ino, name.into())
}

/// The entry's owner, validated even when not applied so that an archive behaves the
/// same for root and non-root callers.
fn owner(entry: &Entry) -> Result<(Uid, Gid), LayerError> {
    // u32::MAX is -1, which chown reads as "leave unchanged".
    let valid = |id: u64| u32::try_from(id).ok().filter(|id| *id != u32::MAX);
    match (valid(entry.uid), valid(entry.gid)) {
        (Some(uid), Some(gid)) => Ok((Uid::from_raw(uid), Gid::from_raw(gid))),
        _ => Err(LayerError::InvalidEntry {
            path: entry.display_path(),
            reason: format!("uid {} or gid {} is not a valid id", entry.uid, entry.gid),
        }),
    }
}

fn link_target(entry: &Entry) -> Result<&[u8], LayerError> {
    match entry.link.as_deref() {
        Some(target) if !target.is_empty() && !target.contains(&0) => Ok(target),
        _ => Err(invalid(entry, "a link without a valid target")),
    }
}

fn timestamps(mtime: Mtime) -> Timestamps {
    let time = Timespec {
        tv_sec: mtime.secs,
        tv_nsec: i64::from(mtime.nanos),
    };
    // atime = mtime, as tar implementations do: the image carries no atime we trust.
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

fn invalid(entry: &Entry, reason: &str) -> LayerError {
    LayerError::InvalidEntry {
        path: entry.display_path(),
        reason: reason.to_owned(),
    }
}

fn fs_error<'a>(entry: &'a Entry, op: &'static str) -> impl FnOnce(io::Error) -> LayerError + 'a {
    move |source| LayerError::Fs {
        path: entry.display_path(),
        op,
        source,
    }
}

fn dir_error<'a>(
    dir: &'a DeferredDir,
    op: &'static str,
) -> impl FnOnce(io::Error) -> LayerError + 'a {
    move |source| LayerError::Fs {
        path: display_path(&dir.raw),
        op,
        source,
    }
}
