//! Folding the results of several iterations of one run into one: `--fold
//! min|max|mean|median`. Pure.
//!
//! Each benchmark and measure is folded over the iterations that have it (a benchmark
//! missing from one iteration still folds over the others). `value`, `lower_value` and
//! `upper_value` fold independently with the same statistic; the bounds are kept only
//! when every folded iteration has them, which keeps `lower <= value <= upper` (min,
//! max, mean and median are all monotone). Means are computed without overflow, so a
//! fold of finite values is finite.

use std::collections::BTreeMap;

use super::{AdapterResults, BenchmarkName, Fold, Measures, Metric, Slug};

pub fn fold(iterations: &[AdapterResults], how: Fold) -> AdapterResults {
    let mut gathered: BTreeMap<&BenchmarkName, BTreeMap<&Slug, Vec<&Metric>>> = BTreeMap::new();
    for iteration in iterations {
        for (benchmark, measures) in iteration.benchmarks() {
            let entry = gathered.entry(benchmark).or_default();
            for (measure, metric) in measures {
                entry.entry(measure).or_default().push(metric);
            }
        }
    }
    let folded = gathered
        .into_iter()
        .map(|(benchmark, measures)| {
            let measures: Measures = measures
                .into_iter()
                .map(|(measure, metrics)| (measure.clone(), fold_metrics(&metrics, how)))
                .collect();
            (benchmark.clone(), measures)
        })
        .collect::<BTreeMap<_, _>>();
    AdapterResults::from(folded)
}

/// Folds one benchmark's metrics for one measure; `metrics` is never empty.
fn fold_metrics(metrics: &[&Metric], how: Fold) -> Metric {
    let values: Vec<f64> = metrics.iter().map(|metric| metric.value()).collect();
    let value = statistic(values, how);
    let bound = |get: fn(&Metric) -> Option<f64>| {
        let bounds: Option<Vec<f64>> = metrics.iter().map(|metric| get(metric)).collect();
        bounds.map(|bounds| statistic(bounds, how))
    };
    let lower = bound(Metric::lower_value);
    let upper = bound(Metric::upper_value);
    // The monotone statistics keep the bounds in order; should rounding in a mean ever
    // break that, the value alone is still right.
    Metric::new(value, lower, upper).unwrap_or(Metric {
        value,
        lower_value: None,
        upper_value: None,
    })
}

fn statistic(mut values: Vec<f64>, how: Fold) -> f64 {
    // Values are finite (a `Metric` invariant), so `total_cmp` is the numeric order.
    values.sort_by(f64::total_cmp);
    let Some((&first, &last)) = values.first().zip(values.last()) else {
        return 0.0;
    };
    match how {
        Fold::Min => first,
        Fold::Max => last,
        // Dividing each term first keeps the sum of finite values finite.
        Fold::Mean => {
            let count = values.len() as f64;
            values.iter().map(|value| value / count).sum()
        }
        Fold::Median => {
            let middle = values.len() / 2;
            if !values.len().is_multiple_of(2) {
                values[middle]
            } else {
                values[middle - 1] / 2.0 + values[middle] / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{Adapter, parse};

    fn bmf(text: &str) -> AdapterResults {
        parse(Adapter::Json, text).unwrap()
    }

    fn iterations() -> Vec<AdapterResults> {
        vec![
            bmf(
                r#"{"a": {"latency": {"value": 10, "lower_value": 9, "upper_value": 12}},
                    "b": {"latency": {"value": 5}}}"#,
            ),
            bmf(r#"{"a": {"latency": {"value": 30, "lower_value": 25, "upper_value": 31}}}"#),
            bmf(
                r#"{"a": {"latency": {"value": 20, "lower_value": 19, "upper_value": 22},
                          "throughput": {"value": 100}},
                    "b": {"latency": {"value": 7, "lower_value": 6}}}"#,
            ),
        ]
    }

    fn triple(
        results: &AdapterResults,
        benchmark: &str,
        measure: &str,
    ) -> (f64, Option<f64>, Option<f64>) {
        let metric = results.get(benchmark, measure).unwrap();
        (metric.value(), metric.lower_value(), metric.upper_value())
    }

    #[test]
    fn each_statistic_folds_value_and_bounds() {
        let iterations = iterations();
        let expect = [
            (Fold::Min, (10.0, Some(9.0), Some(12.0)), 5.0),
            (Fold::Max, (30.0, Some(25.0), Some(31.0)), 7.0),
            (Fold::Mean, (20.0, Some(53.0 / 3.0), Some(65.0 / 3.0)), 6.0),
            (Fold::Median, (20.0, Some(19.0), Some(22.0)), 6.0),
        ];
        for (how, a, b) in expect {
            let folded = fold(&iterations, how);
            let (value, lower, upper) = triple(&folded, "a", "latency");
            assert!((value - a.0).abs() < 1e-12, "{how}: {value}");
            assert!(
                (lower.unwrap() - a.1.unwrap()).abs() < 1e-12,
                "{how}: {lower:?}"
            );
            assert!(
                (upper.unwrap() - a.2.unwrap()).abs() < 1e-12,
                "{how}: {upper:?}"
            );
            // `b` is missing from the second iteration and has a lower bound in only one
            // of the two it is in: folded over those two, without bounds.
            assert_eq!(triple(&folded, "b", "latency"), (b, None, None), "{how}");
            // A measure only one iteration has folds to that iteration's value.
            assert_eq!(
                triple(&folded, "a", "throughput"),
                (100.0, None, None),
                "{how}"
            );
        }
    }

    #[test]
    fn median_of_an_even_count_is_the_middle_mean() {
        let iterations = [
            bmf(r#"{"a": {"latency": {"value": 4}}}"#),
            bmf(r#"{"a": {"latency": {"value": 1}}}"#),
            bmf(r#"{"a": {"latency": {"value": 100}}}"#),
            bmf(r#"{"a": {"latency": {"value": 2}}}"#),
        ];
        assert_eq!(
            triple(&fold(&iterations, Fold::Median), "a", "latency").0,
            3.0
        );
        assert_eq!(
            triple(&fold(&iterations, Fold::Mean), "a", "latency").0,
            26.75
        );
    }

    #[test]
    fn extremes_stay_finite_and_nothing_folds_to_nothing() {
        let huge = bmf(r#"{"a": {"latency": {"value": 1.7e308, "upper_value": 1.79e308}}}"#);
        let folded = fold(&[huge.clone(), huge], Fold::Mean);
        let (value, _, upper) = triple(&folded, "a", "latency");
        assert!(value.is_finite() && upper.unwrap().is_finite());
        assert!(fold(&[], Fold::Median).is_empty());
        let one = iterations().remove(0);
        for how in Fold::ALL {
            assert_eq!(fold(std::slice::from_ref(&one), *how), one, "{how}");
        }
    }
}
