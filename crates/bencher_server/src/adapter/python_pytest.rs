//! The `python_pytest` adapter: pytest-benchmark's `--benchmark-json` file. Each
//! benchmark is named by its `fullname` (`test_file.py::test_name[param id]`, unique
//! across files); its `stats.mean` (seconds) becomes `latency` in ns with
//! `mean ± stddev` as bounds. Pure.

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::units::TimeUnit;
use super::{Adapter, AdapterError, AdapterResults, ResultsBuilder, from_json};

const ADAPTER: Adapter = Adapter::PythonPytest;
const EXPECTED: &str = "a pytest-benchmark JSON document with `machine_info` and `benchmarks`";

#[derive(Deserialize)]
struct Document {
    // Required, though unused: it is what tells this JSON from Google Benchmark's.
    #[allow(dead_code)]
    machine_info: IgnoredAny,
    benchmarks: Vec<Benchmark>,
}

#[derive(Deserialize)]
struct Benchmark {
    fullname: String,
    stats: Stats,
}

#[derive(Deserialize)]
struct Stats {
    mean: f64,
    stddev: Option<f64>,
}

pub(super) fn parse(text: &str) -> Result<AdapterResults, AdapterError> {
    let document: Document = from_json(ADAPTER, text)?;
    let mut results = ResultsBuilder::new(ADAPTER);
    for benchmark in &document.benchmarks {
        let stats = &benchmark.stats;
        results.insert_latency_spread(
            &benchmark.fullname,
            stats.mean,
            stats.stddev,
            TimeUnit::SECONDS,
        )?;
    }
    results.finish(EXPECTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::tests::{assert_metric, chain, fixture};

    #[test]
    fn parses_benchmark_json() {
        let results = parse(&fixture("python_pytest/benchmark.json")).unwrap();
        let names: Vec<_> = results.benchmarks().keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "test_fixture.py::test_sleep",
                "test_fixture.py::test_sort[large]",
                "test_fixture.py::test_sort[small list]",
                "test_fixture.py::test_sum",
            ]
        );
        let check = |name: &str, mean: f64, stddev: f64| {
            let (mean, stddev) = (mean * 1e9, stddev * 1e9);
            assert_metric(
                &results,
                name,
                "latency",
                mean,
                Some(mean - stddev),
                Some(mean + stddev),
            );
        };
        // "mean": 0.004938803800177994, "stddev": 0.00454011339921829
        check(
            "test_fixture.py::test_sleep",
            0.004938803800177994,
            0.00454011339921829,
        );
        check(
            "test_fixture.py::test_sort[large]",
            0.0003005028002007748,
            3.4109067879589734e-05,
        );
        check(
            "test_fixture.py::test_sort[small list]",
            1.54117236073442e-07,
            4.400590902200789e-09,
        );
        check(
            "test_fixture.py::test_sum",
            4.553444442636747e-07,
            7.767067209664116e-09,
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        let cases = [
            (r#"{"benchmarks": []}"#, "missing field `machine_info`"),
            (
                r#"{"machine_info": {}, "benchmarks": []}"#,
                "python_pytest: no benchmark results found",
            ),
            (
                r#"{"machine_info": {}, "benchmarks": [{"fullname": "t.py::a", "stats": {"stddev": 1}}]}"#,
                "missing field `mean`",
            ),
        ];
        for (text, expected) in cases {
            let message = chain(&parse(text).unwrap_err());
            assert!(message.contains(expected), "{text}: {message}");
        }
    }
}
