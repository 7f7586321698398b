//! Retry policy (whether to retry) apart from backoff (how long to wait).
//! Bad settings are refused when the backoff is built.

use crate::domain::Dur;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Backoff shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    /// `initial` every time.
    Fixed,
    /// `initial × multiplier^(n−1)`.
    Exponential,
    /// `initial × n`.
    Linear,
}

/// Jitter applied to a backoff delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JitterKind {
    /// The delay as computed.
    None,
    /// Uniform in [0, delay].
    Full,
    /// delay/2 + uniform in [0, delay/2].
    Equal,
}

/// Retry policy for transient submission failures.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Submission attempts per order, including the first.
    pub max_attempts: u32,
    /// Shape of the delay between attempts.
    pub backoff: BackoffKind,
    /// First delay.
    pub initial: Dur,
    /// Growth factor for `exponential`.
    pub multiplier: f64,
    /// Ceiling of any delay.
    pub max_delay: Dur,
    /// Randomisation of the delay.
    pub jitter: JitterKind,
    /// Quotes older than this are fetched again before a retry (unless a
    /// leg of the route already executed).
    pub requote_after: Dur,
}

impl RetryConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = Backoff::from_config(self) {
            problems.push(format!("{key}: {e}"));
        }
        if self.max_attempts < 1 {
            problems.push(format!("{key}.max_attempts: must be at least 1"));
        }
        problems
    }
}

/// Computes the delay before the next attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    kind: BackoffKind,
    initial: Duration,
    multiplier: f64,
    max_delay: Duration,
    jitter: JitterKind,
}

/// Why a backoff cannot be built (tower's `backoff` refuses bad settings in
/// its constructor the same way).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidBackoff {
    /// `initial` is zero.
    #[error("initial: must be greater than 0")]
    ZeroInitial,
    /// `initial` is longer than `max_delay`.
    #[error("initial: must not exceed max_delay")]
    InitialAboveMax,
    /// `multiplier` is below 1 or not finite.
    #[error("multiplier: {0} must be a number ≥ 1")]
    Multiplier(f64),
}

impl Backoff {
    /// A delay schedule.
    ///
    /// # Errors
    /// [`InvalidBackoff`] for a zero `initial`, `initial > max_delay`, or a
    /// `multiplier` below 1 (or not finite).
    pub fn new(
        kind: BackoffKind,
        initial: Duration,
        multiplier: f64,
        max_delay: Duration,
        jitter: JitterKind,
    ) -> Result<Self, InvalidBackoff> {
        if initial.is_zero() {
            return Err(InvalidBackoff::ZeroInitial);
        }
        if initial > max_delay {
            return Err(InvalidBackoff::InitialAboveMax);
        }
        if !multiplier.is_finite() || multiplier < 1.0 {
            return Err(InvalidBackoff::Multiplier(multiplier));
        }
        Ok(Backoff {
            kind,
            initial,
            multiplier,
            max_delay,
            jitter,
        })
    }

    /// The schedule `[retry]` describes.
    ///
    /// # Errors
    /// As [`Backoff::new`].
    pub fn from_config(config: &RetryConfig) -> Result<Self, InvalidBackoff> {
        Backoff::new(
            config.backoff,
            config.initial.0,
            config.multiplier,
            config.max_delay.0,
            config.jitter,
        )
    }

    /// The delay after failed attempt `attempt` (from 1), before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let n = attempt.max(1);
        let secs = self.initial.as_secs_f64();
        let delay = match self.kind {
            BackoffKind::Fixed => secs,
            BackoffKind::Linear => secs * f64::from(n),
            BackoffKind::Exponential => secs * self.multiplier.powi(n as i32 - 1),
        };
        Duration::from_secs_f64(delay.min(self.max_delay.as_secs_f64()))
    }

    /// The delay with jitter; `unit` is a uniform random number in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt);
        let unit = unit.clamp(0.0, 1.0);
        match self.jitter {
            JitterKind::None => base,
            JitterKind::Full => base.mul_f64(unit),
            JitterKind::Equal => base / 2 + (base / 2).mul_f64(unit),
        }
    }
}

/// Decides whether a failed attempt is retried, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts allowed, including the first.
    pub max_attempts: u32,
    /// Delay schedule.
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// From `[retry]` (validated: `max_attempts` ≥ 1).
    ///
    /// # Errors
    /// As [`Backoff::new`].
    pub fn from_config(config: &RetryConfig) -> Result<Self, InvalidBackoff> {
        Ok(RetryPolicy {
            max_attempts: config.max_attempts,
            backoff: Backoff::from_config(config)?,
        })
    }

    /// `Some(delay)` when attempt `attempt` failed transiently and attempts
    /// remain; `None` when the order must fail. (Permanent failures never
    /// reach the policy.)
    pub fn retry_after(&self, attempt: u32, unit: f64) -> Option<Duration> {
        (attempt < self.max_attempts).then(|| self.backoff.delay(attempt, unit))
    }

    /// Attempts left after `attempt`.
    pub fn remaining(&self, attempt: u32) -> u32 {
        self.max_attempts.saturating_sub(attempt)
    }
}

/// A uniform random number in [0, 1) from the OS generator (via UUID v4).
pub fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: BackoffKind, jitter: JitterKind) -> RetryConfig {
        RetryConfig {
            max_attempts: 3,
            backoff: kind,
            initial: Dur(Duration::from_millis(500)),
            multiplier: 2.0,
            max_delay: Dur(Duration::from_secs(3)),
            jitter,
            requote_after: Dur(Duration::from_secs(5)),
        }
    }

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn schedules_by_kind_are_capped() {
        let table = [
            (BackoffKind::Fixed, [500, 500, 500, 500, 500]),
            (BackoffKind::Linear, [500, 1000, 1500, 2000, 2500]),
            (BackoffKind::Exponential, [500, 1000, 2000, 3000, 3000]),
        ];
        for (kind, expected) in table {
            let backoff = Backoff::from_config(&config(kind, JitterKind::None)).unwrap();
            let got: Vec<u128> = (1..=5).map(|n| ms(backoff.base_delay(n))).collect();
            assert_eq!(got, expected, "{kind:?}");
        }
    }

    #[test]
    fn jitter_stays_in_its_band() {
        let full = Backoff::from_config(&config(BackoffKind::Fixed, JitterKind::Full)).unwrap();
        let equal = Backoff::from_config(&config(BackoffKind::Fixed, JitterKind::Equal)).unwrap();
        let none = Backoff::from_config(&config(BackoffKind::Fixed, JitterKind::None)).unwrap();
        assert_eq!(
            (
                ms(full.delay(1, 0.0)),
                ms(full.delay(1, 0.5)),
                ms(full.delay(1, 0.999_999))
            ),
            (0, 250, 499)
        );
        assert_eq!((ms(equal.delay(1, 0.0)), ms(equal.delay(1, 0.999_999))), (250, 499));
        assert_eq!(ms(none.delay(1, 0.7)), 500);
        for _ in 0..100 {
            let d = equal.delay(1, random_unit());
            assert!(d >= Duration::from_millis(250) && d <= Duration::from_millis(500));
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut c = config(BackoffKind::Exponential, JitterKind::None);
        c.multiplier = 0.5;
        assert!(
            Backoff::from_config(&c)
                .unwrap_err()
                .to_string()
                .starts_with("multiplier")
        );
        let mut c = config(BackoffKind::Fixed, JitterKind::None);
        c.initial = Dur(Duration::from_secs(10));
        assert!(Backoff::from_config(&c).unwrap_err().to_string().starts_with("initial"));
        c.initial = Dur(Duration::ZERO);
        assert!(Backoff::from_config(&c).is_err());
    }

    #[test]
    fn policy_retries_transient_failures_until_attempts_run_out() {
        let policy = RetryPolicy::from_config(&config(BackoffKind::Exponential, JitterKind::None)).unwrap();
        assert_eq!(policy.retry_after(1, 0.0), Some(Duration::from_millis(500)));
        assert_eq!(policy.retry_after(2, 0.0), Some(Duration::from_secs(1)));
        assert_eq!(policy.retry_after(3, 0.0), None, "third attempt was the last");
        assert_eq!(policy.remaining(1), 2);
    }
}
