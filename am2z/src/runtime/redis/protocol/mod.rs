//! The wire protocol between the runtime and Redis: one module per Lua script (its keys, its
//! named arguments, one function that owns its invocation, and a reply type decoded by name),
//! the channel messages, the job body's encoding, and events as they are sent.
//!
//! Every script declares its keys and arguments as locals at its top; [`script`]'s tests read
//! those declarations and check them against the [`ScriptDef`] here, so the two cannot drift.
//! A script answers a flat list of `name, value` pairs; [`Fields`] takes each by name and
//! fails with a typed [`WireError`] on a missing, unexpected or mis-shaped field.

pub(crate) mod body;
pub(crate) mod events;
pub(crate) mod messages;
mod reply;
mod script;

pub(crate) mod advance;
pub(crate) mod claim;
pub(crate) mod commit;
pub(crate) mod finished;
pub(crate) mod inspect;
pub(crate) mod limits;
pub(crate) mod reads;
pub(crate) mod release;
pub(crate) mod schedule;
pub(crate) mod stop;
pub(crate) mod submit;
pub(crate) mod sweep;
pub(crate) mod timers;
pub(crate) mod workers;

pub(crate) use self::reply::{Fields, WireError};
pub(crate) use self::script::{Redis, ScriptDef};

/// A lease's fencing token: raised by every claim of a job, checked by every script that
/// acts on the lease.
pub(crate) type Token = u64;

use crate::runtime::redis::keys::SessionKeys;

/// Every script, for loading them all at start and for the protocol's tests.
pub(crate) fn all_scripts() -> Vec<&'static ScriptDef> {
    vec![
        &submit::SUBMIT,
        &claim::CLAIM,
        &claim::RENEW,
        &commit::COMMIT,
        &commit::PARK,
        &commit::CALL_RETURN,
        &advance::ADVANCE,
        &advance::STAGE,
        &release::RELEASE,
        &release::PROMOTE,
        &sweep::SWEEP,
        &sweep::BURY,
        &stop::STOP_BEGIN,
        &stop::STOP_RUNS,
        &stop::STOP_END,
        &schedule::REGISTER,
        &schedule::FORGET,
        &schedule::ENLIST,
        &schedule::RETIRE,
        &schedule::PICK,
        &workers::HEARTBEAT,
        &workers::CONTRACTS,
        &timers::DUE,
        &timers::ARM,
        &timers::SETTLE,
        &timers::LEASES_DUE,
        &limits::ADMIT,
        &limits::HOLD,
        &limits::RATE,
        &inspect::CANCEL,
    ]
}

/// An invocation of the session script `def` with the session's fixed keys in place.
fn session_call<'a>(def: &'a ScriptDef, keys: &SessionKeys) -> redis::ScriptInvocation<'a> {
    let mut call = def.script().prepare_invoke();
    for key in keys.fixed() {
        call.key(key);
    }
    call
}

/// The session script `def` as a plain `EVALSHA` command with the session's fixed keys, then
/// `own_keys`, in place, for the calls on the hot path: arguments are written straight into
/// the command (an invocation keeps each argument apart and copies them all again into the
/// command it sends). Sent in a pipeline, as invocations are there, it is not loaded on
/// `NOSCRIPT`: the pipeline's sender loads the scripts and sends it again.
fn session_command(def: &ScriptDef, keys: &SessionKeys, own_keys: &[String]) -> redis::Cmd {
    let fixed = keys.fixed();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(def.script().get_hash())
        .arg(fixed.len() + own_keys.len());
    for key in fixed.iter().chain(own_keys) {
        cmd.arg(key);
    }
    cmd
}

/// A reply's `status`, checked against what the script may answer.
fn status(fields: &mut Fields, script: &'static str, known: &[&str]) -> Result<String, WireError> {
    let status = fields.text("status")?;
    if known.contains(&status.as_str()) {
        Ok(status)
    } else {
        Err(WireError::reply(
            script,
            format!("unknown status `{status}`"),
        ))
    }
}

/// A duration in whole milliseconds, as scripts take them.
pub(crate) fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
