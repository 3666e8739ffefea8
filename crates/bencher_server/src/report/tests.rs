//! `metrics_of`: which iterations and texts become metrics, folding, and the messages of
//! outputs that cannot become a report.

use std::collections::BTreeMap;

use super::*;

fn config(files: Option<&[&str]>) -> Vec<String> {
    files
        .unwrap_or_default()
        .iter()
        .map(|p| (*p).to_owned())
        .collect()
}

fn bmf(benchmark: &str, value: f64) -> String {
    format!(r#"{{"{benchmark}": {{"latency": {{"value": {value}}}}}}}"#)
}

fn iteration(exit_code: i32, stdout: &str) -> IterationResult {
    IterationResult {
        exit_code,
        stdout: Some(stdout.to_owned()),
        stderr: None,
        output: None,
    }
}

fn output(results: Vec<IterationResult>) -> OutputDocument {
    OutputDocument {
        results,
        error: None,
    }
}

const MAGIC: Settings = Settings {
    adapter: None,
    fold: None,
};

#[test]
fn each_successful_iteration_becomes_metrics() {
    let out = output(vec![
        iteration(0, &bmf("a", 10.0)),
        iteration(1, &bmf("a", 99.0)),
        iteration(0, &bmf("a", 12.0)),
    ]);
    let metrics = metrics_of(&MAGIC, &config(None), &out).unwrap();
    assert_eq!(metrics.adapter, Adapter::Json, "magic found BMF");
    let values: Vec<(u32, f64)> = metrics
        .metrics
        .iter()
        .map(|m| (m.iteration, m.value))
        .collect();
    // The failed iteration (kept by allow_failure) is left out; the others keep their
    // order.
    assert_eq!(values, [(0, 10.0), (1, 12.0)]);
    assert_eq!(metrics.iterations, 2);
    assert!(
        metrics
            .metrics
            .iter()
            .all(|m| m.benchmark == "a" && m.measure == "latency")
    );
}

#[test]
fn folding_gives_one_iteration() {
    let out = output(vec![
        iteration(0, &bmf("a", 10.0)),
        iteration(0, &bmf("a", 30.0)),
        iteration(0, &bmf("a", 20.0)),
    ]);
    for (fold, expected) in [
        (Fold::Min, 10.0),
        (Fold::Max, 30.0),
        (Fold::Mean, 20.0),
        (Fold::Median, 20.0),
    ] {
        let settings = Settings {
            adapter: Some(Adapter::Json),
            fold: Some(fold),
        };
        let metrics = metrics_of(&settings, &config(None), &out).unwrap();
        assert_eq!(metrics.iterations, 1);
        assert_eq!(metrics.metrics.len(), 1);
        assert_eq!(
            (metrics.metrics[0].iteration, metrics.metrics[0].value),
            (0, expected),
            "{fold}"
        );
    }
}

#[test]
fn output_files_are_parsed_instead_of_stdout() {
    let mut result = iteration(0, "not benchmark output");
    result.output = Some(BTreeMap::from([
        ("/out/a.json".to_owned(), bmf("a", 1.0)),
        ("/out/b.json".to_owned(), bmf("b", 2.0)),
    ]));
    let metrics = metrics_of(
        &MAGIC,
        &config(Some(&["/out/a.json", "/out/b.json"])),
        &output(vec![result.clone()]),
    )
    .unwrap();
    let names: Vec<&str> = metrics
        .metrics
        .iter()
        .map(|m| m.benchmark.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);

    // The same benchmark in two files is ambiguous.
    result.output = Some(BTreeMap::from([
        ("/out/a.json".to_owned(), bmf("a", 1.0)),
        ("/out/b.json".to_owned(), bmf("a", 2.0)),
    ]));
    let error = metrics_of(
        &MAGIC,
        &config(Some(&["/out/a.json", "/out/b.json"])),
        &output(vec![result.clone()]),
    )
    .unwrap_err();
    assert!(
        error.contains("benchmark `a` appears in more than one output file"),
        "{error}"
    );

    // A file that was not collected is named.
    let error = metrics_of(
        &MAGIC,
        &config(Some(&["/out/c.json"])),
        &output(vec![result]),
    )
    .unwrap_err();
    assert!(
        error.contains("output file `/out/c.json` was not collected"),
        "{error}"
    );
}

#[test]
fn unreadable_output_says_why() {
    let json = Settings {
        adapter: Some(Adapter::Json),
        fold: None,
    };
    let error = metrics_of(&json, &config(None), &output(vec![iteration(0, "hello")])).unwrap_err();
    assert!(error.starts_with("iteration 1, stdout: json:"), "{error}");

    let error =
        metrics_of(&MAGIC, &config(None), &output(vec![iteration(0, "hello")])).unwrap_err();
    assert!(error.starts_with("iteration 1, stdout:"), "{error}");

    let error = metrics_of(
        &MAGIC,
        &config(None),
        &output(vec![iteration(2, &bmf("a", 1.0))]),
    )
    .unwrap_err();
    assert_eq!(
        error,
        "no iteration succeeded (1 ran), so there are no results to report"
    );
}
