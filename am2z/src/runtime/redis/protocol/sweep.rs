//! `sweep.lua` (look after one session's leases, queue and ended outcomes) and `bury.lua`
//! (end the run of a job that cannot be run).

use std::time::Duration;

use super::schedule::Generation;
use super::{Redis, ScriptDef, WireError, millis, session_call, status};
use crate::runtime::redis::keys::{JobId, SessionKeys};

pub(crate) static SWEEP: ScriptDef = ScriptDef::new(
    "sweep",
    include_str!("../scripts/sweep.lua"),
    &[],
    &[
        "max_deliveries",
        "backoff_ms",
        "backoff_max_ms",
        "grace_ms",
        "fleet_ready",
        "result_ttl",
    ],
);

pub(crate) static BURY: ScriptDef = ScriptDef::new(
    "bury",
    include_str!("../scripts/bury.lua"),
    &["run_key"],
    &[
        "job",
        "reason",
        "max_deliveries",
        "grace_ms",
        "done_channel",
        "done",
        "session_ttl",
        "dead_max_len",
    ],
);

/// Looks after one session.
pub(crate) struct Sweep<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) max_deliveries: u32,
    pub(crate) backoff: Duration,
    pub(crate) backoff_max: Duration,
    /// The unserved rule: the grace (`None`: off), whether live workers have existed for the
    /// whole grace, and the contracts some live worker served within it.
    pub(crate) unserved: Option<(Duration, bool, &'a [String])>,
    pub(crate) result_ttl: Duration,
}

/// A session's state, as the sweeper found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionState {
    /// It has live runs.
    Live,
    /// It has no live run (it expires by itself).
    Idle,
    /// It does not exist (stopped, or expired).
    Gone,
    /// A stop is under way.
    Stopping,
    /// A stop whose stopper stopped renewing it: the sweeper finishes it.
    Abandoned,
}

#[derive(Debug)]
pub(crate) struct Swept {
    pub(crate) state: SessionState,
    pub(crate) requeued: u64,
    /// Jobs leased too often, expired: to dead-letter.
    pub(crate) dead: Vec<JobId>,
    /// Jobs no live worker could serve for the grace: to fail.
    pub(crate) unserved: Vec<JobId>,
    /// The earliest lease deadline, if any (ms, Redis' clock).
    pub(crate) next_lease: Option<u64>,
    /// The earliest due delayed job, if any.
    pub(crate) next_due: Option<u64>,
    /// The session has ready jobs of this generation (enlist it, should its enlist be lost).
    pub(crate) ready: Option<Generation>,
}

impl Sweep<'_> {
    pub(crate) async fn call(&self, redis: &Redis) -> Result<Swept, WireError> {
        let mut call = session_call(&SWEEP, self.session);
        let (grace, fleet_ready, served) = match self.unserved {
            Some((grace, ready, served)) => (millis(grace), ready, served),
            None => (0, false, &[][..]),
        };
        call.arg(self.max_deliveries)
            .arg(millis(self.backoff))
            .arg(millis(self.backoff_max))
            .arg(grace)
            .arg(if fleet_ready { "1" } else { "0" })
            .arg(millis(self.result_ttl))
            .arg(served);
        let mut fields = redis.run(&SWEEP, &call).await?;
        let jobs = |ids: Vec<String>| {
            ids.iter()
                .map(|id| {
                    JobId::parse(id).ok_or_else(|| WireError::reply("sweep", format!("job `{id}`")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let state = match fields.text("state")?.as_str() {
            "live" => SessionState::Live,
            "idle" => SessionState::Idle,
            "gone" => SessionState::Gone,
            "stopping" => SessionState::Stopping,
            "abandoned" => SessionState::Abandoned,
            other => return Err(WireError::reply("sweep", format!("state `{other}`"))),
        };
        let swept = Swept {
            state,
            requeued: fields.count("requeued")?,
            dead: jobs(fields.texts("dead")?)?,
            unserved: jobs(fields.texts("unserved")?)?,
            next_lease: Some(fields.count("next_lease")?).filter(|t| *t > 0),
            next_due: Some(fields.count("next_due")?).filter(|t| *t > 0),
            ready: Generation::of(fields.count("ready")?),
        };
        fields.finish()?;
        Ok(swept)
    }
}

/// Why a job is buried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Burial {
    /// Leased too often: its workers died or froze each time.
    Dead,
    /// Queued with no live worker able to run it.
    Unserved,
}

/// Ends the run of a job that cannot be run.
pub(crate) struct Bury<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) job: JobId,
    pub(crate) reason: Burial,
    pub(crate) max_deliveries: u32,
    pub(crate) grace: Duration,
    pub(crate) done_channel: &'a str,
    pub(crate) done: &'a str,
    pub(crate) session_ttl: Duration,
    pub(crate) dead_max_len: u64,
}

/// What a burial did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buried {
    /// The job's run ended here.
    Ended,
    /// The job was dropped; its run had already ended.
    Dropped,
    /// The job moved on since the sweep: nothing done.
    Kept,
}

impl Bury<'_> {
    pub(crate) async fn call(&self, redis: &Redis) -> Result<Buried, WireError> {
        let mut call = session_call(&BURY, self.session);
        call.key(self.session.run(self.job.run))
            .arg(self.job.to_string())
            .arg(match self.reason {
                Burial::Dead => "dead",
                Burial::Unserved => "unserved",
            })
            .arg(self.max_deliveries)
            .arg(millis(self.grace))
            .arg(self.done_channel)
            .arg(self.done)
            .arg(millis(self.session_ttl))
            .arg(self.dead_max_len);
        let mut fields = redis.run(&BURY, &call).await?;
        let buried = match status(&mut fields, "bury", &["ended", "dropped", "kept"])?.as_str() {
            "ended" => Buried::Ended,
            "dropped" => Buried::Dropped,
            _ => Buried::Kept,
        };
        fields.finish()?;
        Ok(buried)
    }
}
