//! A threshold's Model: which Test, which history sample (min and max sample size, time
//! window) and which lower and upper boundaries. Pure data: a `Model` is valid by
//! construction (`Model::new`, or deserializing `ModelParameters`), so `boundary` never
//! re-checks it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The statistical test a Model applies. Wire names are the reference Bencher's.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// The boundaries are the limits themselves; checked even with no history.
    Static,
    /// Limits are the history's mean ± |mean| × boundary (a fraction, `0.10` = 10%).
    Percentage,
    /// Limits are mean ± z(boundary) × s: one-sided normal quantiles.
    ZScore,
    /// Limits are a one-sided Student's t prediction interval for one new value.
    #[default]
    TTest,
    /// Limits are exp(μ ± z(boundary) × σ) of a log-normal fit of the history.
    LogNormal,
    /// Limits are median ± boundary × IQR.
    Iqr,
    /// Limits are median ± |median| × boundary × IQR of the relative changes between
    /// consecutive values.
    DeltaIqr,
}

impl Test {
    pub const ALL: &'static [Self] = &[
        Self::Static,
        Self::Percentage,
        Self::ZScore,
        Self::TTest,
        Self::LogNormal,
        Self::Iqr,
        Self::DeltaIqr,
    ];

    /// The wire name (`t_test`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Percentage => "percentage",
            Self::ZScore => "z_score",
            Self::TTest => "t_test",
            Self::LogNormal => "log_normal",
            Self::Iqr => "iqr",
            Self::DeltaIqr => "delta_iqr",
        }
    }

    /// The test with wire name `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|test| test.as_str() == name)
    }

    /// The fewest history values the statistic is defined on: a mean needs one value, a
    /// spread (standard deviation, IQR, one relative change) needs two. `static` needs
    /// none.
    pub fn minimum_sample_size(self) -> u32 {
        match self {
            Self::Static => 0,
            Self::Percentage => 1,
            Self::ZScore | Self::TTest | Self::LogNormal | Self::Iqr | Self::DeltaIqr => 2,
        }
    }

    /// What a boundary means for this test, for error messages.
    fn boundary_kind(self) -> BoundaryKind {
        match self {
            Self::Static => BoundaryKind::Absolute,
            Self::Percentage => BoundaryKind::Fraction,
            Self::ZScore | Self::TTest | Self::LogNormal => BoundaryKind::Confidence,
            Self::Iqr | Self::DeltaIqr => BoundaryKind::Multiplier,
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BoundaryKind {
    /// Any finite number (`static`).
    Absolute,
    /// A fraction of the baseline, ≥ 0 (`percentage`).
    Fraction,
    /// A one-sided cumulative probability in [0.5, 1.0) (`z_score`, `t_test`,
    /// `log_normal`).
    Confidence,
    /// A multiplier of an interquartile range, ≥ 0 (`iqr`, `delta_iqr`).
    Multiplier,
}

/// Which side of the baseline a boundary, a limit or an alert is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Smaller is worse (throughput).
    Lower,
    /// Larger is worse (latency).
    Upper,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lower => "lower",
            Self::Upper => "upper",
        })
    }
}

/// A Model as written by a user (request body, CLI flags), before validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelParameters {
    pub test: Test,
    /// Fewer history values than this: the test does not run (`InsufficientData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sample_size: Option<u32>,
    /// Only the newest this many history values are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sample_size: Option<u32>,
    /// Seconds, measured back from the report's own time: older values are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_boundary: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_boundary: Option<f64>,
}

/// A valid Model. Build it with `Model::new`; it deserializes from `ModelParameters`
/// through the same checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ModelParameters", into = "ModelParameters")]
pub struct Model {
    parameters: ModelParameters,
}

/// The default threshold: a t-test over the newest 64 values, alerting above the
/// one-sided 99% prediction limit (larger is worse, as for latency).
pub const DEFAULT_MAX_SAMPLE_SIZE: u32 = 64;
pub const DEFAULT_UPPER_BOUNDARY: f64 = 0.99;

impl Default for Model {
    fn default() -> Self {
        Self {
            parameters: ModelParameters {
                test: Test::TTest,
                min_sample_size: None,
                max_sample_size: Some(DEFAULT_MAX_SAMPLE_SIZE),
                window: None,
                lower_boundary: None,
                upper_boundary: Some(DEFAULT_UPPER_BOUNDARY),
            },
        }
    }
}

/// Why a Model is impossible.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("a {test} threshold needs a lower boundary, an upper boundary, or both")]
    NoBoundary { test: Test },
    #[error("the {side} boundary must be a finite number, not {value}")]
    NonFiniteBoundary { side: Side, value: f64 },
    #[error("a {test} {side} boundary is a one-sided confidence level in [0.5, 1.0), not {value}")]
    ConfidenceOutOfRange { test: Test, side: Side, value: f64 },
    #[error("a {test} {side} boundary is a fraction of the baseline, at least 0, not {value}")]
    NegativeFraction { test: Test, side: Side, value: f64 },
    #[error("a {test} {side} boundary is an IQR multiplier, at least 0, not {value}")]
    NegativeMultiplier { test: Test, side: Side, value: f64 },
    #[error("a static lower boundary ({lower}) must not be above the upper boundary ({upper})")]
    StaticLowerAboveUpper { lower: f64, upper: f64 },
    #[error("a static threshold uses no history, so it takes no {option}")]
    StaticTakesNoHistory { option: &'static str },
    #[error("a {test} threshold needs a {option} of at least {minimum}, not {size}")]
    SampleSizeTooSmall {
        test: Test,
        option: &'static str,
        size: u32,
        minimum: u32,
    },
    #[error("the min sample size ({min}) must not be above the max sample size ({max})")]
    MinAboveMax { min: u32, max: u32 },
    #[error("the window must be at least 1 second")]
    ZeroWindow,
}

impl Model {
    pub fn new(parameters: ModelParameters) -> Result<Self, ModelError> {
        validate(&parameters)?;
        Ok(Self { parameters })
    }

    pub fn parameters(&self) -> &ModelParameters {
        &self.parameters
    }

    pub fn test(&self) -> Test {
        self.parameters.test
    }

    pub fn min_sample_size(&self) -> Option<u32> {
        self.parameters.min_sample_size
    }

    pub fn max_sample_size(&self) -> Option<u32> {
        self.parameters.max_sample_size
    }

    /// The time window in seconds, measured back from the report's own time.
    pub fn window(&self) -> Option<u32> {
        self.parameters.window
    }

    pub fn lower_boundary(&self) -> Option<f64> {
        self.parameters.lower_boundary
    }

    pub fn upper_boundary(&self) -> Option<f64> {
        self.parameters.upper_boundary
    }

    /// How many history values the test needs before it runs: the min sample size, but
    /// never fewer than the statistic itself needs (see `Test::minimum_sample_size`).
    pub fn required_sample_size(&self) -> u32 {
        self.parameters
            .min_sample_size
            .unwrap_or(0)
            .max(self.parameters.test.minimum_sample_size())
    }
}

impl TryFrom<ModelParameters> for Model {
    type Error = ModelError;

    fn try_from(parameters: ModelParameters) -> Result<Self, Self::Error> {
        Self::new(parameters)
    }
}

impl From<Model> for ModelParameters {
    fn from(model: Model) -> Self {
        model.parameters
    }
}

fn validate(parameters: &ModelParameters) -> Result<(), ModelError> {
    let test = parameters.test;
    if parameters.lower_boundary.is_none() && parameters.upper_boundary.is_none() {
        return Err(ModelError::NoBoundary { test });
    }
    for (side, boundary) in [
        (Side::Lower, parameters.lower_boundary),
        (Side::Upper, parameters.upper_boundary),
    ] {
        if let Some(value) = boundary {
            validate_boundary(test, side, value)?;
        }
    }
    if test == Test::Static {
        return validate_static(parameters);
    }
    let minimum = test.minimum_sample_size();
    for (option, size) in [
        ("min sample size", parameters.min_sample_size),
        ("max sample size", parameters.max_sample_size),
    ] {
        if let Some(size) = size
            && size < minimum
        {
            return Err(ModelError::SampleSizeTooSmall {
                test,
                option,
                size,
                minimum,
            });
        }
    }
    if let (Some(min), Some(max)) = (parameters.min_sample_size, parameters.max_sample_size)
        && min > max
    {
        return Err(ModelError::MinAboveMax { min, max });
    }
    if parameters.window == Some(0) {
        return Err(ModelError::ZeroWindow);
    }
    Ok(())
}

fn validate_boundary(test: Test, side: Side, value: f64) -> Result<(), ModelError> {
    if !value.is_finite() {
        return Err(ModelError::NonFiniteBoundary { side, value });
    }
    match test.boundary_kind() {
        BoundaryKind::Absolute => Ok(()),
        BoundaryKind::Fraction if value < 0.0 => {
            Err(ModelError::NegativeFraction { test, side, value })
        }
        BoundaryKind::Multiplier if value < 0.0 => {
            Err(ModelError::NegativeMultiplier { test, side, value })
        }
        // 0.5 is the baseline itself; 1.0 would be an infinite limit.
        BoundaryKind::Confidence if !(0.5..1.0).contains(&value) => {
            Err(ModelError::ConfidenceOutOfRange { test, side, value })
        }
        BoundaryKind::Fraction | BoundaryKind::Multiplier | BoundaryKind::Confidence => Ok(()),
    }
}

fn validate_static(parameters: &ModelParameters) -> Result<(), ModelError> {
    if let (Some(lower), Some(upper)) = (parameters.lower_boundary, parameters.upper_boundary)
        && lower > upper
    {
        return Err(ModelError::StaticLowerAboveUpper { lower, upper });
    }
    let options = [
        ("min sample size", parameters.min_sample_size.is_some()),
        ("max sample size", parameters.max_sample_size.is_some()),
        ("window", parameters.window.is_some()),
    ];
    match options.into_iter().find(|(_, set)| *set) {
        Some((option, _)) => Err(ModelError::StaticTakesNoHistory { option }),
        None => Ok(()),
    }
}
