//! Processor limits across workers: `admit.lua` and `hold.lua` (concurrency permits),
//! `rate.lua` (a sliding log of starts).

use std::time::Duration;

use super::{Redis, ScriptDef, WireError, millis};

pub(crate) static ADMIT: ScriptDef = ScriptDef::new(
    "admit",
    include_str!("../scripts/admit.lua"),
    &["permits_key"],
    &["permit", "limit", "hold_ms"],
);

pub(crate) static HOLD: ScriptDef = ScriptDef::new(
    "hold",
    include_str!("../scripts/hold.lua"),
    &["permits_key"],
    &["hold_ms"],
);

pub(crate) static RATE: ScriptDef = ScriptDef::new(
    "rate",
    include_str!("../scripts/rate.lua"),
    &["starts_key"],
    &["start", "max", "window_ms"],
);

/// Takes permit `permit` of `key` (at most `limit` held at once), held for `hold` unless
/// renewed; returns whether it was free.
pub(crate) async fn admit(
    redis: &Redis,
    key: &str,
    permit: &str,
    limit: u32,
    hold: Duration,
) -> Result<bool, WireError> {
    let mut call = ADMIT.script().prepare_invoke();
    call.key(key).arg(permit).arg(limit).arg(millis(hold));
    let mut fields = redis.run(&ADMIT, &call).await?;
    let admitted = fields.flag("admitted")?;
    fields.finish()?;
    Ok(admitted)
}

/// Extends the `permits` of `key` by `hold`; returns how many were still held.
pub(crate) async fn hold(
    redis: &Redis,
    key: &str,
    permits: &[String],
    hold: Duration,
) -> Result<u64, WireError> {
    let mut call = HOLD.script().prepare_invoke();
    call.key(key).arg(millis(hold)).arg(permits);
    let mut fields = redis.run(&HOLD, &call).await?;
    let held = fields.count("held")?;
    fields.finish()?;
    Ok(held)
}

/// Takes a start from `key`'s sliding log (`max` per `window`): `None` to start now, else
/// how long to wait before asking again.
pub(crate) async fn rate(
    redis: &Redis,
    key: &str,
    start: &str,
    max: u32,
    window: Duration,
) -> Result<Option<Duration>, WireError> {
    let mut call = RATE.script().prepare_invoke();
    call.key(key).arg(start).arg(max).arg(millis(window).max(1));
    let mut fields = redis.run(&RATE, &call).await?;
    let wait = fields.count("wait_ms")?;
    fields.finish()?;
    Ok((wait > 0).then(|| Duration::from_millis(wait)))
}
