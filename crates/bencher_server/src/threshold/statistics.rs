//! The descriptive statistics the threshold tests are built on: mean, sample standard
//! deviation, quantiles, relative changes. Pure functions over finite, non-empty slices
//! (the callers guarantee both); results may still overflow to infinity, which the
//! caller checks.

/// Arithmetic mean. `values` is non-empty.
pub(super) fn mean(values: &[f64]) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "a history is far below 2^52 values"
    )]
    let count = values.len() as f64;
    values.iter().sum::<f64>() / count
}

/// The sample standard deviation (Bessel's correction, n − 1: numpy's `ddof=1`), the
/// unbiased estimate of the spread of the process the history was drawn from. Two-pass,
/// so a large mean does not cancel the deviations. `values` has at least two entries.
pub(super) fn sample_standard_deviation(values: &[f64], mean: f64) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "a history is far below 2^52 values"
    )]
    let degrees_of_freedom = (values.len() - 1) as f64;
    let sum_of_squares: f64 = values.iter().map(|value| (value - mean).powi(2)).sum();
    (sum_of_squares / degrees_of_freedom).sqrt()
}

/// The first quartile, the median and the third quartile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Quartiles {
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
}

impl Quartiles {
    /// Quartiles by linear interpolation between the closest ranks (Hyndman and Fan
    /// type 7), numpy's default `np.percentile(..., method="linear")` and the reference
    /// Bencher's. `values` is non-empty and finite.
    pub(super) fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Self {
            q1: quantile_of_sorted(&sorted, 0.25),
            median: quantile_of_sorted(&sorted, 0.5),
            q3: quantile_of_sorted(&sorted, 0.75),
        }
    }

    pub(super) fn interquartile_range(self) -> f64 {
        self.q3 - self.q1
    }
}

/// The `probability` quantile (in [0, 1]) of a sorted, non-empty slice: the value at rank
/// `probability × (n − 1)`, interpolated linearly between its neighbours.
fn quantile_of_sorted(sorted: &[f64], probability: f64) -> f64 {
    let last = sorted.len() - 1;
    #[expect(
        clippy::cast_precision_loss,
        reason = "a history is far below 2^52 values"
    )]
    let rank = probability * last as f64;
    let below = rank.floor();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "rank is in [0, n − 1]"
    )]
    let index = below as usize;
    let fraction = rank - below;
    let low = sorted[index];
    match sorted.get(index + 1) {
        Some(&high) if fraction > 0.0 => low + (high - low) * fraction,
        _ => low,
    }
}

/// The absolute relative change between each pair of consecutive values,
/// |next − previous| / |previous|, oldest pair first; `None` when a previous value is
/// zero (the change has no size relative to it). `values` has at least two entries.
pub(super) fn relative_changes(values: &[f64]) -> Option<Vec<f64>> {
    values
        .windows(2)
        .map(|pair| {
            let (previous, next) = (pair[0], pair[1]);
            (previous != 0.0).then(|| ((next - previous) / previous).abs())
        })
        .collect()
}
