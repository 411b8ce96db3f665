//! The fair schedule and the session registry (global keys under `{:registry}`):
//! `register.lua`, `forget.lua`, `enlist.lua`, `retire.lua`, `pick.lua`.

use super::{Fields, Redis, ScriptDef, WireError};
use crate::SessionId;
use crate::runtime::redis::keys::Keys;

pub(crate) static REGISTER: ScriptDef = ScriptDef::new(
    "register",
    include_str!("../scripts/register.lua"),
    &["sessions_key"],
    &["session"],
);

pub(crate) static FORGET: ScriptDef = ScriptDef::new(
    "forget",
    include_str!("../scripts/forget.lua"),
    &["sessions_key", "sched_key", "gens_key"],
    &["session", "score", "min_age_ms"],
);

pub(crate) static ENLIST: ScriptDef = ScriptDef::new(
    "enlist",
    include_str!("../scripts/enlist.lua"),
    &["sched_key", "gens_key"],
    &["session", "generation", "wake_channel", "wake"],
);

pub(crate) static RETIRE: ScriptDef = ScriptDef::new(
    "retire",
    include_str!("../scripts/retire.lua"),
    &["sched_key", "gens_key"],
    &["session", "generation"],
);

pub(crate) static PICK: ScriptDef = ScriptDef::new(
    "pick",
    include_str!("../scripts/pick.lua"),
    &["sched_key"],
    &["charge"],
);

/// A session's scheduling generation (Redis' clock in µs when it got ready jobs; see
/// `scripts/include/ready.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Generation(pub(crate) u64);

impl Generation {
    /// `n` as a generation (`None` for 0: no generation).
    pub(crate) fn of(n: u64) -> Option<Generation> {
        (n > 0).then_some(Generation(n))
    }
}

fn one(fields: &mut Fields, name: &str) -> Result<bool, WireError> {
    fields.flag(name)
}

/// Registers `session`; returns the registration's score.
pub(crate) async fn register(
    redis: &Redis,
    keys: &Keys,
    session: &SessionId,
) -> Result<u64, WireError> {
    let mut call = REGISTER.script().prepare_invoke();
    call.key(keys.sessions()).arg(session.as_str());
    let mut fields = redis.run_durable(&REGISTER, &call).await?;
    let score = fields.count("score")?;
    fields.finish()?;
    Ok(score)
}

/// Forgets a gone `session`, unless it was registered again after `score` was read, or less
/// than `min_age` ago (a submission may be creating it).
pub(crate) async fn forget(
    redis: &Redis,
    keys: &Keys,
    session: &str,
    score: u64,
    min_age: std::time::Duration,
) -> Result<bool, WireError> {
    let mut call = FORGET.script().prepare_invoke();
    call.key(keys.sessions())
        .key(keys.sched())
        .key(keys.gens())
        .arg(session)
        .arg(score)
        .arg(super::millis(min_age));
    let mut fields = redis.run(&FORGET, &call).await?;
    let forgotten = one(&mut fields, "forgotten")?;
    fields.finish()?;
    Ok(forgotten)
}

/// Schedules `session`, whose ready jobs have generation `generation`, and wakes idle workers;
/// returns whether it was added.
pub(crate) async fn enlist(
    redis: &Redis,
    keys: &Keys,
    session: &SessionId,
    generation: Generation,
) -> Result<bool, WireError> {
    let mut call = ENLIST.script().prepare_invoke();
    let wake = super::messages::Wake {
        session: session.clone(),
    };
    call.key(keys.sched())
        .key(keys.gens())
        .arg(session.as_str())
        .arg(generation.0)
        .arg(keys.wake_channel())
        .arg(wake.to_string());
    let mut fields = redis.run(&ENLIST, &call).await?;
    let enlisted = one(&mut fields, "enlisted")?;
    fields.finish()?;
    Ok(enlisted)
}

/// Takes `session` out of the schedule, unless ready jobs newer than `generation` were enlisted.
pub(crate) async fn retire(
    redis: &Redis,
    keys: &Keys,
    session: &SessionId,
    generation: Generation,
) -> Result<bool, WireError> {
    let mut call = RETIRE.script().prepare_invoke();
    call.key(keys.sched())
        .key(keys.gens())
        .arg(session.as_str())
        .arg(generation.0);
    let mut fields = redis.run(&RETIRE, &call).await?;
    let retired = one(&mut fields, "retired")?;
    fields.finish()?;
    Ok(retired)
}

/// What `pick.lua` answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Picked {
    /// The session charged a claim (`None`: no session has ready jobs).
    pub(crate) session: Option<String>,
    /// How many sessions are scheduled.
    pub(crate) scheduled: u64,
}

/// Picks the least-served session (or charges `charge`, the session a wake named) and charges
/// it one claim.
pub(crate) async fn pick(
    redis: &Redis,
    keys: &Keys,
    charge: Option<&SessionId>,
) -> Result<Picked, WireError> {
    let mut call = PICK.script().prepare_invoke();
    call.key(keys.sched())
        .arg(charge.map_or("", SessionId::as_str));
    let mut fields = redis.run(&PICK, &call).await?;
    let session = fields.text("session")?;
    let picked = Picked {
        session: Some(session).filter(|s| !s.is_empty()),
        scheduled: fields.count("scheduled")?,
    };
    fields.finish()?;
    Ok(picked)
}
