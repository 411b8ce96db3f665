//! A per-session log that processors write to and tests read, so concurrent tests never see
//! each other's observations (each test uses its own session ids).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use am2z::Ctx;

fn log() -> MutexGuard<'static, HashMap<String, Vec<String>>> {
    static LOG: OnceLock<Mutex<HashMap<String, Vec<String>>>> = OnceLock::new();
    LOG.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Records `what` under the session of `ctx`.
pub fn record(ctx: &Ctx, what: impl Into<String>) {
    log()
        .entry(ctx.session_id().to_string())
        .or_default()
        .push(what.into());
}

/// Everything recorded under `session`, in order.
pub fn seen(session: &str) -> Vec<String> {
    log().get(session).cloned().unwrap_or_default()
}

/// The entries recorded under `session` that start with `prefix`, without the prefix.
pub fn seen_with(session: &str, prefix: &str) -> Vec<String> {
    seen(session)
        .into_iter()
        .filter_map(|entry| entry.strip_prefix(prefix).map(str::to_owned))
        .collect()
}

/// Records `what` under `session` (for code running outside the processor's context).
pub fn record_for(session: &am2z::SessionId, what: impl Into<String>) {
    log()
        .entry(session.to_string())
        .or_default()
        .push(what.into());
}
