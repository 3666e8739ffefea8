//! The `java_jmh` adapter: JMH's JSON result file (`-rf json`), an array of runs. A
//! run's `primaryMetric.score` becomes `latency` in ns for the time-per-operation modes
//! (`avgt`, `sample`, `ss`: `ns/op`, `us/op`, `ms/op`, `s/op`, …) and `throughput` in
//! ops/s for `thrpt` (`ops/s`, `ops/ms`, …); `scoreConfidence` (or `score ±
//! scoreError`) gives the bounds, none when JMH wrote `"NaN"` (a single iteration).
//! `@Param` values join the name, keys sorted: `pkg.Class.method(kind=a, size=10)`.
//! Secondary metrics (profilers) are not recorded. Pure.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::units::TimeUnit;
use super::{
    Adapter, AdapterError, AdapterResults, LATENCY, ResultsBuilder, THROUGHPUT, from_json,
};

const ADAPTER: Adapter = Adapter::JavaJmh;
const EXPECTED: &str = "a JMH `-rf json` array of runs with `benchmark` and `primaryMetric`";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Run {
    benchmark: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
    primary_metric: PrimaryMetric,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrimaryMetric {
    score: JmhNumber,
    score_error: Option<JmhNumber>,
    score_confidence: Option<[JmhNumber; 2]>,
    score_unit: String,
}

/// JMH writes non-finite numbers as strings (`"NaN"`).
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum JmhNumber {
    Number(f64),
    #[serde(deserialize_with = "non_finite")]
    NotFinite(f64),
}

fn non_finite<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.as_str() {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => Err(serde::de::Error::custom(format!(
            "`{text}` is not a number"
        ))),
    }
}

impl JmhNumber {
    fn finite(self) -> Option<f64> {
        match self {
            Self::Number(number) | Self::NotFinite(number) => {
                Some(number).filter(|n| n.is_finite())
            }
        }
    }
}

/// What a score means, from its unit.
enum Score {
    /// Time per operation in this unit.
    Time(TimeUnit),
    /// Operations per this unit of time.
    Rate(TimeUnit),
}

fn score_kind(unit: &str) -> Option<Score> {
    if let Some(time) = unit.strip_suffix("/op") {
        return TimeUnit::parse(time).map(Score::Time);
    }
    unit.strip_prefix("ops/")
        .and_then(TimeUnit::parse)
        .map(Score::Rate)
}

pub(super) fn parse(text: &str) -> Result<AdapterResults, AdapterError> {
    let runs: Vec<Run> = from_json(ADAPTER, text)?;
    let mut results = ResultsBuilder::new(ADAPTER);
    for run in &runs {
        let name = if run.params.is_empty() {
            run.benchmark.clone()
        } else {
            let params: Vec<String> = run
                .params
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            format!("{}({})", run.benchmark, params.join(", "))
        };
        let metric = &run.primary_metric;
        let problem = |problem: String| AdapterError::Benchmark {
            adapter: ADAPTER,
            benchmark: name.clone(),
            problem,
        };
        let score = metric
            .score
            .finite()
            .ok_or_else(|| problem("`primaryMetric.score` is not a finite number".to_owned()))?;
        let (lower, upper) = match (
            metric.score_confidence,
            metric.score_error.and_then(JmhNumber::finite),
        ) {
            (Some([low, high]), _) if low.finite().is_some() && high.finite().is_some() => {
                (low.finite(), high.finite())
            }
            (_, Some(error)) => (Some(score - error), Some(score + error)),
            _ => (None, None),
        };
        let unit = metric.score_unit.as_str();
        let (measure, convert): (&str, Box<dyn Fn(f64) -> f64>) = match score_kind(unit) {
            Some(Score::Time(time)) => (LATENCY, Box::new(move |value| time.to_nanos(value))),
            Some(Score::Rate(time)) => (
                THROUGHPUT,
                Box::new(move |value| time.per_unit_to_per_second(value)),
            ),
            None => {
                return Err(problem(format!(
                    "unknown `scoreUnit` `{unit}`; expected TIME/op or ops/TIME (ns, us, ms, s, min, hr, day)"
                )));
            }
        };
        results.insert(
            &name,
            measure,
            convert(score),
            lower.map(&convert),
            upper.map(&convert),
        )?;
    }
    results.finish(EXPECTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::tests::{assert_metric, chain, fixture};

    /// Not real JMH output: JMH could not be installed here (see scripts/adapter-fixtures).
    #[test]
    fn parses_the_documented_json_format() {
        let results = parse(&fixture("java_jmh/handwritten-jmh-format.json")).unwrap();
        let names: Vec<_> = results.benchmarks().keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "org.example.ListBenchmark.add(kind=array, size=10)",
                "org.example.ListBenchmark.add(kind=linked, size=10)",
                "org.example.ParseBenchmark.parse",
                "org.example.ParseBenchmark.sample",
                "org.example.StartupBenchmark.coldStart",
            ]
        );
        // thrpt: "score": 3467631.2300505415, "scoreConfidence": [3369067.897461809, 3566194.5626392737], "ops/s"
        assert_metric(
            &results,
            "org.example.ListBenchmark.add(kind=array, size=10)",
            "throughput",
            3467631.2300505415,
            Some(3369067.897461809),
            Some(3566194.5626392737),
        );
        // thrpt in ops/ms: "score": 1520.5, "scoreConfidence": [1500.25, 1540.75]
        assert_metric(
            &results,
            "org.example.ListBenchmark.add(kind=linked, size=10)",
            "throughput",
            1_520_500.0,
            Some(1_500_250.0),
            Some(1_540_750.0),
        );
        // avgt in us/op: "score": 12.75, "scoreConfidence": [12.5, 13.0]
        assert_metric(
            &results,
            "org.example.ParseBenchmark.parse",
            "latency",
            12_750.0,
            Some(12_500.0),
            Some(13_000.0),
        );
        // sample in ms/op: "score": 2.5, "scoreError": 0.25, no scoreConfidence
        assert_metric(
            &results,
            "org.example.ParseBenchmark.sample",
            "latency",
            2_500_000.0,
            Some(2_250_000.0),
            Some(2_750_000.0),
        );
        // ss in s/op with "scoreError": "NaN", "scoreConfidence": ["NaN", "NaN"]
        assert_metric(
            &results,
            "org.example.StartupBenchmark.coldStart",
            "latency",
            1.5e9,
            None,
            None,
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        let run = |score: &str, unit: &str| {
            format!(
                r#"[{{"benchmark": "a.B.c", "mode": "avgt", "primaryMetric": {{"score": {score}, "scoreUnit": "{unit}"}}}}]"#
            )
        };
        let cases = [
            ("{}".to_owned(), "invalid type: map, expected a sequence"),
            ("[]".to_owned(), "java_jmh: no benchmark results found"),
            (
                run("1", "furlongs/op"),
                "benchmark `a.B.c`: unknown `scoreUnit` `furlongs/op`",
            ),
            (
                run("\"NaN\"", "ns/op"),
                "benchmark `a.B.c`: `primaryMetric.score` is not a finite number",
            ),
            (run("\"fast\"", "ns/op"), "did not match any variant"),
            (run("1e308", "s/op"), "`value` must be a finite number"),
        ];
        for (text, expected) in cases {
            let message = chain(&parse(&text).unwrap_err());
            assert!(message.contains(expected), "{text}: {message}");
        }
    }
}
