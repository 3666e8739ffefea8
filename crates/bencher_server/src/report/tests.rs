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
        ..IterationResult::default()
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

const NONE: Measures = Measures {
    build_time: None,
    file_size: false,
};

#[test]
fn each_successful_iteration_becomes_metrics() {
    let out = output(vec![
        iteration(0, &bmf("a", 10.0)),
        iteration(1, &bmf("a", 99.0)),
        iteration(0, &bmf("a", 12.0)),
    ]);
    let metrics = metrics_of(&MAGIC, &config(None), &NONE, &out).unwrap();
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
        let metrics = metrics_of(&settings, &config(None), &NONE, &out).unwrap();
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
        &NONE,
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
        &NONE,
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
        &NONE,
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
    let error = metrics_of(
        &json,
        &config(None),
        &NONE,
        &output(vec![iteration(0, "hello")]),
    )
    .unwrap_err();
    assert!(error.starts_with("iteration 1, stdout: json:"), "{error}");

    let error = metrics_of(
        &MAGIC,
        &config(None),
        &NONE,
        &output(vec![iteration(0, "hello")]),
    )
    .unwrap_err();
    assert!(error.starts_with("iteration 1, stdout:"), "{error}");

    let error = metrics_of(
        &MAGIC,
        &config(None),
        &NONE,
        &output(vec![iteration(2, &bmf("a", 1.0))]),
    )
    .unwrap_err();
    assert_eq!(
        error,
        "no iteration succeeded (1 ran), so there are no results to report"
    );
}

fn job_config(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>, image: Option<&str>) -> JobConfig {
    let list = |items: &[&str]| items.iter().map(|i| (*i).to_owned()).collect();
    JobConfig {
        registry: "http://localhost:6610".to_owned(),
        project: ProjectUuid::new_v4(),
        digest: format!("sha256:{}", "a".repeat(64)),
        image: image.map(str::to_owned),
        entrypoint: entrypoint.map(list),
        cmd: cmd.map(list),
        env: None,
        timeout: 60,
        file_paths: None,
        build_time: Some(true),
        file_size: None,
        iter: None,
        allow_failure: None,
    }
}

/// An iteration of a job measuring both: stdout, wall time, sizes.
fn measured(stdout: &str, nanos: u64, sizes: &[(&str, u64)]) -> IterationResult {
    IterationResult {
        build_time_ns: Some(nanos),
        file_sizes: Some(sizes.iter().map(|(p, s)| ((*p).to_owned(), *s)).collect()),
        ..iteration(0, stdout)
    }
}

fn both() -> Measures {
    Measures {
        build_time: Some("make all".to_owned()),
        file_size: true,
    }
}

fn triples(metrics: &Metrics) -> Vec<(u32, &str, &str, f64)> {
    metrics
        .metrics
        .iter()
        .map(|m| {
            (
                m.iteration,
                m.benchmark.as_str(),
                m.measure.as_str(),
                m.value,
            )
        })
        .collect()
}

#[test]
fn build_time_and_file_sizes_join_the_adapters_metrics() {
    let files = config(Some(&["/out/app", "lib.so"]));
    let mut first = measured(
        &bmf("a", 10.0),
        1_500_000_000,
        &[("/out/app", 4096), ("lib.so", 7)],
    );
    // With file-size, files are measured, never parsed: contents are ignored.
    first.output = Some(BTreeMap::from([(
        "/out/app".to_owned(),
        "garbage".to_owned(),
    )]));
    let out = output(vec![
        first,
        iteration(1, "failed, left out"),
        measured("", 250_000_000, &[("/out/app", 4100), ("lib.so", 7)]),
    ]);
    let metrics = metrics_of(&MAGIC, &files, &both(), &out).unwrap();
    assert_eq!(metrics.iterations, 2);
    assert_eq!(
        triples(&metrics),
        [
            (0, "/out/app", "file-size", 4096.0),
            (0, "a", "latency", 10.0),
            (0, "lib.so", "file-size", 7.0),
            (0, "make all", "build-time", 1.5),
            // Empty stdout: a build has no benchmark output; its measures are the report.
            (1, "/out/app", "file-size", 4100.0),
            (1, "lib.so", "file-size", 7.0),
            (1, "make all", "build-time", 0.25),
        ]
    );

    // Folded like any other measure.
    let mean = Settings {
        adapter: None,
        fold: Some(Fold::Mean),
    };
    let out = output(vec![
        measured("", 1_000_000_000, &[]),
        measured("", 3_000_000_000, &[]),
    ]);
    let only_time = Measures {
        build_time: Some("make".to_owned()),
        file_size: false,
    };
    let metrics = metrics_of(&mean, &config(None), &only_time, &out).unwrap();
    assert_eq!(triples(&metrics), [(0, "make", "build-time", 2.0)]);
}

#[test]
fn measures_without_what_they_need_say_why() {
    let files = config(Some(&["/out/app"]));
    // An old runner sends neither field.
    let old = output(vec![iteration(0, "")]);
    let error = metrics_of(&MAGIC, &files, &both(), &old).unwrap_err();
    assert!(
        error.starts_with("iteration 1: the job asked for build-time but the runner sent no")
            && error.contains("update the runner"),
        "{error}"
    );
    let sizes_only = Measures {
        build_time: None,
        file_size: true,
    };
    let error = metrics_of(&MAGIC, &files, &sizes_only, &old).unwrap_err();
    assert!(
        error.contains("asked for file-size but the runner sent no file sizes"),
        "{error}"
    );
    // A file that was not there after a successful run.
    let missing = output(vec![measured("", 1, &[])]);
    let error = metrics_of(&MAGIC, &files, &both(), &missing).unwrap_err();
    assert_eq!(
        error,
        "iteration 1: output file `/out/app` does not exist, so its size cannot be reported"
    );
    // Output that is neither empty nor benchmark output is still an error, with a hint.
    let noisy = output(vec![measured("Compiling…", 1, &[("/out/app", 1)])]);
    let error = metrics_of(&MAGIC, &files, &both(), &noisy).unwrap_err();
    assert!(
        error.starts_with("iteration 1, stdout:") && error.contains("send other output to stderr"),
        "{error}"
    );
    // Nothing at all: empty output, no files to measure.
    let nothing = output(vec![measured(" \n", 1, &[])]);
    let error = metrics_of(&MAGIC, &config(None), &sizes_only, &nothing).unwrap_err();
    assert_eq!(
        error,
        "the job's output is empty and it measured nothing, so there are no results to report"
    );
    // Without measures, empty output stays unreadable.
    let error = metrics_of(
        &MAGIC,
        &config(None),
        &NONE,
        &output(vec![iteration(0, "")]),
    )
    .unwrap_err();
    assert!(error.starts_with("iteration 1, stdout:"), "{error}");
    // The adapter and a measure naming the same metric.
    let clash = output(vec![measured(
        r#"{"make all": {"build-time": {"value": 3.0}}}"#,
        1,
        &[("/out/app", 1)],
    )]);
    let error = metrics_of(&MAGIC, &files, &both(), &clash).unwrap_err();
    assert!(
        error.contains("benchmark `make all` has a `build-time` metric twice"),
        "{error}"
    );
}

#[test]
fn the_build_time_benchmark_is_the_command_else_the_repository() {
    fn name(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>, image: Option<&str>) -> String {
        Measures::command_benchmark(&job_config(entrypoint, cmd, image))
    }
    assert_eq!(
        name(Some(&["/bin/sh", "-c"]), Some(&["make -j4"]), Some("x:1")),
        "/bin/sh -c make -j4"
    );
    assert_eq!(name(None, Some(&["cargo", "build"]), None), "cargo build");
    // The image's own command: the repository, stable across tags and digests.
    assert_eq!(
        name(None, None, Some("localhost:6610/my-project:v1")),
        "localhost:6610/my-project"
    );
    assert_eq!(
        name(None, None, Some("localhost:6610/my-project")),
        "localhost:6610/my-project"
    );
    assert_eq!(
        name(
            None,
            None,
            Some(&format!("my-project@sha256:{}", "b".repeat(64)))
        ),
        "my-project"
    );
    assert_eq!(
        name(None, Some(&[""]), None),
        format!("sha256:{}", "a".repeat(64))
    );
    // Always a valid benchmark name.
    assert_eq!(
        name(None, Some(&["sh", "-c", "a\nb\tc"]), None),
        "sh -c a b c"
    );
    let long = "x".repeat(2000);
    assert_eq!(
        name(None, Some(&[long.as_str()]), None).chars().count(),
        crate::adapter::MAX_BENCHMARK_NAME_LEN
    );
    // Only asked-for measures are taken.
    let mut config = job_config(None, Some(&["make"]), None);
    assert_eq!(
        Measures::of(&config),
        Measures {
            build_time: Some("make".to_owned()),
            file_size: false
        }
    );
    config.build_time = Some(false);
    config.file_size = Some(true);
    assert_eq!(
        Measures::of(&config),
        Measures {
            build_time: None,
            file_size: true
        }
    );
}

#[test]
fn environments_differ_by_fingerprint_only() {
    use super::environment_changed;
    let env = |cv: f64, kernel: &str| {
        serde_json::json!({
            "noise": {"cpu": {"cv": cv}},
            "fingerprint": {"kernel": kernel, "tuning": {"kind": "disabled"}},
        })
        .to_string()
    };
    // Noise varies from run to run: not a change.
    assert_eq!(
        environment_changed(&env(0.01, "6.1"), &env(0.3, "6.1")),
        Some(false)
    );
    assert_eq!(
        environment_changed(&env(0.01, "6.1"), &env(0.01, "6.12")),
        Some(true)
    );
    // Nothing to compare is no mark either way.
    assert_eq!(environment_changed("not json", &env(0.01, "6.1")), None);
    assert_eq!(
        environment_changed(r#"{"noise": {}}"#, &env(0.01, "6.1")),
        None
    );
}
