//! The one error type of am2z.
//!
//! Every failure a caller can see is a variant of [`Error`]. Variants carry their fields as
//! data (never only as a formatted string) and serialise with their variant tag, so an error
//! that crossed Redis matches exactly like one raised in-process.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::StateSnapshot;

/// Shorthand for `Result<T, am2z::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a run, as one matchable enum.
///
/// Processors return their own errors through `Into<Error>`; the runtime adds the kinds it
/// produces itself (timeouts, panics, cancellation, ...). Each variant answers
/// [`category`](Error::category), [`severity`](Error::severity) and
/// [`is_retryable`](Error::is_retryable).
///
/// ```
/// use am2z::Error;
///
/// let err = Error::validation("email", "must contain @");
/// assert!(!err.is_retryable());
/// let wire = serde_json::to_string(&err).unwrap();
/// assert_eq!(serde_json::from_str::<Error>(&wire).unwrap(), err);
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Error {
    /// The input is invalid; retrying the same input cannot help.
    #[error("validation failed on `{field}`: {message}")]
    Validation {
        /// The offending field (a path such as `items[2].sku` is fine).
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// A business rule refused the request (a declined card, an exhausted quota, ...).
    #[error("business rule `{code}` refused: {message}")]
    Business {
        /// A stable machine-readable code.
        code: String,
        /// A human-readable explanation.
        message: String,
        /// Structured details for the caller.
        #[serde(default)]
        details: serde_json::Value,
    },

    /// Something looked up by name does not exist.
    #[error("{what} `{name}` not found{}", list_available(available))]
    NotFound {
        /// The kind of thing (`processor`, `session`, `route arm`, ...).
        what: String,
        /// The name that was asked for.
        name: String,
        /// What exists instead, to help fix typos.
        #[serde(default)]
        available: Vec<String>,
    },

    /// A processor failed in a way that may succeed on another attempt.
    #[error("processor `{processor}` failed: {message}")]
    Execution {
        /// The processor that failed.
        processor: String,
        /// What went wrong.
        message: String,
    },

    /// A processor did not finish within its timeout; its cancellation token was fired.
    #[error("processor `{processor}` timed out after {limit:?}")]
    Timeout {
        /// The processor that ran too long.
        processor: String,
        /// The configured limit.
        limit: Duration,
    },

    /// A resource (memory, a quota, a pool) was exhausted.
    #[error("resource `{resource}` exhausted: {message}")]
    Resource {
        /// The resource.
        resource: String,
        /// Details.
        message: String,
    },

    /// A dependency (network, Redis, an API) could not be reached.
    #[error("`{service}` is unavailable: {message}")]
    Unavailable {
        /// The unreachable service.
        service: String,
        /// Details.
        message: String,
    },

    /// The runtime or a processor is misconfigured (or used before `start`).
    #[error("configuration error: {message}")]
    Configuration {
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The work was cancelled before it finished.
    #[error("cancelled: {reason}")]
    Cancelled {
        /// Why.
        reason: String,
    },

    /// The processor panicked; the runtime caught it and kept working.
    #[error("processor `{processor}` panicked: {message}")]
    Panicked {
        /// The processor that panicked.
        processor: String,
        /// The panic payload, when it was a string.
        message: String,
    },

    /// `ctx.call` nested deeper than the runtime's limit.
    #[error("call depth {depth} exceeds the limit of {limit} (calling `{processor}`)")]
    DepthExceeded {
        /// The processor whose call was refused.
        processor: String,
        /// The depth the call would have had.
        depth: u32,
        /// The configured limit.
        limit: u32,
    },

    /// A value could not be encoded or decoded.
    #[error("serialization failed: {message}")]
    Serialization {
        /// Details from the codec.
        message: String,
    },

    /// Work was produced by a different version of a processor than the one running here.
    #[error(
        "processor `{processor}` contract mismatch: expected fingerprint {expected}, found {found}"
    )]
    VersionMismatch {
        /// The processor.
        processor: String,
        /// The fingerprint this process knows.
        expected: String,
        /// The fingerprint carried by the work.
        found: String,
    },

    /// The run's session was stopped while it was in flight.
    #[error("session `{session}` was stopped")]
    SessionStopped {
        /// The stopped session.
        session: String,
    },

    /// A step of a composed workflow failed; `source` is what it returned.
    #[error("step `{step}` (position {position}) failed: {source}")]
    StepFailed {
        /// The failing step's processor name.
        step: String,
        /// Its position in the enclosing chain, from 0.
        position: usize,
        /// The step's own error.
        source: Box<Error>,
        /// The state the failing step received (the output of the step before it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state_before: Option<StateSnapshot>,
    },
}

fn list_available(available: &[String]) -> String {
    if available.is_empty() {
        String::new()
    } else {
        format!(" (available: {})", available.join(", "))
    }
}

/// The broad family of an error, for routing alerts and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Bad input from the caller.
    Validation,
    /// A business rule said no.
    Business,
    /// Something asked for does not exist.
    NotFound,
    /// A processor failed.
    Execution,
    /// A time limit was hit.
    Timeout,
    /// A resource ran out.
    Resource,
    /// A dependency was unreachable.
    Network,
    /// The setup is wrong.
    Configuration,
    /// Work was cancelled (including stopped sessions).
    Cancelled,
    /// The program has a bug (panics, depth overflows, contract mismatches).
    Defect,
    /// Encoding or decoding failed.
    Serialization,
}

/// How loud an error should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Expected in normal operation (bad input, declined business rule).
    Low,
    /// Worth a look if it repeats.
    Medium,
    /// Needs attention.
    High,
    /// Something is broken.
    Critical,
}

impl Error {
    /// A validation error on `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A business error with a stable `code` and no details.
    pub fn business(code: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Business {
            code: code.into(),
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    /// A business error with structured `details`.
    pub fn business_with(
        code: impl Into<String>,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Error::Business {
            code: code.into(),
            message: message.into(),
            details,
        }
    }

    /// A retryable execution failure of `processor`.
    pub fn execution(processor: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Execution {
            processor: processor.into(),
            message: message.into(),
        }
    }

    /// A dependency could not be reached.
    pub fn unavailable(service: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Unavailable {
            service: service.into(),
            message: message.into(),
        }
    }

    /// A resource was exhausted.
    pub fn resource(resource: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Resource {
            resource: resource.into(),
            message: message.into(),
        }
    }

    /// A configuration error.
    pub fn configuration(message: impl Into<String>) -> Self {
        Error::Configuration {
            message: message.into(),
        }
    }

    /// A not-found error listing what exists instead.
    pub fn not_found(
        what: impl Into<String>,
        name: impl Into<String>,
        available: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let mut available: Vec<String> = available.into_iter().map(Into::into).collect();
        available.sort();
        Error::NotFound {
            what: what.into(),
            name: name.into(),
            available,
        }
    }

    /// The error at the bottom of any [`Error::StepFailed`] wrappers.
    ///
    /// Match on this when you care what went wrong rather than where.
    pub fn root_cause(&self) -> &Error {
        let mut err = self;
        while let Error::StepFailed { source, .. } = err {
            err = source;
        }
        err
    }

    /// The broad family of the error (of its root cause, for step failures).
    pub fn category(&self) -> Category {
        match self.root_cause() {
            Error::Validation { .. } => Category::Validation,
            Error::Business { .. } => Category::Business,
            Error::NotFound { .. } => Category::NotFound,
            Error::Execution { .. } => Category::Execution,
            Error::Timeout { .. } => Category::Timeout,
            Error::Resource { .. } => Category::Resource,
            Error::Unavailable { .. } => Category::Network,
            Error::Configuration { .. } => Category::Configuration,
            Error::Cancelled { .. } | Error::SessionStopped { .. } => Category::Cancelled,
            Error::Panicked { .. }
            | Error::DepthExceeded { .. }
            | Error::VersionMismatch { .. } => Category::Defect,
            Error::Serialization { .. } => Category::Serialization,
            Error::StepFailed { .. } => unreachable!("root_cause never returns StepFailed"),
        }
    }

    /// How loud the error should be (of its root cause, for step failures).
    pub fn severity(&self) -> Severity {
        match self.category() {
            Category::Validation
            | Category::Business
            | Category::NotFound
            | Category::Cancelled => Severity::Low,
            Category::Execution | Category::Timeout | Category::Network => Severity::Medium,
            Category::Resource | Category::Configuration | Category::Serialization => {
                Severity::High
            }
            Category::Defect => Severity::Critical,
        }
    }

    /// Whether another attempt may succeed.
    ///
    /// Transient kinds (execution, timeout, resource, unavailable, panicked) are retryable;
    /// the caller's mistakes (validation, business, not-found, configuration, serialization),
    /// cancellation and depth overflows are not. A processor's `retry_if` predicate can
    /// override this either way.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.root_cause(),
            Error::Execution { .. }
                | Error::Timeout { .. }
                | Error::Resource { .. }
                | Error::Unavailable { .. }
                | Error::Panicked { .. }
        )
    }

    /// Wraps `self` as the failure of `step` at `position` in a chain.
    pub(crate) fn in_step(
        self,
        step: &str,
        position: usize,
        state_before: Option<StateSnapshot>,
    ) -> Self {
        match self {
            // A run-level outcome is not a step's fault: keep it matchable as is.
            Error::SessionStopped { .. } | Error::Cancelled { .. } => self,
            other => Error::StepFailed {
                step: step.to_owned(),
                position,
                source: Box::new(other),
                state_before,
            },
        }
    }

    pub(crate) fn from_panic(processor: &str, payload: &(dyn std::any::Any + Send)) -> Self {
        let message: Cow<'_, str> = if let Some(s) = payload.downcast_ref::<&'static str>() {
            Cow::Borrowed(s)
        } else if let Some(s) = payload.downcast_ref::<String>() {
            Cow::Borrowed(s.as_str())
        } else {
            Cow::Borrowed("non-string panic payload")
        };
        Error::Panicked {
            processor: processor.to_owned(),
            message: message.into_owned(),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::Serialization {
            message: err.to_string(),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Unavailable {
            service: "io".to_owned(),
            message: err.to_string(),
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<Error> {
        vec![
            Error::validation("email", "missing @"),
            Error::business_with("declined", "no funds", serde_json::json!({ "limit": 5 })),
            Error::not_found("processor", "x", ["b", "a"]),
            Error::execution("p", "flaky"),
            Error::Timeout {
                processor: "p".into(),
                limit: Duration::from_millis(1500),
            },
            Error::resource("memory", "full"),
            Error::unavailable("redis", "down"),
            Error::configuration("bad"),
            Error::Cancelled {
                reason: "stop".into(),
            },
            Error::Panicked {
                processor: "p".into(),
                message: "boom".into(),
            },
            Error::DepthExceeded {
                processor: "p".into(),
                depth: 11,
                limit: 10,
            },
            Error::Serialization {
                message: "eof".into(),
            },
            Error::VersionMismatch {
                processor: "p".into(),
                expected: "a".into(),
                found: "b".into(),
            },
            Error::SessionStopped {
                session: "s".into(),
            },
            Error::StepFailed {
                step: "charge".into(),
                position: 2,
                source: Box::new(Error::validation("card", "expired")),
                state_before: Some(StateSnapshot::json("Order", serde_json::json!({ "id": 7 }))),
            },
        ]
    }

    #[test]
    fn every_variant_survives_the_wire() {
        for error in every_variant() {
            let wire = serde_json::to_string(&error).expect("serialises");
            let back: Error = serde_json::from_str(&wire).expect("deserialises");
            assert_eq!(back, error, "{wire}");
        }
    }

    #[test]
    fn step_failures_classify_by_their_root_cause() {
        let failed = every_variant().pop().expect("the step failure is last");
        assert_eq!(failed.category(), Category::Validation);
        assert_eq!(failed.severity(), Severity::Low);
        assert!(!failed.is_retryable());
        assert!(failed.to_string().contains("step `charge` (position 2)"));
    }

    #[test]
    fn retryability_follows_the_kind() {
        let retryable: Vec<bool> = every_variant().iter().map(Error::is_retryable).collect();
        assert_eq!(
            retryable,
            [
                false, false, false, true, true, true, true, false, false, true, false, false,
                false, false, false
            ]
        );
        assert_eq!(
            Error::Panicked {
                processor: "p".into(),
                message: "m".into()
            }
            .severity(),
            Severity::Critical
        );
    }

    #[test]
    fn not_found_lists_what_exists_sorted() {
        let err = Error::not_found("processor", "chrage", ["refund", "charge"]);
        assert_eq!(
            err.to_string(),
            "processor `chrage` not found (available: charge, refund)"
        );
    }
}
