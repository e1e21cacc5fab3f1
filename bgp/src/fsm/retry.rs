//! Connect-retry backoff for the neighbor supervisor: exponential from `base` up to `max`,
//! each delay jittered into 75%..100% (RFC 4271 10). Pure: the caller supplies the randomness.

use std::time::Duration;

/// Connect-retry backoff with jitter (pure: the caller supplies the random factor).
#[derive(Debug, Clone)]
pub struct ConnectRetry {
    pub base: Duration,
    pub max: Duration,
    attempts: u32,
}

impl ConnectRetry {
    pub fn new(base: Duration, max: Duration) -> ConnectRetry {
        ConnectRetry {
            base,
            max,
            attempts: 0,
        }
    }

    /// Attempts made since the last `reset()`.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The un-jittered delay for the next attempt: `min(base * 2^attempts, max)`.
    /// Once doubling overflows (or after 32 attempts) the ceiling is `max`; a zero `base`
    /// stays zero.
    pub fn current_ceiling(&self) -> Duration {
        if self.base.is_zero() {
            return Duration::ZERO;
        }
        1u32.checked_shl(self.attempts)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// Delay before the next attempt; `jitter` in [0, 1) scales it to 75%..100% (RFC 4271 10).
    /// Out-of-range jitter is clamped into [0, 1] (NaN counts as 0). The result is always
    /// within `[0.75 * ceiling, ceiling]` and never above `max`.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let ceiling = self.current_ceiling();
        self.attempts = self.attempts.saturating_add(1);
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        let factor = 0.75 + 0.25 * jitter;
        Duration::try_from_secs_f64(ceiling.as_secs_f64() * factor)
            .unwrap_or(ceiling)
            .min(ceiling)
    }

    /// A session reached Established: start over from `base` next time.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lower bound of the jitter range, allowing 1 ns of float rounding.
    fn floor_of(ceiling: Duration) -> Duration {
        ceiling
            .mul_f64(0.75)
            .saturating_sub(Duration::from_nanos(1))
    }

    #[test]
    fn doubles_from_base_up_to_max_at_full_jitter() {
        let mut r = ConnectRetry::new(Duration::from_secs(1), Duration::from_secs(30));
        let got: Vec<u64> = (0..8).map(|_| r.next_delay(1.0).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(r.attempts(), 8);
    }

    #[test]
    fn zero_jitter_gives_three_quarters() {
        let mut r = ConnectRetry::new(Duration::from_secs(4), Duration::from_secs(60));
        assert_eq!(r.next_delay(0.0), Duration::from_secs(3));
        assert_eq!(r.next_delay(0.0), Duration::from_secs(6));
    }

    #[test]
    fn reset_starts_over_from_base() {
        let mut r = ConnectRetry::new(Duration::from_secs(2), Duration::from_secs(120));
        for _ in 0..5 {
            r.next_delay(0.5);
        }
        assert!(r.current_ceiling() > Duration::from_secs(2));
        r.reset();
        assert_eq!(r.attempts(), 0);
        assert_eq!(r.next_delay(1.0), Duration::from_secs(2));
    }

    #[test]
    fn bounds_hold_over_many_jitter_values_and_attempts() {
        let configs = [
            (Duration::from_millis(100), Duration::from_secs(5)),
            (Duration::from_secs(1), Duration::from_secs(120)),
            (Duration::from_secs(5), Duration::from_secs(5)),
            // base above max: max wins
            (Duration::from_secs(10), Duration::from_secs(3)),
            (Duration::ZERO, Duration::from_secs(1)),
            // huge max: doubling must saturate, not overflow
            (Duration::from_secs(1), Duration::MAX),
        ];
        // Deterministic pseudo-random jitter (LCG) plus edge values, including out-of-range.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut jitters = vec![0.0, 0.999_999, 1.0, -1.0, 2.0, f64::NAN, f64::INFINITY];
        for _ in 0..500 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            jitters.push((seed >> 11) as f64 / (1u64 << 53) as f64);
        }
        for (base, max) in configs {
            let mut r = ConnectRetry::new(base, max);
            let mut prev_ceiling = Duration::ZERO;
            for (i, &j) in jitters.iter().enumerate() {
                let ceiling = r.current_ceiling();
                if let Ok(shift) = u32::try_from(i) {
                    if shift < 31 {
                        let expected = base.checked_mul(1 << shift).unwrap_or(max).min(max);
                        assert_eq!(
                            ceiling, expected,
                            "ceiling at attempt {i}, {base:?}/{max:?}"
                        );
                    }
                }
                assert!(ceiling >= prev_ceiling, "ceiling must not shrink");
                assert!(ceiling <= max);
                let d = r.next_delay(j);
                assert!(d <= ceiling, "{d:?} > {ceiling:?} (jitter {j})");
                assert!(
                    d >= floor_of(ceiling),
                    "{d:?} < 75% of {ceiling:?} (jitter {j})"
                );
                prev_ceiling = ceiling;
            }
            // After many attempts the ceiling is pinned at max (zero stays zero).
            let pinned = if base.is_zero() { Duration::ZERO } else { max };
            assert_eq!(r.current_ceiling(), pinned);
        }
    }
}
