//! Host tuning against fake `/proc`, `/sys` and `/dev` trees in temporary directories:
//! apply and read back, unsupported knobs, a crash then restore, idempotent restore,
//! two runners and one lock.

use std::path::PathBuf;

use tempfile::TempDir;

use super::*;

/// Every knob file the tuning writes, with the values of a typical untuned host.
const HOST: &[(&str, &str)] = &[
    (knob::RANDOMIZE_VA_SPACE, "2\n"),
    (knob::NMI_WATCHDOG, "1\n"),
    (knob::SOFT_WATCHDOG, "1\n"),
    (knob::SWAPPINESS, "60\n"),
    (knob::PERF_EVENT_PARANOID, "2\n"),
    (knob::THP_ENABLED, "always [madvise] never\n"),
    (knob::NUMA_BALANCING, "1\n"),
    (knob::TIMER_MIGRATION, "1\n"),
    (knob::KSM_RUN, "1\n"),
    (knob::CPUS_ONLINE, "0-3\n"),
    (knob::SMT_CONTROL, "on\n"),
    (knob::INTEL_NO_TURBO, "0\n"),
    (
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
        "powersave\n",
    ),
    (
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
        "powersave\n",
    ),
    (
        "sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
        "powersave\n",
    ),
    (
        "sys/devices/system/cpu/cpu3/cpufreq/scaling_governor",
        "schedutil\n",
    ),
    ("proc/irq/0/smp_affinity_list", "0-3\n"),
    ("proc/irq/9/smp_affinity_list", "0-3\n"),
    ("proc/irq/24/smp_affinity_list", "2\n"),
    (knob::WORKQUEUE_CPUMASK, "0000000f\n"),
    (BOOT_ID, "boot-one\n"),
    // cgroup v1 cpuset, as on a hybrid host.
    ("sys/fs/cgroup/cpuset/cpuset.cpus", "0-3\n"),
    ("sys/fs/cgroup/cpuset/cpuset.mems", "0\n"),
];

/// The runner's cgroup in the v1 cpuset hierarchy of the fake host.
const V1_CGROUP: &str = "sys/fs/cgroup/cpuset/bencher-runner";
/// In the v2 hierarchy.
const V2_CGROUP: &str = "sys/fs/cgroup/bencher-runner";

/// What each knob's file reads (normalized) on the untuned fake host.
const ORIGINALS: &[(&str, &str)] = &[
    (knob::RANDOMIZE_VA_SPACE, "2"),
    (knob::SWAPPINESS, "60"),
    (knob::THP_ENABLED, "madvise"),
    (knob::SMT_CONTROL, "on"),
    (knob::INTEL_NO_TURBO, "0"),
    (
        "sys/devices/system/cpu/cpu3/cpufreq/scaling_governor",
        "schedutil",
    ),
    ("proc/irq/24/smp_affinity_list", "2"),
    (knob::WORKQUEUE_CPUMASK, "f"),
];

struct FakeHost {
    dir: TempDir,
}

impl FakeHost {
    fn empty() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn typical() -> Self {
        let host = Self::empty();
        for (path, value) in HOST {
            host.write(path, value);
        }
        host.write_bytes(knob::CPU_DMA_LATENCY, &2_000_000_000i32.to_ne_bytes());
        // The runner's threads: none listed unless a test adds one (`runner_thread`).
        std::fs::create_dir_all(host.path(cpuset::SELF_TASKS)).unwrap();
        host
    }

    /// cgroup v2 with the cpuset controller, not yet enabled for children.
    fn v2() -> Self {
        let host = Self::typical();
        std::fs::remove_dir_all(host.path("sys/fs/cgroup/cpuset")).unwrap();
        host.write(
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids\n",
        );
        host.write("sys/fs/cgroup/cgroup.subtree_control", "cpu memory pids\n");
        host
    }

    /// Lists a real thread of this test as one of the "runner's" threads, so the knob
    /// moves it (and only it) for real.
    fn runner_thread(&self, tid: rustix::process::Pid) {
        std::fs::create_dir_all(
            self.path(cpuset::SELF_TASKS)
                .join(tid.as_raw_nonzero().to_string()),
        )
        .unwrap();
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn write(&self, relative: &str, text: &str) {
        self.write_bytes(relative, text.as_bytes());
    }

    fn write_bytes(&self, relative: &str, bytes: &[u8]) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// The file becomes one the kernel will not let even root write: a read-only
    /// sysctl of the real host.
    fn refuse_writes(&self, relative: &str) {
        let path = self.path(relative);
        let _ = std::fs::remove_file(&path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/proc/sys/kernel/osrelease", path).unwrap();
    }

    fn read(&self, relative: &str, format: Format) -> String {
        format.normalize(&std::fs::read_to_string(self.path(relative)).unwrap())
    }

    fn latency(&self) -> i32 {
        read_latency(&self.path(knob::CPU_DMA_LATENCY)).unwrap()
    }

    fn tuning(&self) -> Tuning {
        Tuning::new(self.dir.path().to_owned())
    }

    fn state_file(&self) -> Option<SavedState> {
        state::load(&self.path(TUNING_DIR)).unwrap()
    }

    fn assert_untuned(&self) {
        for (path, value) in ORIGINALS {
            let format = if *path == knob::THP_ENABLED {
                Format::Choice
            } else if *path == knob::WORKQUEUE_CPUMASK {
                Format::CpuMask
            } else {
                Format::Plain
            };
            assert_eq!(self.read(path, format), *value, "{path}");
        }
        assert!(!self.path(V1_CGROUP).exists(), "the cpuset cgroup is left");
        assert!(!self.path(V2_CGROUP).exists(), "the cpuset cgroup is left");
    }
}

fn status(state: &TuningState, knob: Knob) -> &KnobStatus {
    &state.get(knob).unwrap().status
}

#[test]
fn applies_every_knob_reads_it_back_and_restores_it() {
    let host = FakeHost::typical();
    let applied = host.tuning().try_apply().unwrap().expect("lock is free");
    let state = applied.state().clone();
    assert_eq!(state.knobs.len(), Knob::ALL.len());
    for knob in &state.knobs {
        assert_eq!(knob.status, KnobStatus::Applied, "{knob:?}");
    }
    let get = |knob| state.get(knob).unwrap();
    assert_eq!(get(Knob::Aslr).original.as_deref(), Some("2"));
    assert_eq!(get(Knob::Aslr).actual.as_deref(), Some("0"));
    assert_eq!(get(Knob::Swappiness).requested.as_deref(), Some("10"));
    assert_eq!(get(Knob::PerfEventParanoid).actual.as_deref(), Some("-1"));
    assert_eq!(
        get(Knob::TransparentHugepages).original.as_deref(),
        Some("madvise")
    );
    assert_eq!(
        get(Knob::TransparentHugepages).actual.as_deref(),
        Some("never")
    );
    assert_eq!(
        get(Knob::Governor).original.as_deref(),
        Some("powersave ×3, schedutil ×1")
    );
    assert_eq!(get(Knob::Governor).actual.as_deref(), Some("performance"));
    assert_eq!(get(Knob::Turbo).requested.as_deref(), Some("1"));
    assert_eq!(get(Knob::IrqAffinity).actual.as_deref(), Some("0"));
    assert_eq!(get(Knob::WorkqueueAffinity).actual.as_deref(), Some("1"));
    assert_eq!(get(Knob::Cstates).actual.as_deref(), Some("0"));

    // The host is tuned, and its originals are on disk.
    assert_eq!(host.read(knob::RANDOMIZE_VA_SPACE, Format::Plain), "0");
    assert_eq!(host.read(knob::SMT_CONTROL, Format::Plain), "off");
    assert_eq!(host.read(knob::INTEL_NO_TURBO, Format::Plain), "1");
    assert_eq!(host.read(knob::KSM_RUN, Format::Plain), "0");
    assert_eq!(
        host.read("proc/irq/24/smp_affinity_list", Format::Plain),
        "0"
    );
    assert_eq!(host.latency(), 0);
    let saved = host.state_file().expect("state file written");
    assert_eq!(saved.boot_id.as_deref(), Some("boot-one"));
    assert!(
        saved
            .originals
            .iter()
            .any(|o| o.knob == Knob::Swappiness && o.value == "60")
    );

    // Serializable, for the job's record.
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(json["knobs"][0]["knob"], "aslr");
    assert_eq!(json["knobs"][0]["status"], "applied");
    let back: TuningState = serde_json::from_value(json).unwrap();
    assert_eq!(back, state);

    let restored = applied.restore().unwrap();
    assert!(restored.failed.is_empty(), "{restored:?}");
    host.assert_untuned();
    assert_eq!(host.read(knob::KSM_RUN, Format::Plain), "1");
    assert!(host.state_file().is_none());
}

#[test]
fn missing_knobs_are_unsupported_with_the_reason() {
    let host = FakeHost::empty();
    let applied = host.tuning().try_apply().unwrap().unwrap();
    for knob in &applied.state().knobs {
        match &knob.status {
            KnobStatus::Unsupported { reason } => assert!(!reason.is_empty(), "{knob:?}"),
            other => panic!("{}: {other:?}", knob.knob),
        }
    }
    let reason = |knob| match status(applied.state(), knob) {
        KnobStatus::Unsupported { reason } => reason.clone(),
        other => panic!("{other:?}"),
    };
    assert!(reason(Knob::Aslr).contains("randomize_va_space"));
    assert!(reason(Knob::Governor).contains("no cpufreq"));
    assert!(reason(Knob::Turbo).contains("no turbo control"));
    // Nothing changed, so nothing to remember.
    assert!(host.state_file().is_none());
    applied.restore().unwrap();
}

#[test]
fn hosts_without_smt_or_with_one_cpu_say_so() {
    let host = FakeHost::typical();
    host.write(knob::SMT_CONTROL, "notsupported\n");
    host.write(knob::CPUS_ONLINE, "0\n");
    let applied = host.tuning().try_apply().unwrap().unwrap();
    let state = applied.state();
    assert!(matches!(status(state, Knob::Smt),
        KnobStatus::Unsupported { reason } if reason.contains("notsupported")));
    assert!(matches!(status(state, Knob::IrqAffinity),
        KnobStatus::Unsupported { reason } if reason.contains("one online CPU")));
    assert!(matches!(status(state, Knob::Cpuset),
        KnobStatus::Unsupported { reason } if reason.contains("1 online CPU")));
    assert!(!host.path(V1_CGROUP).exists());
    assert_eq!(status(state, Knob::Aslr), &KnobStatus::Applied);
    drop(applied);
    assert_eq!(host.read(knob::SMT_CONTROL, Format::Plain), "notsupported");
    assert_eq!(host.read(knob::RANDOMIZE_VA_SPACE, Format::Plain), "2");
}

#[test]
fn refused_writes_are_unsupported_or_partial() {
    let host = FakeHost::typical();
    host.refuse_writes(knob::SWAPPINESS);
    host.refuse_writes("proc/irq/9/smp_affinity_list");
    // boost instead of intel_pstate.
    std::fs::remove_file(host.path(knob::INTEL_NO_TURBO)).unwrap();
    host.write(knob::CPUFREQ_BOOST, "1\n");
    let applied = host.tuning().try_apply().unwrap().unwrap();
    let state = applied.state().clone();
    match status(&state, Knob::Swappiness) {
        KnobStatus::Unsupported { reason } => {
            assert!(reason.contains("permission denied"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    match status(&state, Knob::IrqAffinity) {
        KnobStatus::Partial { reason } => {
            assert!(reason.starts_with("1 of 3 files refused"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(status(&state, Knob::Turbo), &KnobStatus::Applied);
    assert_eq!(host.read(knob::CPUFREQ_BOOST, Format::Plain), "0");
    let restored = applied.restore().unwrap();
    assert!(restored.failed.is_empty(), "{restored:?}");
    assert_eq!(host.read(knob::CPUFREQ_BOOST, Format::Plain), "1");
}

#[test]
fn kept_knobs_are_left_alone_and_no_tuning_is_none() {
    let host = FakeHost::typical();
    let args = TuningArgs {
        aslr: true,
        smt: true,
        cstates: true,
        irq_affinity: true,
        cpuset: true,
        swappiness: 30,
        governor: "schedutil".into(),
        ..TuningArgs::default()
    };
    let tuning = host
        .tuning()
        .with_settings(Settings::from_args(&args).unwrap());
    let mut applied = tuning.try_apply().unwrap().unwrap();
    assert_eq!(applied.place_job(1), None, "no partition, no placement");
    assert!(!host.path(V1_CGROUP).exists());
    let state = applied.state();
    for knob in [
        Knob::Aslr,
        Knob::Smt,
        Knob::Cstates,
        Knob::IrqAffinity,
        Knob::WorkqueueAffinity,
        Knob::Cpuset,
    ] {
        assert_eq!(status(state, knob), &KnobStatus::Kept, "{knob}");
        assert_eq!(state.get(knob).unwrap().requested, None);
    }
    assert_eq!(host.read(knob::RANDOMIZE_VA_SPACE, Format::Plain), "2");
    assert_eq!(host.read(knob::SMT_CONTROL, Format::Plain), "on");
    assert_eq!(host.latency(), 2_000_000_000);
    assert_eq!(host.read(knob::SWAPPINESS, Format::Plain), "30");
    assert_eq!(
        host.read(
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
            Format::Plain
        ),
        "schedutil"
    );
    applied.restore().unwrap();
    host.assert_untuned();

    let off = TuningArgs {
        no_tuning: true,
        ..TuningArgs::default()
    };
    assert_eq!(Settings::from_args(&off), None);
}

#[test]
fn after_a_crash_the_next_start_restores_and_restoring_is_idempotent() {
    let host = FakeHost::typical();
    host.tuning().try_apply().unwrap().unwrap().crash();
    // Still tuned, with the state file left behind.
    assert_eq!(host.read(knob::SWAPPINESS, Format::Plain), "10");
    let leftover = std::fs::read(host.path(TUNING_DIR).join(state::STATE_FILE)).unwrap();

    match host.tuning().restore_leftover().unwrap() {
        Leftover::Restored { pid, restored } => {
            assert_eq!(pid, std::process::id());
            assert!(restored.failed.is_empty(), "{restored:?}");
            assert!(!restored.written.is_empty());
        }
        other => panic!("{other:?}"),
    }
    host.assert_untuned();
    assert!(host.state_file().is_none());
    assert_eq!(host.tuning().restore_leftover().unwrap(), Leftover::None);

    // The same state file again (a crash during the restore): nothing left to write.
    std::fs::write(host.path(TUNING_DIR).join(state::STATE_FILE), &leftover).unwrap();
    match host.tuning().restore_leftover().unwrap() {
        Leftover::Restored { restored, .. } => {
            assert!(restored.written.is_empty(), "{restored:?}");
            assert!(restored.unchanged > 0);
        }
        other => panic!("{other:?}"),
    }
    host.assert_untuned();
}

#[test]
fn the_next_benchmark_after_a_crash_remembers_the_true_originals() {
    let host = FakeHost::typical();
    host.tuning().try_apply().unwrap().unwrap().crash();
    // Applying again must not take the tuned values for the host's own.
    let applied = host.tuning().try_apply().unwrap().unwrap();
    let saved = host.state_file().unwrap();
    let swappiness = saved
        .originals
        .iter()
        .find(|o| o.knob == Knob::Swappiness)
        .unwrap();
    assert_eq!(swappiness.value, "60");
    assert_eq!(
        applied
            .state()
            .get(Knob::Swappiness)
            .unwrap()
            .original
            .as_deref(),
        Some("60")
    );
    applied.restore().unwrap();
    host.assert_untuned();
}

#[test]
fn state_from_a_previous_boot_is_discarded() {
    let host = FakeHost::typical();
    host.tuning().try_apply().unwrap().unwrap().crash();
    host.write(BOOT_ID, "boot-two\n");
    // A real reboot would have reset the kernel's values; the fake tree keeps them,
    // which shows that nothing was written.
    assert_eq!(
        host.tuning().restore_leftover().unwrap(),
        Leftover::PreviousBoot {
            pid: std::process::id()
        }
    );
    assert_eq!(host.read(knob::SWAPPINESS, Format::Plain), "10");
    assert!(host.state_file().is_none());
}

#[tokio::test]
async fn two_runners_take_turns_on_one_host() {
    let host = FakeHost::typical();
    let first = host.tuning().try_apply().unwrap().expect("free");
    let second = host.tuning();
    assert!(second.try_apply().unwrap().is_none(), "the lock is held");
    // A second runner starting up leaves the first one's state alone.
    assert_eq!(second.restore_leftover().unwrap(), Leftover::Busy);
    assert_eq!(host.read(knob::SWAPPINESS, Format::Plain), "10");
    assert!(host.state_file().is_some());

    let canceled = CancellationToken::new();
    canceled.cancel();
    assert!(matches!(
        second.apply(&canceled).await,
        Err(ApplyError::Canceled)
    ));

    let waiting = tokio::spawn({
        let second = second.clone();
        async move { second.apply(&CancellationToken::new()).await }
    });
    tokio::task::spawn_blocking(move || first.restore())
        .await
        .unwrap()
        .unwrap();
    let applied = waiting.await.unwrap().unwrap();
    // It got the lock only after the first runner restored: its originals are the
    // host's own.
    assert_eq!(
        applied
            .state()
            .get(Knob::Swappiness)
            .unwrap()
            .original
            .as_deref(),
        Some("60")
    );
    applied.restore_async().await.unwrap();
    host.assert_untuned();
}

#[test]
fn observing_changes_nothing() {
    let host = FakeHost::typical();
    let observed = host.tuning().observe();
    let value = |knob| {
        observed
            .iter()
            .find(|(k, _)| *k == knob)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(value(Knob::Swappiness), Ok("60".to_owned()));
    assert_eq!(value(Knob::TransparentHugepages), Ok("madvise".to_owned()));
    assert_eq!(value(Knob::Cstates), Ok("2000000000".to_owned()));
    assert!(
        FakeHost::empty()
            .tuning()
            .observe()
            .iter()
            .all(|(_, v)| v.is_err())
    );
    host.assert_untuned();
    assert!(host.state_file().is_none());
}

/// A thread that parks until told to end, and its id.
fn parked_thread() -> (
    rustix::process::Pid,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        tid_tx.send(rustix::thread::gettid()).unwrap();
        let _ = end_rx.recv();
    });
    (tid_rx.recv().unwrap(), end_tx, handle)
}

fn affinity(tid: rustix::process::Pid) -> Vec<u32> {
    let set = rustix::thread::sched_getaffinity(Some(tid)).unwrap();
    (0..64u32).filter(|&c| set.is_set(c as usize)).collect()
}

#[test]
fn cpuset_partition_on_cgroup_v1_places_the_benchmark_and_moves_the_runner() {
    let host = FakeHost::typical();
    let (tid, end, handle) = parked_thread();
    let before = affinity(tid);
    host.runner_thread(tid);
    let mut applied = host.tuning().try_apply().unwrap().unwrap();
    let knob = applied.state().get(Knob::Cpuset).unwrap().clone();
    assert_eq!(knob.status, KnobStatus::Applied, "{knob:?}");
    assert_eq!(knob.original.as_deref(), Some("all online CPUs (0-3)"));
    assert_eq!(
        knob.actual.as_deref(),
        Some("benchmark 1-3, housekeeping 0")
    );
    let detail = knob.cpuset.clone().unwrap();
    assert_eq!(detail.benchmark_cpus, "1-3");
    assert_eq!(detail.housekeeping_cpus, "0");
    // v1: a cpuset, but the host's other tasks are not kept off it.
    assert_eq!(detail.exclusivity, cpuset::Exclusivity::Cpuset);
    assert_eq!(detail.cgroup, Some(host.path(V1_CGROUP)));
    assert_eq!(detail.runner_threads, 1);
    assert_eq!(
        host.read(&format!("{V1_CGROUP}/cpuset.cpus"), Format::Plain),
        "1-3"
    );
    assert_eq!(
        host.read(&format!("{V1_CGROUP}/cpuset.mems"), Format::Plain),
        "0"
    );
    // The "runner's" thread is on the housekeeping CPU now.
    assert_eq!(affinity(tid), vec![0]);
    // The undo is on disk before anything changed.
    let saved = host.state_file().unwrap();
    assert_eq!(
        saved.undo,
        vec![state::Undo::RemoveCgroup {
            knob: Knob::Cpuset,
            path: V1_CGROUP.into()
        }]
    );

    // A two-CPU Spec gets the first two benchmark CPUs; an eight-CPU one all three,
    // and the record says it asked for more.
    let two = applied.place_job(2).unwrap();
    assert_eq!(two.cpus, vec![1, 2]);
    assert_eq!(
        two.cgroup,
        Some((host.path(V1_CGROUP), cpuset::Hierarchy::V1))
    );
    let detail = applied.state().cpuset().unwrap();
    assert_eq!(
        (detail.job_cpus.as_deref(), detail.spec_cpus_capped),
        (Some("1-2"), None)
    );
    assert_eq!(applied.place_job(8).unwrap().cpus, vec![1, 2, 3]);
    assert_eq!(applied.state().cpuset().unwrap().spec_cpus_capped, Some(8));
    let json = serde_json::to_value(applied.state()).unwrap();
    let record = &json["knobs"][Knob::ALL.len() - 1];
    assert_eq!(record["knob"], "cpuset");
    assert_eq!(record["cpuset"]["benchmark_cpus"], "1-3");
    assert_eq!(record["cpuset"]["exclusivity"], "cpuset");

    let restored = applied.restore().unwrap();
    assert!(restored.failed.is_empty(), "{restored:?}");
    assert_eq!(affinity(tid), before);
    host.assert_untuned();
    end.send(()).unwrap();
    handle.join().unwrap();
}

#[test]
fn cpuset_partition_on_cgroup_v2_is_a_partition_root_and_survives_a_crash() {
    let host = FakeHost::v2();
    let applied = host.tuning().try_apply().unwrap().unwrap();
    let detail = applied.state().cpuset().unwrap().clone();
    assert_eq!(status(applied.state(), Knob::Cpuset), &KnobStatus::Applied);
    assert_eq!(detail.exclusivity, cpuset::Exclusivity::Partition);
    assert_eq!(detail.cgroup, Some(host.path(V2_CGROUP)));
    assert_eq!(
        host.read(&format!("{V2_CGROUP}/cpuset.cpus.partition"), Format::Plain),
        "root"
    );
    assert_eq!(
        host.read(&format!("{V2_CGROUP}/cpuset.cpus"), Format::Plain),
        "1-3"
    );
    // The controller was enabled for children, and disabling it again is on disk.
    assert_eq!(
        host.read("sys/fs/cgroup/cgroup.subtree_control", Format::Plain),
        "+cpuset"
    );
    assert_eq!(host.state_file().unwrap().undo.len(), 2);

    applied.crash();
    assert!(host.path(V2_CGROUP).exists());
    match host.tuning().restore_leftover().unwrap() {
        Leftover::Restored { restored, .. } => assert!(restored.failed.is_empty(), "{restored:?}"),
        other => panic!("{other:?}"),
    }
    host.assert_untuned();
    assert_eq!(
        host.read("sys/fs/cgroup/cgroup.subtree_control", Format::Plain),
        "-cpuset"
    );
    // Again (a crash during the restore): the cgroup is already gone.
    assert_eq!(host.tuning().restore_leftover().unwrap(), Leftover::None);
}

#[test]
fn a_refused_partition_is_partial_and_says_why() {
    let host = FakeHost::v2();
    // The cgroup is there already (left by a restore that could not remove it) and its
    // kernel refuses partitions.
    host.refuse_writes(&format!("{V2_CGROUP}/cpuset.cpus.partition"));
    let applied = host.tuning().try_apply().unwrap().unwrap();
    match status(applied.state(), Knob::Cpuset) {
        KnobStatus::Partial { reason } => assert!(reason.contains("no partition root"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let detail = applied.state().cpuset().unwrap();
    assert_eq!(detail.exclusivity, cpuset::Exclusivity::Cpuset);
    assert_eq!(detail.benchmark_cpus, "1-3");
    applied.restore().unwrap();
    host.assert_untuned();
}

#[test]
fn without_a_cpuset_hierarchy_the_partition_is_affinity_only() {
    let host = FakeHost::typical();
    std::fs::remove_dir_all(host.path("sys/fs/cgroup")).unwrap();
    let mut applied = host.tuning().try_apply().unwrap().unwrap();
    assert_eq!(status(applied.state(), Knob::Cpuset), &KnobStatus::Applied);
    let detail = applied.state().cpuset().unwrap();
    assert_eq!(detail.exclusivity, cpuset::Exclusivity::Affinity);
    assert_eq!(detail.cgroup, None);
    assert_eq!(applied.place_job(1).unwrap().cgroup, None);
    assert!(host.state_file().unwrap().undo.is_empty());
    applied.restore().unwrap();
}
