//! Host tuning on the real `/proc` and `/sys` of this machine. It changes the host
//! while it runs, so it runs only when asked for: `BENCHER_TEST_REAL_TUNING=1` (and
//! root); otherwise it prints SKIPPED. The fake-tree tests are in `src/tuning/tests.rs`.

use bencher_runner::tuning::{KnobStatus, Tuning};

#[test]
fn tunes_and_restores_the_real_host() {
    if std::env::var_os("BENCHER_TEST_REAL_TUNING").is_none_or(|v| v != "1") {
        eprintln!("SKIPPED: set BENCHER_TEST_REAL_TUNING=1 to tune this host for real");
        return;
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "BENCHER_TEST_REAL_TUNING=1 needs root"
    );
    let tuning = Tuning::new("/".into());
    let before = tuning.observe();
    let applied = tuning
        .try_apply()
        .unwrap()
        .expect("no other runner tunes this host");
    for knob in &applied.state().knobs {
        eprintln!(
            "{}: requested {:?}, original {:?}, actual {:?}, {:?}",
            knob.knob, knob.requested, knob.original, knob.actual, knob.status
        );
        if knob.status == KnobStatus::Applied {
            assert_eq!(knob.actual, knob.requested, "{}", knob.knob);
        }
    }
    let restored = applied.restore().unwrap();
    assert!(restored.failed.is_empty(), "{restored:?}");
    assert_eq!(tuning.observe(), before);
}
