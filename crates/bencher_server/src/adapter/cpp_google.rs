//! The `cpp_google` adapter: Google Benchmark's `--benchmark_format=json` (or
//! `--benchmark_out`) document. `real_time` (wall clock, the `Time` column) in its
//! `time_unit` becomes `latency` in ns and `items_per_second` becomes `throughput`. With
//! `--benchmark_repetitions`, a run's `mean` aggregate is its value and `mean ± stddev`
//! its latency bounds; the individual repetitions are not recorded separately. Runs
//! that report an error (`SkipWithError`) are skipped. Pure.

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::units::TimeUnit;
use super::{Adapter, AdapterError, AdapterResults, ResultsBuilder, THROUGHPUT, from_json};

const ADAPTER: Adapter = Adapter::CppGoogle;
const EXPECTED: &str = "a Google Benchmark JSON document with `context` and `benchmarks`";

#[derive(Deserialize)]
struct Document {
    // Required, though unused: it is what tells this JSON from pytest-benchmark's.
    #[allow(dead_code)]
    context: IgnoredAny,
    benchmarks: Vec<Run>,
}

#[derive(Deserialize)]
struct Run {
    name: String,
    run_name: Option<String>,
    run_type: Option<String>,
    aggregate_name: Option<String>,
    #[serde(default)]
    error_occurred: bool,
    real_time: Option<f64>,
    time_unit: Option<String>,
    items_per_second: Option<f64>,
}

pub(super) fn parse(text: &str) -> Result<AdapterResults, AdapterError> {
    let document: Document = from_json(ADAPTER, text)?;
    let mut results = ResultsBuilder::new(ADAPTER);
    let runs: Vec<&Run> = document
        .benchmarks
        .iter()
        .filter(|run| !run.error_occurred)
        .collect();
    for run in &runs {
        let name = run.run_name.as_deref().unwrap_or(&run.name);
        let aggregated = runs.iter().any(|other| {
            other.run_name.as_deref() == Some(name)
                && other.aggregate_name.as_deref() == Some("mean")
        });
        let stddev = || {
            runs.iter().find(|other| {
                other.run_name.as_deref() == Some(name)
                    && other.aggregate_name.as_deref() == Some("stddev")
            })
        };
        match (run.run_type.as_deref(), aggregated) {
            (Some("aggregate"), _) if run.aggregate_name.as_deref() == Some("mean") => {
                let spread = match stddev() {
                    Some(stddev) => {
                        let (spread, unit) = latency(stddev, name)?;
                        Some(unit.to_nanos(spread))
                    }
                    None => None,
                };
                insert(&mut results, run, name, spread)?;
            }
            (Some("aggregate"), _) | (_, true) => {}
            _ => insert(&mut results, run, name, None)?,
        }
    }
    results.finish(EXPECTED)
}

/// Records `run` under `name`, with `spread_nanos` (a standard deviation) as the latency
/// bounds if given.
fn insert(
    results: &mut ResultsBuilder,
    run: &Run,
    name: &str,
    spread_nanos: Option<f64>,
) -> Result<(), AdapterError> {
    let (time, unit) = latency(run, name)?;
    let time = unit.to_nanos(time);
    results.insert_latency_spread(name, time, spread_nanos, TimeUnit::NANOS)?;
    if let Some(items) = run.items_per_second {
        results.insert(name, THROUGHPUT, items, None, None)?;
    }
    Ok(())
}

/// A run's `real_time` and its unit.
fn latency(run: &Run, name: &str) -> Result<(f64, TimeUnit), AdapterError> {
    let problem = |problem: String| AdapterError::Benchmark {
        adapter: ADAPTER,
        benchmark: name.to_owned(),
        problem,
    };
    let time = run
        .real_time
        .ok_or_else(|| problem("missing `real_time`".to_owned()))?;
    let unit = run
        .time_unit
        .as_deref()
        .ok_or_else(|| problem("missing `time_unit`".to_owned()))?;
    let unit = TimeUnit::parse(unit).ok_or_else(|| {
        problem(format!(
            "unknown `time_unit` `{unit}`; expected ns, us, ms or s"
        ))
    })?;
    Ok((time, unit))
}

#[cfg(test)]
// Numbers are copied verbatim from the fixtures, digits the harness printed included.
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;
    use crate::adapter::tests::{assert_metric, chain, fixture};

    #[test]
    fn parses_single_runs_at_three_scales() {
        let results = parse(&fixture("cpp_google/benchmark.json")).unwrap();
        let names: Vec<_> = results.benchmarks().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["BM_Add", "BM_Sleep", "BM_Sort/8", "BM_Sort/8192"]);
        // "real_time": 3.4260405510156045e-01, "time_unit": "ns"
        assert_metric(
            &results,
            "BM_Add",
            "latency",
            3.4260405510156045e-01,
            None,
            None,
        );
        // "real_time": 2.2535900324647309e+02, "time_unit": "us",
        // "items_per_second": 3.7348209286899179e+07
        assert_metric(
            &results,
            "BM_Sort/8192",
            "latency",
            2.2535900324647309e+05,
            None,
            None,
        );
        assert_metric(
            &results,
            "BM_Sort/8192",
            "throughput",
            3.7348209286899179e+07,
            None,
            None,
        );
        // "real_time": 1.0965945699999793e+00, "time_unit": "ms"
        assert_metric(
            &results,
            "BM_Sleep",
            "latency",
            1.0965945699999793e+06,
            None,
            None,
        );
        assert!(results.get("BM_Sleep", "throughput").is_none());
    }

    #[test]
    fn repetitions_use_the_mean_aggregate() {
        let results = parse(&fixture("cpp_google/repetitions.json")).unwrap();
        let names: Vec<_> = results.benchmarks().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["BM_Add", "BM_Sort/8"]);
        // BM_Add_mean real_time 0.2641685298352093, BM_Add_stddev 0.03150403251461809 (ns).
        let (mean, stddev) = (0.2641685298352093, 0.03150403251461809);
        assert_metric(
            &results,
            "BM_Add",
            "latency",
            mean,
            Some(mean - stddev),
            Some(mean + stddev),
        );
        // BM_Sort/8_mean 0.017214998444005144 us ± 6.932138337474776e-05 us,
        // items_per_second 465373601.854235.
        let (mean, stddev) = (17.214998444005144, 6.932138337474776e-02);
        assert_metric(
            &results,
            "BM_Sort/8",
            "latency",
            mean,
            Some(mean - stddev),
            Some(mean + stddev),
        );
        assert_metric(
            &results,
            "BM_Sort/8",
            "throughput",
            465373601.854235,
            None,
            None,
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        let cases = [
            (r#"{"benchmarks": []}"#, "missing field `context`"),
            (
                r#"{"context": {}, "benchmarks": []}"#,
                "cpp_google: no benchmark results found",
            ),
            (
                r#"{"context": {}, "benchmarks": [{"name": "BM_A", "real_time": 1, "time_unit": "fortnight"}]}"#,
                "benchmark `BM_A`: unknown `time_unit` `fortnight`",
            ),
            (
                r#"{"context": {}, "benchmarks": [{"name": "BM_A", "time_unit": "ns"}]}"#,
                "benchmark `BM_A`: missing `real_time`",
            ),
            (
                r#"{"context": {}, "benchmarks": [{"name": "BM_A", "real_time": 1, "time_unit": "ns"}, {"name": "BM_A", "real_time": 2, "time_unit": "ns"}]}"#,
                "benchmark `BM_A` has more than one `latency` value",
            ),
        ];
        for (text, expected) in cases {
            let message = chain(&parse(text).unwrap_err());
            assert!(message.contains(expected), "{text}: {message}");
        }
        let errored = r#"{"context": {}, "benchmarks": [
            {"name": "BM_Bad", "error_occurred": true, "error_message": "no device"},
            {"name": "BM_Good", "real_time": 2, "time_unit": "ns"}]}"#;
        let results = parse(errored).unwrap();
        assert_eq!(results.len(), 1);
        assert_metric(&results, "BM_Good", "latency", 2.0, None, None);
    }
}
