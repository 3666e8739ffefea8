//! A writer of the "newc" cpio format the Linux kernel unpacks as an initramfs. IO: only
//! the writer it is given.
//!
//! Our own because the format is a fixed 110-byte ASCII header per entry plus 4-byte
//! padding, and the guest needs a handful of entries (directories and regular files
//! from memory); no crate on hand is smaller than these lines. The kernel also accepts
//! several archives one after the other, which is how a job's config is appended to the
//! cached base initramfs without rewriting it.

use std::io::{self, Write};

const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;

pub(super) struct NewcWriter<W: Write> {
    out: W,
    written: u64,
    next_inode: u32,
}

impl<W: Write> NewcWriter<W> {
    pub(super) fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_inode: 1,
        }
    }

    /// A directory owned by root; `path` is relative (`bencher`, `lib/x`).
    pub(super) fn directory(&mut self, path: &str, permissions: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | permissions, 2, &[])
    }

    /// A regular file owned by root.
    pub(super) fn file(&mut self, path: &str, permissions: u32, contents: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | permissions, 1, contents)
    }

    /// Writes the trailer and returns the writer.
    pub(super) fn finish(mut self) -> io::Result<W> {
        self.entry(TRAILER, 0, 1, &[])?;
        Ok(self.out)
    }

    fn entry(&mut self, path: &str, mode: u32, links: u32, contents: &[u8]) -> io::Result<()> {
        let size = u32::try_from(contents.len())
            .map_err(|_| io::Error::other(format!("{path} is too large for a cpio archive")))?;
        let inode = if path == TRAILER { 0 } else { self.next_inode };
        self.next_inode += 1;
        // Fields: magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
        // devminor, rdevmajor, rdevminor, namesize (with the NUL), check.
        let header = format!(
            "070701{inode:08x}{mode:08x}{:08x}{:08x}{links:08x}{:08x}{size:08x}\
             {:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            path.len() + 1,
            0
        );
        self.put(header.as_bytes())?;
        self.put(path.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(contents)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Header+name and data each end on a 4-byte boundary.
    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - self.written % 4) % 4;
        self.put(&[0; 3][..padding as usize])
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// The system's `cpio` reads what we write, names, modes and contents intact.
    #[test]
    fn gnu_cpio_extracts_the_archive() {
        let mut writer = NewcWriter::new(Vec::new());
        writer.directory("bencher", 0o755).unwrap();
        writer
            .file("bencher/job.json", 0o644, b"{\"a\":1}")
            .unwrap();
        writer.file("init", 0o755, &[0u8, 1, 2]).unwrap();
        let archive = writer.finish().unwrap();
        assert_eq!(archive.len() % 4, 0);

        let dir = tempfile::tempdir().unwrap();
        let cpio = Command::new("cpio")
            .args(["-i", "--make-directories", "--quiet"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn();
        let Ok(mut cpio) = cpio else {
            eprintln!("SKIPPED: the `cpio` program is not installed");
            assert!(std::env::var_os("CI").is_none(), "CI must install cpio");
            return;
        };
        cpio.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(cpio.wait().unwrap().success());
        assert_eq!(
            std::fs::read(dir.path().join("bencher/job.json")).unwrap(),
            b"{\"a\":1}"
        );
        assert_eq!(std::fs::read(dir.path().join("init")).unwrap(), [0, 1, 2]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("init"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
