//! A job's body: what only Rust reads (scripts store and hand it back untouched). One line of
//! JSON metadata, a newline, then the input (JSON, as submitted):
//!
//! ```text
//! {"step":<position>,"call":["<calling run>",<depth>],"chunks":<n>,"trace":"<traceparent>","redact":true}
//! <input>
//! ```
//!
//! `step` is present for a later job of a run executed step by step (its position in the
//! run), `call` for a `ctx.call` executed as a child run, `chunks` when the input is big: it
//! is then not in the body but in `n` fields of the run's hash (`v:<job>:0` ...), staged in
//! slices, so that no script handles a big value whole. `trace` is the trace context the job
//! runs under, a W3C `traceparent` (written only with am2z's `otel` feature, read by every
//! build: `trace.rs`); a malformed one is the worker's to ignore, not a reason to fail the
//! run. `redact` is written, on a run's entry body only and only when true, by a submitter
//! whose processor (or one it contains) is configured with `redact`: inspection in a process
//! that does not know the processor trusts it (`inspect.rs`), and normal bodies do not grow.
//! A body that does not read this way (written by something else, or corrupted) fails
//! its run with a typed serialization error.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Error, RunId};

/// A decoded body.
#[derive(Debug, Clone, Default)]
pub(crate) struct Body {
    /// Where a step job stands in its run (JSON, kept as text: the step executor reads it
    /// once, into its own type, and a successor's is written once, from it), `None` for a
    /// run's entry job.
    pub(crate) step: Option<Box<RawValue>>,
    /// For a child run: the calling run and the call depth it runs at.
    pub(crate) call: Option<(RunId, u32)>,
    /// The input is staged in this many chunks of the run's hash, not here.
    pub(crate) chunks: Option<u32>,
    /// The trace context the job runs under (a W3C `traceparent`, as found: not necessarily
    /// well formed).
    pub(crate) trace: Option<String>,
    /// The run's data is hidden from inspection: its processor, or one it contains, is
    /// configured with `redact` (set on a run's entry body only).
    pub(crate) redact: bool,
    /// The input (JSON bytes, as found: not necessarily valid).
    pub(crate) input: Vec<u8>,
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        self.step.as_deref().map(RawValue::get) == other.step.as_deref().map(RawValue::get)
            && self.call == other.call
            && self.chunks == other.chunks
            && self.trace == other.trace
            && self.redact == other.redact
            && self.input == other.input
    }
}

/// The metadata line as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    #[serde(default)]
    step: Option<Box<RawValue>>,
    #[serde(default)]
    call: Option<(RunId, u32)>,
    #[serde(default)]
    chunks: Option<u32>,
    #[serde(default)]
    trace: Option<String>,
    #[serde(default)]
    redact: bool,
}

/// The metadata line as written, borrowed from the body (nothing is copied to encode it).
#[derive(Serialize)]
struct MetaRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    call: Option<(RunId, u32)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunks: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    redact: bool,
}

impl Body {
    /// The bytes a script stores.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let meta = MetaRef {
            step: self.step.as_deref(),
            call: self.call,
            chunks: self.chunks,
            trace: self.trace.as_deref(),
            redact: self.redact,
        };
        // A map of a JSON value, a pair of plain values and a string always encodes.
        let step = self.step.as_deref().map_or(0, |s| s.get().len());
        let mut bytes = Vec::with_capacity(64 + step + self.input.len());
        if serde_json::to_writer(&mut bytes, &meta).is_err() {
            bytes.clear();
            bytes.extend_from_slice(b"{}");
        }
        bytes.push(b'\n');
        bytes.extend_from_slice(&self.input);
        bytes
    }

    /// Reads `bytes` (a body as found in Redis).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Body, Error> {
        let corrupt = |why: String| Error::Serialization {
            message: format!("a job's body is unreadable: {why}"),
        };
        let at = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| corrupt("no metadata line".to_owned()))?;
        let meta: Meta =
            serde_json::from_slice(&bytes[..at]).map_err(|e| corrupt(e.to_string()))?;
        Ok(Body {
            step: meta.step,
            call: meta.call,
            chunks: meta.chunks,
            trace: meta.trace,
            redact: meta.redact,
            input: bytes[at + 1..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_corrupt_ones_are_typed_errors() {
        let body = Body {
            step: RawValue::from_string(r#"{"Step":{"node":3}}"#.to_owned()).ok(),
            call: Some((RunId::from_u128(7), 2)),
            chunks: Some(3),
            trace: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
            redact: true,
            input: b"{\"x\":\n1}".to_vec(),
        };
        assert_eq!(Body::decode(&body.encode()).unwrap(), body);
        let plain = Body {
            input: b"5".to_vec(),
            ..Body::default()
        };
        assert_eq!(plain.encode(), b"{}\n5");
        assert_eq!(Body::decode(b"{}\n5").unwrap(), plain);
        // `redact` is written only when set: a body of a run that is not redacted does not
        // grow, and one written before the flag existed reads as not redacted.
        let redacted = Body {
            redact: true,
            ..plain.clone()
        };
        assert_eq!(redacted.encode(), b"{\"redact\":true}\n5");
        assert!(Body::decode(&redacted.encode()).unwrap().redact);
        // A body written before `trace` existed reads the same; a malformed traceparent is
        // kept as found (the worker ignores it), a `trace` that is not a string is corrupt.
        let old = Body::decode(b"{\"chunks\":2}\n5").unwrap();
        assert_eq!((old.chunks, old.trace), (Some(2), None));
        let odd = Body::decode(b"{\"trace\":\"nonsense\"}\n5").unwrap();
        assert_eq!(odd.trace.as_deref(), Some("nonsense"));
        for corrupt in [
            &b"5"[..],
            b"{nope\n5",
            b"{\"other\":1}\n5",
            b"{\"trace\":7}\n5",
            b"{\"redact\":1}\n5",
            &[0xff, 0xfe],
        ] {
            assert!(
                matches!(Body::decode(corrupt), Err(Error::Serialization { .. })),
                "{corrupt:?}"
            );
        }
    }
}
