//! How the runtime treats one processor: timeout, retries, limits, delay.
//!
//! Every field is plain data and every builder method is a `const fn`, so a configuration can
//! live in a `static` (that is what `#[processor]` generates).

use std::time::Duration;

use serde::Serialize;

use crate::Error;

/// A processor's runtime configuration.
///
/// ```
/// use std::time::Duration;
/// use am2z::{Backoff, ProcessorConfig};
///
/// static CONFIG: ProcessorConfig = ProcessorConfig::new()
///     .description("Charges the customer's card")
///     .timeout(Duration::from_secs(30))
///     .retries(3)
///     .backoff(Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(5)))
///     .concurrency(10)
///     .rate_limit(100, Duration::from_secs(60));
///
/// assert_eq!(CONFIG.retry.max_attempts, 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProcessorConfig {
    /// What the processor does, for people reading dashboards.
    pub description: Option<&'static str>,
    /// The limit on each attempt; on expiry the attempt fails with [`Error::Timeout`] and its
    /// cancellation token fires. `None` means no limit.
    pub timeout: Option<Duration>,
    /// When and how failed attempts are retried.
    pub retry: RetryPolicy,
    /// The most attempts of this processor running at once (per runtime); `None` is unbounded.
    pub concurrency: Option<u32>,
    /// Higher runs first when attempts wait for a concurrency slot.
    pub priority: i32,
    /// The most attempts started per period.
    pub rate_limit: Option<RateLimit>,
    /// A wait before the first attempt.
    pub delay: Option<Duration>,
    /// The processor's contract version: bump it when its input or output changes meaning, so
    /// workers running older code refuse new work instead of misreading it.
    pub version: u32,
    /// Whether inspection hides this processor's data: a run of it (or of a workflow with it
    /// as a step) shows its input, output, state and custom event payloads as
    /// [`Shown::Redacted`](crate::runtime::inspect::Shown::Redacted). For processors that
    /// handle secrets or personal data; the run itself still executes as usual.
    pub redact: bool,
}

impl ProcessorConfig {
    /// The default: no timeout, one attempt, no limits, priority 0, version 1.
    pub const fn new() -> Self {
        ProcessorConfig {
            description: None,
            timeout: None,
            retry: RetryPolicy::once(),
            concurrency: None,
            priority: 0,
            rate_limit: None,
            delay: None,
            version: 1,
            redact: false,
        }
    }

    /// Sets the description.
    pub const fn description(mut self, description: &'static str) -> Self {
        self.description = Some(description);
        self
    }

    /// Sets the per-attempt timeout.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the number of attempts (1 means no retry; 0 is treated as 1).
    pub const fn retries(mut self, max_attempts: u32) -> Self {
        self.retry.max_attempts = if max_attempts == 0 { 1 } else { max_attempts };
        self
    }

    /// Sets the wait between attempts.
    pub const fn backoff(mut self, backoff: Backoff) -> Self {
        self.retry.backoff = backoff;
        self
    }

    /// Sets the predicate that decides whether a failed attempt is retried.
    ///
    /// It receives the error and the number of the attempt about to be made (2 for the first
    /// retry); it replaces [`Error::is_retryable`] as the rule.
    pub const fn retry_if(mut self, predicate: fn(&Error, u32) -> bool) -> Self {
        self.retry.retry_if = Some(predicate);
        self
    }

    /// Sets the most attempts running at once (0 is treated as 1).
    pub const fn concurrency(mut self, limit: u32) -> Self {
        self.concurrency = Some(if limit == 0 { 1 } else { limit });
        self
    }

    /// Sets the priority (higher first).
    pub const fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Allows at most `max` attempt starts per `per` (0 is treated as 1).
    pub const fn rate_limit(mut self, max: u32, per: Duration) -> Self {
        self.rate_limit = Some(RateLimit {
            max: if max == 0 { 1 } else { max },
            per,
        });
        self
    }

    /// Sets a wait before the first attempt.
    pub const fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sets the contract version.
    pub const fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Hides the processor's data from inspection (see [`redact`](ProcessorConfig::redact)).
    pub const fn redact(mut self, redact: bool) -> Self {
        self.redact = redact;
        self
    }
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig::new()
    }
}

/// How many attempts a processor gets and how long to wait between them.
#[derive(Debug, Clone, Copy, Serialize)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait after each failed attempt.
    pub backoff: Backoff,
    /// Overrides [`Error::is_retryable`]: called with the error and the attempt about to be made.
    #[serde(skip)]
    pub retry_if: Option<fn(&Error, u32) -> bool>,
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub const fn once() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::None,
            retry_if: None,
        }
    }

    /// Whether a failure with `error` should lead to attempt `next_attempt`.
    ///
    /// Stopped sessions and cancellations are never retried: the run is over.
    pub fn should_retry(&self, error: &Error, next_attempt: u32) -> bool {
        if next_attempt > self.max_attempts
            || matches!(
                error,
                Error::SessionStopped { .. } | Error::Cancelled { .. }
            )
        {
            return false;
        }
        match self.retry_if {
            Some(predicate) => predicate(error, next_attempt),
            None => error.is_retryable(),
        }
    }
}

impl PartialEq for RetryPolicy {
    /// Predicates compare by presence: fn pointers have no meaningful identity.
    fn eq(&self, other: &Self) -> bool {
        self.max_attempts == other.max_attempts
            && self.backoff == other.backoff
            && self.retry_if.is_some() == other.retry_if.is_some()
    }
}

/// The wait between a failed attempt and the next.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// Retry at once.
    None,
    /// The same wait every time.
    Fixed(Duration),
    /// `base × multiplier^(n−1)` after the n-th failure, capped at `max`.
    Exponential {
        /// The first wait.
        base: Duration,
        /// The growth factor (2.0 doubles).
        multiplier: f64,
        /// The longest wait.
        max: Duration,
    },
}

impl Backoff {
    /// A fixed wait.
    pub const fn fixed(wait: Duration) -> Self {
        Backoff::Fixed(wait)
    }

    /// An exponential wait, from `base`, growing by `multiplier`, capped at `max`.
    pub const fn exponential(base: Duration, multiplier: f64, max: Duration) -> Self {
        Backoff::Exponential {
            base,
            multiplier,
            max,
        }
    }

    /// The wait after failed attempt number `failed_attempt` (1-based).
    pub fn delay_after(&self, failed_attempt: u32) -> Duration {
        match *self {
            Backoff::None => Duration::ZERO,
            Backoff::Fixed(wait) => wait,
            Backoff::Exponential {
                base,
                multiplier,
                max,
            } => {
                let exponent = failed_attempt.saturating_sub(1).min(1_000) as i32;
                let factor = multiplier.max(1.0).powi(exponent);
                let secs = base.as_secs_f64() * factor;
                if !secs.is_finite() || secs >= max.as_secs_f64() {
                    max
                } else {
                    Duration::from_secs_f64(secs)
                }
            }
        }
    }
}

/// At most `max` attempt starts per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// Starts allowed per period.
    pub max: u32,
    /// The period.
    pub per: Duration,
}

impl RateLimit {
    /// The even spacing between starts that this limit allows.
    pub fn interval(&self) -> Duration {
        self.per / self.max.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_grows_and_caps() {
        let b = Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_millis(500));
        let waits: Vec<_> = (1..=5).map(|n| b.delay_after(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn retry_policy_follows_predicate_and_limit() {
        let policy = ProcessorConfig::new().retries(3).retry;
        let transient = Error::execution("p", "flaky");
        assert!(policy.should_retry(&transient, 2));
        assert!(!policy.should_retry(&transient, 4));
        assert!(!policy.should_retry(&Error::validation("f", "bad"), 2));

        let policy = ProcessorConfig::new()
            .retries(3)
            .retry_if(|_, next| next < 3)
            .retry;
        assert!(policy.should_retry(&Error::validation("f", "bad"), 2));
        assert!(!policy.should_retry(&transient, 3));
        assert!(!policy.should_retry(
            &Error::SessionStopped {
                session: "s".into()
            },
            2
        ));
    }
}
