//! The noise probe (`runner noise`, and a short probe before each job): how much the
//! host disturbs a measurement, as timer jitter (how late a short sleep wakes up) and
//! CPU jitter (how much the time of one fixed busy loop varies), plus a fingerprint of
//! the environment the figures belong to. IO: reads `/proc` and `/sys` under a root
//! (the fingerprint); the probe itself only spins and sleeps. Blocking.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::tuning::TuningState;
use crate::tuning::knob::{CPU_DIR, SMT_CONTROL};

/// How much to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSize {
    /// Busy loops timed.
    pub cpu_samples: usize,
    /// Iterations of one busy loop.
    pub cpu_work: u32,
    /// Sleeps timed.
    pub timer_samples: usize,
    pub timer_sleep: Duration,
}

impl ProbeSize {
    /// Before each job: a few tens of milliseconds on a current CPU.
    pub const SHORT: ProbeSize = ProbeSize {
        cpu_samples: 200,
        cpu_work: 20_000,
        timer_samples: 100,
        timer_sleep: Duration::from_micros(100),
    };

    /// `runner noise` by default: about a second.
    pub const FULL: ProbeSize = ProbeSize {
        cpu_samples: 5_000,
        cpu_work: 20_000,
        timer_samples: 2_000,
        timer_sleep: Duration::from_micros(100),
    };
}

/// Figures of one series of samples, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub samples: usize,
    pub median_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
    /// Coefficient of variation: standard deviation over mean (0 when the mean is 0).
    pub cv: f64,
}

impl Stats {
    /// `None` for no samples.
    pub fn of(samples: &[u64]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        // Nearest rank.
        let rank = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        let mean = sorted.iter().map(|&s| s as f64).sum::<f64>() / n as f64;
        let variance = sorted
            .iter()
            .map(|&s| (s as f64 - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        Some(Stats {
            samples: n,
            median_ns: rank(0.5),
            p99_ns: rank(0.99),
            max_ns: sorted[n - 1],
            mean_ns: mean,
            cv: if mean > 0.0 {
                variance.sqrt() / mean
            } else {
                0.0
            },
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    /// How much later than asked a sleep of `timer_sleep` returns.
    pub timer: Stats,
    pub timer_sleep_ns: u64,
    /// How long one busy loop of `cpu_work` iterations takes.
    pub cpu: Stats,
    pub cpu_work: u32,
}

/// Runs the probe on the calling thread. Sizes of zero are taken as one.
pub fn probe(size: ProbeSize) -> Noise {
    let cpu_samples = size.cpu_samples.max(1);
    let timer_samples = size.timer_samples.max(1);
    // Warm up: caches, branch predictors and the CPU's clock before counting.
    for _ in 0..cpu_samples.min(20) {
        busy(size.cpu_work);
    }
    let cpu: Vec<u64> = (0..cpu_samples)
        .map(|_| {
            let start = Instant::now();
            busy(size.cpu_work);
            nanos(start.elapsed())
        })
        .collect();
    let timer: Vec<u64> = (0..timer_samples)
        .map(|_| {
            let start = Instant::now();
            std::thread::sleep(size.timer_sleep);
            nanos(start.elapsed().saturating_sub(size.timer_sleep))
        })
        .collect();
    Noise {
        timer: Stats::of(&timer).expect("at least one sample"),
        timer_sleep_ns: nanos(size.timer_sleep),
        cpu: Stats::of(&cpu).expect("at least one sample"),
        cpu_work: size.cpu_work,
    }
}

/// A fixed amount of work the compiler cannot remove or shorten.
fn busy(iterations: u32) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..iterations {
        x = black_box(
            x.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(u64::from(i)),
        );
    }
    x
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// What the figures were measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub cpu_model: Option<String>,
    pub microcode: Option<String>,
    pub cpus: usize,
    pub kernel: Option<String>,
    /// `scaling_governor` of the first CPU that has one.
    pub governor: Option<String>,
    /// `smt/control`.
    pub smt: Option<String>,
    pub runner_version: String,
    /// The job's sandbox (`none` for the host), when probing for a job.
    pub sandbox: Option<String>,
    pub tuning: TuningFingerprint,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TuningFingerprint {
    /// `--no-tuning`.
    Disabled,
    /// The verified state applied for the job.
    Applied { state: TuningState },
    /// Not tuned by this runner: each knob's current value (or why it has none).
    Observed {
        knobs: Vec<(crate::tuning::knob::Knob, Result<String, String>)>,
    },
}

/// Reads the environment under `root` (`/` for real).
pub fn fingerprint(root: &Path, sandbox: Option<&str>, tuning: TuningFingerprint) -> Fingerprint {
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path))
            .ok()
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
    };
    let cpuinfo = read("proc/cpuinfo").unwrap_or_default();
    let governor = (0..4096)
        .take_while(|cpu| root.join(CPU_DIR).join(format!("cpu{cpu}")).exists())
        .find_map(|cpu| read(&format!("{CPU_DIR}/cpu{cpu}/cpufreq/scaling_governor")));
    Fingerprint {
        // x86 says `model name`; arm64 has no model name, only its implementer and part.
        cpu_model: cpuinfo_field(&cpuinfo, "model name")
            .or_else(|| cpuinfo_field(&cpuinfo, "Hardware"))
            .or_else(|| cpuinfo_field(&cpuinfo, "CPU part")),
        microcode: cpuinfo_field(&cpuinfo, "microcode"),
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        kernel: read("proc/sys/kernel/osrelease"),
        governor,
        smt: read(SMT_CONTROL),
        runner_version: env!("CARGO_PKG_VERSION").to_owned(),
        sandbox: sandbox.map(str::to_owned),
        tuning,
    }
}

/// The first `name : value` line of `/proc/cpuinfo`.
fn cpuinfo_field(cpuinfo: &str, name: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_known_samples() {
        let samples: Vec<u64> = (1..=100).collect();
        let stats = Stats::of(&samples).unwrap();
        assert_eq!(stats.samples, 100);
        assert_eq!(stats.median_ns, 50);
        assert_eq!(stats.p99_ns, 99);
        assert_eq!(stats.max_ns, 100);
        assert!((stats.mean_ns - 50.5).abs() < 1e-9);
        // Population standard deviation of 1..=100 is sqrt((100² − 1) / 12).
        let expected = (9999.0f64 / 12.0).sqrt() / 50.5;
        assert!((stats.cv - expected).abs() < 1e-9, "{}", stats.cv);
        let flat = Stats::of(&[7, 7, 7]).unwrap();
        assert_eq!((flat.median_ns, flat.p99_ns, flat.cv), (7, 7, 0.0));
        assert_eq!(Stats::of(&[0]).unwrap().cv, 0.0);
        assert!(Stats::of(&[]).is_none());
    }

    #[test]
    fn probe_counts_every_sample() {
        let size = ProbeSize {
            cpu_samples: 30,
            cpu_work: 1_000,
            timer_samples: 10,
            timer_sleep: Duration::from_micros(50),
        };
        let noise = probe(size);
        assert_eq!(noise.cpu.samples, 30);
        assert_eq!(noise.timer.samples, 10);
        assert!(noise.cpu.median_ns <= noise.cpu.p99_ns && noise.cpu.p99_ns <= noise.cpu.max_ns);
        assert_eq!(noise.timer_sleep_ns, 50_000);
        let json = serde_json::to_value(&noise).unwrap();
        assert!(json["cpu"]["cv"].is_number());
    }

    #[test]
    fn fingerprint_reads_the_tree() {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: Test CPU @ 3.00GHz\nmicrocode\t: 0xf0\n\nprocessor\t: 1\n",
        );
        write("proc/sys/kernel/osrelease", "6.1.0-test\n");
        write(
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
            "performance\n",
        );
        write("sys/devices/system/cpu/smt/control", "off\n");
        let print = fingerprint(root.path(), Some("none"), TuningFingerprint::Disabled);
        assert_eq!(print.cpu_model.as_deref(), Some("Test CPU @ 3.00GHz"));
        assert_eq!(print.microcode.as_deref(), Some("0xf0"));
        assert_eq!(print.kernel.as_deref(), Some("6.1.0-test"));
        assert_eq!(print.governor.as_deref(), Some("performance"));
        assert_eq!(print.smt.as_deref(), Some("off"));
        assert_eq!(print.sandbox.as_deref(), Some("none"));
        let empty = fingerprint(
            &root.path().join("nothing"),
            None,
            TuningFingerprint::Disabled,
        );
        assert_eq!(
            (empty.cpu_model, empty.kernel, empty.governor),
            (None, None, None)
        );
    }
}
