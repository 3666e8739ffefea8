//! Unit conversion for the adapters: time units to nanoseconds and rates to operations
//! per second, from the unit spellings the harnesses print. Pure.

/// A time unit as a harness names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct TimeUnit {
    nanos: f64,
}

impl TimeUnit {
    pub(super) const NANOS: Self = Self { nanos: 1.0 };
    pub(super) const SECONDS: Self = Self { nanos: 1e9 };

    /// `ps`, `ns`, `us`/`µs`/`μs`, `ms`, `s`, `min`, `hr`/`h`, `day`/`d`: the spellings of
    /// Criterion, Google Benchmark and JMH.
    pub(super) fn parse(unit: &str) -> Option<Self> {
        let nanos = match unit {
            "ps" => 1e-3,
            "ns" => 1.0,
            // U+00B5 MICRO SIGN (Criterion) and U+03BC GREEK SMALL LETTER MU.
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "min" | "m" => 60e9,
            "hr" | "h" => 3_600e9,
            "day" | "d" => 86_400e9,
            _ => return None,
        };
        Some(Self { nanos })
    }

    pub(super) fn to_nanos(self, value: f64) -> f64 {
        value * self.nanos
    }

    /// A rate "per this unit" as a rate per second: `ops/ms` × 1000 = `ops/s`.
    pub(super) fn per_unit_to_per_second(self, rate: f64) -> f64 {
        rate * (1e9 / self.nanos)
    }
}

/// Criterion's element throughput units (`elem/s`, `Kelem/s`, `Melem/s`, `Gelem/s`) as a
/// factor to elements per second. Byte throughputs (`B/s`, `MiB/s`, …) are not
/// operations and return `None`.
pub(super) fn elements_per_second(unit: &str) -> Option<f64> {
    match unit {
        "elem/s" => Some(1.0),
        "Kelem/s" => Some(1e3),
        "Melem/s" => Some(1e6),
        "Gelem/s" => Some(1e9),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_to_nanoseconds() {
        let cases = [
            ("ps", 1_500.0, 1.5),
            ("ns", 2.5, 2.5),
            ("us", 2.0, 2_000.0),
            ("\u{b5}s", 2.0, 2_000.0),
            ("\u{3bc}s", 2.0, 2_000.0),
            ("ms", 1.5, 1_500_000.0),
            ("s", 0.25, 250_000_000.0),
            ("min", 1.0, 60e9),
            ("hr", 1.0, 3_600e9),
        ];
        for (unit, value, nanos) in cases {
            let got = TimeUnit::parse(unit).unwrap().to_nanos(value);
            assert!(
                (got - nanos).abs() <= nanos * 1e-12,
                "{unit}: {got} != {nanos}"
            );
        }
        assert_eq!(TimeUnit::parse("fortnight"), None);
        assert_eq!(TimeUnit::parse("NS"), None);
    }

    #[test]
    fn rates_convert_to_per_second() {
        let per =
            |unit: &str, rate: f64| TimeUnit::parse(unit).unwrap().per_unit_to_per_second(rate);
        assert_eq!(per("s", 7.0), 7.0);
        assert_eq!(per("ms", 7.0), 7_000.0);
        assert_eq!(per("us", 2.0), 2_000_000.0);
        assert_eq!(per("ns", 0.5), 500_000_000.0);
        assert_eq!(per("min", 120.0), 2.0);
        assert_eq!(elements_per_second("Melem/s"), Some(1e6));
        assert_eq!(elements_per_second("MiB/s"), None);
    }
}
