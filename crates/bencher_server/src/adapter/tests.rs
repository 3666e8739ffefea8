//! Shared test helpers (fixtures, exact-value checks, error chains) and the tests of the
//! adapter API as a whole: `magic`'s choice, every fixture under every adapter, and
//! arbitrary input never panicking.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adapters");

/// Every committed fixture, with the adapter that must parse it.
const ALL_FIXTURES: &[(Adapter, &str)] = &[
    (Adapter::RustBench, "rust_bench/cargo-bench.txt"),
    (Adapter::RustCriterion, "rust_criterion/first-run.txt"),
    (Adapter::RustCriterion, "rust_criterion/with-change.txt"),
    (Adapter::GoBench, "go_bench/benchmem.txt"),
    (Adapter::CppGoogle, "cpp_google/benchmark.json"),
    (Adapter::CppGoogle, "cpp_google/repetitions.json"),
    (Adapter::PythonPytest, "python_pytest/benchmark.json"),
    (Adapter::ShellHyperfine, "shell_hyperfine/commands.json"),
    (Adapter::ShellHyperfine, "shell_hyperfine/one-run.json"),
    (Adapter::JavaJmh, "java_jmh/handwritten-jmh-format.json"),
];

pub(super) fn fixture(path: &str) -> String {
    let path = format!("{FIXTURES}/{path}");
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The error and its causes on one line, as a user would read them.
pub(super) fn chain(error: &AdapterError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `benchmark`'s `measure` is `value` with these bounds, to 1e-9 relative (unit
/// conversion multiplies).
#[track_caller]
pub(super) fn assert_metric(
    results: &AdapterResults,
    benchmark: &str,
    measure: &str,
    value: f64,
    lower: Option<f64>,
    upper: Option<f64>,
) {
    let metric = results
        .get(benchmark, measure)
        .unwrap_or_else(|| panic!("no `{measure}` for `{benchmark}` in {results:?}"));
    let close = |got: f64, want: f64| (got - want).abs() <= want.abs() * 1e-9 + 1e-12;
    assert!(
        close(metric.value(), value),
        "{benchmark} {measure}: value {} != {value}",
        metric.value()
    );
    for (name, got, want) in [
        ("lower", metric.lower_value(), lower),
        ("upper", metric.upper_value(), upper),
    ] {
        match (got, want) {
            (Some(got), Some(want)) => assert!(
                close(got, want),
                "{benchmark} {measure}: {name} {got} != {want}"
            ),
            (None, None) => {}
            _ => panic!("{benchmark} {measure}: {name} {got:?} != {want:?}"),
        }
    }
}

#[test]
fn magic_picks_the_adapter_of_each_fixture() {
    for &(adapter, path) in ALL_FIXTURES {
        let text = fixture(path);
        let (picked, results) =
            magic(&text).unwrap_or_else(|error| panic!("{path}: {}", chain(&error)));
        assert_eq!(picked, adapter, "{path}");
        assert_eq!(results, parse(adapter, &text).unwrap(), "{path}");
        assert_eq!(parse(Adapter::Magic, &text).unwrap(), results, "{path}");
    }
}

#[test]
fn magic_reads_bmf_first_and_explains_a_miss() {
    let (picked, _) = magic(r#"{"a": {"latency": {"value": 1}}}"#).unwrap();
    assert_eq!(picked, Adapter::Json);
    let message = chain(&magic("hello\nworld\n").unwrap_err());
    assert!(
        message.starts_with("no adapter recognised the output ("),
        "{message}"
    );
    for adapter in MAGIC_ORDER {
        assert!(
            message.contains(&format!("{adapter}: ")),
            "{adapter} missing from {message}"
        );
    }
    assert!(
        message.contains("rust_bench: no benchmark results found; expected libtest lines"),
        "{message}"
    );
}

#[test]
fn magic_prefers_criterion_over_libtest_in_one_cargo_bench_output() {
    let text = "running 0 tests\n\ntest result: ok. 0 passed; 0 failed\n\n\
                test unit_bench ... bench:          12 ns/iter (+/- 1)\n\
                fib 20                  time:   [26.029 µs 26.251 µs 26.505 µs]\n";
    let (picked, results) = magic(text).unwrap();
    assert_eq!(picked, Adapter::RustCriterion);
    assert_metric(
        &results,
        "fib 20",
        "latency",
        26_251.0,
        Some(26_029.0),
        Some(26_505.0),
    );
}

/// Only the adapter a fixture belongs to (and `magic`) parses it: the JSON formats'
/// required fields keep them apart, and text adapters find nothing in JSON.
#[test]
fn fixtures_are_not_misread_by_other_adapters() {
    for &(owner, path) in ALL_FIXTURES {
        let text = fixture(path);
        for &adapter in MAGIC_ORDER.iter().filter(|&&a| a != owner) {
            assert!(parse(adapter, &text).is_err(), "{adapter} accepted {path}");
        }
    }
}

/// Fuzz-style: every adapter on every prefix of every fixture, on the fixtures with
/// random edits, and on random strings of the harnesses' own tokens. A parse may fail;
/// it must not panic, and what it returns must hold the `Metric` invariants.
#[test]
fn arbitrary_input_never_panics() {
    let mut inputs: Vec<String> = Vec::new();
    let mut rng = StdRng::seed_from_u64(6);
    for &(_, path) in ALL_FIXTURES {
        let text = fixture(path);
        let boundaries: Vec<usize> = text.char_indices().map(|(at, _)| at).collect();
        let step = (boundaries.len() / 200).max(1);
        inputs.extend(
            boundaries
                .iter()
                .step_by(step)
                .map(|&at| text[..at].to_owned()),
        );
        for _ in 0..200 {
            let mut chars: Vec<char> = text.chars().collect();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..chars.len());
                match rng.random_range(0..3) {
                    0 => {
                        chars.remove(at);
                    }
                    1 => chars.insert(at, random_char(&mut rng)),
                    _ => chars[at] = random_char(&mut rng),
                }
            }
            inputs.push(chars.into_iter().collect());
        }
    }
    const TOKENS: &[&str] = &[
        "test ",
        " ... bench:",
        " ns/iter",
        " (+/- ",
        ")",
        "time:",
        "thrpt:",
        " [",
        "]",
        " µs",
        " ps",
        " ms",
        " Melem/s",
        "%",
        "Benchmark",
        "-2",
        " ns/op",
        " B/op",
        " allocs/op",
        " MB/s",
        "{",
        "}",
        "[",
        ",",
        ":",
        "\"value\"",
        "\"context\"",
        "\"benchmarks\"",
        "\"machine_info\"",
        "\"results\"",
        "\"primaryMetric\"",
        "\"score\"",
        "\"scoreUnit\"",
        "\"NaN\"",
        "\"ns/op\"",
        "\"real_time\"",
        "\"time_unit\"",
        "\"mean\"",
        "1",
        "0",
        "-1",
        "1e308",
        "1e-320",
        "NaN",
        "inf",
        "1,234.5",
        " ",
        "\t",
        "\n",
        "é",
        "\u{0}",
    ];
    for _ in 0..3000 {
        let mut input = String::new();
        for _ in 0..rng.random_range(0..40) {
            input.push_str(TOKENS[rng.random_range(0..TOKENS.len())]);
        }
        inputs.push(input);
    }
    for input in &inputs {
        for &adapter in Adapter::ALL {
            if let Ok(results) = parse(adapter, input) {
                assert!(
                    !results.is_empty(),
                    "{adapter} returned no benchmarks for {input:?}"
                );
                for metric in results
                    .benchmarks()
                    .values()
                    .flat_map(|measures| measures.values())
                {
                    assert!(metric.value().is_finite());
                    assert!(
                        metric
                            .lower_value()
                            .is_none_or(|lower| lower.is_finite() && lower <= metric.value())
                    );
                    assert!(
                        metric
                            .upper_value()
                            .is_none_or(|upper| upper.is_finite() && upper >= metric.value())
                    );
                }
            }
        }
    }
}

fn random_char(rng: &mut StdRng) -> char {
    const INTERESTING: &[char] = &[
        '"', '{', '}', '[', ']', ',', ':', ' ', '\n', '.', '-', 'e', '%', 'µ', '/', '0', '9',
    ];
    if rng.random_bool(0.7) {
        INTERESTING[rng.random_range(0..INTERESTING.len())]
    } else {
        char::from_u32(rng.random_range(0..0x3000)).unwrap_or('x')
    }
}

#[test]
fn names_and_metrics_are_validated() {
    assert_eq!(BenchmarkName::new(""), Err(BenchmarkNameError::Empty));
    assert_eq!(
        BenchmarkName::new(&"é".repeat(1025)),
        Err(BenchmarkNameError::TooLong(1025))
    );
    assert!(BenchmarkName::new(&"é".repeat(1024)).is_ok());
    assert_eq!(
        BenchmarkName::new("a\nb"),
        Err(BenchmarkNameError::ControlCharacter)
    );
    // Kept exactly: surrounding spaces and the ignore suffix stay.
    assert_eq!(
        BenchmarkName::new(" a b-bencher-ignore ").unwrap().as_str(),
        " a b-bencher-ignore "
    );
    assert!(matches!(
        Metric::new(f64::NAN, None, None),
        Err(MetricError::NotFinite { field: "value", .. })
    ));
    assert!(matches!(
        Metric::new(1.0, Some(f64::NEG_INFINITY), None),
        Err(MetricError::NotFinite {
            field: "lower_value",
            ..
        })
    ));
    assert!(Metric::new(1.0, Some(1.0), Some(1.0)).is_ok());
}

#[test]
fn known_measures_are_slugs() {
    for measure in KNOWN_MEASURES {
        assert!(measure.slug.parse::<Slug>().is_ok(), "{}", measure.slug);
    }
}
