//! The `rust_criterion` adapter: Criterion's text report,
//! `NAME   time:   [low unit estimate unit high unit]` (the name alone on the line above
//! when it is long), then an optional `thrpt:  [low elem/s estimate high]`. Latency is
//! the estimate in ns with the confidence interval as bounds; element throughput becomes
//! `throughput` in ops/s, byte throughput is not recorded. `change:` blocks (percentages
//! against Criterion's own baseline), outlier notes and progress lines are skipped. Pure.

use super::units::{self, TimeUnit};
use super::{Adapter, AdapterError, AdapterResults, ResultsBuilder, THROUGHPUT};

const ADAPTER: Adapter = Adapter::RustCriterion;
const EXPECTED: &str = "Criterion lines like `NAME  time:   [1.0 ns 1.1 ns 1.2 ns]`";

pub(super) fn parse(text: &str) -> Result<AdapterResults, AdapterError> {
    let mut results = ResultsBuilder::new(ADAPTER);
    let mut previous_line: Option<&str> = None;
    // The benchmark the last `time:` line belonged to, for its `thrpt:` line.
    let mut current: Option<String> = None;
    for (line_number, line) in super::visible_lines(text) {
        if let Some((prefix, interval)) = labelled_interval(line, "time:") {
            if is_change(interval) {
                continue;
            }
            let name = if prefix.trim().is_empty() {
                previous_line.map(str::trim).filter(|name| !name.is_empty())
            } else {
                Some(prefix.trim_end())
            };
            let Some(name) = name else {
                return Err(results.line_error(
                    line_number,
                    line,
                    "a `time:` line with no benchmark name before it",
                ));
            };
            let [low, estimate, high] = times(interval)
                .map_err(|problem| results.line_error(line_number, line, problem))?;
            results.insert(name, super::LATENCY, estimate, Some(low), Some(high))?;
            current = Some(name.to_owned());
        } else if let Some((prefix, interval)) = labelled_interval(line, "thrpt:") {
            if is_change(interval) || !prefix.trim().is_empty() {
                continue;
            }
            let Some(name) = current.as_deref() else {
                return Err(results.line_error(
                    line_number,
                    line,
                    "a `thrpt:` line before any `time:` line",
                ));
            };
            if let Some([low, estimate, high]) = throughputs(interval)
                .map_err(|problem| results.line_error(line_number, line, problem))?
            {
                results.insert(name, THROUGHPUT, estimate, Some(low), Some(high))?;
            }
        } else if !line.starts_with(' ') {
            // A line at the left margin starts something new: a `thrpt:` after it is not
            // the previous benchmark's.
            current = None;
        }
        previous_line = Some(line);
    }
    results.finish(EXPECTED)
}

/// `prefix  label  [ ... ]` → (prefix, "..."), when `label` is followed by a bracket.
fn labelled_interval<'a>(line: &'a str, label: &str) -> Option<(&'a str, &'a str)> {
    let at = line.find(label)?;
    let after = line[at + label.len()..].trim_start();
    let inside = after.strip_prefix('[')?.trim_end().strip_suffix(']')?;
    Some((&line[..at], inside))
}

/// A change interval reads `[-3.0714% +8.8140% +26.614%]`.
fn is_change(interval: &str) -> bool {
    interval
        .split_whitespace()
        .next()
        .is_some_and(|word| word.ends_with('%'))
}

/// `137.30 ns 141.86 ns 146.39 ns` → nanoseconds.
fn times(interval: &str) -> Result<[f64; 3], String> {
    let words: Vec<&str> = interval.split_whitespace().collect();
    let [v0, u0, v1, u1, v2, u2] = words[..] else {
        return Err("expected `[LOW UNIT ESTIMATE UNIT HIGH UNIT]` after `time:`".to_owned());
    };
    let mut out = [0.0; 3];
    for (slot, (value, unit)) in out.iter_mut().zip([(v0, u0), (v1, u1), (v2, u2)]) {
        let unit = TimeUnit::parse(unit).ok_or_else(|| format!("unknown time unit `{unit}`"))?;
        *slot = unit.to_nanos(number(value)?);
    }
    Ok(out)
}

/// `178.10 Melem/s 187.05 Melem/s 196.54 Melem/s` → elements per second; `None` for
/// byte throughput.
fn throughputs(interval: &str) -> Result<Option<[f64; 3]>, String> {
    let words: Vec<&str> = interval.split_whitespace().collect();
    let [v0, u0, v1, u1, v2, u2] = words[..] else {
        return Err("expected `[LOW UNIT ESTIMATE UNIT HIGH UNIT]` after `thrpt:`".to_owned());
    };
    let mut out = [0.0; 3];
    for (slot, (value, unit)) in out.iter_mut().zip([(v0, u0), (v1, u1), (v2, u2)]) {
        let Some(factor) = units::elements_per_second(unit) else {
            if unit.ends_with("B/s") {
                return Ok(None);
            }
            return Err(format!("unknown throughput unit `{unit}`"));
        };
        *slot = number(value)? * factor;
    }
    Ok(Some(out))
}

fn number(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .map_err(|_| format!("`{text}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::tests::{assert_metric, chain, fixture};

    const LONG: &str = "a benchmark name long enough to push the time column onto its own line";

    #[test]
    fn parses_a_first_run() {
        let results = parse(&fixture("rust_criterion/first-run.txt")).unwrap();
        let names: Vec<_> = results.benchmarks().keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                LONG,
                "fib 10",
                "slow/sleep 2ms",
                "sort/vec/100",
                "sort/vec/10000"
            ]
        );
        // `fib 10                  time:   [137.30 ns 141.86 ns 146.39 ns]`
        assert_metric(
            &results,
            "fib 10",
            "latency",
            141.86,
            Some(137.30),
            Some(146.39),
        );
        assert!(results.get("fib 10", "throughput").is_none());
        // `                        time:   [412.92 ps 435.62 ps 459.62 ps]`
        assert_metric(
            &results,
            LONG,
            "latency",
            0.43562,
            Some(0.41292),
            Some(0.45962),
        );
        // `sort/vec/10000          time:   [75.305 µs 78.081 µs 81.468 µs]`
        // `                        thrpt:  [122.75 Melem/s 128.07 Melem/s 132.79 Melem/s]`
        assert_metric(
            &results,
            "sort/vec/10000",
            "latency",
            78_081.0,
            Some(75_305.0),
            Some(81_468.0),
        );
        assert_metric(
            &results,
            "sort/vec/10000",
            "throughput",
            128.07e6,
            Some(122.75e6),
            Some(132.79e6),
        );
        assert_metric(
            &results,
            "sort/vec/100",
            "throughput",
            187.05e6,
            Some(178.10e6),
            Some(196.54e6),
        );
        // `slow/sleep 2ms          time:   [2.0878 ms 2.1124 ms 2.1428 ms]`
        assert_metric(
            &results,
            "slow/sleep 2ms",
            "latency",
            2_112_400.0,
            Some(2_087_800.0),
            Some(2_142_800.0),
        );
    }

    #[test]
    fn skips_change_lines_of_a_second_run() {
        let results = parse(&fixture("rust_criterion/with-change.txt")).unwrap();
        assert_eq!(results.len(), 5);
        // `change:` then `time:   [+7.0911% +18.231% +29.465%]` must not be read as times.
        assert_metric(
            &results,
            "sort/vec/100",
            "latency",
            631.09,
            Some(591.89),
            Some(670.42),
        );
        assert_metric(
            &results,
            "sort/vec/100",
            "throughput",
            158.46e6,
            Some(149.16e6),
            Some(168.95e6),
        );
        assert_metric(
            &results,
            "slow/sleep 2ms",
            "latency",
            2_109_700.0,
            Some(2_095_000.0),
            Some(2_127_000.0),
        );
        assert_eq!(
            results
                .benchmarks()
                .values()
                .map(|m| m.len())
                .sum::<usize>(),
            7
        );
    }

    /// On a terminal Criterion redraws its progress line with carriage returns; the
    /// result is what follows the last one.
    #[test]
    fn progress_redrawn_with_carriage_returns() {
        let text = "Benchmarking fib 10: Warming up for 3.0000 s\rBenchmarking fib 10: Analyzing\rfib 10   time:   [1.0 ns 2.0 ns 3.0 ns]\r\n";
        let results = parse(text).unwrap();
        assert_eq!(results.len(), 1);
        assert_metric(&results, "fib 10", "latency", 2.0, Some(1.0), Some(3.0));
    }

    #[test]
    fn byte_throughput_is_not_operations() {
        let text = "copy   time:   [1.0 µs 2.0 µs 3.0 µs]\n       thrpt:  [1.0 GiB/s 2.0 GiB/s 3.0 GiB/s]\n";
        let results = parse(text).unwrap();
        assert_metric(
            &results,
            "copy",
            "latency",
            2_000.0,
            Some(1_000.0),
            Some(3_000.0),
        );
        assert!(results.get("copy", "throughput").is_none());
    }

    #[test]
    fn explains_what_is_wrong() {
        let cases = [
            (
                "a  time:   [1 ns 2 ns]",
                "line 1 (`a  time:   [1 ns 2 ns]`): expected `[LOW UNIT ESTIMATE UNIT HIGH UNIT]`",
            ),
            (
                "a  time:   [1 ns 2 fortnights 3 ns]",
                "unknown time unit `fortnights`",
            ),
            ("a  time:   [1 ns x ns 3 ns]", "`x` is not a number"),
            (
                "   time:   [1 ns 2 ns 3 ns]",
                "line 1 (`time:   [1 ns 2 ns 3 ns]`): a `time:` line with no benchmark name",
            ),
            (
                "   thrpt:  [1 elem/s 2 elem/s 3 elem/s]",
                "a `thrpt:` line before any `time:` line",
            ),
            (
                "a  time:   [3 ns 2 ns 1 ns]",
                "`lower_value` (3) must not be above `value` (2)",
            ),
            (
                "Benchmarking a\nBenchmarking a: Warming up for 3.0000 s\n",
                "no benchmark results found",
            ),
        ];
        for (text, expected) in cases {
            let message = chain(&parse(text).unwrap_err());
            assert!(message.contains(expected), "{text}: {message}");
        }
    }
}
