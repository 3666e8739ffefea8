//! The malicious suite: layers that try to create, modify, chmod, chown or delete
//! something outside the root. Every case runs in a fresh scene (a temp dir holding
//! `root/` and sentinels beside it, including at the path the attack aims for) and
//! `Scene::attack*` asserts afterwards that everything outside the root is byte-, mode-,
//! owner-, link-count-, mtime- and ctime-identical and that nothing appeared there.
//! Each test then checks the outcome inside the root. IO: temp dirs.

use std::fs;
use std::os::unix::fs::MetadataExt;

use bencher_oci::layer::{LayerError, Limit, UnpackLimits};

use crate::support::{Meta, Scene, Tar, XorShift, fix_checksums, in_root, mode_of};

fn exists(path: impl AsRef<std::path::Path>) -> bool {
    fs::symlink_metadata(path).is_ok()
}

#[test]
fn dotdot_paths_are_clamped_inside_the_root() {
    let (scene, outcome) = Scene::attack(&[Tar::new()
        .file("../outside/secret", b"pwned")
        .file("../../../../../victim", b"pwned")
        .file("a/../../../victim2", b"pwned")
        .dir_with("../outside/sub", Meta::mode(0o777))
        .build()]);
    outcome.expect("`..` is clamped at the root, not refused");
    assert_eq!(
        fs::read(scene.root.join("outside/secret")).expect("in root"),
        b"pwned"
    );
    assert_eq!(
        fs::read(scene.root.join("victim")).expect("in root"),
        b"pwned"
    );
    assert_eq!(
        fs::read(scene.root.join("victim2")).expect("in root"),
        b"pwned"
    );
    assert_eq!(mode_of(&scene.root.join("outside/sub")), 0o777);
}

#[test]
fn absolute_paths_are_rooted() {
    let (scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new()
                .file(scene.host_path("outside/secret"), b"pwned")
                .file(scene.host_path("victim"), b"pwned")
                .build(),
        ]
    });
    outcome.expect("absolute paths are taken relative to the root");
    let aimed = in_root(&scene, scene.host_path("outside/secret"));
    assert_eq!(fs::read(aimed).expect("in root"), b"pwned");
    let aimed = in_root(&scene, scene.host_path("victim"));
    assert_eq!(fs::read(aimed).expect("in root"), b"pwned");
}

#[test]
fn dotdot_in_gnu_long_names_and_pax_paths_is_clamped() {
    // 60 levels down, 66 up: six above the root once clamping is ignored.
    let deep = format!("{}{}", "a/".repeat(60), "../".repeat(66));
    let (scene, outcome) = Scene::attack(&[Tar::new()
        .file(format!("{deep}outside/secret"), b"long name")
        .pax(&[("path", b"/../../outside/sub/deep")])
        .file("harmless", b"pax path")
        .pax(&[("linkpath", b"../../../outside/secret")])
        .symlink("sym", "ignored")
        .build()]);
    outcome.expect("clamped");
    assert_eq!(
        fs::read(scene.root.join("outside/secret")).expect("in root"),
        b"long name"
    );
    assert_eq!(
        fs::read(scene.root.join("outside/sub/deep")).expect("in root"),
        b"pax path"
    );
    // The link target is stored as written; it is the resolution that is confined.
    assert_eq!(
        fs::read_link(scene.root.join("sym")).expect("link"),
        std::path::Path::new("../../../outside/secret")
    );
}

#[test]
fn a_write_through_an_absolute_symlink_in_the_same_layer_stays_inside() {
    let (scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new()
                .symlink("etc", scene.host_path("host-etc-outside"))
                .file("etc/passwd", b"pwned")
                .build(),
        ]
    });
    // `etc` resolves to root/<host path>, which does not exist: refused.
    let err = outcome.expect_err("nothing to write into inside the root");
    assert!(err.to_string().contains("etc/passwd"), "{err}");
    assert!(
        fs::symlink_metadata(scene.root.join("etc"))
            .expect("link")
            .is_symlink()
    );
}

#[test]
fn a_write_through_an_absolute_symlink_from_a_lower_layer_stays_inside() {
    let (scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        let host_etc = scene.host_path("host-etc-outside");
        vec![
            Tar::new().symlink("etc", &host_etc).build(),
            // A decoy at the same path inside the root: the write must land there.
            Tar::new().dir(&host_etc).build(),
            Tar::new().file("etc/passwd", b"pwned").build(),
        ]
    });
    outcome.expect("resolves inside the root");
    let decoy = in_root(&scene, scene.host_path("host-etc-outside/passwd"));
    assert_eq!(fs::read(decoy).expect("landed in the root"), b"pwned");
}

#[test]
fn a_write_through_a_dotdot_symlink_in_the_same_layer_stays_inside() {
    let (scene, outcome) = Scene::attack(&[Tar::new()
        .symlink("a", "../../..")
        .file("a/victim", b"pwned")
        .file("a/outside/secret", b"pwned")
        .build()]);
    outcome.expect("`a` resolves to the root itself");
    assert_eq!(
        fs::read(scene.root.join("victim")).expect("in root"),
        b"pwned"
    );
    assert_eq!(
        fs::read(scene.root.join("outside/secret")).expect("in root"),
        b"pwned"
    );
}

#[test]
fn a_write_through_a_relative_symlink_from_a_lower_layer_stays_inside() {
    let (scene, outcome) = Scene::attack(&[
        Tar::new()
            .symlink("up", "../outside")
            .symlink("dotdot", "../../../../..")
            .build(),
        Tar::new().file("dotdot/victim", b"pwned").build(),
        Tar::new().file("up/secret", b"pwned").build(),
    ]);
    // `dotdot` is the root; `up` is root/outside, which does not exist.
    let err = outcome.expect_err("root/outside does not exist");
    assert!(err.to_string().contains("up/secret"), "{err}");
    assert_eq!(
        fs::read(scene.root.join("victim")).expect("in root"),
        b"pwned"
    );
}

#[test]
fn a_symlink_as_the_final_component_is_replaced_not_followed() {
    let (scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new()
                .symlink("file", scene.host_path("outside/secret"))
                .symlink("dir", scene.host_path("outside"))
                .symlink("rel", "../outside/secret")
                .symlink("hard", scene.host_path("victim"))
                .build(),
            Tar::new()
                .file_with("file", b"pwned", Meta::mode(0o777))
                .dir_with("dir", Meta::mode(0o777))
                .symlink("rel", "elsewhere")
                .file("target", b"t")
                .hardlink("hard", "target")
                .build(),
        ]
    });
    outcome.expect("apply");
    let meta = |rel: &str| fs::symlink_metadata(scene.root.join(rel)).expect("lstat");
    assert!(meta("file").is_file());
    assert!(meta("dir").is_dir());
    assert_eq!(meta("hard").ino(), meta("target").ino());
}

#[test]
fn a_whiteout_through_a_symlink_pointing_outside_deletes_nothing_outside() {
    let (_scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new()
                .symlink("abs", scene.host_path("outside"))
                .symlink("rel", "../outside")
                .symlink("up", "../../../..")
                .build(),
            Tar::new()
                .whiteout("abs/.wh.secret")
                .whiteout("rel/.wh.secret")
                .whiteout("rel/.wh.sub")
                .whiteout("up/.wh.victim")
                .whiteout("up/.wh.outside")
                .build(),
        ]
    });
    outcome.expect("whiteouts of paths that do not exist are no-ops");
}

#[test]
fn a_whiteout_of_a_symlink_removes_the_link_not_its_target() {
    let (scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new()
                .symlink("l", scene.host_path("outside"))
                .symlink("m", scene.host_path("outside/secret"))
                .build(),
            Tar::new().whiteout(".wh.l").whiteout(".wh.m").build(),
        ]
    });
    outcome.expect("apply");
    assert!(!exists(scene.root.join("l")));
    assert!(!exists(scene.root.join("m")));
}

#[test]
fn an_opaque_whiteout_through_a_symlink_pointing_outside_empties_nothing_outside() {
    let (_scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new()
                .symlink("abs", scene.host_path("outside"))
                .symlink("rel", "../../outside")
                .symlink("etc", scene.host_path("host-etc-outside"))
                .build(),
            Tar::new()
                .whiteout("abs/.wh..wh..opq")
                .whiteout("rel/.wh..wh..opq")
                .whiteout("etc/.wh..wh..opq")
                .build(),
        ]
    });
    outcome.expect("opaque whiteouts of missing directories are no-ops");
}

#[test]
fn an_opaque_whiteout_removes_symlinks_without_following_them() {
    let (scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new()
                .symlink("d/abs", scene.host_path("outside"))
                .symlink("d/rel", "../../outside")
                .symlink("d/file", scene.host_path("outside/secret"))
                .build(),
            Tar::new().whiteout("d/.wh..wh..opq").build(),
        ]
    });
    outcome.expect("apply");
    assert!(
        fs::read_dir(scene.root.join("d"))
            .expect("d")
            .next()
            .is_none()
    );
}

#[test]
fn an_opaque_whiteout_at_the_root_only_empties_the_root() {
    let (scene, outcome) = Scene::attack(&[
        Tar::new().file("lower", b"l").symlink("up", "..").build(),
        Tar::new()
            .whiteout(".wh..wh..opq")
            .whiteout("../.wh..wh..opq")
            .file("new", b"n")
            .build(),
    ]);
    outcome.expect("apply");
    assert!(!exists(scene.root.join("lower")));
    assert!(!exists(scene.root.join("up")));
    assert!(exists(scene.root.join("new")));
}

#[test]
fn whiteouts_naming_dotdot_are_refused_and_climbing_ones_are_clamped() {
    let (_scene, outcome) = Scene::attack(&[Tar::new().whiteout("d/.wh...").build()]);
    assert!(
        matches!(outcome, Err(LayerError::InvalidEntry { .. })),
        "{outcome:?}"
    );

    let (scene, outcome) = Scene::attack(&[
        Tar::new().file("outside/secret", b"in root").build(),
        Tar::new()
            .whiteout("../.wh.outside")
            .whiteout("../../.wh.victim")
            .build(),
    ]);
    outcome.expect("clamped to the root");
    assert!(
        !exists(scene.root.join("outside")),
        "only the in-root copy is deleted"
    );
}

#[test]
fn a_hard_link_to_an_absolute_outside_path_fails() {
    let (scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new()
                .hardlink("h", scene.host_path("outside/secret"))
                .build(),
        ]
    });
    let err = outcome.expect_err("no such file inside the root");
    assert!(matches!(err, LayerError::Fs { .. }), "{err}");
    assert!(!exists(scene.root.join("h")));
}

#[test]
fn a_hard_link_to_an_absolute_path_links_the_in_root_file_of_that_name() {
    let (scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new()
                .file(scene.host_path("outside/secret"), b"decoy")
                .build(),
            Tar::new()
                .hardlink("h", scene.host_path("outside/secret"))
                .build(),
        ]
    });
    outcome.expect("links the in-root decoy");
    let decoy = in_root(&scene, scene.host_path("outside/secret"));
    let ino = |p: &std::path::Path| fs::symlink_metadata(p).expect("lstat").ino();
    assert_eq!(ino(&scene.root.join("h")), ino(&decoy));
    assert_eq!(fs::read(scene.root.join("h")).expect("h"), b"decoy");
}

#[test]
fn a_hard_link_via_dotdot_stays_inside() {
    let (scene, outcome) = Scene::attack(&[Tar::new().hardlink("h", "../outside/secret").build()]);
    outcome.expect_err("root/outside/secret does not exist");
    assert!(!exists(scene.root.join("h")));

    let (scene, outcome) = Scene::attack(&[
        Tar::new().file("outside/secret", b"decoy").build(),
        Tar::new().hardlink("h", "../../../outside/secret").build(),
    ]);
    outcome.expect("links the in-root file");
    assert_eq!(fs::read(scene.root.join("h")).expect("h"), b"decoy");
}

#[test]
fn a_hard_link_through_a_symlinked_directory_stays_inside() {
    let (scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new()
                .symlink("abs", scene.host_path("outside"))
                .symlink("rel", "../outside")
                .build(),
            Tar::new().hardlink("h", "abs/secret").build(),
        ]
    });
    outcome.expect_err("abs resolves inside the root, where there is no secret");
    assert!(!exists(scene.root.join("h")));

    let (scene, outcome) = Scene::attack(&[
        Tar::new().symlink("rel", "../outside").build(),
        Tar::new().hardlink("h", "rel/secret").build(),
    ]);
    outcome.expect_err("rel resolves to root/outside, which does not exist");
    assert!(!exists(scene.root.join("h")));
}

#[test]
fn a_hard_link_to_a_symlink_pointing_outside_links_the_symlink() {
    let (scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new()
                .symlink("l", scene.host_path("outside/secret"))
                .hardlink("h", "l")
                .build(),
        ]
    });
    outcome.expect("apply");
    let meta = fs::symlink_metadata(scene.root.join("h")).expect("h");
    assert!(meta.is_symlink(), "the link itself, not its target");
}

#[test]
fn device_nodes_and_fifos_are_never_created() {
    let (scene, outcome) = Scene::attack(&[Tar::new()
        .special("dev/null", b'3')
        .special("dev/sda", b'4')
        .special("fifo", b'6')
        .special("../outside/evil-fifo", b'6')
        .special("../../victim", b'3')
        .build()]);
    let stats = outcome.expect("skipped, not refused");
    assert_eq!(stats.total.skipped_special, 5);
    assert!(!exists(scene.root.join("dev")), "not even their parents");
    assert!(!exists(scene.root.join("fifo")));
    assert!(fs::read_dir(&scene.root).expect("root").next().is_none());
}

fn small(max_total_bytes: u64, max_entries: u64) -> UnpackLimits {
    UnpackLimits {
        max_total_bytes,
        max_entries,
    }
}

#[test]
fn a_layer_past_the_byte_cap_fails_before_writing_the_file() {
    let (scene, outcome) = Scene::attack_with(
        small(64 * 1024, 100),
        &[Tar::new()
            .file("small", &[1; 1000])
            .file("big", &vec![2; 1 << 20])
            .build()],
    );
    let err = outcome.expect_err("over the cap");
    assert!(
        matches!(
            &err,
            LayerError::LimitExceeded {
                path: Some(path),
                limit: Limit::TotalBytes,
                max: 65536,
            } if path.as_os_str() == "big"
        ),
        "{err}"
    );
    assert!(exists(scene.root.join("small")));
    assert!(!exists(scene.root.join("big")), "refused before creation");
}

#[test]
fn the_byte_cap_is_cumulative_across_layers() {
    let layer = |name: &str| Tar::new().file(name, &[0; 40 * 1024]).build();
    let (scene, outcome) = Scene::attack_with(
        small(100 * 1024, 100),
        &[layer("one"), layer("two"), layer("three")],
    );
    let err = outcome.expect_err("the third layer passes the cap");
    assert!(
        matches!(
            err,
            LayerError::LimitExceeded {
                limit: Limit::TotalBytes,
                ..
            }
        ),
        "{err}"
    );
    assert!(exists(scene.root.join("two")));
    assert!(!exists(scene.root.join("three")));
}

#[test]
fn a_layer_past_the_entry_cap_fails() {
    let mut tar = Tar::new();
    for i in 0..10 {
        tar.file(format!("f{i}"), b"x");
    }
    let (scene, outcome) = Scene::attack_with(small(1 << 20, 5), &[tar.build()]);
    let err = outcome.expect_err("too many entries");
    assert!(
        matches!(&err, LayerError::LimitExceeded { path: Some(path), limit: Limit::Entries, max: 5 } if path.as_os_str() == "f5"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&scene.root).expect("root").count(), 5);
}

#[test]
fn a_header_understating_its_size_cannot_smuggle_data_into_the_file() {
    // The header says 10 bytes; 4 KiB follow. The rest is read as the next header,
    // which fails its checksum: the file holds exactly the declared 10 bytes.
    let (scene, outcome) = Scene::attack_with(
        small(1 << 20, 100),
        &[Tar::new().lying_file("f", 10, &[b'A'; 4096]).build()],
    );
    let err = outcome.expect_err("garbage after the declared data");
    assert!(matches!(err, LayerError::Malformed { .. }), "{err}");
    assert_eq!(fs::read(scene.root.join("f")).expect("f"), vec![b'A'; 10]);
}

#[test]
fn a_header_overstating_its_size_is_a_truncation_error() {
    let (scene, outcome) = Scene::attack_with(
        small(4 << 20, 100),
        &[Tar::new()
            .lying_file("f", 1 << 20, b"only ten b")
            .build_unterminated()],
    );
    let err = outcome.expect_err("truncated");
    assert!(
        matches!(
            err,
            LayerError::Truncated {
                declared: 1_048_576,
                read: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(fs::metadata(scene.root.join("f")).expect("f").len() <= 10);
}

#[test]
fn a_pax_size_past_the_cap_is_refused_before_writing() {
    let (scene, outcome) = Scene::attack_with(
        small(1 << 20, 100),
        &[Tar::new()
            .pax(&[("size", b"1073741824")])
            .file("f", b"small header")
            .build()],
    );
    let err = outcome.expect_err("the PAX size overrides the header and passes the cap");
    assert!(
        matches!(
            err,
            LayerError::LimitExceeded {
                limit: Limit::TotalBytes,
                ..
            }
        ),
        "{err}"
    );
    assert!(!exists(scene.root.join("f")));
}

#[test]
fn huge_extension_headers_are_refused_without_reading_them() {
    // Declared sizes far beyond memory; nothing after the header is even present.
    for flag in [b'x', b'L', b'K'] {
        let mut tar = Tar::new();
        tar.member(flag, b"././@LongLink", None, 30 << 30, Meta::default());
        let (scene, outcome) = Scene::attack(&[tar.build()]);
        let err = outcome.expect_err("over 1 MiB");
        assert!(
            matches!(err, LayerError::Malformed { .. }),
            "{}: {err}",
            flag as char
        );
        assert!(fs::read_dir(&scene.root).expect("root").next().is_none());
    }
}

#[test]
fn a_symlink_loop_fails_without_escaping() {
    let (_scene, outcome) = Scene::attack(&[Tar::new()
        .symlink("a", "b")
        .symlink("b", "/a")
        .file("a/x", b"loop")
        .build()]);
    let err = outcome.expect_err("ELOOP");
    assert!(matches!(err, LayerError::Fs { .. }), "{err}");
}

#[test]
fn a_long_symlink_chain_ending_outside_fails_without_escaping() {
    let (_scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        let mut tar = Tar::new();
        for i in 0..50 {
            tar.symlink(format!("l{i}"), format!("l{}", i + 1));
        }
        tar.symlink("l50", scene.host_path("outside"));
        let mut short = Tar::new();
        short.symlink("s0", "s1").symlink("s1", "../../../outside");
        vec![
            tar.build(),
            short.build(),
            Tar::new().file("l0/secret", b"pwned").build(),
        ]
    });
    outcome.expect_err("too many links, or a missing in-root target");

    let (_scene, outcome) = Scene::attack(&[
        Tar::new()
            .symlink("s0", "s1")
            .symlink("s1", "../../../outside")
            .build(),
        Tar::new()
            .file("s0/secret", b"pwned")
            .whiteout("s0/.wh.sub")
            .build(),
    ]);
    outcome.expect_err("s0 resolves to root/outside, which does not exist");
}

#[test]
fn deferred_directory_metadata_is_not_applied_through_a_replacing_symlink() {
    // The directory's mode and mtime are applied when the layer ends; by then a later
    // entry has replaced it with a symlink to the outside, or to a directory inside
    // the root whose metadata must not change either (the final component is not
    // followed, whatever RESOLVE_IN_ROOT would make of it).
    let loud = Meta {
        mode: 0o777,
        mtime: 5,
        ..Meta::default()
    };
    let (scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new().dir_with("decoy", Meta::mode(0o700)).build(),
            Tar::new()
                .dir_with("d", loud)
                .symlink("d", scene.host_path("outside"))
                .dir_with("e", loud)
                .symlink("e", "../outside")
                .dir_with("f", loud)
                .symlink("f", "/decoy")
                .build(),
        ]
    });
    outcome.expect("apply");
    for link in ["d", "e", "f"] {
        let meta = fs::symlink_metadata(scene.root.join(link)).expect("link");
        assert!(meta.is_symlink(), "{link}");
    }
    let decoy = fs::metadata(scene.root.join("decoy")).expect("decoy");
    assert_eq!(decoy.mode() & 0o7777, 0o700);
    assert_eq!(decoy.mtime(), 1_600_000_000, "the default entry mtime");
}

#[test]
fn implied_parents_are_not_created_through_a_dangling_symlink() {
    let (scene, outcome) = Scene::attack_built(UnpackLimits::default(), |scene| {
        vec![
            Tar::new()
                .symlink("p", scene.host_path("outside/new-dir"))
                .symlink("q", "../outside/new-dir")
                .build(),
            Tar::new().file("p/x", b"pwned").build(),
        ]
    });
    outcome.expect_err("p does not resolve to a directory inside the root");
    assert!(!exists(in_root(&scene, scene.host_path("outside/new-dir"))));
}

#[test]
fn nul_bytes_in_names_are_refused() {
    let (_scene, outcome) = Scene::attack(&[Tar::new()
        .pax(&[("path", b"outside\0/../../victim")])
        .file("x", b"pwned")
        .build()]);
    assert!(
        matches!(outcome, Err(LayerError::InvalidEntry { .. })),
        "{outcome:?}"
    );

    let (_scene, outcome) = Scene::attack(&[Tar::new()
        .pax(&[("linkpath", b"a\0b")])
        .symlink("s", "x")
        .build()]);
    assert!(
        matches!(outcome, Err(LayerError::InvalidEntry { .. })),
        "{outcome:?}"
    );
}

#[test]
fn mutated_archives_never_panic_or_escape() {
    // Deterministic mutations of an archive full of hostile entries: every outcome is
    // fine except a panic or a change outside the root (checked by `attack_again`).
    let base = |scene: &Scene| {
        Tar::new()
            .symlink("abs", scene.host_path("outside"))
            .symlink("rel", "../outside")
            .symlink("up", "../../..")
            .dir("d")
            .file("d/f", b"data")
            .file("rel/x", b"x")
            .hardlink("h", "d/f")
            .whiteout("abs/.wh.secret")
            .whiteout("rel/.wh..wh..opq")
            .pax(&[("path", b"../../victim"), ("size", b"3")])
            .file("p", b"abc")
            .file("up/victim", b"pwned")
            .build()
    };
    let scene = Scene::new();
    let base = base(&scene);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        let mut bytes = base.clone();
        for _ in 0..1 + rng.below(8) {
            let i = rng.below(bytes.len());
            bytes[i] = match rng.below(4) {
                0 => 0,
                1 => b'/',
                2 => b'.',
                _ => rng.next() as u8,
            };
        }
        if rng.below(2) == 0 {
            fix_checksums(&mut bytes);
        }
        if rng.below(4) == 0 {
            let cut = rng.below(bytes.len());
            bytes.truncate(cut);
        }
        // Any outcome but a panic or a change outside the root is fine.
        let _outcome = scene.attack_again(small(1 << 20, 1000), &[bytes]);
    }
}
