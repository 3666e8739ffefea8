//! Filesystem primitives anchored at the unpack root, where the layer module resolves
//! paths and removes trees. IO: openat2/`*at` syscalls on directory fds, nothing else.
//!
//! The invariant the whole module rests on: a path from the archive is only ever
//! resolved by the kernel, from the root fd, with `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS` (absolute symlinks and `..` are confined to the root, the
//! way a chroot would see them), and a final component is only ever operated on by a
//! `*at` call on its parent's fd that does not follow it (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`, `unlinkat`, `O_CREAT | O_EXCL`). Removal walks down with
//! `O_NOFOLLOW` directory fds, so it never leaves the tree it started in.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat, fchmod, fstat, mkdirat, open, openat,
    openat2, statat, unlinkat,
};
use rustix::io::Errno;

/// How often to retry `openat2` when the kernel reports a concurrent rename (EAGAIN is
/// how `RESOLVE_IN_ROOT` refuses to guess when the tree moved under it).
const EAGAIN_RETRIES: usize = 64;

/// An open directory (usually `O_PATH`) and its identity.
#[derive(Debug)]
pub(super) struct DirHandle {
    fd: OwnedFd,
    pub(super) dev: u64,
    pub(super) ino: u64,
}

impl DirHandle {
    pub(super) fn new(fd: OwnedFd) -> io::Result<Self> {
        let (dev, ino) = identity(&fstat(&fd)?);
        Ok(Self { fd, dev, ino })
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `(st_dev, st_ino)` as `u64`s.
#[allow(clippy::useless_conversion)] // the field types differ between architectures
pub(super) fn identity(stat: &Stat) -> (u64, u64) {
    (stat.st_dev.into(), stat.st_ino.into())
}

pub(super) fn is_dir(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::Directory
}

/// Opens the unpack root as an `O_PATH` directory fd and checks that the kernel
/// supports `openat2` with `RESOLVE_IN_ROOT` (Linux 5.6+), so we fail up front rather
/// than on the first entry.
pub(super) fn open_root(path: &Path) -> io::Result<DirHandle> {
    let fd = open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    drop(open_in_root(
        fd.as_fd(),
        b".",
        OFlags::PATH | OFlags::DIRECTORY,
    )?);
    DirHandle::new(fd)
}

/// Resolves `path` (relative, cleaned) inside the root with the kernel's confinement.
pub(super) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlags,
) -> io::Result<OwnedFd> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut attempts = 0;
    loop {
        match openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if attempts < EAGAIN_RETRIES => attempts += 1,
            result => return result.map_err(io::Error::from),
        }
    }
}

/// Opens the directory at `path` inside the root (following symlinks inside it).
pub(super) fn open_dir_in_root(root: BorrowedFd<'_>, path: &[u8]) -> io::Result<DirHandle> {
    DirHandle::new(open_in_root(root, path, OFlags::PATH | OFlags::DIRECTORY)?)
}

/// `lstat` of `name` in `dir`; `None` if it does not exist.
pub(super) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Stat>> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Opens the real directory `name` in `dir` for reading, refusing a symlink.
pub(super) fn open_child_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    Ok(openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Creates the new regular file `name` in `dir`; fails if anything is there, even a
/// dangling symlink, so the write can only land in a fresh inode.
pub(super) fn create_file(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<File> {
    let fd = openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(File::from(fd))
}

/// Creates a directory an entry's path implies but the archive did not list: `0755`
/// whatever the umask, owned by us (root), like Docker's `MkdirAll`. `Ok(false)` if
/// something already exists at `name` (the caller's re-resolution then decides).
pub(super) fn make_implicit_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    match mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
        Ok(()) => {}
        Err(Errno::EXIST) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    fchmod(open_child_dir(dir, name)?, Mode::from_raw_mode(0o755))?;
    Ok(true)
}

/// Removes whatever is at `name` in `dir`, a whole tree if it is a directory, never
/// following a symlink. `Ok(false)` if nothing was there.
pub(super) fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    let Some(stat) = lstat_at(dir, name)? else {
        return Ok(false);
    };
    if is_dir(&stat) {
        remove_tree(dir, name)?;
    } else {
        ignore_missing(unlinkat(dir, name, AtFlags::empty()))?;
    }
    Ok(true)
}

/// A directory being emptied: its fd, its name in its parent, its unvisited children.
struct Frame {
    fd: OwnedFd,
    name: CString,
    children: Vec<CString>,
}

/// Removes the directory `name` in `parent` and everything below it, depth first with
/// an explicit stack (no recursion, so no stack overflow on deep trees) and one fd per
/// level. Each level is opened with `O_NOFOLLOW` relative to the one above.
fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let name = CString::new(name).map_err(|_| io::Error::from(Errno::INVAL))?;
    let fd = open_child_dir(parent, name.as_bytes())?;
    let children = child_names(&fd)?;
    let mut stack = vec![Frame { fd, name, children }];
    while let Some(top) = stack.last_mut() {
        if let Some(child) = top.children.pop() {
            let stat = match statat(&top.fd, &child, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if is_dir(&stat) {
                let fd = open_child_dir(top.fd.as_fd(), child.as_bytes())?;
                let children = child_names(&fd)?;
                stack.push(Frame {
                    fd,
                    name: child,
                    children,
                });
            } else {
                ignore_missing(unlinkat(&top.fd, &child, AtFlags::empty()))?;
            }
            continue;
        }
        // Every child is gone: remove this directory from its parent.
        if let Some(done) = stack.pop() {
            drop(done.fd);
            let parent_fd = stack.last().map_or(parent, |frame| frame.fd.as_fd());
            ignore_missing(unlinkat(parent_fd, &done.name, AtFlags::REMOVEDIR))?;
        }
    }
    Ok(())
}

/// The names in a directory, without `.` and `..`. Read fully before any removal,
/// because `getdents` may skip or repeat names while the directory changes.
pub(super) fn child_names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    // `Dir` needs its own readable fd; `dir` may be `O_PATH`.
    let readable = openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut entries = Dir::new(readable)?;
    let mut names = Vec::new();
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn ignore_missing(result: rustix::io::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
