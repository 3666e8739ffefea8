//! Support for the layer tests: tar archives written header by header (so malicious
//! names reach the unpacker exactly as an attacker would write them), scenes with
//! sentinels beside the root, and snapshots of everything outside the root. IO: temp
//! directories only.

use std::collections::BTreeMap;
use std::fs::{self, File, FileTimes};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bencher_oci::layer::{LayerError, UnpackLimits, UnpackStats, Unpacker};
use tar::{EntryType, Header};
use tempfile::TempDir;

/// Metadata for one entry written by [`Tar`].
#[derive(Clone, Copy)]
pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl Meta {
    pub fn mode(mode: u32) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }
}

impl Default for Meta {
    fn default() -> Self {
        Self {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
        }
    }
}

/// A tar archive assembled from raw headers: names are copied byte for byte (GNU long
/// name members when longer than 100 bytes), never sanitised the way `tar::Builder`
/// sanitises `..` and absolute paths.
#[derive(Default)]
pub struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn file(&mut self, path: impl AsRef<[u8]>, data: &[u8]) -> &mut Self {
        self.entry(b'0', path.as_ref(), None, data, Meta::default())
    }

    pub fn file_with(&mut self, path: impl AsRef<[u8]>, data: &[u8], meta: Meta) -> &mut Self {
        self.entry(b'0', path.as_ref(), None, data, meta)
    }

    pub fn dir(&mut self, path: impl AsRef<[u8]>) -> &mut Self {
        self.entry(b'5', path.as_ref(), None, b"", Meta::mode(0o755))
    }

    pub fn dir_with(&mut self, path: impl AsRef<[u8]>, meta: Meta) -> &mut Self {
        self.entry(b'5', path.as_ref(), None, b"", meta)
    }

    pub fn symlink(&mut self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        let meta = Meta::mode(0o777);
        self.entry(b'2', path.as_ref(), Some(target.as_ref()), b"", meta)
    }

    pub fn symlink_with(
        &mut self,
        path: impl AsRef<[u8]>,
        target: impl AsRef<[u8]>,
        meta: Meta,
    ) -> &mut Self {
        self.entry(b'2', path.as_ref(), Some(target.as_ref()), b"", meta)
    }

    pub fn hardlink(&mut self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        let meta = Meta::default();
        self.entry(b'1', path.as_ref(), Some(target.as_ref()), b"", meta)
    }

    /// A device node or FIFO (`3`, `4`, `6`) or any other type flag, without data.
    pub fn special(&mut self, path: impl AsRef<[u8]>, flag: u8) -> &mut Self {
        self.entry(flag, path.as_ref(), None, b"", Meta::default())
    }

    /// A whiteout or opaque marker is an empty regular file with the reserved name.
    pub fn whiteout(&mut self, path: impl AsRef<[u8]>) -> &mut Self {
        self.file(path, b"")
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (key, value) in records {
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        self.member(
            b'x',
            b"./PaxHeaders/x",
            None,
            body.len() as u64,
            Meta::default(),
        );
        self.data(&body);
        self
    }

    /// A header whose size field is `declared`, followed by `data` as is: for lying
    /// headers. Nothing is padded.
    pub fn lying_file(&mut self, path: impl AsRef<[u8]>, declared: u64, data: &[u8]) -> &mut Self {
        self.member(b'0', path.as_ref(), None, declared, Meta::default());
        self.bytes.extend_from_slice(data);
        self
    }

    /// A member with a given type flag and declared size, header only.
    pub fn member(
        &mut self,
        flag: u8,
        path: &[u8],
        link: Option<&[u8]>,
        size: u64,
        meta: Meta,
    ) -> &mut Self {
        if path.len() > 100 {
            self.long_name(b'L', path);
        }
        if let Some(link) = link
            && link.len() > 100
        {
            self.long_name(b'K', link);
        }
        let mut header = Header::new_gnu();
        let name = &mut header.as_old_mut().name;
        let n = path.len().min(name.len());
        name[..n].copy_from_slice(&path[..n]);
        if let Some(link) = link {
            let linkname = &mut header.as_old_mut().linkname;
            let n = link.len().min(linkname.len());
            linkname[..n].copy_from_slice(&link[..n]);
        }
        header.set_entry_type(EntryType::new(flag));
        header.set_size(size);
        header.set_mode(meta.mode);
        header.set_uid(meta.uid);
        header.set_gid(meta.gid);
        header.set_mtime(meta.mtime);
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self
    }

    /// Appends data padded to the block size.
    pub fn data(&mut self, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0, pad));
        self
    }

    /// The archive with its end-of-archive marker.
    pub fn build(&self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.extend_from_slice(&[0; 1024]);
        out
    }

    /// The archive without an end marker (for truncation).
    pub fn build_unterminated(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    fn entry(
        &mut self,
        flag: u8,
        path: &[u8],
        link: Option<&[u8]>,
        data: &[u8],
        meta: Meta,
    ) -> &mut Self {
        self.member(flag, path, link, data.len() as u64, meta);
        self.data(data)
    }

    fn long_name(&mut self, flag: u8, name: &[u8]) {
        let mut body = name.to_vec();
        body.push(0);
        self.member(
            flag,
            b"././@LongLink",
            None,
            body.len() as u64,
            Meta::default(),
        );
        self.data(&body);
    }
}

/// A temp dir holding the unpack `root/` and sentinels beside it that attacks aim at.
///
/// The root sits `DEPTH` directories below the temp dir, with the same sentinels at
/// every level. That puts a sentinel wherever a `../` chain of these tests could land,
/// and means that even a broken unpacker following such a chain stays inside the temp
/// dir: a regression must fail these tests, never damage the host running them.
pub struct Scene {
    pub dir: TempDir,
    pub root: PathBuf,
}

/// Nesting of the root below the temp dir (more than any `..` chain in the tests).
const DEPTH: usize = 8;

/// A fixed past time for sentinels, so any touch would show.
const SENTINEL_TIME: u64 = 1_000_000_000;

impl Scene {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut level = dir.path().to_owned();
        let mut levels = vec![level.clone()];
        for i in 0..DEPTH {
            level = level.join(format!("level{i}"));
            levels.push(level.clone());
        }
        let root = level.join("root");
        fs::create_dir_all(&root).expect("root");
        // The full set beside the root, where the tests aim; a lighter one above it
        // (creating and deleting files is the cost of every test).
        plant_sentinels(&level);
        for level in &levels[..DEPTH] {
            fs::create_dir(level.join("outside")).expect("outside");
            fs::write(level.join("outside/secret"), b"secret sentinel").expect("secret");
            fs::write(level.join("victim"), b"victim sentinel").expect("victim");
        }
        Self { dir, root }
    }

    /// The temp dir holding everything, absolute.
    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    /// The absolute host path of a sentinel beside the root, as raw bytes for a tar
    /// name or target.
    pub fn host_path(&self, rel: &str) -> Vec<u8> {
        let beside = self.root.parent().expect("the root has a parent");
        beside.join(rel).as_os_str().as_bytes().to_vec()
    }

    pub fn unpacker(&self) -> Unpacker {
        Unpacker::new(&self.root, UnpackLimits::default()).expect("unpacker")
    }

    /// Applies `layers` in order with default limits.
    pub fn apply(&self, layers: &[Vec<u8>]) -> Result<UnpackStats, LayerError> {
        self.apply_with(UnpackLimits::default(), layers)
    }

    pub fn apply_with(
        &self,
        limits: UnpackLimits,
        layers: &[Vec<u8>],
    ) -> Result<UnpackStats, LayerError> {
        let mut unpacker = Unpacker::new(&self.root, limits)?;
        for layer in layers {
            unpacker.apply_layer(layer.as_slice())?;
        }
        Ok(unpacker.finish())
    }

    /// Everything outside the root, recursively, without following symlinks.
    pub fn snapshot(&self) -> Snapshot {
        let mut entries = BTreeMap::new();
        let mut pending = vec![self.base().to_owned()];
        while let Some(path) = pending.pop() {
            if path == self.root {
                continue;
            }
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let content = if meta.is_file() {
                Some(fs::read(&path).expect("read sentinel"))
            } else {
                None
            };
            let target = if meta.file_type().is_symlink() {
                Some(fs::read_link(&path).expect("readlink"))
            } else {
                None
            };
            if meta.is_dir() {
                for child in fs::read_dir(&path).expect("read dir") {
                    pending.push(child.expect("dir entry").path());
                }
            }
            entries.insert(
                path,
                Node {
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    ino: meta.ino(),
                    nlink: meta.nlink(),
                    size: meta.size(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    ctime: (meta.ctime(), meta.ctime_nsec()),
                    content,
                    target,
                },
            );
        }
        Snapshot(entries)
    }

    /// Fails unless everything outside the root is exactly as in `before`: same paths,
    /// bytes, modes, owners, link counts, mtimes and ctimes (a chmod or chown to the
    /// same value still moves ctime).
    pub fn assert_outside_unchanged(&self, before: &Snapshot) {
        let after = self.snapshot();
        for (path, node) in &before.0 {
            match after.0.get(path) {
                Some(now) => assert_eq!(node, now, "{} changed", path.display()),
                None => panic!("{} disappeared", path.display()),
            }
        }
        for path in after.0.keys() {
            assert!(
                before.0.contains_key(path),
                "{} appeared outside the root",
                path.display()
            );
        }
    }

    /// Runs `layers` against a fresh scene and checks the outside afterwards, whatever
    /// the outcome; returns the scene and the outcome for the test's own assertions.
    pub fn attack(layers: &[Vec<u8>]) -> (Scene, Result<UnpackStats, LayerError>) {
        Self::attack_with(UnpackLimits::default(), layers)
    }

    pub fn attack_with(
        limits: UnpackLimits,
        layers: &[Vec<u8>],
    ) -> (Scene, Result<UnpackStats, LayerError>) {
        Self::attack_built(limits, |_| layers.to_vec())
    }

    /// Applies `layers` to a fresh, empty root in this scene and checks the outside
    /// afterwards; the sentinels are reused, which keeps many-case tests fast.
    pub fn attack_again(
        &self,
        limits: UnpackLimits,
        layers: &[Vec<u8>],
    ) -> Result<UnpackStats, LayerError> {
        fs::remove_dir_all(&self.root).expect("remove the previous root");
        fs::create_dir(&self.root).expect("fresh root");
        let before = self.snapshot();
        let outcome = self.apply_with(limits, layers);
        self.assert_outside_unchanged(&before);
        outcome
    }

    /// Like `attack`, with layers built from the scene (to aim at its host paths).
    pub fn attack_built(
        limits: UnpackLimits,
        layers: impl FnOnce(&Scene) -> Vec<Vec<u8>>,
    ) -> (Scene, Result<UnpackStats, LayerError>) {
        let scene = Scene::new();
        let layers = layers(&scene);
        let before = scene.snapshot();
        let outcome = scene.apply_with(limits, &layers);
        scene.assert_outside_unchanged(&before);
        (scene, outcome)
    }
}

/// Sentinels in `dir`: files, a nested directory, a symlink, an `/etc`-like directory.
fn plant_sentinels(dir: &Path) {
    fs::create_dir_all(dir.join("outside/sub")).expect("outside");
    fs::write(dir.join("outside/secret"), b"secret sentinel").expect("secret");
    fs::set_permissions(
        dir.join("outside/secret"),
        fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    fs::write(dir.join("outside/sub/deep"), b"deep sentinel").expect("deep");
    symlink("secret", dir.join("outside/link")).expect("link");
    fs::create_dir(dir.join("host-etc-outside")).expect("host etc");
    fs::write(
        dir.join("host-etc-outside/passwd"),
        b"root:x:0:0::/root:/bin/sh\n",
    )
    .expect("passwd");
    fs::write(dir.join("victim"), b"victim sentinel").expect("victim");
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(SENTINEL_TIME);
    for path in [
        "outside/secret",
        "outside/sub/deep",
        "outside/sub",
        "outside",
        "host-etc-outside/passwd",
        "host-etc-outside",
        "victim",
    ] {
        let file = File::open(dir.join(path)).expect("open sentinel");
        file.set_times(FileTimes::new().set_modified(time).set_accessed(time))
            .expect("set sentinel times");
    }
}

/// Metadata and content of every path outside the root.
pub struct Snapshot(BTreeMap<PathBuf, Node>);

#[derive(Debug, PartialEq, Eq)]
struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    ino: u64,
    nlink: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    content: Option<Vec<u8>>,
    target: Option<PathBuf>,
}

/// Whether we run as root (ownership is applied only then).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A path relative to the root that is a host path as bytes (for aimed paths).
pub fn in_root(scene: &Scene, rel: impl AsRef<[u8]>) -> PathBuf {
    let rel = rel.as_ref();
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    scene.root.join(std::ffi::OsStr::from_bytes(rel))
}

/// Mode bits of a path, not following a final symlink.
pub fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("lstat").mode() & 0o7777
}

/// A tiny deterministic generator for mutation tests (no `rand` dependency).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Recomputes the checksum of every header in a (mutated) archive, walking members by
/// their header sizes, so that mutations reach past the checksum check.
pub fn fix_checksums(bytes: &mut [u8]) {
    let mut pos = 0;
    while pos + 512 <= bytes.len() {
        let block = &mut bytes[pos..pos + 512];
        if block.iter().all(|b| *b == 0) {
            return;
        }
        let mut header = Header::new_old();
        header.as_mut_bytes().copy_from_slice(block);
        header.set_cksum();
        block.copy_from_slice(header.as_bytes());
        let size = header.entry_size().unwrap_or(0).min(1 << 30) as usize;
        pos += 512 + size.div_ceil(512) * 512;
    }
}
