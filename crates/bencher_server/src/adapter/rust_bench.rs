//! The `rust_bench` adapter: libtest's `#[bench]` lines from `cargo bench`,
//! `test NAME ... bench:   1,234.56 ns/iter (+/- 78.9)`, optionally followed by
//! `= N MB/s` (byte throughput, not recorded). Latency in ns, bounds `value ± spread`
//! with the lower clamped at zero. Other lines (unit tests, program output) are skipped;
//! a line that starts like a bench result but does not parse is an error. Pure.

use super::units::TimeUnit;
use super::{Adapter, AdapterError, AdapterResults, ResultsBuilder};

const ADAPTER: Adapter = Adapter::RustBench;
const EXPECTED: &str = "libtest lines like `test NAME ... bench: 1,234 ns/iter (+/- 56)`";
const MARKER: &str = " ... bench:";

pub(super) fn parse(text: &str) -> Result<AdapterResults, AdapterError> {
    let mut results = ResultsBuilder::new(ADAPTER);
    for (line_number, line) in super::visible_lines(text) {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, measurement)) = rest.split_once(MARKER) else {
            continue;
        };
        let (value, spread) = measurement_values(measurement)
            .map_err(|problem| results.line_error(line_number, line, problem))?;
        // libtest pads names to align the columns; the padding is not part of the name.
        results.insert_latency_spread(name.trim_end(), value, Some(spread), TimeUnit::NANOS)?;
    }
    results.finish(EXPECTED)
}

/// `   1,234.56 ns/iter (+/- 78.9) = 12 MB/s` → (1234.56, 78.9).
fn measurement_values(measurement: &str) -> Result<(f64, f64), String> {
    let expected = "expected `N ns/iter (+/- M)` after `bench:`";
    let mut words = measurement.split_whitespace();
    let value = words.next().ok_or(expected)?;
    if words.next() != Some("ns/iter") || words.next() != Some("(+/-") {
        return Err(expected.to_owned());
    }
    let spread = words
        .next()
        .and_then(|spread| spread.strip_suffix(')'))
        .ok_or(expected)?;
    Ok((number(value)?, number(spread)?))
}

/// libtest groups thousands with commas.
fn number(text: &str) -> Result<f64, String> {
    text.replace(',', "")
        .parse::<f64>()
        .map_err(|_| format!("`{text}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::tests::{assert_metric, chain, fixture};

    #[test]
    fn parses_cargo_bench_output() {
        let results = parse(&fixture("rust_bench/cargo-bench.txt")).unwrap();
        let names: Vec<_> = results.benchmarks().keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            ["add_two", "nested::copy_4k", "sleep_1ms", "sort_1000"]
        );
        // `test add_two         ... bench:           0.35 ns/iter (+/- 0.30)`
        assert_metric(
            &results,
            "add_two",
            "latency",
            0.35,
            Some(0.35 - 0.30),
            Some(0.35 + 0.30),
        );
        // `test nested::copy_4k ... bench:          38.49 ns/iter (+/- 46.10) = 107789 MB/s`:
        // the spread is wider than the value, and latency cannot go below zero.
        assert_metric(
            &results,
            "nested::copy_4k",
            "latency",
            38.49,
            Some(0.0),
            Some(38.49 + 46.10),
        );
        // `test sleep_1ms       ... bench:   1,083,493.10 ns/iter (+/- 291,507.45)`
        assert_metric(
            &results,
            "sleep_1ms",
            "latency",
            1_083_493.10,
            Some(1_083_493.10 - 291_507.45),
            Some(1_083_493.10 + 291_507.45),
        );
        assert_metric(
            &results,
            "sort_1000",
            "latency",
            5_695.38,
            Some(0.0),
            Some(5_695.38 + 19_621.25),
        );
        assert_eq!(results.benchmarks()["sort_1000"].len(), 1);
    }

    #[test]
    fn integer_output_of_older_toolchains() {
        let results = parse("test bench_a ... bench:       1,234 ns/iter (+/- 56)\n").unwrap();
        assert_metric(
            &results,
            "bench_a",
            "latency",
            1234.0,
            Some(1178.0),
            Some(1290.0),
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        let message =
            chain(&parse("running 1 test\ntest a ... bench: fast ns/iter (+/- 1)\n").unwrap_err());
        assert!(
            message.contains(
                "line 2 (`test a ... bench: fast ns/iter (+/- 1)`): `fast` is not a number"
            ),
            "{message}"
        );
        let message = chain(&parse("test a ... bench: 12 ms/iter (+/- 1)").unwrap_err());
        assert!(
            message.contains("expected `N ns/iter (+/- M)`"),
            "{message}"
        );
        let message = chain(&parse("test a ... bench: inf ns/iter (+/- 1)").unwrap_err());
        assert!(
            message.contains("`value` must be a finite number"),
            "{message}"
        );
        let message = chain(&parse("test a ... ok\ntest result: ok.").unwrap_err());
        assert!(
            message.contains("rust_bench: no benchmark results found"),
            "{message}"
        );
        let twice = "test a ... bench: 1 ns/iter (+/- 1)\ntest a ... bench: 2 ns/iter (+/- 1)\n";
        let message = chain(&parse(twice).unwrap_err());
        assert!(
            message.contains("benchmark `a` has more than one `latency` value"),
            "{message}"
        );
    }
}
