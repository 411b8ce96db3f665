//! `commit.lua` (end runs executed as one job each), `park.lua` (a job waits in Redis) and
//! `call_return.lua` (a caller's child call ended).

use std::time::Duration;

use super::{Redis, ScriptDef, Token, WireError, millis, session_call, status};
use crate::runtime::redis::keys::{JobId, SessionKeys};

pub(crate) static COMMIT: ScriptDef = ScriptDef::new(
    "commit",
    include_str!("../scripts/commit.lua"),
    &[],
    &["done_channel", "session_ttl", "dead_max_len"],
);

pub(crate) static PARK: ScriptDef = ScriptDef::new(
    "park",
    include_str!("../scripts/park.lua"),
    &[],
    &["job", "token", "attempt", "wait_ms", "attempts"],
);

pub(crate) static CALL_RETURN: ScriptDef = ScriptDef::new(
    "call_return",
    include_str!("../scripts/call_return.lua"),
    &[],
    &["job", "token"],
);

/// One run's end, fenced by its job's lease.
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    pub(crate) job: JobId,
    pub(crate) token: Token,
    /// The stored outcome (JSON).
    pub(crate) outcome: String,
    pub(crate) ok: bool,
    /// The job's input could not be decoded: the run is dead-lettered with its outcome.
    pub(crate) dead: bool,
    /// The `done` message (`messages::Done`).
    pub(crate) done: String,
}

/// Ends runs executed as one job each, in one session.
pub(crate) struct Commit<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) done_channel: &'a str,
    pub(crate) session_ttl: Duration,
    pub(crate) dead_max_len: u64,
    pub(crate) endings: &'a [Ending],
}

impl Commit<'_> {
    /// The invocation (sent alone, or in the forwarder's pipeline behind the runs' events).
    pub(crate) fn invocation(&self) -> redis::ScriptInvocation<'static> {
        let mut call = session_call(&COMMIT, self.session);
        call.arg(self.done_channel)
            .arg(millis(self.session_ttl))
            .arg(self.dead_max_len);
        for ending in self.endings {
            call.arg(ending.job.to_string())
                .arg(ending.token)
                .arg(&ending.outcome)
                .arg(if ending.ok { "1" } else { "0" })
                .arg(if ending.dead { "1" } else { "0" })
                .arg(&ending.done);
        }
        call
    }

    /// Per ending (of `endings`), whether it was committed (`false`: refused, nothing
    /// written for it).
    pub(crate) fn read(reply: redis::Value, endings: usize) -> Result<Vec<bool>, WireError> {
        let mut fields = super::Fields::parse("commit", reply)?;
        let results = fields
            .texts("results")?
            .iter()
            .map(|r| match r.as_str() {
                "committed" => Ok(true),
                "refused" => Ok(false),
                other => Err(WireError::reply("commit", format!("result `{other}`"))),
            })
            .collect::<Result<Vec<bool>, _>>()?;
        fields.finish()?;
        if results.len() != endings {
            return Err(WireError::reply(
                "commit",
                format!("{} results for {endings} jobs", results.len()),
            ));
        }
        Ok(results)
    }
}

/// A leased job waits `wait` in Redis, then resumes at `attempt`.
pub(crate) struct Park<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) job: JobId,
    pub(crate) token: Token,
    pub(crate) attempt: u32,
    pub(crate) wait: Duration,
    /// Attempts the job made before it waits.
    pub(crate) attempts: u32,
}

impl Park<'_> {
    pub(crate) fn invocation(&self) -> redis::ScriptInvocation<'static> {
        let mut call = session_call(&PARK, self.session);
        call.arg(self.job.to_string())
            .arg(self.token)
            .arg(self.attempt)
            .arg(millis(self.wait))
            .arg(self.attempts);
        call
    }

    /// When the job is due (ms on Redis' clock), or `None` when the park was refused.
    pub(crate) fn read(reply: redis::Value) -> Result<Option<u64>, WireError> {
        let mut fields = super::Fields::parse("park", reply)?;
        let due = fields.count("due")?;
        fields.finish()?;
        Ok((due > 0).then_some(due))
    }
}

/// A caller whose child call ended counts in its session's concurrency quota again.
pub(crate) struct CallReturn<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) job: JobId,
    pub(crate) token: Token,
}

impl CallReturn<'_> {
    /// Whether the caller still holds its lease.
    pub(crate) async fn call(&self, redis: &Redis) -> Result<bool, WireError> {
        let mut call = session_call(&CALL_RETURN, self.session);
        call.arg(self.job.to_string()).arg(self.token);
        let mut fields = redis.run_fenced(&CALL_RETURN, &call).await?;
        let held = status(&mut fields, "call_return", &["ok", "lost"])? == "ok";
        fields.finish()?;
        Ok(held)
    }
}
