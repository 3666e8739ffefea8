//! Reconnect backoff: exponential from `initial` to `max`, with jitter so that many
//! runners cut off by one server restart do not all come back in the same second.
//! Pure: the caller supplies the randomness and sleeps.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Failures since the last success.
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The connection worked: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next attempt, given `unit`, a uniform random number in
    /// [0, 1). "Equal jitter": half the exponential step, plus a random part of the
    /// other half, so the delay still grows while attempts spread out.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let exponent = self.failures.min(31);
        self.failures = self.failures.saturating_add(1);
        let step = self
            .initial
            .checked_mul(1 << exponent)
            .unwrap_or(self.max)
            .min(self.max);
        let half = step / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn grows_to_the_cap() {
        let mut backoff = Backoff::new(S(1), S(60));
        // With the largest jitter the delay is the full step.
        let steps: Vec<Duration> = (0..9).map(|_| backoff.next_delay(1.0)).collect();
        assert_eq!(
            steps,
            vec![S(1), S(2), S(4), S(8), S(16), S(32), S(60), S(60), S(60)]
        );
    }

    #[test]
    fn jitter_stays_within_half_and_full_step() {
        let mut low = Backoff::new(S(1), S(60));
        let mut high = Backoff::new(S(1), S(60));
        for _ in 0..10 {
            let (a, b) = (low.next_delay(0.0), high.next_delay(0.999));
            assert!(a <= b);
            assert!(b <= a * 2);
        }
        assert_eq!(low.next_delay(0.0), S(30));
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(S(1), S(60));
        for _ in 0..100 {
            backoff.next_delay(0.5);
        }
        assert_eq!(
            backoff.next_delay(1.0),
            S(60),
            "no overflow after many failures"
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(1.0), S(1));
    }
}
