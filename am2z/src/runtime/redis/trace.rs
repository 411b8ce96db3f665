//! Trace context across processes. With am2z's `otel` feature, a job carries the trace
//! context it runs under as a W3C `traceparent` in its body (`protocol/body.rs`): the
//! submitter's current span at `submit` (a `ctx.call`'s: the calling step's), handed on
//! unchanged to a run's later step jobs. The worker that executes the job makes its
//! `am2z.run` span a child of that remote context, so a run submitted in one process and
//! executed in others is one trace. Without the feature nothing is written or read here,
//! and a `trace` found in a body (written by a build with it) is ignored.

use std::fmt;
use std::str::FromStr;

/// A W3C trace context (`traceparent`): `00-<trace id>-<parent span id>-<flags>`, lowercase
/// hex, neither id all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
pub(crate) struct TraceParent {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) flags: u8,
}

/// Why a `traceparent` does not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(&'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a malformed traceparent: {}", self.0)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

impl FromStr for TraceParent {
    type Err = Malformed;

    /// Reads version `00` exactly; a later version by its first four fields (the W3C rule
    /// for versions this code does not know), `ff` never.
    fn from_str(text: &str) -> Result<Self, Malformed> {
        let hex = |field: &str, digits: usize, what: &'static str| {
            let lower = field
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            match field.len() == digits && lower {
                true => u128::from_str_radix(field, 16).map_err(|_| Malformed(what)),
                false => Err(Malformed(what)),
            }
        };
        let mut fields = text.split('-');
        let version = hex(fields.next().unwrap_or(""), 2, "the version")?;
        let trace_id = hex(fields.next().unwrap_or(""), 32, "the trace id")?;
        let span_id = hex(fields.next().unwrap_or(""), 16, "the parent id")?;
        let flags = hex(fields.next().unwrap_or(""), 2, "the flags")?;
        match version {
            0xff => return Err(Malformed("version ff")),
            0 if fields.next().is_some() => return Err(Malformed("fields after the flags")),
            _ => {}
        }
        if trace_id == 0 || span_id == 0 {
            return Err(Malformed("an all-zero id"));
        }
        Ok(TraceParent {
            trace_id,
            // Each read from exactly 16 and 2 hex digits: they fit.
            span_id: u64::try_from(span_id).map_err(|_| Malformed("the parent id"))?,
            flags: u8::try_from(flags).map_err(|_| Malformed("the flags"))?,
        })
    }
}

/// The trace context a job submitted now carries: the current span's, when it belongs to a
/// trace (`None` without the `otel` feature, or outside any OpenTelemetry span).
#[cfg(feature = "otel")]
pub(crate) fn current() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let current = tracing::Span::current();
    if current.is_disabled() {
        return None;
    }
    let context = current.context();
    let span = context.span();
    let span = span.span_context();
    span.is_valid().then(|| {
        TraceParent {
            trace_id: u128::from_be_bytes(span.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(span.span_id().to_bytes()),
            flags: span.trace_flags().to_u8(),
        }
        .to_string()
    })
}

/// Without the `otel` feature nothing is carried.
#[cfg(not(feature = "otel"))]
#[inline]
pub(crate) fn current() -> Option<String> {
    None
}

/// The trace context a job's successors carry: the job's own (a run's step jobs are
/// siblings under the span that submitted the run).
#[inline]
pub(crate) fn carry(trace: Option<&String>) -> Option<String> {
    match cfg!(feature = "otel") {
        true => trace.cloned(),
        false => None,
    }
}

/// Makes `span` (not entered yet) a child of the remote context `trace`. A malformed context
/// is ignored (logged at debug): the job runs all the same, in a trace of its own.
#[cfg(feature = "otel")]
pub(crate) fn adopt(span: &tracing::Span, trace: Option<&str>) {
    use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let Some(trace) = trace else { return };
    if span.is_disabled() {
        return;
    }
    let parent = match trace.parse::<TraceParent>() {
        Ok(parent) => parent,
        Err(error) => {
            tracing::debug!(%error, traceparent = trace, "the job's trace context is ignored");
            return;
        }
    };
    let remote = SpanContext::new(
        parent.trace_id.into(),
        parent.span_id.into(),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    let context = opentelemetry::Context::new().with_remote_span_context(remote);
    // Refused only where no OpenTelemetry layer sees the span: nothing to parent then.
    let _ = span.set_parent(context);
}

/// Without the `otel` feature a carried context is ignored.
#[cfg(not(feature = "otel"))]
#[inline]
pub(crate) fn adopt(_span: &tracing::Span, _trace: Option<&str>) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_malformed_ones_are_refused() {
        let text = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let parent: TraceParent = text.parse().unwrap();
        assert_eq!(
            parent,
            TraceParent {
                trace_id: 0x0af7651916cd43dd8448eb211c80319c,
                span_id: 0xb7ad6b7169203331,
                flags: 1,
            }
        );
        assert_eq!(parent.to_string(), text);
        let small = TraceParent {
            trace_id: 1,
            span_id: 2,
            flags: 0,
        };
        assert_eq!(small.to_string().parse::<TraceParent>(), Ok(small));
        // A later version may add fields; its first four are read.
        assert!(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"
                .parse::<TraceParent>()
                .is_ok()
        );
        for malformed in [
            "",
            "nonsense",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(malformed.parse::<TraceParent>().is_err(), "{malformed:?}");
        }
    }

    #[test]
    fn without_the_feature_nothing_is_carried() {
        let carried = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned();
        assert_eq!(
            carry(Some(&carried)).is_some(),
            cfg!(feature = "otel"),
            "carried only with the feature"
        );
        if !cfg!(feature = "otel") {
            assert_eq!(current(), None);
        }
    }
}
