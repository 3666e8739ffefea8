//! Paths inside a job's root filesystem, resolved the way the job itself (chrooted)
//! would see them, without ever leaving that root: reading the image's passwd and group
//! files, creating mount points and the working directory, and collecting output files
//! (or their sizes).
//! IO: `openat`/`readlinkat`/`mkdirat` relative to directory fds under the root, and
//! reads of the files found.
//!
//! The walk is ours rather than `openat2(RESOLVE_IN_ROOT)` because the runner's
//! `--max-symlinks` bounds the links followed, where the kernel's bound is fixed at 40.
//! It gives the same guarantees: every component is opened with `O_NOFOLLOW` relative
//! to the directory fd it lives in; a symlink is read, counted and its target walked in
//! its place (an absolute target from the root, a relative one from the link's
//! directory); `..` pops the stack of directories walked, and at the root stays at the
//! root. So `/etc -> /host-etc`, `a -> ../../..` or a procfs magic link can only ever
//! name something inside the root.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    AtFlags, FileType, Mode, OFlags, fstat, mkdirat, open, openat, readlinkat, statat,
};
use rustix::io::Errno;

/// Why a path could not be used. `path` is the path as the job names it.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("`{path}`: more than {max} symbolic links on the way (--max-symlinks)")]
    TooManySymlinks { path: String, max: u32 },
    #[error("`{path}` does not exist")]
    NotFound { path: String },
    #[error("`{path}` is not a directory, or a component on its way is not")]
    NotADirectory { path: String },
    #[error("`{path}` is not a regular file")]
    NotAFile { path: String },
    #[error("`{path}` is larger than {max} bytes (--max-output-size)")]
    TooLarge { path: String, max: u64 },
    #[error("`{path}` is not UTF-8 text; binary output files are not supported")]
    NotUtf8 { path: String },
    #[error("`{path}` contains a NUL byte")]
    Nul { path: String },
    #[error("`{path}`: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl RootfsError {
    fn io(path: &str, source: impl Into<io::Error>) -> Self {
        let source = source.into();
        match source.raw_os_error() {
            Some(code) if code == Errno::NOENT.raw_os_error() => {
                Self::NotFound { path: path.into() }
            }
            Some(code) if code == Errno::NOTDIR.raw_os_error() => {
                Self::NotADirectory { path: path.into() }
            }
            _ => Self::Io {
                path: path.into(),
                source,
            },
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// A root filesystem directory, held open.
#[derive(Debug)]
pub(super) struct Root {
    /// `O_PATH | O_DIRECTORY`.
    fd: OwnedFd,
    max_symlinks: u32,
}

/// What a walk found: its type, and the directory it is in with its name there (`None`
/// when the path ends on a directory walked through, such as the root).
struct Found {
    parent: Option<(OwnedFd, CString)>,
    file_type: FileType,
}

/// Whether a walk creates missing directories.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    Lookup,
    CreateDirs,
}

impl Root {
    pub(super) fn open(path: &Path, max_symlinks: u32) -> io::Result<Root> {
        let fd = open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd, max_symlinks })
    }

    pub(super) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Makes `path` a directory, creating what is missing (0755, owned by the caller),
    /// following symlinks inside the root like `mkdir -p` in a chroot.
    pub(super) fn ensure_dir(&self, path: &str) -> Result<(), RootfsError> {
        let found = self.walk(path, Walk::CreateDirs)?;
        if found.file_type != FileType::Directory {
            return Err(RootfsError::NotADirectory { path: path.into() });
        }
        Ok(())
    }

    /// The contents of the regular file at `path`, at most `max_bytes` (more is an
    /// error, never a silent truncation).
    pub(super) fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, RootfsError> {
        let found = self.walk(path, Walk::Lookup)?;
        let Some((parent, name)) = found
            .parent
            .filter(|_| found.file_type == FileType::RegularFile)
        else {
            return Err(RootfsError::NotAFile { path: path.into() });
        };
        // Reopened by name for reading: the walk's fd is `O_PATH`. Nothing runs in the
        // root while we read (the job has ended), and `O_NOFOLLOW | O_NONBLOCK` keep a
        // swapped-in link or FIFO from being followed or blocking us anyway.
        let file = openat(
            &parent,
            &name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootfsError::io(path, e))?;
        let stat = fstat(&file).map_err(|e| RootfsError::io(path, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(RootfsError::NotAFile { path: path.into() });
        }
        let mut contents = Vec::new();
        std::fs::File::from(file)
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut contents)
            .map_err(|e| RootfsError::io(path, e))?;
        if contents.len() as u64 > max_bytes {
            return Err(RootfsError::TooLarge {
                path: path.into(),
                max: max_bytes,
            });
        }
        Ok(contents)
    }

    /// The file at `path` as UTF-8 text; `None` if it does not exist.
    pub(super) fn read_text(
        &self,
        path: &str,
        max_bytes: u64,
    ) -> Result<Option<String>, RootfsError> {
        match self.read_file(path, max_bytes) {
            Ok(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| RootfsError::NotUtf8 { path: path.into() }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The size in bytes of the regular file at `path`, from its inode: nothing is read,
    /// so no output limit applies. `None` if it does not exist.
    pub(super) fn file_size(&self, path: &str) -> Result<Option<u64>, RootfsError> {
        let found = match self.walk(path, Walk::Lookup) {
            Ok(found) => found,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some((parent, name)) = found
            .parent
            .filter(|_| found.file_type == FileType::RegularFile)
        else {
            return Err(RootfsError::NotAFile { path: path.into() });
        };
        // By name in its directory, not following a link swapped in since the walk.
        let stat = statat(&parent, &name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| RootfsError::io(path, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(RootfsError::NotAFile { path: path.into() });
        }
        // A regular file's size is never negative.
        Ok(Some(u64::try_from(stat.st_size).unwrap_or(0)))
    }

    /// The sizes of a job's output files that exist (see [`Root::file_size`]), by the
    /// path as the job gave it; relative paths are taken from `working_dir`.
    pub(super) fn file_sizes(
        &self,
        working_dir: &str,
        paths: &[String],
    ) -> Result<BTreeMap<String, u64>, String> {
        let mut sizes = BTreeMap::new();
        for path in paths {
            let in_root = if path.starts_with('/') {
                path.clone()
            } else {
                format!("{}/{path}", working_dir.trim_end_matches('/'))
            };
            match self.file_size(&in_root) {
                Ok(Some(size)) => {
                    sizes.insert(path.clone(), size);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("output file {e}")),
            }
        }
        Ok(sizes)
    }

    /// Resolves `path` (absolute or relative, both from the root) component by
    /// component; see the module documentation.
    fn walk(&self, path: &str, mode: Walk) -> Result<Found, RootfsError> {
        if path.contains('\0') {
            return Err(RootfsError::Nul { path: path.into() });
        }
        let io_error = |e: Errno| RootfsError::io(path, e);
        let reopen = |fd: &OwnedFd| {
            openat(
                fd,
                c".",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        // The directories walked so far; `stack[0]` is the root and is never popped.
        let mut stack: Vec<OwnedFd> = vec![reopen(&self.fd).map_err(io_error)?];
        let mut pending: VecDeque<Vec<u8>> = components(path.as_bytes()).collect();
        let mut links = 0u32;
        while let Some(component) = pending.pop_front() {
            if component == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let name =
                CString::new(component).map_err(|_| RootfsError::Nul { path: path.into() })?;
            let dir = stack.last().unwrap_or(&self.fd);
            let fd = match open_component(dir, &name) {
                Err(Errno::NOENT) if mode == Walk::CreateDirs => {
                    match mkdirat(dir, &name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_error(e)),
                    }
                    open_component(dir, &name).map_err(io_error)?
                }
                result => result.map_err(io_error)?,
            };
            let file_type = FileType::from_raw_mode(fstat(&fd).map_err(io_error)?.st_mode);
            match file_type {
                FileType::Symlink => {
                    links += 1;
                    if links > self.max_symlinks {
                        return Err(RootfsError::TooManySymlinks {
                            path: path.into(),
                            max: self.max_symlinks,
                        });
                    }
                    let target = readlinkat(dir, &name, Vec::new()).map_err(io_error)?;
                    let target = target.as_bytes();
                    if target.starts_with(b"/") {
                        stack.truncate(1);
                    }
                    for component in components(target).collect::<Vec<_>>().into_iter().rev() {
                        pending.push_front(component);
                    }
                }
                FileType::Directory if !pending.is_empty() => stack.push(fd),
                _ if !pending.is_empty() => {
                    return Err(RootfsError::NotADirectory { path: path.into() });
                }
                _ => {
                    let parent = reopen(dir).map_err(io_error)?;
                    return Ok(Found {
                        parent: Some((parent, name)),
                        file_type,
                    });
                }
            }
        }
        // The path ends on a directory already walked through (`/`, `a/..`).
        Ok(Found {
            parent: None,
            file_type: FileType::Directory,
        })
    }
}

/// One component, never following it, never leaving `dir`'s mount by magic.
fn open_component(dir: &OwnedFd, name: &CString) -> Result<OwnedFd, Errno> {
    openat(
        dir.as_fd(),
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The components of a path; empty ones and `.` dropped, `..` kept for the walk.
fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    /// A root with a decoy beside it that no walk may reach.
    fn fixture() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("etc/passwd"), "inside").unwrap();
        fs::write(dir.path().join("secret"), "HOST").unwrap();
        fs::write(root.join("secret"), "ROOT").unwrap();
        (dir, root)
    }

    fn text(root: &Root, path: &str) -> Result<Option<String>, RootfsError> {
        root.read_text(path, 1 << 20)
    }

    #[test]
    fn reads_inside_and_never_outside() {
        let (dir, root_path) = fixture();
        let outside = dir.path().join("secret");
        symlink(&outside, root_path.join("abs")).unwrap();
        symlink("../../../../../../secret", root_path.join("a/b/rel")).unwrap();
        symlink("/a/b/../../etc", root_path.join("a/etc")).unwrap();
        symlink("/proc/self/root/secret", root_path.join("magic")).unwrap();
        let root = Root::open(&root_path, 40).unwrap();

        assert_eq!(
            text(&root, "/etc/passwd").unwrap().as_deref(),
            Some("inside")
        );
        assert_eq!(
            text(&root, "etc/passwd").unwrap().as_deref(),
            Some("inside")
        );
        assert_eq!(
            text(&root, "/../../secret").unwrap().as_deref(),
            Some("ROOT")
        );
        assert_eq!(text(&root, "/a/b/rel").unwrap().as_deref(), Some("ROOT"));
        assert_eq!(
            text(&root, "/a/etc/passwd").unwrap().as_deref(),
            Some("inside")
        );
        // The absolute link names the host path, which inside the root does not exist.
        assert!(matches!(
            root.read_file("/abs", 100),
            Err(RootfsError::NotFound { .. })
        ));
        // Once the host path exists inside the root too, that is what is read.
        let mirrored = root_path.join(outside.strip_prefix("/").unwrap());
        fs::create_dir_all(mirrored.parent().unwrap()).unwrap();
        fs::write(&mirrored, "MIRROR").unwrap();
        assert_eq!(text(&root, "/abs").unwrap().as_deref(), Some("MIRROR"));
        // Magic links are plain links here: /proc does not exist in this root.
        assert!(text(&root, "/magic").unwrap().is_none());
    }

    #[test]
    fn bounds_symlinks_and_refuses_non_files() {
        let (_dir, root_path) = fixture();
        symlink("loop", root_path.join("loop")).unwrap();
        for i in 0..5 {
            symlink(format!("l{}", i + 1), root_path.join(format!("l{i}"))).unwrap();
        }
        fs::write(root_path.join("l5"), "end").unwrap();
        fs::write(root_path.join("binary"), [0xff, 0xfe, 0]).unwrap();
        fs::write(root_path.join("big"), vec![b'x'; 101]).unwrap();

        let root = Root::open(&root_path, 5).unwrap();
        assert_eq!(text(&root, "/l0").unwrap().as_deref(), Some("end"));
        let strict = Root::open(&root_path, 4).unwrap();
        assert!(matches!(
            text(&strict, "/l0"),
            Err(RootfsError::TooManySymlinks { max: 4, .. })
        ));
        assert!(matches!(
            text(&root, "/loop"),
            Err(RootfsError::TooManySymlinks { .. })
        ));
        assert!(matches!(
            text(&root, "/a"),
            Err(RootfsError::NotAFile { .. })
        ));
        assert!(matches!(
            text(&root, "/"),
            Err(RootfsError::NotAFile { .. })
        ));
        assert!(matches!(
            text(&root, "/etc/passwd/x"),
            Err(RootfsError::NotADirectory { .. })
        ));
        assert!(matches!(
            text(&root, "/binary"),
            Err(RootfsError::NotUtf8 { .. })
        ));
        assert!(matches!(
            root.read_file("/big", 100),
            Err(RootfsError::TooLarge { max: 100, .. })
        ));
        assert_eq!(root.read_file("/big", 101).unwrap().len(), 101);
        assert!(text(&root, "/missing").unwrap().is_none());
        assert!(matches!(text(&root, "/a\0"), Err(RootfsError::Nul { .. })));

        // Sizes: of any file, binary or past every limit, through links; never read.
        assert_eq!(root.file_size("/big").unwrap(), Some(101));
        assert_eq!(root.file_size("/binary").unwrap(), Some(3));
        assert_eq!(root.file_size("/l0").unwrap(), Some(3));
        assert_eq!(root.file_size("/missing").unwrap(), None);
        assert!(matches!(
            root.file_size("/a"),
            Err(RootfsError::NotAFile { .. })
        ));
        assert!(matches!(
            strict.file_size("/l0"),
            Err(RootfsError::TooManySymlinks { .. })
        ));
    }

    #[test]
    fn creates_directories_inside() {
        let (dir, root_path) = fixture();
        symlink(dir.path(), root_path.join("escape")).unwrap();
        let root = Root::open(&root_path, 40).unwrap();
        root.ensure_dir("/work/deep/er").unwrap();
        assert!(root_path.join("work/deep/er").is_dir());
        // Through a link to the host path: created inside the root, at that path.
        root.ensure_dir("/escape/made").unwrap();
        assert!(!dir.path().join("made").exists());
        assert!(
            root_path
                .join(dir.path().strip_prefix("/").unwrap())
                .join("made")
                .is_dir()
        );
        root.ensure_dir("/").unwrap();
        root.ensure_dir("/a/b").unwrap();
        assert!(matches!(
            root.ensure_dir("/secret"),
            Err(RootfsError::NotADirectory { .. })
        ));
    }
}
