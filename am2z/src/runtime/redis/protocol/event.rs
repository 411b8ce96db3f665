//! `event.lua`: a batch of one session's events into its stream, and to live subscribers.

use super::{Fields, ScriptDef, WireError, session_call};
use crate::runtime::redis::keys::SessionKeys;

pub(crate) static EVENT: ScriptDef = ScriptDef::new(
    "event",
    include_str!("../scripts/event.lua"),
    &[],
    &["events_max_len", "events_channel"],
);

/// Appends `events` (JSON, and the stats field each counts, `""` for none) to one session's
/// stream.
pub(crate) struct Events<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) events_max_len: u64,
    pub(crate) events_channel: &'a str,
    pub(crate) events: &'a [(String, String)],
}

impl Events<'_> {
    pub(crate) fn invocation(&self) -> redis::ScriptInvocation<'static> {
        let mut call = session_call(&EVENT, self.session);
        call.arg(self.events_max_len).arg(self.events_channel);
        for (json, field) in self.events {
            call.arg(json).arg(field);
        }
        call
    }

    /// Whether the events were stored (`false`: the session is gone or stopping; they were
    /// only published).
    pub(crate) fn read(reply: redis::Value) -> Result<bool, WireError> {
        let mut fields = Fields::parse("event", reply)?;
        let stored = fields.flag("stored")?;
        fields.finish()?;
        Ok(stored)
    }
}
