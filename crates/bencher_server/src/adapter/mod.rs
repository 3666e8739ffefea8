//! Benchmark-output adapters: each turns the text a benchmark harness printed (or the
//! file it wrote) into `AdapterResults`, the Bencher Metric Format (BMF): benchmark
//! name → measure slug → `{value, lower_value?, upper_value?}`. Pure: `&str` in,
//! results or an `AdapterError` out; no IO, and no panic on any input.
//!
//! Units are normalised: `latency` is in nanoseconds (µs, ms, s, … converted) and
//! `throughput` in operations per second. See `KNOWN_MEASURES` for every measure an
//! adapter emits besides custom BMF measures.
//!
//! Rules shared by every adapter:
//! - Benchmark names are kept exactly as the harness printed them (only the padding a
//!   text harness adds for alignment is trimmed); a `-bencher-ignore` suffix is kept.
//! - A benchmark may appear once per measure in one output. A second value for the same
//!   benchmark and measure is an error (`AdapterError::Duplicate`), never a silent
//!   overwrite: two benchmarks sharing a name (two crates or Go packages) must be
//!   renamed, and repetitions belong to `--iter` with `fold`, not to the harness
//!   (`go test -count`). Google Benchmark's own repetitions are the exception: their
//!   `mean` aggregate is used.
//! - An output with no benchmark at all is an error (`AdapterError::NoBenchmarks`).
//! - Bounds derived from a mean and a standard deviation are clamped at zero for
//!   latency, which cannot be negative.

mod cpp_google;
mod fold;
mod go_bench;
mod java_jmh;
mod json;
mod python_pytest;
mod rust_bench;
mod rust_criterion;
mod shell_hyperfine;
mod units;

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

pub use bencher_types::{Adapter, Fold, Slug, SlugError};
pub use fold::fold;
use serde::{Deserialize, Serialize};

/// Nanoseconds per operation.
pub const LATENCY: &str = "latency";
/// Operations per second.
pub const THROUGHPUT: &str = "throughput";
/// Bytes allocated per operation (Go's `-benchmem` `B/op`).
pub const ALLOCATED_BYTES: &str = "allocated-bytes";
/// Allocations per operation (Go's `-benchmem` `allocs/op`).
pub const ALLOCATIONS: &str = "allocations";

/// A measure an adapter can emit, with what its values mean, so measures can be created
/// with the right units when first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownMeasure {
    pub slug: &'static str,
    pub name: &'static str,
    pub units: &'static str,
}

pub const KNOWN_MEASURES: &[KnownMeasure] = &[
    KnownMeasure {
        slug: LATENCY,
        name: "Latency",
        units: "nanoseconds (ns)",
    },
    KnownMeasure {
        slug: THROUGHPUT,
        name: "Throughput",
        units: "operations per second (ops/s)",
    },
    KnownMeasure {
        slug: ALLOCATED_BYTES,
        name: "Allocated bytes",
        units: "bytes per operation (B/op)",
    },
    KnownMeasure {
        slug: ALLOCATIONS,
        name: "Allocations",
        units: "allocations per operation (allocs/op)",
    },
];

/// The order `magic` tries the adapters in: the BMF first (the format we own), then the
/// JSON harness formats, whose required fields tell them apart, then the text formats.
/// Criterion comes before libtest because `cargo bench` output can hold both, and
/// Criterion's lines are the benchmarks; libtest's are then its empty unit-test runs.
pub const MAGIC_ORDER: &[Adapter] = &[
    Adapter::Json,
    Adapter::CppGoogle,
    Adapter::PythonPytest,
    Adapter::ShellHyperfine,
    Adapter::JavaJmh,
    Adapter::RustCriterion,
    Adapter::RustBench,
    Adapter::GoBench,
];

/// Parses `text`, the output of a benchmark run, with `adapter`.
pub fn parse(adapter: Adapter, text: &str) -> Result<AdapterResults, AdapterError> {
    match adapter {
        Adapter::Json => json::parse(text),
        Adapter::RustBench => rust_bench::parse(text),
        Adapter::RustCriterion => rust_criterion::parse(text),
        Adapter::GoBench => go_bench::parse(text),
        Adapter::CppGoogle => cpp_google::parse(text),
        Adapter::PythonPytest => python_pytest::parse(text),
        Adapter::ShellHyperfine => shell_hyperfine::parse(text),
        Adapter::JavaJmh => java_jmh::parse(text),
        Adapter::Magic => magic(text).map(|(_, results)| results),
    }
}

/// Tries the adapters in `MAGIC_ORDER` and returns the first that finds at least one
/// benchmark, with which one it was (a report records the adapter that parsed it).
pub fn magic(text: &str) -> Result<(Adapter, AdapterResults), AdapterError> {
    let mut attempts = Vec::with_capacity(MAGIC_ORDER.len());
    for &adapter in MAGIC_ORDER {
        match parse(adapter, text) {
            Ok(results) => return Ok((adapter, results)),
            Err(error) => attempts.push((adapter, error)),
        }
    }
    Err(AdapterError::Unrecognised { attempts })
}

/// Longest benchmark name, in characters.
pub const MAX_BENCHMARK_NAME_LEN: usize = 1024;

/// A benchmark's name as the harness printed it: 1 to 1024 characters, no control
/// characters. Not trimmed: names are kept exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BenchmarkName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BenchmarkNameError {
    #[error("benchmark name must not be empty")]
    Empty,
    #[error("benchmark name must be at most {MAX_BENCHMARK_NAME_LEN} characters, got {0}")]
    TooLong(usize),
    #[error("benchmark name must not contain control characters")]
    ControlCharacter,
}

impl BenchmarkName {
    pub fn new(name: &str) -> Result<Self, BenchmarkNameError> {
        if name.is_empty() {
            return Err(BenchmarkNameError::Empty);
        }
        let len = name.chars().count();
        if len > MAX_BENCHMARK_NAME_LEN {
            return Err(BenchmarkNameError::TooLong(len));
        }
        if name.chars().any(char::is_control) {
            return Err(BenchmarkNameError::ControlCharacter);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BenchmarkName {
    type Error = BenchmarkNameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(&name)
    }
}

impl From<BenchmarkName> for String {
    fn from(name: BenchmarkName) -> Self {
        name.0
    }
}

// Lets a map keyed by names be searched with a `&str`; the derived order is `str`'s.
impl Borrow<str> for BenchmarkName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BenchmarkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One value of one measure: finite, with optional finite bounds that bound it
/// (`lower_value <= value <= upper_value`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawMetric", into = "RawMetric")]
pub struct Metric {
    value: f64,
    lower_value: Option<f64>,
    upper_value: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("`{field}` must be a finite number, got {got}")]
    NotFinite { field: &'static str, got: f64 },
    #[error("`lower_value` ({lower}) must not be above `value` ({value})")]
    LowerAboveValue { lower: f64, value: f64 },
    #[error("`upper_value` ({upper}) must not be below `value` ({value})")]
    UpperBelowValue { upper: f64, value: f64 },
}

impl Metric {
    pub fn new(value: f64, lower: Option<f64>, upper: Option<f64>) -> Result<Self, MetricError> {
        let finite = |field, got: f64| {
            if got.is_finite() {
                Ok(())
            } else {
                Err(MetricError::NotFinite { field, got })
            }
        };
        finite("value", value)?;
        if let Some(lower) = lower {
            finite("lower_value", lower)?;
            if lower > value {
                return Err(MetricError::LowerAboveValue { lower, value });
            }
        }
        if let Some(upper) = upper {
            finite("upper_value", upper)?;
            if upper < value {
                return Err(MetricError::UpperBelowValue { upper, value });
            }
        }
        Ok(Self {
            value,
            lower_value: lower,
            upper_value: upper,
        })
    }

    pub fn value(&self) -> f64 {
        self.value
    }

    pub fn lower_value(&self) -> Option<f64> {
        self.lower_value
    }

    pub fn upper_value(&self) -> Option<f64> {
        self.upper_value
    }
}

/// The BMF shape of a metric; unknown fields are rejected so a typo (`lower`) is not
/// silently dropped.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lower_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upper_value: Option<f64>,
}

impl TryFrom<RawMetric> for Metric {
    type Error = MetricError;

    fn try_from(raw: RawMetric) -> Result<Self, Self::Error> {
        Self::new(raw.value, raw.lower_value, raw.upper_value)
    }
}

impl From<Metric> for RawMetric {
    fn from(metric: Metric) -> Self {
        Self {
            value: metric.value,
            lower_value: metric.lower_value,
            upper_value: metric.upper_value,
        }
    }
}

/// The measures of one benchmark, by slug.
pub type Measures = BTreeMap<Slug, Metric>;

/// Parsed results in the Bencher Metric Format, ordered by benchmark name then measure.
/// Serializes as a BMF document. Built by the adapters (never empty) and by `fold`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct AdapterResults(BTreeMap<BenchmarkName, Measures>);

impl AdapterResults {
    pub fn benchmarks(&self) -> &BTreeMap<BenchmarkName, Measures> {
        &self.0
    }

    /// The metric of `benchmark` for `measure`, if any.
    pub fn get(&self, benchmark: &str, measure: &str) -> Option<&Metric> {
        self.0
            .get(benchmark)?
            .iter()
            .find(|(slug, _)| slug.as_str() == measure)
            .map(|(_, metric)| metric)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_inner(self) -> BTreeMap<BenchmarkName, Measures> {
        self.0
    }
}

impl From<BTreeMap<BenchmarkName, Measures>> for AdapterResults {
    fn from(results: BTreeMap<BenchmarkName, Measures>) -> Self {
        Self(results)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{adapter}: line {line} (`{text}`): {problem}")]
    Line {
        adapter: Adapter,
        line: usize,
        text: String,
        problem: String,
    },
    #[error("{adapter}: not the JSON this adapter reads")]
    Json {
        adapter: Adapter,
        #[source]
        source: serde_json::Error,
    },
    #[error("{adapter}: benchmark `{benchmark}`: {problem}")]
    Benchmark {
        adapter: Adapter,
        benchmark: String,
        problem: String,
    },
    #[error("{adapter}: benchmark `{benchmark}`, measure `{measure}`")]
    Metric {
        adapter: Adapter,
        benchmark: String,
        measure: String,
        #[source]
        source: MetricError,
    },
    #[error("{adapter}: invalid benchmark name `{benchmark}`")]
    BenchmarkName {
        adapter: Adapter,
        benchmark: String,
        #[source]
        source: BenchmarkNameError,
    },
    #[error("{adapter}: benchmark `{benchmark}`: invalid measure `{measure}`")]
    MeasureSlug {
        adapter: Adapter,
        benchmark: String,
        measure: String,
        #[source]
        source: SlugError,
    },
    #[error(
        "{adapter}: benchmark `{benchmark}` has more than one `{measure}` value; names must be \
         unique within one output (rename one, or repeat runs with --iter and --fold rather \
         than the harness's own repetition)"
    )]
    Duplicate {
        adapter: Adapter,
        benchmark: String,
        measure: String,
    },
    #[error("{adapter}: no benchmark results found; expected {expected}")]
    NoBenchmarks {
        adapter: Adapter,
        expected: &'static str,
    },
    #[error("no adapter recognised the output ({})", summarise(attempts))]
    Unrecognised {
        attempts: Vec<(Adapter, AdapterError)>,
    },
}

/// One line per failed attempt, each with its error's causes.
fn summarise(attempts: &[(Adapter, AdapterError)]) -> String {
    attempts
        .iter()
        .map(|(_, error)| {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Longest excerpt of an offending line an error quotes.
const MAX_EXCERPT_CHARS: usize = 120;

/// Collects an adapter's results, refusing duplicates and invalid values.
struct ResultsBuilder {
    adapter: Adapter,
    results: BTreeMap<BenchmarkName, Measures>,
}

impl ResultsBuilder {
    fn new(adapter: Adapter) -> Self {
        Self {
            adapter,
            results: BTreeMap::new(),
        }
    }

    fn insert(
        &mut self,
        benchmark: &str,
        measure: &str,
        value: f64,
        lower: Option<f64>,
        upper: Option<f64>,
    ) -> Result<(), AdapterError> {
        let adapter = self.adapter;
        let name = BenchmarkName::new(benchmark).map_err(|source| AdapterError::BenchmarkName {
            adapter,
            benchmark: excerpt(benchmark),
            source,
        })?;
        let slug: Slug = measure
            .parse()
            .map_err(|source| AdapterError::MeasureSlug {
                adapter,
                benchmark: benchmark.to_owned(),
                measure: excerpt(measure),
                source,
            })?;
        let metric = Metric::new(value, lower, upper).map_err(|source| AdapterError::Metric {
            adapter,
            benchmark: benchmark.to_owned(),
            measure: measure.to_owned(),
            source,
        })?;
        let measures = self.results.entry(name).or_default();
        if measures.contains_key(&slug) {
            return Err(AdapterError::Duplicate {
                adapter,
                benchmark: benchmark.to_owned(),
                measure: measure.to_owned(),
            });
        }
        measures.insert(slug, metric);
        Ok(())
    }

    /// Latency given in `unit` with a symmetric spread (a standard deviation, libtest's
    /// `+/-`): bounds are `value ± spread`, the lower clamped at zero.
    fn insert_latency_spread(
        &mut self,
        benchmark: &str,
        value: f64,
        spread: Option<f64>,
        unit: units::TimeUnit,
    ) -> Result<(), AdapterError> {
        let value = unit.to_nanos(value);
        let spread = spread.map(|spread| unit.to_nanos(spread.abs()));
        let lower = spread.map(|spread| (value - spread).max(0.0).min(value));
        let upper = spread.map(|spread| value + spread);
        self.insert(benchmark, LATENCY, value, lower, upper)
    }

    fn finish(self, expected: &'static str) -> Result<AdapterResults, AdapterError> {
        if self.results.is_empty() {
            return Err(AdapterError::NoBenchmarks {
                adapter: self.adapter,
                expected,
            });
        }
        Ok(AdapterResults(self.results))
    }

    fn line_error(&self, line: usize, text: &str, problem: impl Into<String>) -> AdapterError {
        AdapterError::Line {
            adapter: self.adapter,
            line,
            text: excerpt(text.trim()),
            problem: problem.into(),
        }
    }
}

/// The lines of a text output as a terminal would show them, numbered from 1: progress
/// a harness redraws with carriage returns (Criterion on a terminal) leaves only what
/// follows the last `\r` of a line.
fn visible_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(index, line)| {
        let line = line.trim_end_matches('\r');
        (index + 1, line.rsplit('\r').next().unwrap_or(line))
    })
}

/// `text`, cut to `MAX_EXCERPT_CHARS` characters for an error message.
fn excerpt(text: &str) -> String {
    if text.chars().count() <= MAX_EXCERPT_CHARS {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(MAX_EXCERPT_CHARS).collect();
        cut.push('…');
        cut
    }
}

/// Parses a JSON harness document, mapping the error to the adapter.
fn from_json<'a, T: Deserialize<'a>>(adapter: Adapter, text: &'a str) -> Result<T, AdapterError> {
    serde_json::from_str(text).map_err(|source| AdapterError::Json { adapter, source })
}

#[cfg(test)]
mod tests;
