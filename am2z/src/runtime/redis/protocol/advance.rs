//! `advance.lua` (commit jobs of runs executed step by step, each with what follows it, one
//! call per session) and `stage.lua` (a new map instance's held items, before that commit).

use std::time::Duration;

use super::claim::LeasedJob;
use super::finished::{self, FinishedStep};
use super::schedule::Generation;
use super::{
    Fields, Redis, ScriptDef, Token, WireError, millis, session_call, session_command, status,
};
use crate::RunId;
use crate::runtime::redis::keys::{JobId, SessionKeys};

pub(crate) static ADVANCE: ScriptDef = ScriptDef::new(
    "advance",
    include_str!("../scripts/advance.lua"),
    &[],
    &[
        "done_channel",
        "session_ttl",
        "events_channel",
        "events_max_len",
        "commits",
        "fields",
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

/// The jobs a commit may hand to its committing worker: leased to it with `lease`, at most
/// `slots` of them (the worker's slots free for them, the committing job's own included), and
/// beyond the first only while the session's concurrency `quota` (0: none) has room.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandOff {
    pub(crate) lease: Duration,
    pub(crate) slots: usize,
    pub(crate) quota: u64,
}

/// A commit of a job of a run executed step by step (owned: it crosses the forwarder's
/// channel).
pub(crate) struct StepCommit {
    pub(crate) job: JobId,
    pub(crate) token: Token,
    /// The fingerprint of the run's step jobs.
    pub(crate) step_fp: String,
    pub(crate) version_delta: u64,
    pub(crate) attempts_delta: u32,
    pub(crate) entry: bool,
    /// Hand the first jobs the commit creates to the committing worker.
    pub(crate) hand_off: Option<HandOff>,
    pub(crate) end: Option<RunEnd>,
    pub(crate) successors: Vec<NewJob>,
    pub(crate) arrivals: Vec<Arrival>,
    pub(crate) held: Vec<HeldInstance>,
    /// How many chunks the committing job's input was staged in (its `v:<job>:<n>` fields,
    /// which the commit frees).
    pub(crate) consumed: u32,
    /// The steps the job finished, counted when the commit lands.
    pub(crate) finished: Vec<FinishedStep>,
}

impl StepCommit {
    fn run(&self) -> RunId {
        self.job.run
    }
}

/// Commits jobs of one session's runs executed step by step, in one call.
pub(crate) struct Advance<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) done_channel: &'a str,
    pub(crate) session_ttl: Duration,
    pub(crate) events_channel: &'a str,
    pub(crate) events_max_len: u64,
    pub(crate) commits: &'a [StepCommit],
}

/// What one commit did.
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
        /// The session got ready jobs: enlist it with this generation (given to the first
        /// commit of a call only: one enlist per call).
        enlist: Option<Generation>,
        /// Fail-fast instances this commit closed (their running jobs are to be cancelled).
        closed: Vec<String>,
        /// The run ended while jobs of it still run (to be cancelled).
        cancel_run: bool,
        /// The jobs leased to the committing worker (at most its [`HandOff::slots`]), in
        /// the order they were created.
        handed: Vec<LeasedJob>,
    },
}

impl Advance<'_> {
    /// The call as a command (sent in the forwarder's pipeline, after the session's
    /// `commit.lua`).
    pub(crate) fn command(&self) -> redis::Cmd {
        let runs: Vec<String> = self
            .commits
            .iter()
            .map(|commit| self.session.run(commit.run()))
            .collect();
        let (fields, steps) = finished::indexed(self.commits.iter().map(|c| &c.finished[..]));
        let mut call = session_command(&ADVANCE, self.session, &runs);
        call.arg(self.done_channel)
            .arg(millis(self.session_ttl))
            .arg(self.events_channel)
            .arg(self.events_max_len)
            .arg(self.commits.len())
            .arg(fields.len())
            .arg(fields);
        for (commit, steps) in self.commits.iter().zip(steps) {
            let (outcome, ok, done, event) = match &commit.end {
                Some(end) => (
                    end.outcome.as_str(),
                    end.ok,
                    end.done.as_str(),
                    end.event.as_str(),
                ),
                None => ("", false, "", ""),
            };
            call.arg(commit.job.to_string())
                .arg(commit.token)
                .arg(commit.run().to_string())
                .arg(&commit.step_fp)
                .arg(commit.version_delta)
                .arg(commit.attempts_delta)
                .arg(if commit.entry { "1" } else { "0" })
                .arg(commit.hand_off.map_or(0, |h| millis(h.lease)))
                .arg(commit.hand_off.map_or(0, |h| h.slots))
                .arg(commit.hand_off.map_or(0, |h| h.quota))
                .arg(outcome)
                .arg(if ok { "1" } else { "0" })
                .arg(done)
                .arg(event)
                .arg(commit.successors.len())
                .arg(commit.arrivals.len())
                .arg(commit.held.len())
                .arg(commit.consumed)
                .arg(steps);
            for job in &commit.successors {
                call.arg(job.id.to_string())
                    .arg(&job.body)
                    .arg(job.guards.join(" "));
            }
            for arrival in &commit.arrivals {
                call.arg(&arrival.instance)
                    .arg(arrival.branch)
                    .arg(arrival.expected)
                    .arg(&arrival.result)
                    .arg(arrival.guards.join(" "))
                    .arg(arrival.join.id.to_string())
                    .arg(&arrival.join.body)
                    .arg(if arrival.closes { "1" } else { "0" });
            }
            for held in &commit.held {
                call.arg(&held.instance).arg(held.first).arg(held.last);
            }
        }
        call
    }

    /// What each of `commits` commits did, in order.
    pub(crate) fn read(reply: redis::Value, commits: usize) -> Result<Vec<Advanced>, WireError> {
        let mut fields = Fields::parse("advance", reply)?;
        let mut enlist = Generation::of(fields.count("enlist")?);
        let records = fields.records("results")?;
        fields.finish()?;
        if records.len() != commits {
            return Err(WireError::reply(
                "advance",
                format!("{} results for {commits} commits", records.len()),
            ));
        }
        records
            .into_iter()
            .map(|mut fields| {
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
                        enlist: enlist.take(),
                        closed: fields.texts("closed")?,
                        cancel_run: fields.flag("cancel_run")?,
                        handed: fields
                            .rows("handed", LeasedJob::COLUMNS)?
                            .into_iter()
                            .map(|job| LeasedJob::read(job, "advance"))
                            .collect::<Result<_, _>>()?,
                    },
                };
                fields.finish()?;
                Ok(advanced)
            })
            .collect()
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
