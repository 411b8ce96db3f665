//! Events as they go to Redis: the JSON of [`Event`]'s `Serialize`, byte for byte, written
//! by hand for the kinds every run produces.
//!
//! A busy worker sends four events per one-step run (run started, step started, step
//! completed, run completed); through serde's derived, internally tagged `Serialize` they
//! were a fifth of its instructions, mostly escaping map keys that need no escaping. Here the
//! keys are literals, numbers are written without `core::fmt`, and strings are copied as they
//! are unless they hold a character JSON must escape. Every other kind (errors, custom
//! payloads) goes through serde, so readers see one format whichever path wrote it; the
//! tests hold the two paths to the same bytes.

use std::time::{Duration, SystemTime};

use crate::{Event, EventKind};

/// The command appending a batch of events (`batch`, a JSON array) to a session's `stream`
/// as one entry (field `events`), the stream capped near `max_len` entries. `NOMKSTREAM`:
/// the stream is made with its session (`submit.lua`) and goes with it, so a batch that
/// lands after its session expired or was stopped stores nothing (the reply is nil) instead
/// of leaving a key behind.
pub(crate) fn append(stream: &str, max_len: u64, batch: &[u8]) -> redis::Cmd {
    let mut append = redis::cmd("XADD");
    append
        .arg(stream)
        .arg("NOMKSTREAM")
        .arg("MAXLEN")
        .arg("~")
        .arg(max_len)
        .arg("*")
        .arg("events")
        .arg(batch);
    append
}

/// Appends `event` to `out` as JSON, as `serde_json::to_writer` would.
pub(crate) fn write_event(out: &mut Vec<u8>, event: &Event) -> Result<(), serde_json::Error> {
    let Ok(at) = event.at.duration_since(SystemTime::UNIX_EPOCH) else {
        // serde refuses a time before the epoch: it says why.
        return serde_json::to_writer(out, event);
    };
    out.extend_from_slice(b"{\"session\":");
    string(out, event.session.as_str());
    out.extend_from_slice(b",\"run_id\":");
    match event.run_id {
        Some(run) => {
            out.push(b'"');
            out.extend_from_slice(&run.hex());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"processor\":");
    match &event.processor {
        Some(processor) => string(out, processor),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"at\":{\"secs_since_epoch\":");
    number(out, at.as_secs());
    out.extend_from_slice(b",\"nanos_since_epoch\":");
    number(out, u64::from(at.subsec_nanos()));
    out.extend_from_slice(b"},\"kind\":");
    kind(out, &event.kind)?;
    out.push(b'}');
    Ok(())
}

fn kind(out: &mut Vec<u8>, kind: &EventKind) -> Result<(), serde_json::Error> {
    match kind {
        EventKind::SessionCreated => out.extend_from_slice(b"{\"type\":\"session_created\"}"),
        EventKind::SessionStopped => out.extend_from_slice(b"{\"type\":\"session_stopped\"}"),
        EventKind::RunStarted => out.extend_from_slice(b"{\"type\":\"run_started\"}"),
        EventKind::StepStarted { attempt } => {
            out.extend_from_slice(b"{\"type\":\"step_started\",\"attempt\":");
            number(out, u64::from(*attempt));
            out.push(b'}');
        }
        EventKind::StepCompleted {
            attempt,
            execution_time,
        } => {
            out.extend_from_slice(b"{\"type\":\"step_completed\",\"attempt\":");
            number(out, u64::from(*attempt));
            out.extend_from_slice(b",\"execution_time\":");
            duration(out, *execution_time);
            out.push(b'}');
        }
        EventKind::Progress { value } => {
            out.extend_from_slice(b"{\"type\":\"progress\",\"value\":");
            number(out, u64::from(*value));
            out.push(b'}');
        }
        EventKind::RunCompleted { execution_time } => {
            out.extend_from_slice(b"{\"type\":\"run_completed\",\"execution_time\":");
            duration(out, *execution_time);
            out.push(b'}');
        }
        other => serde_json::to_writer(out, other)?,
    }
    Ok(())
}

/// A `Duration` as serde writes it.
fn duration(out: &mut Vec<u8>, d: Duration) {
    out.extend_from_slice(b"{\"secs\":");
    number(out, d.as_secs());
    out.extend_from_slice(b",\"nanos\":");
    number(out, u64::from(d.subsec_nanos()));
    out.push(b'}');
}

/// A JSON string: copied as is when nothing in it needs escaping (ids and processor names
/// never do), else escaped by serde_json.
fn string(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing a `str` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(out, text);
    }
}

fn number(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // `n % 10` is below 10.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::{Error, RunId, SessionId};

    fn kinds() -> Vec<EventKind> {
        vec![
            EventKind::SessionCreated,
            EventKind::SessionStopped,
            EventKind::RunStarted,
            EventKind::StepStarted { attempt: 1 },
            EventKind::StepStarted { attempt: u32::MAX },
            EventKind::StepCompleted {
                attempt: 3,
                execution_time: Duration::new(12, 345),
            },
            EventKind::StepFailed {
                attempt: 2,
                error: Error::validation("input", "bad \"quote\"\n"),
            },
            EventKind::StepRetrying {
                attempt: 1,
                next_attempt: 2,
                delay: Duration::from_millis(250),
                error: Error::execution("step", "timed out"),
            },
            EventKind::Progress { value: 0 },
            EventKind::Custom {
                name: "tick".into(),
                payload: serde_json::json!({"a": [1, "x\u{1}"]}),
            },
            EventKind::RunCompleted {
                execution_time: Duration::new(u64::MAX, 999_999_999),
            },
            EventKind::RunFailed {
                error: Error::validation("run", "no"),
            },
        ]
    }

    /// Every kind, with and without a run and a processor, at several times, and with names
    /// that need escaping: the same bytes as serde's, and they read back as the event.
    #[test]
    fn events_are_written_as_serde_writes_them() {
        let times = [
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::new(1_796_287_120, 819_424_924),
            SystemTime::now(),
        ];
        let processors: [Option<Cow<'static, str>>; 4] = [
            None,
            Some(Cow::Borrowed("noop")),
            Some(Cow::Owned("with \"quotes\" and \\ and \u{7}".to_owned())),
            Some(Cow::Borrowed("ünïcødé")),
        ];
        let mut checked = 0;
        for kind in kinds() {
            for (i, processor) in processors.iter().enumerate() {
                for at in times {
                    let event = Event {
                        session: SessionId::new(format!("tenant-{i}")).unwrap(),
                        run_id: (i % 2 == 1).then(RunId::generate),
                        processor: processor.clone(),
                        at,
                        kind: kind.clone(),
                    };
                    let mut fast = Vec::new();
                    write_event(&mut fast, &event).unwrap();
                    let serde = serde_json::to_vec(&event).unwrap();
                    assert_eq!(
                        String::from_utf8(fast.clone()).unwrap(),
                        String::from_utf8(serde).unwrap()
                    );
                    assert_eq!(serde_json::from_slice::<Event>(&fast).unwrap(), event);
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 12 * 4 * 3);
    }

    /// A time before the epoch is refused as serde refuses it, and nothing half-written is
    /// left to the caller to trust.
    #[test]
    fn a_time_before_the_epoch_is_an_error() {
        let event = Event {
            session: SessionId::new("s").unwrap(),
            run_id: None,
            processor: None,
            at: SystemTime::UNIX_EPOCH - Duration::from_secs(1),
            kind: EventKind::RunStarted,
        };
        assert!(write_event(&mut Vec::new(), &event).is_err());
    }
}
