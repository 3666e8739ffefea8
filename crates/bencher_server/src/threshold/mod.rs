//! Thresholds: from a Model, a history sample and a new value to a Boundary (baseline,
//! lower and upper limit) and an Outcome (pass, alert, or why the test did not run).
//! Pure: no IO, no database, no clock; the caller selects the history (same branch,
//! testbed, benchmark, measure and Spec) and passes the report's own time.
//!
//! Per test, over the sample `x₁ … xₙ` (oldest to newest) and a boundary `b`:
//!
//! | test         | baseline      | limits                                              |
//! | ------------ | ------------- | --------------------------------------------------- |
//! | `static`     | none          | the boundaries themselves, even with no history     |
//! | `percentage` | mean          | mean ∓ \|mean\| · b                                 |
//! | `z_score`    | mean          | mean ∓ z(b) · s                                     |
//! | `t_test`     | mean          | mean ∓ t(b, n − 1) · s · √(1 + 1/n)                 |
//! | `log_normal` | exp(μ)        | exp(μ ∓ z(b) · σ), μ and σ of ln x                  |
//! | `iqr`        | median        | median ∓ b · (Q3 − Q1)                              |
//! | `delta_iqr`  | median        | median ∓ \|median\| · b · (Q3 − Q1 of \|Δx/x\|)     |
//!
//! `s` and `σ` are sample standard deviations (n − 1); `z(b)` and `t(b, ν)` are one-sided
//! quantiles (the lower limit mirrors the upper); quartiles interpolate linearly (numpy's
//! default); `Δx/x` is the change between consecutive values relative to the earlier.
//! A value strictly below the lower or strictly above the upper limit alerts.
//!
//! Every statistical limit is kept at least `FLAT_HISTORY_TOLERANCE × |baseline|` away
//! from the baseline, so a flat history (zero spread) still alerts on a real change
//! instead of never alerting.
//!
//! Where this differs from the reference Bencher, on purpose: it divides the variance by
//! n, we by n − 1; with zero spread it sets no limits (never alerts), we keep the
//! tolerance; its log-normal lower limit mirrors the upper around exp(μ) in linear space
//! (and can go negative), ours is the fitted distribution's own quantile; its percentage
//! and delta-IQR spreads are signed (limits swap for a negative baseline), ours use
//! |baseline|. Where it agrees: the t-test is its documented prediction interval,
//! `delta_iqr` its documented median ± median × b × ΔIQR, quartiles its linear method.

mod model;
mod statistics;
#[cfg(test)]
mod tests;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

pub use model::{
    DEFAULT_MAX_SAMPLE_SIZE, DEFAULT_UPPER_BOUNDARY, Model, ModelError, ModelParameters, Side, Test,
};
use statistics::{Quartiles, mean, relative_changes, sample_standard_deviation};

/// The relative distance every statistical limit keeps from its baseline: 1e-9, a
/// million times the precision of an f64 (2.2e-16) and far below any measurable change,
/// so float noise from parsing or folding never alerts while a flat history still
/// alerts on any real change. A baseline of exactly zero gets no tolerance: any non-zero
/// value is then a change.
pub const FLAT_HISTORY_TOLERANCE: f64 = 1e-9;

/// The result of checking one new value against a Model and its history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Boundary {
    /// The centre the limits are drawn around (mean, median, exp(μ)); `None` for
    /// `static` and when the test did not run.
    pub baseline: Option<f64>,
    /// `None` when the Model has no lower boundary or the test did not run.
    pub lower_limit: Option<f64>,
    /// `None` when the Model has no upper boundary or the test did not run.
    pub upper_limit: Option<f64>,
    /// How many history values were in the sample: the history after the max sample
    /// size (a `static` test ignores them).
    pub sample_size: usize,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The value is within the limits.
    Pass,
    /// The value is below the lower limit or above the upper limit.
    Alert { side: Side, limit: f64 },
    /// Fewer history values than the Model requires (`Model::required_sample_size`):
    /// the test did not run.
    InsufficientData { sample_size: usize, required: u32 },
    /// The history is one the test is not defined on: the test did not run.
    Untestable { reason: Untestable },
}

impl Outcome {
    pub fn is_alert(&self) -> bool {
        matches!(self, Self::Alert { .. })
    }
}

/// Why a test is not defined on a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Untestable {
    /// `log_normal` needs every history value above zero (ln is undefined otherwise).
    NonPositiveHistory,
    /// `delta_iqr` divides by each earlier value; one of them is zero.
    ZeroInHistory,
    /// The history is finite but its statistics are not (an overflow past f64::MAX).
    NonFiniteStatistic,
}

impl std::fmt::Display for Untestable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NonPositiveHistory => "a log_normal test needs every history value above 0",
            Self::ZeroInHistory => {
                "a delta_iqr test cannot take a relative change from a history value of 0"
            }
            Self::NonFiniteStatistic => "the history's statistics overflow a 64-bit float",
        })
    }
}

/// A value that is not a finite number: callers reject these at the edge (BMF parsing),
/// so this is a caller bug, reported rather than computed with.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum NonFiniteInput {
    #[error("the new value is {0}, not a finite number")]
    Value(f64),
    #[error("history value {index} is {value}, not a finite number")]
    History { index: usize, value: f64 },
}

/// Checks `value` against `model` and `history`.
///
/// `history` is oldest to newest, already limited by the caller to the same branch,
/// testbed, benchmark, measure and Spec and to the Model's window (`history_in_window`),
/// and never includes `value` itself. Of it, only the newest `max_sample_size` values
/// are used; with fewer than `Model::required_sample_size` the outcome is
/// `InsufficientData`. A `static` Model ignores the history.
pub fn boundary(model: &Model, history: &[f64], value: f64) -> Result<Boundary, NonFiniteInput> {
    if !value.is_finite() {
        return Err(NonFiniteInput::Value(value));
    }
    if let Some((index, &value)) = history.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(NonFiniteInput::History { index, value });
    }
    let sample = newest(history, model.max_sample_size());
    let not_run = |outcome| Boundary {
        baseline: None,
        lower_limit: None,
        upper_limit: None,
        sample_size: sample.len(),
        outcome,
    };
    let required = model.required_sample_size();
    if sample.len() < usize::try_from(required).unwrap_or(usize::MAX) {
        return Ok(not_run(Outcome::InsufficientData {
            sample_size: sample.len(),
            required,
        }));
    }
    let limits = match limits(model, sample) {
        Ok(limits) => limits,
        Err(reason) => return Ok(not_run(Outcome::Untestable { reason })),
    };
    let outcome = match (limits.lower, limits.upper) {
        (Some(limit), _) if value < limit => Outcome::Alert {
            side: Side::Lower,
            limit,
        },
        (_, Some(limit)) if value > limit => Outcome::Alert {
            side: Side::Upper,
            limit,
        },
        _ => Outcome::Pass,
    };
    Ok(Boundary {
        baseline: limits.baseline,
        lower_limit: limits.lower,
        upper_limit: limits.upper,
        sample_size: sample.len(),
        outcome,
    })
}

/// The values of `points` within `window_seconds` before `report_time` (inclusive at
/// both ends), oldest to newest. Points after `report_time` are always left out, so
/// re-processing an old report sees the history it saw the first time. The window is
/// measured from the report's own time, not from now; `None` keeps all earlier points.
pub fn history_in_window(
    points: &[(DateTime<Utc>, f64)],
    report_time: DateTime<Utc>,
    window_seconds: Option<u32>,
) -> Vec<f64> {
    let start = window_seconds.map(|seconds| report_time - TimeDelta::seconds(seconds.into()));
    let mut kept: Vec<(DateTime<Utc>, f64)> = points
        .iter()
        .copied()
        .filter(|(time, _)| *time <= report_time && start.is_none_or(|start| *time >= start))
        .collect();
    // Stable: points with the same time keep the caller's order.
    kept.sort_by_key(|(time, _)| *time);
    kept.into_iter().map(|(_, value)| value).collect()
}

/// The newest `max` values of `history` (all of them without a max).
fn newest(history: &[f64], max: Option<u32>) -> &[f64] {
    match max.and_then(|max| usize::try_from(max).ok()) {
        Some(max) if history.len() > max => &history[history.len() - max..],
        _ => history,
    }
}

struct Limits {
    baseline: Option<f64>,
    lower: Option<f64>,
    upper: Option<f64>,
}

/// The limits of a Model over a sample with at least `required_sample_size` values.
fn limits(model: &Model, sample: &[f64]) -> Result<Limits, Untestable> {
    let (lower, upper) = (model.lower_boundary(), model.upper_boundary());
    let (baseline, lower, upper) = match model.test() {
        Test::Static => {
            return Ok(Limits {
                baseline: None,
                lower,
                upper,
            });
        }
        Test::Percentage => {
            let baseline = mean(sample);
            let spread = |fraction: f64| baseline.abs() * fraction;
            (
                baseline,
                lower.map(|b| baseline - spread(b)),
                upper.map(|b| baseline + spread(b)),
            )
        }
        Test::ZScore => {
            let baseline = mean(sample);
            let deviation = sample_standard_deviation(sample, baseline);
            let spread = |confidence| standard_normal_quantile(confidence) * deviation;
            (
                baseline,
                lower.map(|b| baseline - spread(b)),
                upper.map(|b| baseline + spread(b)),
            )
        }
        Test::TTest => {
            let baseline = mean(sample);
            let deviation = sample_standard_deviation(sample, baseline);
            #[expect(clippy::cast_precision_loss, reason = "a history is far below 2^52")]
            let n = sample.len() as f64;
            // The prediction interval for one new value from the same process: the
            // spread of the value itself plus the uncertainty of the mean, s·√(1 + 1/n).
            // The reference Bencher documents this interval (its t-test example: n = 25,
            // mean 100, s 10, 0.977 → 121.46).
            let scale = deviation * (1.0 + 1.0 / n).sqrt();
            let students_t =
                StudentsT::new(0.0, 1.0, n - 1.0).map_err(|_| Untestable::NonFiniteStatistic)?;
            let spread = |confidence| students_t.inverse_cdf(confidence) * scale;
            (
                baseline,
                lower.map(|b| baseline - spread(b)),
                upper.map(|b| baseline + spread(b)),
            )
        }
        Test::LogNormal => {
            if sample.iter().any(|&value| value <= 0.0) {
                return Err(Untestable::NonPositiveHistory);
            }
            let logs: Vec<f64> = sample.iter().map(|value| value.ln()).collect();
            let location = mean(&logs);
            let scale = sample_standard_deviation(&logs, location);
            let spread = |confidence| standard_normal_quantile(confidence) * scale;
            // Quantiles of the fitted log-normal on both sides, so the limits are as
            // asymmetric as the distribution (the reference instead mirrors the upper
            // limit around exp(μ) in linear space, which can go below zero).
            (
                location.exp(),
                lower.map(|b| (location - spread(b)).exp()),
                upper.map(|b| (location + spread(b)).exp()),
            )
        }
        Test::Iqr => {
            let quartiles = Quartiles::of(sample);
            let baseline = quartiles.median;
            let spread = |multiplier: f64| multiplier * quartiles.interquartile_range();
            (
                baseline,
                lower.map(|b| baseline - spread(b)),
                upper.map(|b| baseline + spread(b)),
            )
        }
        Test::DeltaIqr => {
            let baseline = Quartiles::of(sample).median;
            let changes = relative_changes(sample).ok_or(Untestable::ZeroInHistory)?;
            let change_range = Quartiles::of(&changes).interquartile_range();
            let spread = |multiplier: f64| baseline.abs() * multiplier * change_range;
            (
                baseline,
                lower.map(|b| baseline - spread(b)),
                upper.map(|b| baseline + spread(b)),
            )
        }
    };
    // Checked before widening: `f64::min` and `max` would hide a NaN.
    let finite = [Some(baseline), lower, upper]
        .into_iter()
        .flatten()
        .all(f64::is_finite);
    if !finite {
        return Err(Untestable::NonFiniteStatistic);
    }
    let tolerance = baseline.abs() * FLAT_HISTORY_TOLERANCE;
    Ok(Limits {
        baseline: Some(baseline),
        lower: lower.map(|limit| limit.min(baseline - tolerance)),
        upper: upper.map(|limit| limit.max(baseline + tolerance)),
    })
}

/// The one-sided quantile z(p) of the standard normal distribution, p in [0.5, 1.0).
fn standard_normal_quantile(confidence: f64) -> f64 {
    Normal::standard().inverse_cdf(confidence)
}
