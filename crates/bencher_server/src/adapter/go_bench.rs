//! The `go_bench` adapter: `go test -bench` result lines,
//! `BenchmarkName-8   1000000   239.8 ns/op   104 B/op   2 allocs/op`. `ns/op` becomes
//! `latency`, `-benchmem`'s `B/op` and `allocs/op` become `allocated-bytes` and
//! `allocations`; `MB/s` (bytes, not operations) and custom `b.ReportMetric` units are
//! not recorded. Names are kept whole, including sub-benchmark slashes and the
//! `-GOMAXPROCS` suffix. Lines that are not results (`goos:`, `PASS`, logs, a benchmark
//! name printed alone before its output) are skipped; a result line whose values do
//! not parse is an error. Pure.

use super::units::TimeUnit;
use super::{
    ALLOCATED_BYTES, ALLOCATIONS, Adapter, AdapterError, AdapterResults, LATENCY, ResultsBuilder,
};

const ADAPTER: Adapter = Adapter::GoBench;
const EXPECTED: &str = "go test -bench lines like `BenchmarkName-8  1000  1234 ns/op`";

pub(super) fn parse(text: &str) -> Result<AdapterResults, AdapterError> {
    let mut results = ResultsBuilder::new(ADAPTER);
    for (line_number, line) in super::visible_lines(text) {
        let mut words = line.split_whitespace();
        let Some(name) = words.next().filter(|name| name.starts_with("Benchmark")) else {
            continue;
        };
        // The iteration count tells a result line from a name printed before logs.
        let Some(_iterations) = words.next().and_then(|count| count.parse::<u64>().ok()) else {
            continue;
        };
        let values: Vec<&str> = words.collect();
        if values.is_empty() || !values.len().is_multiple_of(2) {
            return Err(results.line_error(
                line_number,
                line,
                "expected `VALUE UNIT` pairs after the iteration count",
            ));
        }
        let mut recorded = 0;
        for pair in values.chunks_exact(2) {
            let (value, unit) = (pair[0], pair[1]);
            let measure = match unit {
                "ns/op" => LATENCY,
                "B/op" => ALLOCATED_BYTES,
                "allocs/op" => ALLOCATIONS,
                _ => continue,
            };
            let value: f64 = value.parse().map_err(|_| {
                results.line_error(line_number, line, format!("`{value}` is not a number"))
            })?;
            if measure == LATENCY {
                results.insert_latency_spread(name, value, None, TimeUnit::NANOS)?;
            } else {
                results.insert(name, measure, value, None, None)?;
            }
            recorded += 1;
        }
        if recorded == 0 {
            return Err(results.line_error(line_number, line, "no `ns/op` value"));
        }
    }
    results.finish(EXPECTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::tests::{assert_metric, chain, fixture};

    #[test]
    fn parses_benchmem_output() {
        let results = parse(&fixture("go_bench/benchmem.txt")).unwrap();
        let names: Vec<_> = results.benchmarks().keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "BenchmarkCopy-2",
                "BenchmarkFib10-2",
                "BenchmarkSleep-2",
                "BenchmarkSort/size=10-2",
                "BenchmarkSort/size=1000-2"
            ]
        );
        // `BenchmarkFib10-2   	 1000000	       239.8 ns/op	       0 B/op	       0 allocs/op`
        assert_metric(&results, "BenchmarkFib10-2", "latency", 239.8, None, None);
        assert_metric(
            &results,
            "BenchmarkFib10-2",
            "allocated-bytes",
            0.0,
            None,
            None,
        );
        assert_metric(&results, "BenchmarkFib10-2", "allocations", 0.0, None, None);
        // `BenchmarkSort/size=1000-2  10000  30530 ns/op  8216 B/op  2 allocs/op`
        assert_metric(
            &results,
            "BenchmarkSort/size=1000-2",
            "latency",
            30_530.0,
            None,
            None,
        );
        assert_metric(
            &results,
            "BenchmarkSort/size=1000-2",
            "allocated-bytes",
            8216.0,
            None,
            None,
        );
        assert_metric(
            &results,
            "BenchmarkSort/size=1000-2",
            "allocations",
            2.0,
            None,
            None,
        );
        // `BenchmarkSleep-2  189  1148601 ns/op ...`: a millisecond-scale benchmark.
        assert_metric(
            &results,
            "BenchmarkSleep-2",
            "latency",
            1_148_601.0,
            None,
            None,
        );
        // `BenchmarkCopy-2  118664  1912 ns/op  2142.62 MB/s  42.00 widgets/op  4096 B/op  1 allocs/op`:
        // MB/s and the custom metric are skipped, the columns after them still read.
        assert_metric(&results, "BenchmarkCopy-2", "latency", 1912.0, None, None);
        assert_metric(
            &results,
            "BenchmarkCopy-2",
            "allocated-bytes",
            4096.0,
            None,
            None,
        );
        assert_eq!(results.benchmarks()["BenchmarkCopy-2"].len(), 3);
    }

    #[test]
    fn explains_what_is_wrong() {
        let cases = [
            (
                "BenchmarkA-2  100  12 ns/op  7",
                "line 1 (`BenchmarkA-2  100  12 ns/op  7`): expected `VALUE UNIT` pairs",
            ),
            (
                "BenchmarkA-2  100  twelve ns/op",
                "`twelve` is not a number",
            ),
            ("BenchmarkA-2  100  12 MB/s", "no `ns/op` value"),
            (
                "goos: linux\nPASS\nok  	example.com/x	0.1s",
                "go_bench: no benchmark results found",
            ),
            (
                "BenchmarkA-2  100  12 ns/op\nBenchmarkA-2  100  13 ns/op",
                "benchmark `BenchmarkA-2` has more than one `latency` value",
            ),
        ];
        for (text, expected) in cases {
            let message = chain(&parse(text).unwrap_err());
            assert!(message.contains(expected), "{text}: {message}");
        }
        // A name printed alone before the benchmark's own log output is not a result.
        let results =
            parse("BenchmarkLogs-2\nsome log line\nBenchmarkLogs-2  10  5 ns/op\n").unwrap();
        assert_metric(&results, "BenchmarkLogs-2", "latency", 5.0, None, None);
    }
}
