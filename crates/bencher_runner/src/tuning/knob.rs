//! The knobs of host tuning: what each one is called, which kernel files it writes
//! (paths relative to the tuning root), the value it asks for, and how a value the
//! kernel reads back compares with it. IO: reads under the root only (`resolve` lists
//! CPUs, IRQs and which turbo interface exists); writing is `super`'s job.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One knob of host tuning. The order of `ALL` is the order of applying; restoring
/// goes backwards, so SMT (which takes CPUs offline, and their cpufreq and IRQ files
/// with them) is applied late and restored early. The cpuset partition comes after it:
/// it splits the CPUs SMT left online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Knob {
    Aslr,
    NmiWatchdog,
    SoftWatchdog,
    Swappiness,
    PerfEventParanoid,
    TransparentHugepages,
    NumaBalancing,
    TimerMigration,
    Ksm,
    Governor,
    Turbo,
    Cstates,
    IrqAffinity,
    WorkqueueAffinity,
    Smt,
    Cpuset,
}

impl Knob {
    pub const ALL: [Knob; 16] = [
        Knob::Aslr,
        Knob::NmiWatchdog,
        Knob::SoftWatchdog,
        Knob::Swappiness,
        Knob::PerfEventParanoid,
        Knob::TransparentHugepages,
        Knob::NumaBalancing,
        Knob::TimerMigration,
        Knob::Ksm,
        Knob::Governor,
        Knob::Turbo,
        Knob::Cstates,
        Knob::IrqAffinity,
        Knob::WorkqueueAffinity,
        Knob::Smt,
        Knob::Cpuset,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Knob::Aslr => "aslr",
            Knob::NmiWatchdog => "nmi_watchdog",
            Knob::SoftWatchdog => "soft_watchdog",
            Knob::Swappiness => "swappiness",
            Knob::PerfEventParanoid => "perf_event_paranoid",
            Knob::TransparentHugepages => "transparent_hugepages",
            Knob::NumaBalancing => "numa_balancing",
            Knob::TimerMigration => "timer_migration",
            Knob::Ksm => "ksm",
            Knob::Governor => "governor",
            Knob::Turbo => "turbo",
            Knob::Cstates => "cstates",
            Knob::IrqAffinity => "irq_affinity",
            Knob::WorkqueueAffinity => "workqueue_affinity",
            Knob::Smt => "smt",
            Knob::Cpuset => "cpuset",
        }
    }
}

impl std::fmt::Display for Knob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub const RANDOMIZE_VA_SPACE: &str = "proc/sys/kernel/randomize_va_space";
pub const NMI_WATCHDOG: &str = "proc/sys/kernel/nmi_watchdog";
pub const SOFT_WATCHDOG: &str = "proc/sys/kernel/soft_watchdog";
pub const SWAPPINESS: &str = "proc/sys/vm/swappiness";
pub const PERF_EVENT_PARANOID: &str = "proc/sys/kernel/perf_event_paranoid";
pub const THP_ENABLED: &str = "sys/kernel/mm/transparent_hugepage/enabled";
pub const NUMA_BALANCING: &str = "proc/sys/kernel/numa_balancing";
pub const TIMER_MIGRATION: &str = "proc/sys/kernel/timer_migration";
pub const KSM_RUN: &str = "sys/kernel/mm/ksm/run";
pub const CPU_DIR: &str = "sys/devices/system/cpu";
pub const CPUS_ONLINE: &str = "sys/devices/system/cpu/online";
pub const SMT_CONTROL: &str = "sys/devices/system/cpu/smt/control";
pub const INTEL_NO_TURBO: &str = "sys/devices/system/cpu/intel_pstate/no_turbo";
pub const CPUFREQ_BOOST: &str = "sys/devices/system/cpu/cpufreq/boost";
pub const CPU_DMA_LATENCY: &str = "dev/cpu_dma_latency";
pub const IRQ_DIR: &str = "proc/irq";
pub const WORKQUEUE_CPUMASK: &str = "sys/devices/virtual/workqueue/cpumask";

/// How a value read from a kernel file is brought to the form it is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A number or a word: trimmed.
    Plain,
    /// `always [madvise] never`: the bracketed choice.
    Choice,
    /// A hexadecimal CPU mask (`00000003`, `ff,ffffffff`): without commas and leading
    /// zeros, lower case.
    CpuMask,
}

impl Format {
    pub fn normalize(self, raw: &str) -> String {
        let text = raw.trim();
        match self {
            Format::Plain => text.to_owned(),
            Format::Choice => text
                .split_whitespace()
                .find_map(|word| word.strip_prefix('[')?.strip_suffix(']'))
                .unwrap_or(text)
                .to_owned(),
            Format::CpuMask => {
                let digits: String = text
                    .chars()
                    .filter(|c| *c != ',')
                    .map(|c| c.to_ascii_lowercase())
                    .collect();
                let trimmed = digits.trim_start_matches('0');
                if trimmed.is_empty() && !digits.is_empty() {
                    "0".to_owned()
                } else {
                    trimmed.to_owned()
                }
            }
        }
    }
}

/// One kernel file a knob writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Relative to the tuning root.
    pub path: PathBuf,
    pub value: String,
    pub format: Format,
}

impl Target {
    fn new(path: impl Into<PathBuf>, value: impl Into<String>, format: Format) -> Self {
        Self {
            path: path.into(),
            value: value.into(),
            format,
        }
    }
}

/// What a knob does on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Write these files (at least one).
    Files(Vec<Target>),
    /// `/dev/cpu_dma_latency`: a request held while its file descriptor is open.
    LatencyRequest { path: PathBuf, microseconds: i32 },
    /// The cpuset partition (`super::cpuset`): a cgroup and thread affinities.
    Cpuset(super::cpuset::CpusetPlan),
    /// The host lacks the knob; why.
    Unsupported(String),
}

/// The housekeeping CPU: the first online one. Interrupts and kernel work queues go
/// there, away from the CPUs a benchmark runs on.
pub fn housekeeping_cpu(online: &str) -> Result<u32, String> {
    let cpus = parse_cpu_list(online).ok_or_else(|| format!("cannot read CPU list `{online}`"))?;
    match cpus.as_slice() {
        [] => Err("no online CPU listed".to_owned()),
        [_] => Err("one online CPU: no CPU can be kept free of interrupts".to_owned()),
        [first, ..] => Ok(*first),
    }
}

/// `0-3,8,10-11` → the CPUs, in order.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((low, high)) => {
                let (low, high): (u32, u32) = (low.parse().ok()?, high.parse().ok()?);
                if high < low || high - low > 65_536 {
                    return None;
                }
                cpus.extend(low..=high);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// The hexadecimal mask of one CPU, as `cpumask` files take it.
pub fn cpu_mask(cpu: u32) -> String {
    // Groups of 32 bits separated by commas, as the kernel prints masks.
    let mut groups = vec![0u32; (cpu / 32 + 1) as usize];
    groups[(cpu / 32) as usize] = 1 << (cpu % 32);
    groups
        .iter()
        .rev()
        .map(|g| format!("{g:08x}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn missing(root: &Path, path: &str) -> String {
    format!("{} does not exist", root.join(path).display())
}

/// Which files `knob` writes to reach `value` on the host under `root`.
pub fn resolve(root: &Path, knob: Knob, value: &str) -> Resolved {
    let file = |path: &str, format: Format| {
        if root.join(path).exists() {
            Resolved::Files(vec![Target::new(path, value, format)])
        } else {
            Resolved::Unsupported(missing(root, path))
        }
    };
    match knob {
        Knob::Aslr => file(RANDOMIZE_VA_SPACE, Format::Plain),
        Knob::NmiWatchdog => file(NMI_WATCHDOG, Format::Plain),
        Knob::SoftWatchdog => file(SOFT_WATCHDOG, Format::Plain),
        Knob::Swappiness => file(SWAPPINESS, Format::Plain),
        Knob::PerfEventParanoid => file(PERF_EVENT_PARANOID, Format::Plain),
        Knob::TransparentHugepages => file(THP_ENABLED, Format::Choice),
        Knob::NumaBalancing => file(NUMA_BALANCING, Format::Plain),
        Knob::TimerMigration => file(TIMER_MIGRATION, Format::Plain),
        Knob::Ksm => file(KSM_RUN, Format::Plain),
        Knob::Smt => match std::fs::read_to_string(root.join(SMT_CONTROL)) {
            // The kernel has SMT control but the CPU has no SMT (or firmware turned it
            // off for good): writing would be refused.
            Ok(state) if matches!(state.trim(), "notsupported" | "notimplemented" | "forceoff") => {
                Resolved::Unsupported(format!("SMT control reads `{}`", state.trim()))
            }
            Ok(_) => file(SMT_CONTROL, Format::Plain),
            Err(e) => Resolved::Unsupported(io_reason(&root.join(SMT_CONTROL), &e)),
        },
        // `value` is "off" for the knob: intel_pstate says it inverted.
        Knob::Turbo => {
            if root.join(INTEL_NO_TURBO).exists() {
                Resolved::Files(vec![Target::new(INTEL_NO_TURBO, "1", Format::Plain)])
            } else if root.join(CPUFREQ_BOOST).exists() {
                Resolved::Files(vec![Target::new(CPUFREQ_BOOST, "0", Format::Plain)])
            } else {
                Resolved::Unsupported(format!(
                    "no turbo control: neither {} nor {} exists",
                    root.join(INTEL_NO_TURBO).display(),
                    root.join(CPUFREQ_BOOST).display()
                ))
            }
        }
        Knob::Governor => {
            let targets: Vec<Target> = cpu_dirs(root)
                .into_iter()
                .map(|cpu| {
                    Path::new(CPU_DIR)
                        .join(cpu)
                        .join("cpufreq/scaling_governor")
                })
                .filter(|path| root.join(path).exists())
                .map(|path| Target::new(path, value, Format::Plain))
                .collect();
            if targets.is_empty() {
                Resolved::Unsupported(format!(
                    "no cpufreq: no {}/cpu*/cpufreq/scaling_governor",
                    root.join(CPU_DIR).display()
                ))
            } else {
                Resolved::Files(targets)
            }
        }
        Knob::Cstates => {
            let path = root.join(CPU_DMA_LATENCY);
            if path.exists() {
                Resolved::LatencyRequest {
                    path: CPU_DMA_LATENCY.into(),
                    microseconds: value.parse().unwrap_or(0),
                }
            } else {
                Resolved::Unsupported(missing(root, CPU_DMA_LATENCY))
            }
        }
        Knob::IrqAffinity => {
            let cpu = match online_housekeeping(root) {
                Ok(cpu) => cpu,
                Err(reason) => return Resolved::Unsupported(reason),
            };
            let mut irqs: Vec<u32> = read_dir_names(&root.join(IRQ_DIR))
                .iter()
                .filter_map(|name| name.parse().ok())
                .collect();
            irqs.sort_unstable();
            let targets: Vec<Target> = irqs
                .into_iter()
                .map(|irq| {
                    Path::new(IRQ_DIR)
                        .join(irq.to_string())
                        .join("smp_affinity_list")
                })
                .filter(|path| root.join(path).exists())
                .map(|path| Target::new(path, cpu.to_string(), Format::Plain))
                .collect();
            if targets.is_empty() {
                Resolved::Unsupported(format!(
                    "no {}/*/smp_affinity_list",
                    root.join(IRQ_DIR).display()
                ))
            } else {
                Resolved::Files(targets)
            }
        }
        Knob::WorkqueueAffinity => match online_housekeeping(root) {
            Ok(cpu) if root.join(WORKQUEUE_CPUMASK).exists() => Resolved::Files(vec![Target::new(
                WORKQUEUE_CPUMASK,
                cpu_mask(cpu),
                Format::CpuMask,
            )]),
            Ok(_) => Resolved::Unsupported(missing(root, WORKQUEUE_CPUMASK)),
            Err(reason) => Resolved::Unsupported(reason),
        },
        Knob::Cpuset => match super::cpuset::plan(root) {
            Ok(plan) => Resolved::Cpuset(plan),
            Err(reason) => Resolved::Unsupported(reason),
        },
    }
}

fn online_housekeeping(root: &Path) -> Result<u32, String> {
    let path = root.join(CPUS_ONLINE);
    let online = std::fs::read_to_string(&path).map_err(|e| io_reason(&path, &e))?;
    housekeeping_cpu(&online)
}

/// `cpu0`, `cpu1`, … under the CPU directory, in numeric order.
fn cpu_dirs(root: &Path) -> Vec<String> {
    let mut cpus: Vec<(u32, String)> = read_dir_names(&root.join(CPU_DIR))
        .into_iter()
        .filter_map(|name| Some((name.strip_prefix("cpu")?.parse().ok()?, name)))
        .collect();
    cpus.sort_unstable();
    cpus.into_iter().map(|(_, name)| name).collect()
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Why a kernel file could not be read or written, for an `unsupported` status.
pub fn io_reason(path: &Path, error: &io::Error) -> String {
    let why = match error.kind() {
        io::ErrorKind::ReadOnlyFilesystem => "read-only file system".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::InvalidInput => "value refused by the kernel".to_owned(),
        io::ErrorKind::NotFound => "does not exist".to_owned(),
        _ => error.to_string(),
    };
    format!("{}: {why}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_kernel_values() {
        assert_eq!(Format::Plain.normalize(" 2\n"), "2");
        assert_eq!(
            Format::Choice.normalize("always [madvise] never\n"),
            "madvise"
        );
        assert_eq!(Format::Choice.normalize("never"), "never");
        assert_eq!(Format::CpuMask.normalize("00000003\n"), "3");
        assert_eq!(Format::CpuMask.normalize("ff,00000001"), "ff00000001");
        assert_eq!(Format::CpuMask.normalize("00000000"), "0");
    }

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(housekeeping_cpu("0-1"), Ok(0));
        assert_eq!(housekeeping_cpu("2,4"), Ok(2));
        assert!(housekeeping_cpu("0").is_err());
    }

    #[test]
    fn masks_one_cpu() {
        assert_eq!(cpu_mask(0), "00000001");
        assert_eq!(cpu_mask(5), "00000020");
        assert_eq!(cpu_mask(33), "00000002,00000000");
        assert_eq!(Format::CpuMask.normalize(&cpu_mask(33)), "200000000");
    }

    #[test]
    fn every_knob_has_a_distinct_name() {
        let mut names: Vec<_> = Knob::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Knob::ALL.len());
        for knob in Knob::ALL {
            assert_eq!(
                serde_json::to_value(knob).unwrap(),
                serde_json::Value::String(knob.name().to_owned())
            );
        }
    }
}
