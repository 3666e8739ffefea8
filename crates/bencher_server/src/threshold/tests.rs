//! Threshold tests: every statistic against `reference.json`, values computed
//! independently with numpy and scipy by `scripts/threshold-reference.py` (committed, so
//! these tests need no Python), plus model validation and non-finite inputs.

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use super::*;

/// Relative agreement required with scipy: far tighter than any threshold needs, loose
/// enough for summation order and the quantile algorithms.
const RELATIVE_TOLERANCE: f64 = 1e-9;

#[derive(Debug, Deserialize)]
struct Fixture {
    tolerance: f64,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    model: serde_json::Value,
    points: Vec<(i64, f64)>,
    report_time: i64,
    sample_size: usize,
    outcome: String,
    #[serde(default)]
    baseline: Option<f64>,
    #[serde(default)]
    lower_limit: Option<f64>,
    #[serde(default)]
    upper_limit: Option<f64>,
    #[serde(default)]
    required: Option<u32>,
    #[serde(default)]
    reason: Option<String>,
    checks: Vec<Check>,
    #[serde(default)]
    docs: Option<DocumentedLimits>,
}

#[derive(Debug, Deserialize)]
struct Check {
    value: f64,
    outcome: String,
}

/// Limits the reference Bencher's documentation states, rounded to two decimals.
#[derive(Debug, Deserialize)]
struct DocumentedLimits {
    lower_limit: f64,
    upper_limit: f64,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("reference.json")).expect("reference.json parses")
}

fn time(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0)
        .single()
        .expect("valid timestamp")
}

fn close(actual: Option<f64>, expected: Option<f64>) -> bool {
    match (actual, expected) {
        (None, None) => true,
        (Some(a), Some(e)) => (a - e).abs() <= RELATIVE_TOLERANCE * e.abs().max(f64::MIN_POSITIVE),
        _ => false,
    }
}

fn outcome_name(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Pass => "pass".into(),
        Outcome::Alert { side, .. } => format!("alert_{side}"),
        Outcome::InsufficientData { .. } => "insufficient_data".into(),
        Outcome::Untestable { .. } => "untestable".into(),
    }
}

fn untestable_name(reason: Untestable) -> &'static str {
    match reason {
        Untestable::NonPositiveHistory => "non_positive_history",
        Untestable::ZeroInHistory => "zero_in_history",
        Untestable::NonFiniteStatistic => "non_finite_statistic",
    }
}

/// Runs one fixture case through the public API the way processing will: the model from
/// its wire JSON, the window from the report's time, then `boundary` per value.
fn run_case(case: &Case) -> Vec<String> {
    let mut failures = Vec::new();
    let model: Model = match serde_json::from_value(case.model.clone()) {
        Ok(model) => model,
        Err(error) => return vec![format!("{}: model rejected: {error}", case.name)],
    };
    let points: Vec<(DateTime<Utc>, f64)> = case
        .points
        .iter()
        .map(|&(seconds, value)| (time(seconds), value))
        .collect();
    let history = history_in_window(&points, time(case.report_time), model.window());
    for check in &case.checks {
        let boundary = match boundary(&model, &history, check.value) {
            Ok(boundary) => boundary,
            Err(error) => {
                failures.push(format!("{}: {error}", case.name));
                continue;
            }
        };
        let mismatch = |what: &str, actual: String, expected: String| {
            format!(
                "{} (value {}): {what} is {actual}, scipy says {expected}",
                case.name, check.value
            )
        };
        if boundary.sample_size != case.sample_size {
            failures.push(mismatch(
                "sample size",
                boundary.sample_size.to_string(),
                case.sample_size.to_string(),
            ));
        }
        let ran = case.outcome == "ran";
        let (baseline, lower, upper) = if ran {
            (case.baseline, case.lower_limit, case.upper_limit)
        } else {
            (None, None, None)
        };
        for (what, actual, expected) in [
            ("baseline", boundary.baseline, baseline),
            ("lower limit", boundary.lower_limit, lower),
            ("upper limit", boundary.upper_limit, upper),
        ] {
            if !close(actual, expected) {
                failures.push(mismatch(
                    what,
                    format!("{actual:?}"),
                    format!("{expected:?}"),
                ));
            }
        }
        let expected_outcome = if ran { &check.outcome } else { &case.outcome };
        let actual_outcome = outcome_name(&boundary.outcome);
        if &actual_outcome != expected_outcome {
            failures.push(mismatch(
                "outcome",
                actual_outcome,
                expected_outcome.clone(),
            ));
        }
        match (&boundary.outcome, case.required, case.reason.as_deref()) {
            (Outcome::InsufficientData { required, .. }, Some(expected), _)
                if *required != expected =>
            {
                failures.push(mismatch(
                    "required",
                    required.to_string(),
                    expected.to_string(),
                ));
            }
            (Outcome::Untestable { reason }, _, Some(expected))
                if untestable_name(*reason) != expected =>
            {
                failures.push(mismatch(
                    "reason",
                    untestable_name(*reason).into(),
                    expected.into(),
                ));
            }
            (Outcome::Alert { side, limit }, _, _) => {
                let expected_limit = match side {
                    Side::Lower => boundary.lower_limit,
                    Side::Upper => boundary.upper_limit,
                };
                if Some(*limit) != expected_limit {
                    failures.push(mismatch(
                        "alert limit",
                        limit.to_string(),
                        format!("{expected_limit:?}"),
                    ));
                }
            }
            _ => {}
        }
        if let Some(docs) = &case.docs {
            for (what, actual, documented) in [
                (
                    "documented lower limit",
                    boundary.lower_limit,
                    docs.lower_limit,
                ),
                (
                    "documented upper limit",
                    boundary.upper_limit,
                    docs.upper_limit,
                ),
            ] {
                let rounded = actual.map(|limit| (limit * 100.0).round() / 100.0);
                if rounded != Some(documented) {
                    failures.push(mismatch(
                        what,
                        format!("{rounded:?}"),
                        documented.to_string(),
                    ));
                }
            }
        }
    }
    failures
}

#[test]
fn every_statistic_matches_scipy() {
    let fixture = fixture();
    assert_eq!(fixture.tolerance, FLAT_HISTORY_TOLERANCE);
    assert!(fixture.cases.len() > 90, "the fixture lost its cases");
    let failures: Vec<String> = fixture.cases.iter().flat_map(run_case).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fixture_covers_every_test_side_and_outcome() {
    let fixture = fixture();
    for test in Test::ALL {
        for side in ["lower_boundary", "upper_boundary"] {
            assert!(
                fixture.cases.iter().any(|case| {
                    case.model["test"] == test.as_str() && case.model.get(side).is_some()
                }),
                "no {test} case with a {side}"
            );
        }
    }
    let outcomes: Vec<&str> = fixture
        .cases
        .iter()
        .flat_map(|case| {
            std::iter::once(case.outcome.as_str())
                .chain(case.checks.iter().map(|check| check.outcome.as_str()))
        })
        .collect();
    for outcome in [
        "pass",
        "alert_lower",
        "alert_upper",
        "insufficient_data",
        "untestable",
    ] {
        assert!(outcomes.contains(&outcome), "no case ends {outcome}");
    }
}

fn parse_model(json: serde_json::Value) -> Model {
    serde_json::from_value(json).expect("valid model")
}

#[test]
fn flat_history_alerts_beyond_the_tolerance_on_every_statistical_test() {
    let history = [1000.0; 10];
    for test in Test::ALL.iter().filter(|test| **test != Test::Static) {
        let (lower, upper) = match test {
            Test::Percentage => (0.0, 0.0),
            Test::Iqr | Test::DeltaIqr => (3.0, 3.0),
            _ => (0.99, 0.99),
        };
        let model = parse_model(serde_json::json!({
            "test": test, "lower_boundary": lower, "upper_boundary": upper
        }));
        let at = |value| boundary(&model, &history, value).expect("finite").outcome;
        assert_eq!(at(1000.0), Outcome::Pass, "{test}: the baseline");
        assert_eq!(
            at(1000.0 * (1.0 + 1e-12)),
            Outcome::Pass,
            "{test}: float noise"
        );
        assert!(
            matches!(
                at(1000.001),
                Outcome::Alert {
                    side: Side::Upper,
                    ..
                }
            ),
            "{test}: a 1e-6 increase"
        );
        assert!(
            matches!(
                at(999.999),
                Outcome::Alert {
                    side: Side::Lower,
                    ..
                }
            ),
            "{test}: a 1e-6 decrease"
        );
    }
}

#[test]
fn static_checks_the_first_value() {
    let model = parse_model(serde_json::json!({"test": "static", "upper_boundary": 10.0}));
    let first = boundary(&model, &[], 11.0).expect("finite");
    assert_eq!(first.sample_size, 0);
    assert_eq!(first.baseline, None);
    assert_eq!(
        first.outcome,
        Outcome::Alert {
            side: Side::Upper,
            limit: 10.0
        }
    );
}

#[test]
fn max_sample_size_uses_the_newest_values() {
    let model = parse_model(serde_json::json!({
        "test": "percentage", "upper_boundary": 0.1, "max_sample_size": 2
    }));
    // Only 20 and 30 count: mean 25.
    let result = boundary(&model, &[1000.0, 20.0, 30.0], 27.0).expect("finite");
    assert_eq!(result.sample_size, 2);
    assert_eq!(result.baseline, Some(25.0));
    assert_eq!(result.outcome, Outcome::Pass);
}

#[test]
fn insufficient_data_reports_what_is_missing() {
    let model = parse_model(serde_json::json!({
        "test": "z_score", "upper_boundary": 0.99, "min_sample_size": 30
    }));
    let result = boundary(&model, &[1.0; 29], 100.0).expect("finite");
    assert_eq!(
        result.outcome,
        Outcome::InsufficientData {
            sample_size: 29,
            required: 30
        }
    );
    assert_eq!((result.lower_limit, result.upper_limit), (None, None));
}

#[test]
fn log_normal_on_non_positive_history_is_untestable_not_an_alert() {
    let model = parse_model(serde_json::json!({"test": "log_normal", "upper_boundary": 0.99}));
    for history in [[1.0, 2.0, 0.0], [1.0, -2.0, 3.0]] {
        let result = boundary(&model, &history, 1e9).expect("finite");
        assert_eq!(
            result.outcome,
            Outcome::Untestable {
                reason: Untestable::NonPositiveHistory
            }
        );
    }
    // A non-positive new value is simply below every log-normal limit.
    let model = parse_model(serde_json::json!({"test": "log_normal", "lower_boundary": 0.99}));
    let result = boundary(&model, &[1.0, 2.0, 3.0], -1.0).expect("finite");
    assert!(matches!(
        result.outcome,
        Outcome::Alert {
            side: Side::Lower,
            ..
        }
    ));
}

#[test]
fn non_finite_inputs_are_rejected() {
    let model = Model::default();
    for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(
            boundary(&model, &[1.0, 2.0], value),
            Err(NonFiniteInput::Value(_))
        ));
        assert!(matches!(
            boundary(&model, &[1.0, value, 2.0], 1.0),
            Err(NonFiniteInput::History { index: 1, .. })
        ));
    }
}

#[test]
fn overflowing_statistics_are_untestable() {
    let model = parse_model(serde_json::json!({"test": "z_score", "upper_boundary": 0.99}));
    let result = boundary(&model, &[f64::MAX, f64::MAX, -f64::MAX], 0.0).expect("finite");
    assert_eq!(
        result.outcome,
        Outcome::Untestable {
            reason: Untestable::NonFiniteStatistic
        }
    );
}

#[test]
fn window_is_measured_from_the_report_time_inclusive() {
    let report = time(1_000_000);
    let points = [
        (time(1_000_000 - 3601), 1.0),
        (time(1_000_000 - 3600), 2.0),
        (time(1_000_000 - 10), 3.0),
        (time(1_000_000), 4.0),
        (time(1_000_001), 5.0),
    ];
    assert_eq!(
        history_in_window(&points, report, Some(3600)),
        vec![2.0, 3.0, 4.0]
    );
    assert_eq!(
        history_in_window(&points, report, None),
        vec![1.0, 2.0, 3.0, 4.0]
    );
    // An older report sees the history as it was, whatever "now" is.
    assert_eq!(
        history_in_window(&points, time(1_000_000 - 3600), Some(1)),
        vec![1.0, 2.0]
    );
    assert_eq!(
        history_in_window(&points, time(1_000_000 - 3600), Some(0)),
        vec![2.0]
    );
}

#[test]
fn default_model_is_t_test_64_samples_upper_099() {
    let default = Model::default();
    assert_eq!(default.test(), Test::TTest);
    assert_eq!(default.max_sample_size(), Some(64));
    assert_eq!(default.upper_boundary(), Some(0.99));
    assert_eq!(default.lower_boundary(), None);
    assert_eq!(
        serde_json::to_value(&default).expect("serializes"),
        serde_json::json!({"test": "t_test", "max_sample_size": 64, "upper_boundary": 0.99})
    );
    assert_eq!(Model::new(default.parameters().clone()), Ok(default));
}

#[test]
fn wire_names_round_trip() {
    let names: Vec<String> = Test::ALL
        .iter()
        .map(|test| serde_json::to_value(test).expect("serializes").to_string())
        .collect();
    assert_eq!(
        names,
        [
            "\"static\"",
            "\"percentage\"",
            "\"z_score\"",
            "\"t_test\"",
            "\"log_normal\"",
            "\"iqr\"",
            "\"delta_iqr\""
        ]
    );
    for test in Test::ALL {
        assert_eq!(test.to_string(), test.as_str());
        let parsed: Test =
            serde_json::from_value(serde_json::json!(test.as_str())).expect("parses");
        assert_eq!(parsed, *test);
    }
}

fn rejected(json: serde_json::Value) -> ModelError {
    let parameters: ModelParameters = serde_json::from_value(json).expect("well-formed");
    Model::new(parameters).expect_err("an impossible model")
}

#[test]
fn impossible_models_are_rejected_with_the_reason() {
    use serde_json::json;
    let cases = [
        (
            json!({"test": "t_test"}),
            "needs a lower boundary, an upper boundary, or both",
        ),
        (
            json!({"test": "t_test", "upper_boundary": 1.0}),
            "in [0.5, 1.0), not 1",
        ),
        (
            json!({"test": "t_test", "upper_boundary": 0.4}),
            "in [0.5, 1.0), not 0.4",
        ),
        (
            json!({"test": "z_score", "lower_boundary": 0.0}),
            "in [0.5, 1.0), not 0",
        ),
        (
            json!({"test": "log_normal", "lower_boundary": -0.9}),
            "in [0.5, 1.0)",
        ),
        (
            json!({"test": "percentage", "upper_boundary": -0.1}),
            "at least 0, not -0.1",
        ),
        (
            json!({"test": "iqr", "upper_boundary": -1.5}),
            "IQR multiplier, at least 0",
        ),
        (
            json!({"test": "delta_iqr", "lower_boundary": -1.0}),
            "IQR multiplier, at least 0",
        ),
        (
            json!({"test": "static", "lower_boundary": 10.0, "upper_boundary": 5.0}),
            "lower boundary (10) must not be above the upper boundary (5)",
        ),
        (
            json!({"test": "static", "upper_boundary": 5.0, "max_sample_size": 10}),
            "takes no max sample size",
        ),
        (
            json!({"test": "static", "upper_boundary": 5.0, "window": 60}),
            "takes no window",
        ),
        (
            json!({"test": "t_test", "upper_boundary": 0.99, "min_sample_size": 10, "max_sample_size": 5}),
            "min sample size (10) must not be above the max sample size (5)",
        ),
        (
            json!({"test": "t_test", "upper_boundary": 0.99, "min_sample_size": 1}),
            "min sample size of at least 2, not 1",
        ),
        (
            json!({"test": "iqr", "upper_boundary": 1.5, "max_sample_size": 1}),
            "max sample size of at least 2, not 1",
        ),
        (
            json!({"test": "percentage", "upper_boundary": 0.1, "min_sample_size": 0}),
            "min sample size of at least 1, not 0",
        ),
        (
            json!({"test": "t_test", "upper_boundary": 0.99, "window": 0}),
            "window must be at least 1 second",
        ),
    ];
    for (json, message) in cases {
        let error = rejected(json.clone()).to_string();
        assert!(
            error.contains(message),
            "{json}: {error:?} lacks {message:?}"
        );
        // Deserializing a Model runs the same checks.
        assert!(serde_json::from_value::<Model>(json).is_err());
    }
}

#[test]
fn non_finite_boundaries_are_rejected() {
    for value in [f64::NAN, f64::INFINITY] {
        let error = Model::new(ModelParameters {
            test: Test::Static,
            min_sample_size: None,
            max_sample_size: None,
            window: None,
            lower_boundary: None,
            upper_boundary: Some(value),
        })
        .expect_err("non-finite");
        assert!(matches!(
            error,
            ModelError::NonFiniteBoundary {
                side: Side::Upper,
                ..
            }
        ));
    }
}

#[test]
fn unknown_model_fields_and_tests_are_rejected() {
    for json in [
        serde_json::json!({"test": "t_test", "upper_boundary": 0.99, "uper_boundary": 0.9}),
        serde_json::json!({"test": "t-test", "upper_boundary": 0.99}),
        serde_json::json!({"test": "mean", "upper_boundary": 0.99}),
    ] {
        assert!(
            serde_json::from_value::<Model>(json.clone()).is_err(),
            "{json}"
        );
    }
}

#[test]
fn boundaries_at_the_edges_of_their_ranges_are_valid() {
    use serde_json::json;
    for json in [
        json!({"test": "t_test", "lower_boundary": 0.5, "upper_boundary": 0.999_999}),
        json!({"test": "percentage", "lower_boundary": 0.0}),
        json!({"test": "iqr", "upper_boundary": 0.0}),
        json!({"test": "static", "lower_boundary": -5.0, "upper_boundary": -5.0}),
        json!({"test": "percentage", "upper_boundary": 0.1, "min_sample_size": 1, "max_sample_size": 1}),
        json!({"test": "z_score", "upper_boundary": 0.9, "min_sample_size": 30, "max_sample_size": 30, "window": 1}),
    ] {
        assert!(
            serde_json::from_value::<Model>(json.clone()).is_ok(),
            "{json}"
        );
    }
}

#[test]
fn boundary_serializes_for_storage_and_responses() {
    let model = parse_model(serde_json::json!({"test": "static", "lower_boundary": 1.0}));
    let alert = boundary(&model, &[], 0.5).expect("finite");
    assert_eq!(
        serde_json::to_value(&alert).expect("serializes"),
        serde_json::json!({
            "baseline": null, "lower_limit": 1.0, "upper_limit": null, "sample_size": 0,
            "outcome": {"kind": "alert", "side": "lower", "limit": 1.0}
        })
    );
    let model = parse_model(serde_json::json!({"test": "log_normal", "upper_boundary": 0.9}));
    let untestable = boundary(&model, &[0.0, 1.0], 0.5).expect("finite");
    assert_eq!(
        serde_json::to_value(&untestable.outcome).expect("serializes"),
        serde_json::json!({"kind": "untestable", "reason": "non_positive_history"})
    );
}
