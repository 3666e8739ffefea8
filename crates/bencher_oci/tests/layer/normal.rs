//! The layer changeset semantics on well-formed layers: files, directories, modes,
//! owners, mtimes, links, whiteouts, opaque whiteouts, type replacement, compression,
//! long and non-UTF-8 names, stats and error handling. IO: temp dirs.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bencher_oci::layer::{LayerError, LayerStats, UnpackLimits, Unpacker, decompress};

use crate::support::{Meta, Scene, Tar, is_root, mode_of};

fn read(path: impl AsRef<Path>) -> Vec<u8> {
    fs::read(path).expect("read")
}

fn exists(path: impl AsRef<Path>) -> bool {
    fs::symlink_metadata(path).is_ok()
}

#[test]
fn files_dirs_and_modes_are_applied() {
    let scene = Scene::new();
    let layer = Tar::new()
        .dir("usr/")
        .dir("usr/bin/")
        .file_with("usr/bin/tool", b"#!/bin/sh\n", Meta::mode(0o755))
        .file_with("./etc/passwd", b"root:x:0:0\n", Meta::mode(0o644))
        .file_with("usr/bin/su", b"su", Meta::mode(0o4755))
        .file_with("usr/bin/wall", b"wall", Meta::mode(0o2755))
        .dir_with("tmp/", Meta::mode(0o1777))
        .dir_with("private", Meta::mode(0o700))
        .file_with("private/key", b"k", Meta::mode(0o400))
        .build();
    let stats = scene.apply(&[layer]).expect("apply");

    let root = &scene.root;
    assert_eq!(read(root.join("usr/bin/tool")), b"#!/bin/sh\n");
    assert_eq!(read(root.join("etc/passwd")), b"root:x:0:0\n");
    assert_eq!(mode_of(&root.join("usr/bin/tool")), 0o755);
    assert_eq!(mode_of(&root.join("etc/passwd")), 0o644);
    assert_eq!(mode_of(&root.join("usr/bin/su")), 0o4755);
    assert_eq!(mode_of(&root.join("usr/bin/wall")), 0o2755);
    assert_eq!(mode_of(&root.join("tmp")), 0o1777);
    assert_eq!(mode_of(&root.join("private")), 0o700);
    assert_eq!(mode_of(&root.join("private/key")), 0o400);
    // `etc` was implied by `etc/passwd`.
    assert_eq!(mode_of(&root.join("etc")), 0o755);
    assert_eq!(stats.total.files, 5);
    assert_eq!(stats.total.dirs, 4);
    assert_eq!(stats.total.bytes, 10 + 11 + 2 + 4 + 1);
}

#[test]
fn ownership_comes_from_the_headers_when_root() {
    if !is_root() {
        eprintln!("skipped: applying tar uid/gid needs root, and we are not root");
        return;
    }
    let scene = Scene::new();
    let owned = |mode, uid, gid| Meta {
        mode,
        uid,
        gid,
        ..Meta::default()
    };
    let layer = Tar::new()
        .dir_with("home/user", owned(0o750, 1000, 1001))
        .file_with("home/user/file", b"x", owned(0o640, 1234, 5678))
        .file_with("home/user/setuid", b"x", owned(0o4755, 1000, 1000))
        .symlink_with("home/user/link", "file", owned(0o777, 7, 8))
        .pax(&[("uid", b"3000000"), ("gid", b"4000000")])
        .file("home/user/big-ids", b"x")
        .build();
    scene.apply(&[layer]).expect("apply");

    let meta = |rel: &str| fs::symlink_metadata(scene.root.join(rel)).expect("lstat");
    assert_eq!(
        (meta("home/user").uid(), meta("home/user").gid()),
        (1000, 1001)
    );
    assert_eq!(
        (meta("home/user/file").uid(), meta("home/user/file").gid()),
        (1234, 5678)
    );
    // lchown, not chown: the symlink itself is owned, its target untouched.
    assert_eq!(
        (meta("home/user/link").uid(), meta("home/user/link").gid()),
        (7, 8)
    );
    // chown happens before chmod, so the setuid bit survives it.
    assert_eq!(meta("home/user/setuid").uid(), 1000);
    assert_eq!(meta("home/user/setuid").mode() & 0o7777, 0o4755);
    assert_eq!(
        (
            meta("home/user/big-ids").uid(),
            meta("home/user/big-ids").gid()
        ),
        (3_000_000, 4_000_000)
    );
}

#[test]
fn mtimes_are_applied_to_files_links_and_directories_after_their_children() {
    let scene = Scene::new();
    let at = |mtime| Meta {
        mtime,
        ..Meta::mode(0o755)
    };
    let layer = Tar::new()
        .dir_with("d", at(1_000_000_000))
        .file_with("d/f", b"f", at(1_100_000_000))
        .symlink_with("d/l", "f", at(1_200_000_000))
        .pax(&[("mtime", b"1300000000.25")])
        .file("d/precise", b"p")
        .build();
    scene.apply(&[layer]).expect("apply");

    let meta = |rel: &str| fs::symlink_metadata(scene.root.join(rel)).expect("lstat");
    assert_eq!(
        meta("d").mtime(),
        1_000_000_000,
        "set after d/f and d/l were created"
    );
    assert_eq!(meta("d/f").mtime(), 1_100_000_000);
    assert_eq!(meta("d/l").mtime(), 1_200_000_000);
    assert_eq!(
        (meta("d/precise").mtime(), meta("d/precise").mtime_nsec()),
        (1_300_000_000, 250_000_000)
    );
}

#[test]
fn symlinks_are_stored_verbatim() {
    let scene = Scene::new();
    let layer = Tar::new()
        .symlink("abs", "/etc/passwd")
        .symlink("rel", "../x/y")
        .symlink("dangling", "nowhere")
        .symlink("bin", "usr/bin")
        .build();
    let stats = scene.apply(&[layer]).expect("apply");
    let target = |rel: &str| fs::read_link(scene.root.join(rel)).expect("readlink");
    assert_eq!(target("abs"), Path::new("/etc/passwd"));
    assert_eq!(target("rel"), Path::new("../x/y"));
    assert_eq!(target("dangling"), Path::new("nowhere"));
    assert_eq!(target("bin"), Path::new("usr/bin"));
    assert_eq!(stats.total.symlinks, 4);
}

#[test]
fn writes_through_an_in_image_symlink_land_at_its_target() {
    // `lib -> /usr/lib` then `lib/x.so`, the usrmerge layout: the file lands in
    // usr/lib of the root. (A name no host has, so that a broken unpacker following
    // the symlink on the host fails instead of writing there.)
    let scene = Scene::new();
    let lower = Tar::new()
        .dir("usr/lib-bencher-test")
        .symlink("lib", "/usr/lib-bencher-test")
        .build();
    let upper = Tar::new().file("lib/x.so", b"elf").build();
    scene.apply(&[lower, upper]).expect("apply");
    assert_eq!(read(scene.root.join("usr/lib-bencher-test/x.so")), b"elf");
    assert!(
        fs::symlink_metadata(scene.root.join("lib"))
            .expect("lstat")
            .is_symlink()
    );
}

#[test]
fn hard_links_share_the_inode() {
    // `bbin`, not `bin`: an absolute target a broken unpacker would look up on the
    // host must not name a host file.
    let scene = Scene::new();
    let layer = Tar::new()
        .file("bbin/busybox", b"bb")
        .hardlink("bbin/sh", "bbin/busybox")
        .hardlink("bbin/ls", "./bbin/busybox")
        .hardlink("bbin/cat", "/bbin/x/../busybox")
        .symlink("bbin/link", "busybox")
        .hardlink("bbin/link2", "bbin/link")
        .build();
    let stats = scene.apply(&[layer]).expect("apply");
    let ino = |rel: &str| {
        fs::symlink_metadata(scene.root.join(rel))
            .expect("lstat")
            .ino()
    };
    assert_eq!(ino("bbin/sh"), ino("bbin/busybox"));
    assert_eq!(ino("bbin/ls"), ino("bbin/busybox"));
    assert_eq!(ino("bbin/cat"), ino("bbin/busybox"));
    // A hard link to a symlink links the symlink itself.
    assert_eq!(ino("bbin/link2"), ino("bbin/link"));
    assert!(
        fs::symlink_metadata(scene.root.join("bbin/link2"))
            .expect("lstat")
            .is_symlink()
    );
    assert_eq!(stats.total.hardlinks, 4);
}

#[test]
fn replacing_a_hard_linked_path_never_writes_through_to_the_other_name() {
    let scene = Scene::new();
    let lower = Tar::new().file("a", b"original").hardlink("b", "a").build();
    let upper = Tar::new().file("b", b"replaced").build();
    scene.apply(&[lower, upper]).expect("apply");
    assert_eq!(read(scene.root.join("a")), b"original");
    assert_eq!(read(scene.root.join("b")), b"replaced");
}

#[test]
fn a_hard_link_to_a_missing_target_fails() {
    let scene = Scene::new();
    let err = scene
        .apply(&[Tar::new().hardlink("h", "missing").build()])
        .expect_err("no target");
    assert!(matches!(err, LayerError::Fs { .. }), "{err}");
    assert!(err.to_string().contains("entry h"), "{err}");
}

#[test]
fn whiteouts_delete_lower_files_and_trees() {
    let scene = Scene::new();
    let lower = Tar::new()
        .file("etc/a", b"a")
        .file("etc/b", b"b")
        .file("var/lib/x/y/z", b"z")
        .symlink("etc/l", "/etc/b")
        .build();
    let upper = Tar::new()
        .whiteout("etc/.wh.a")
        .whiteout("var/lib/.wh.x")
        .whiteout("etc/.wh.l")
        .whiteout(".wh.missing")
        .whiteout("no/such/dir/.wh.x")
        .build();
    let stats = scene.apply(&[lower, upper]).expect("apply");
    assert!(!exists(scene.root.join("etc/a")));
    assert!(!exists(scene.root.join("var/lib/x")));
    assert!(!exists(scene.root.join("etc/l")));
    assert_eq!(
        read(scene.root.join("etc/b")),
        b"b",
        "the symlink's target survives"
    );
    assert!(exists(scene.root.join("var/lib")));
    assert!(
        !exists(scene.root.join("etc/.wh.a")),
        "whiteouts are never materialized"
    );
    assert!(
        !exists(scene.root.join("no")),
        "a whiteout creates no parents"
    );
    assert_eq!(stats.total.whiteouts, 5);
}

#[test]
fn a_whiteout_spares_entries_of_its_own_layer_in_either_order() {
    let scene = Scene::new();
    let lower = Tar::new().file("f", b"old").file("g", b"old").build();
    let upper = Tar::new()
        .file("f", b"new f")
        .whiteout(".wh.f")
        .whiteout(".wh.g")
        .file("g", b"new g")
        .build();
    scene.apply(&[lower, upper]).expect("apply");
    assert_eq!(read(scene.root.join("f")), b"new f");
    assert_eq!(read(scene.root.join("g")), b"new g");
}

fn opaque_scene(opaque_first: bool) -> Scene {
    let scene = Scene::new();
    let lower = Tar::new()
        .file("d/lower1", b"l1")
        .file("d/sub/lower2", b"l2")
        .file("d/keep/lower3", b"l3")
        .file("d/keep/deeper/lower4", b"l4")
        .file("other/untouched", b"u")
        .build();
    let mut upper = Tar::new();
    if opaque_first {
        upper.whiteout("d/.wh..wh..opq");
    }
    upper
        .dir("d/")
        .file("d/new1", b"n1")
        // Written into a lower directory without listing it: the directory stays,
        // its lower content is still hidden by the opaque parent.
        .file("d/keep/new2", b"n2");
    if !opaque_first {
        upper.whiteout("d/.wh..wh..opq");
    }
    let stats = scene.apply(&[lower, upper.build()]).expect("apply");
    assert_eq!(stats.total.opaque_whiteouts, 1);
    scene
}

fn assert_opaque_outcome(scene: &Scene) {
    let root = &scene.root;
    assert_eq!(read(root.join("d/new1")), b"n1");
    assert_eq!(read(root.join("d/keep/new2")), b"n2");
    assert!(!exists(root.join("d/lower1")));
    assert!(!exists(root.join("d/sub")));
    assert!(!exists(root.join("d/keep/lower3")));
    assert!(!exists(root.join("d/keep/deeper")));
    assert!(!exists(root.join("d/.wh..wh..opq")));
    assert_eq!(read(root.join("other/untouched")), b"u");
}

#[test]
fn an_opaque_whiteout_listed_last_keeps_the_same_layer_entries() {
    assert_opaque_outcome(&opaque_scene(false));
}

#[test]
fn an_opaque_whiteout_listed_first_keeps_the_same_layer_entries() {
    assert_opaque_outcome(&opaque_scene(true));
}

#[test]
fn an_entry_replaces_an_existing_path_of_another_type() {
    let scene = Scene::new();
    let lower = Tar::new()
        .file("file-to-dir", b"f")
        .file("dir-to-file/deep/tree", b"t")
        .symlink("link-to-dir", "file-to-dir")
        .dir("dir-to-link")
        .file("dir-to-link/child", b"c")
        .file("file-to-link", b"f")
        .build();
    let upper = Tar::new()
        .dir("file-to-dir")
        .file("dir-to-file", b"now a file")
        .dir("link-to-dir")
        .symlink("dir-to-link", "file-to-dir")
        .symlink("file-to-link", "dir-to-file")
        .build();
    scene.apply(&[lower, upper]).expect("apply");
    let meta = |rel: &str| fs::symlink_metadata(scene.root.join(rel)).expect("lstat");
    assert!(meta("file-to-dir").is_dir());
    assert_eq!(read(scene.root.join("dir-to-file")), b"now a file");
    assert!(
        meta("link-to-dir").is_dir(),
        "the symlink itself is replaced"
    );
    assert!(meta("dir-to-link").is_symlink());
    assert!(meta("file-to-link").is_symlink());
}

#[test]
fn a_directory_over_a_directory_merges() {
    let scene = Scene::new();
    let lower = Tar::new().file("d/old", b"o").build();
    let upper = Tar::new()
        .dir_with("d", Meta::mode(0o711))
        .file("d/new", b"n")
        .build();
    scene.apply(&[lower, upper]).expect("apply");
    assert_eq!(read(scene.root.join("d/old")), b"o");
    assert_eq!(read(scene.root.join("d/new")), b"n");
    assert_eq!(mode_of(&scene.root.join("d")), 0o711);
}

#[test]
fn missing_parents_are_created_0755() {
    let scene = Scene::new();
    scene
        .apply(&[Tar::new().file("x/y/z", b"z").build()])
        .expect("apply");
    assert_eq!(mode_of(&scene.root.join("x")), 0o755);
    assert_eq!(mode_of(&scene.root.join("x/y")), 0o755);
}

fn sample_layer() -> Vec<u8> {
    Tar::new()
        .dir("app")
        .file("app/data", &[7; 100_000])
        .symlink("app/link", "data")
        .build()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

#[test]
fn every_layer_media_type_decompresses_and_unpacks() {
    let tar = sample_layer();
    let cases: [(&str, Vec<u8>); 8] = [
        ("application/vnd.oci.image.layer.v1.tar", tar.clone()),
        ("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&tar)),
        ("application/vnd.oci.image.layer.v1.tar+zstd", zstd(&tar)),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            tar.clone(),
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            gzip(&tar),
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
            zstd(&tar),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            gzip(&tar),
        ),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            gzip(&tar),
        ),
    ];
    for (media_type, blob) in cases {
        let scene = Scene::new();
        let mut unpacker = scene.unpacker();
        let reader = decompress(media_type, blob.as_slice()).expect(media_type);
        let stats = unpacker.apply_layer(reader).expect(media_type);
        assert_eq!(stats.files, 1, "{media_type}");
        assert_eq!(
            read(scene.root.join("app/data")),
            vec![7; 100_000],
            "{media_type}"
        );
    }
}

#[test]
fn concatenated_gzip_members_are_one_layer() {
    let tar = sample_layer();
    let (head, tail) = tar.split_at(1024);
    let blob = [gzip(head), gzip(tail)].concat();
    let scene = Scene::new();
    let reader = decompress(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        blob.as_slice(),
    )
    .expect("gzip");
    scene.unpacker().apply_layer(reader).expect("apply");
    assert_eq!(read(scene.root.join("app/data")).len(), 100_000);
}

#[test]
fn unknown_media_types_are_refused() {
    for media_type in [
        "application/vnd.oci.image.layer.v1.tar+bzip2",
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+GZIP",
        "",
    ] {
        let err = decompress(media_type, &b""[..]).err().expect(media_type);
        assert!(
            matches!(err, LayerError::UnsupportedMediaType { .. }),
            "{err}"
        );
    }
}

#[test]
fn corrupt_compressed_streams_are_read_errors() {
    let mut blob = gzip(&sample_layer());
    let middle = blob.len() / 2;
    blob[middle] ^= 0xff;
    let scene = Scene::new();
    let reader = decompress(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        blob.as_slice(),
    )
    .expect("gzip");
    let err = scene.unpacker().apply_layer(reader).expect_err("corrupt");
    assert!(
        matches!(err, LayerError::Read { .. } | LayerError::Malformed { .. }),
        "{err}"
    );
}

#[test]
fn long_and_non_utf8_names_survive() {
    let scene = Scene::new();
    let long_dir = "d".repeat(120);
    let long_path = format!("{long_dir}/{}", "f".repeat(150));
    let long_target = format!("{}/target", "t".repeat(200));
    let layer = Tar::new()
        .file(&long_path, b"gnu long name")
        .pax(&[(
            "path",
            format!("{long_dir}/pax-{}", "p".repeat(200)).as_bytes(),
        )])
        .file("ignored-short-name", b"pax path")
        .file(b"caf\xe9/\xff\xfe", b"latin-1")
        .symlink("long-link", &long_target)
        .pax(&[("path", b"with\nnewline")])
        .file("x", b"newline")
        .build();
    scene.apply(&[layer]).expect("apply");
    assert_eq!(read(scene.root.join(&long_path)), b"gnu long name");
    assert_eq!(
        read(
            scene
                .root
                .join(format!("{long_dir}/pax-{}", "p".repeat(200)))
        ),
        b"pax path"
    );
    assert!(!exists(scene.root.join("ignored-short-name")));
    assert_eq!(
        read(scene.root.join(OsStr::from_bytes(b"caf\xe9/\xff\xfe"))),
        b"latin-1"
    );
    assert_eq!(
        fs::read_link(scene.root.join("long-link")).expect("readlink"),
        Path::new(&long_target)
    );
    assert_eq!(read(scene.root.join("with\nnewline")), b"newline");
}

#[test]
fn archives_from_the_tar_crate_builder_unpack() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    builder
        .append_data(&mut header, "opt/", &b""[..])
        .expect("dir");
    let data = b"hello from tar-rs";
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o600);
    header.set_size(data.len() as u64);
    let long = format!("opt/{}/file", "n".repeat(180));
    builder
        .append_data(&mut header, &long, &data[..])
        .expect("file");
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    builder
        .append_link(&mut header, "opt/link", format!("/{long}"))
        .expect("link");
    let layer = builder.into_inner().expect("finish");

    let scene = Scene::new();
    scene.apply(&[layer]).expect("apply");
    assert_eq!(read(scene.root.join(&long)), data);
    assert_eq!(mode_of(&scene.root.join(&long)), 0o600);
    assert_eq!(
        fs::read_link(scene.root.join("opt/link")).expect("readlink"),
        Path::new(&format!("/{long}"))
    );
}

#[test]
fn the_root_entry_leaves_the_root_directory_alone() {
    let scene = Scene::new();
    let before = fs::metadata(&scene.root).expect("root");
    let layer = Tar::new()
        .dir_with(
            "./",
            Meta {
                mode: 0o777,
                uid: 1234,
                gid: 1234,
                mtime: 0,
            },
        )
        .dir_with("/", Meta::mode(0o700))
        .build();
    scene.apply(&[layer]).expect("apply");
    let after = fs::metadata(&scene.root).expect("root");
    assert_eq!(before.mode(), after.mode());
    assert_eq!(before.uid(), after.uid());
    assert_eq!(before.mtime(), after.mtime());
}

#[test]
fn stats_add_up_across_layers() {
    let scene = Scene::new();
    let one = Tar::new()
        .dir("d")
        .file("d/a", b"12345")
        .symlink("s", "d/a")
        .hardlink("h", "d/a")
        .special("null", b'3')
        .build();
    let two = Tar::new()
        .whiteout("d/.wh.a")
        .whiteout("d/.wh..wh..opq")
        .file("b", b"678")
        .special("v", b'V')
        .build();
    let mut unpacker = scene.unpacker();
    let first = unpacker.apply_layer(one.as_slice()).expect("one");
    let second = unpacker.apply_layer(two.as_slice()).expect("two");
    assert_eq!(
        first,
        LayerStats {
            files: 1,
            dirs: 1,
            symlinks: 1,
            hardlinks: 1,
            bytes: 5,
            skipped_special: 1,
            ..LayerStats::default()
        }
    );
    assert_eq!(second.whiteouts, 1);
    assert_eq!(second.opaque_whiteouts, 1);
    assert_eq!(second.skipped_unknown, 1);
    let total = unpacker.finish();
    assert_eq!(total.layers, 2);
    assert_eq!(total.total.files, 2);
    assert_eq!(total.total.bytes, 8);
    assert_eq!(total.total.whiteouts, 1);
}

#[test]
fn the_unpacker_can_move_to_a_blocking_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Unpacker>();
    assert_send::<LayerError>();
}

#[test]
fn the_root_must_be_an_existing_directory() {
    let scene = Scene::new();
    let missing = Unpacker::new(&scene.root.join("missing"), UnpackLimits::default());
    assert!(matches!(missing, Err(LayerError::Root { .. })));
    fs::write(scene.root.join("file"), b"").expect("file");
    let file = Unpacker::new(&scene.root.join("file"), UnpackLimits::default());
    assert!(matches!(file, Err(LayerError::Root { .. })));
}

#[test]
fn a_failed_layer_poisons_the_unpacker() {
    let scene = Scene::new();
    let mut unpacker = scene.unpacker();
    let bad = Tar::new().hardlink("h", "missing").build();
    unpacker.apply_layer(bad.as_slice()).expect_err("bad layer");
    let good = Tar::new().file("f", b"f").build();
    let err = unpacker.apply_layer(good.as_slice()).expect_err("poisoned");
    assert!(matches!(err, LayerError::Poisoned), "{err}");
    assert!(!exists(scene.root.join("f")));
}

#[test]
fn truncated_and_garbage_layers_are_errors() {
    let whole = Tar::new().file("a", &[1; 2000]).file("b", b"b").build();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("inside a header", whole[..300].to_vec()),
        ("inside data", whole[..1000].to_vec()),
        ("garbage", vec![0x41; 4096]),
        ("bad checksum", {
            let mut bytes = whole.clone();
            bytes[0] ^= 1;
            bytes
        }),
        (
            "dangling long name",
            Tar::new()
                .member(b'L', b"././@LongLink", None, 0, Meta::default())
                .build(),
        ),
    ];
    for (what, bytes) in cases {
        let scene = Scene::new();
        let err = scene.apply(&[bytes]).expect_err(what);
        assert!(
            matches!(
                err,
                LayerError::Malformed { .. } | LayerError::Truncated { .. }
            ),
            "{what}: {err}"
        );
    }
}

#[test]
fn an_archive_cut_at_an_entry_boundary_is_accepted() {
    // Like tar-rs and Go: the end marker is optional; the blob digest is what catches
    // a truncated download.
    let scene = Scene::new();
    let layer = Tar::new().file("a", b"a").build_unterminated();
    scene.apply(&[layer]).expect("apply");
    assert_eq!(read(scene.root.join("a")), b"a");
}

#[test]
fn trailing_bytes_after_the_end_marker_are_drained() {
    let mut layer = Tar::new().file("a", b"a").build();
    layer.extend_from_slice(&[0; 10_240]);
    layer.extend_from_slice(b"trailing junk");
    let scene = Scene::new();
    let mut reader = layer.as_slice();
    scene.unpacker().apply_layer(&mut reader).expect("apply");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("read");
    assert!(rest.is_empty(), "the whole stream was consumed");
}

#[test]
fn header_only_entries_with_data_are_refused() {
    let scene = Scene::new();
    let mut tar = Tar::new();
    tar.member(b'5', b"dir", None, 512, Meta::mode(0o755))
        .data(&[0; 512]);
    let err = scene.apply(&[tar.build()]).expect_err("dir with data");
    assert!(matches!(err, LayerError::InvalidEntry { .. }), "{err}");
}

#[test]
fn gnu_sparse_files_are_refused() {
    let scene = Scene::new();
    let mut tar = Tar::new();
    tar.member(b'S', b"sparse", None, 0, Meta::default());
    let err = scene.apply(&[tar.build()]).expect_err("sparse");
    assert!(err.to_string().contains("sparse"), "{err}");
}

#[test]
fn invalid_ids_are_refused() {
    let scene = Scene::new();
    let layer = Tar::new()
        .pax(&[("uid", b"4294967295")])
        .file("f", b"f")
        .build();
    let err = scene.apply(&[layer]).expect_err("uid -1");
    assert!(matches!(err, LayerError::InvalidEntry { .. }), "{err}");
}
