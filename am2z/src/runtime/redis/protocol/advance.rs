//! `advance.lua` (commit one job of a run executed step by step, with what follows it) and
//! `stage.lua` (a new map instance's held items, before that commit).

use std::time::Duration;

use super::claim::LeasedJob;
use super::schedule::Generation;
use super::{Fields, Redis, ScriptDef, Token, WireError, millis, session_call, status};
use crate::RunId;
use crate::runtime::redis::keys::{JobId, SessionKeys};

pub(crate) static ADVANCE: ScriptDef = ScriptDef::new(
    "advance",
    include_str!("../scripts/advance.lua"),
    &["run_key"],
    &[
        "job",
        "token",
        "run",
        "step_fp",
        "version_delta",
        "attempts_delta",
        "entry",
        "hand_off_ms",
        "done_channel",
        "session_ttl",
        "events_channel",
        "events_max_len",
        "outcome",
        "ok",
        "done",
        "run_event",
        "successors",
        "arrivals",
        "held",
        "consumed",
    ],
);

pub(crate) static STAGE: ScriptDef = ScriptDef::new(
    "stage",
    include_str!("../scripts/stage.lua"),
    &["run_key"],
    &["job", "token", "run"],
);

/// A job to create: its id, body, and the fan-out instances above it (it is not created
/// when one of them closed).
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    pub(crate) id: JobId,
    pub(crate) body: Vec<u8>,
    pub(crate) guards: Vec<String>,
}

impl NewJob {
    /// The job as one packed record of a held item (`advance.lua` unpacks it without
    /// decoding the body): `<id>\n<guards>\n<length>\n<body>`.
    pub(crate) fn pack_into(&self, packed: &mut Vec<u8>) {
        packed.extend_from_slice(self.id.to_string().as_bytes());
        packed.push(b'\n');
        packed.extend_from_slice(self.guards.join(" ").as_bytes());
        packed.push(b'\n');
        packed.extend_from_slice(self.body.len().to_string().as_bytes());
        packed.push(b'\n');
        packed.extend_from_slice(&self.body);
    }
}

/// A branch's arrival at a fan-out instance.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    pub(crate) instance: String,
    pub(crate) branch: usize,
    pub(crate) expected: usize,
    /// The branch's result as the join reads it (`{"Ok": ...}` / `{"Err": ...}`).
    pub(crate) result: String,
    /// The instances above the fan-out (an arrival under a closed one is ignored).
    pub(crate) guards: Vec<String>,
    /// The join job, created by the arrival that completes the instance (or at once by a
    /// closing one).
    pub(crate) join: NewJob,
    /// A failed branch of a fail-fast parallel: it closes the instance.
    pub(crate) closes: bool,
}

/// A new map instance whose items from `first` to `last` are held (staged before).
#[derive(Debug, Clone)]
pub(crate) struct HeldInstance {
    pub(crate) instance: String,
    pub(crate) first: usize,
    pub(crate) last: usize,
}

/// The run's end, when the job ends it.
#[derive(Debug, Clone)]
pub(crate) struct RunEnd {
    pub(crate) outcome: String,
    pub(crate) ok: bool,
    pub(crate) done: String,
    /// The run's `RunCompleted`/`RunFailed` event (JSON).
    pub(crate) event: String,
}

/// Commits one job of a run executed step by step.
pub(crate) struct Advance<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) job: JobId,
    pub(crate) token: Token,
    /// The fingerprint of the run's step jobs.
    pub(crate) step_fp: &'a str,
    pub(crate) version_delta: u64,
    pub(crate) attempts_delta: u32,
    pub(crate) entry: bool,
    /// Hand the first successor to the committing worker with this lease.
    pub(crate) hand_off: Option<Duration>,
    pub(crate) done_channel: &'a str,
    pub(crate) session_ttl: Duration,
    pub(crate) events_channel: &'a str,
    pub(crate) events_max_len: u64,
    pub(crate) end: Option<&'a RunEnd>,
    pub(crate) successors: &'a [NewJob],
    pub(crate) arrivals: &'a [Arrival],
    pub(crate) held: &'a [HeldInstance],
    /// How many chunks the committing job's input was staged in (its `v:<job>:<n>` fields,
    /// which the commit frees).
    pub(crate) consumed: u32,
}

/// What the commit did.
#[derive(Debug)]
pub(crate) enum Advanced {
    /// Stale token, not leased, or the session is stopping: nothing written.
    Refused,
    /// The run had already ended: the job is gone, nothing else.
    Moot,
    /// Staged held items are missing: nothing written (stage them again).
    Unstaged,
    Committed {
        /// This commit ended the run.
        ended: bool,
        /// The session got ready jobs: enlist it with this generation.
        enlist: Option<Generation>,
        /// Fail-fast instances this commit closed (their running jobs are to be cancelled).
        closed: Vec<String>,
        /// The run ended while jobs of it still run (to be cancelled).
        cancel_run: bool,
        /// The successor leased to the committing worker.
        handed: Option<Box<LeasedJob>>,
    },
}

impl Advance<'_> {
    fn run(&self) -> RunId {
        self.job.run
    }

    pub(crate) fn invocation(&self) -> redis::ScriptInvocation<'static> {
        let mut call = session_call(&ADVANCE, self.session);
        call.key(self.session.run(self.run()));
        let (outcome, ok, done, event) = match self.end {
            Some(end) => (
                end.outcome.as_str(),
                end.ok,
                end.done.as_str(),
                end.event.as_str(),
            ),
            None => ("", false, "", ""),
        };
        call.arg(self.job.to_string())
            .arg(self.token)
            .arg(self.run().to_string())
            .arg(self.step_fp)
            .arg(self.version_delta)
            .arg(self.attempts_delta)
            .arg(if self.entry { "1" } else { "0" })
            .arg(self.hand_off.map_or(0, millis))
            .arg(self.done_channel)
            .arg(millis(self.session_ttl))
            .arg(self.events_channel)
            .arg(self.events_max_len)
            .arg(outcome)
            .arg(if ok { "1" } else { "0" })
            .arg(done)
            .arg(event)
            .arg(self.successors.len())
            .arg(self.arrivals.len())
            .arg(self.held.len())
            .arg(self.consumed);
        for job in self.successors {
            call.arg(job.id.to_string())
                .arg(&job.body)
                .arg(job.guards.join(" "));
        }
        for arrival in self.arrivals {
            call.arg(&arrival.instance)
                .arg(arrival.branch)
                .arg(arrival.expected)
                .arg(&arrival.result)
                .arg(arrival.guards.join(" "))
                .arg(arrival.join.id.to_string())
                .arg(&arrival.join.body)
                .arg(if arrival.closes { "1" } else { "0" });
        }
        for held in self.held {
            call.arg(&held.instance).arg(held.first).arg(held.last);
        }
        call
    }

    pub(crate) fn read(reply: redis::Value) -> Result<Advanced, WireError> {
        let mut fields = Fields::parse("advance", reply)?;
        let advanced = match status(
            &mut fields,
            "advance",
            &["ok", "refused", "moot", "unstaged"],
        )?
        .as_str()
        {
            "refused" => Advanced::Refused,
            "moot" => Advanced::Moot,
            "unstaged" => Advanced::Unstaged,
            _ => Advanced::Committed {
                ended: fields.flag("ended")?,
                // How many jobs it queued: what `enlist` already says, for the session.
                enlist: {
                    fields.count("queued")?;
                    Generation::of(fields.count("enlist")?)
                },
                closed: fields.texts("closed")?,
                cancel_run: fields.flag("cancel_run")?,
                handed: fields
                    .record("handed")?
                    .map(|job| LeasedJob::read(job, "advance").map(Box::new))
                    .transpose()?,
            },
        };
        fields.finish()?;
        Ok(advanced)
    }
}

/// Stores fields in a live run's hash before the commit that uses them (held map items,
/// chunks of big values between steps), fenced by the committing job's lease.
pub(crate) struct Stage<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) job: JobId,
    pub(crate) token: Token,
    pub(crate) fields: &'a [(String, Vec<u8>)],
}

impl Stage<'_> {
    /// Whether the fields were stored (`false`: the lease is lost, the run ended, or the
    /// session is stopping).
    pub(crate) async fn call(&self, redis: &Redis) -> Result<bool, WireError> {
        let mut call = session_call(&STAGE, self.session);
        call.key(self.session.run(self.job.run))
            .arg(self.job.to_string())
            .arg(self.token)
            .arg(self.job.run.to_string());
        for (field, value) in self.fields {
            call.arg(field).arg(value);
        }
        let mut fields = redis.run_fenced(&STAGE, &call).await?;
        let stored = status(&mut fields, "stage", &["ok", "refused"])? == "ok";
        fields.finish()?;
        Ok(stored)
    }
}
