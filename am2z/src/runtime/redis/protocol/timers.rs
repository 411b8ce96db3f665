//! The promoter's and the sweeper's timers (global keys `{:timers}` and `{:leasing}`):
//! `due.lua`, `arm.lua`, `settle.lua`, `leases_due.lua`, and `watch` (one plain `ZADD`).

use super::{Redis, ScriptDef, WireError};
use crate::SessionId;
use crate::runtime::redis::keys::Keys;

pub(crate) static DUE: ScriptDef = ScriptDef::new(
    "due",
    include_str!("../scripts/due.lua"),
    &["timers_key"],
    &["most"],
);

pub(crate) static ARM: ScriptDef = ScriptDef::new(
    "arm",
    include_str!("../scripts/arm.lua"),
    &["timers_key"],
    &["session", "due"],
);

pub(crate) static SETTLE: ScriptDef = ScriptDef::new(
    "settle",
    include_str!("../scripts/settle.lua"),
    &["leasing_key"],
    &["session", "next_lease"],
);

pub(crate) static LEASES_DUE: ScriptDef = ScriptDef::new(
    "leases_due",
    include_str!("../scripts/leases_due.lua"),
    &["leasing_key"],
    &["most"],
);

async fn sessions(
    redis: &Redis,
    def: &'static ScriptDef,
    key: String,
    most: usize,
) -> Result<Vec<String>, WireError> {
    let mut call = def.script().prepare_invoke();
    call.key(key).arg(most);
    let mut fields = redis.run(def, &call).await?;
    let sessions = fields.texts("sessions")?;
    fields.finish()?;
    Ok(sessions)
}

/// Takes up to `most` sessions whose earliest delayed job is due.
pub(crate) async fn due(redis: &Redis, keys: &Keys, most: usize) -> Result<Vec<String>, WireError> {
    sessions(redis, &DUE, keys.timers(), most).await
}

/// The sessions whose earliest lease deadline passed (at most `most`).
pub(crate) async fn leases_due(
    redis: &Redis,
    keys: &Keys,
    most: usize,
) -> Result<Vec<String>, WireError> {
    sessions(redis, &LEASES_DUE, keys.leasing(), most).await
}

async fn ack(
    redis: &Redis,
    def: &'static ScriptDef,
    call: &redis::ScriptInvocation<'_>,
    name: &str,
) -> Result<bool, WireError> {
    let mut fields = redis.run(def, call).await?;
    let flag = fields.flag(name)?;
    fields.finish()?;
    Ok(flag)
}

/// Sets `session`'s promoter timer to `due` unless an earlier one is set.
pub(crate) async fn arm(
    redis: &Redis,
    keys: &Keys,
    session: &SessionId,
    due: u64,
) -> Result<(), WireError> {
    let mut call = ARM.script().prepare_invoke();
    call.key(keys.timers()).arg(session.as_str()).arg(due);
    ack(redis, &ARM, &call, "armed").await.map(drop)
}

/// Makes the sweeper look at `session` by `deadline`. Only ever moves the look earlier
/// (`ZADD LT`): a score already due stays due, so a busy session's claims cannot keep
/// postponing the sweep of a lease that already expired. One plain command: cheaper for
/// Redis than a script.
pub(crate) async fn watch(
    redis: &Redis,
    keys: &Keys,
    session: &SessionId,
    deadline: u64,
) -> Result<(), WireError> {
    let mut conn = redis.conn()?;
    redis::cmd("ZADD")
        .arg(keys.leasing())
        .arg("LT")
        .arg(deadline)
        .arg(session.as_str())
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

/// After a sweep of `session`: when to look next (`None`: it has no leases). Returns whether
/// the session is still watched.
pub(crate) async fn settle(
    redis: &Redis,
    keys: &Keys,
    session: &str,
    next_lease: Option<u64>,
) -> Result<bool, WireError> {
    let mut call = SETTLE.script().prepare_invoke();
    call.key(keys.leasing())
        .arg(session)
        .arg(next_lease.unwrap_or(0));
    ack(redis, &SETTLE, &call, "watched").await
}
