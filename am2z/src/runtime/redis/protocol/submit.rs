//! `submit.lua`: queues new runs of one session.

use std::time::Duration;

use super::claim::LeasedJob;
use super::schedule::Generation;
use super::{Fields, Redis, ScriptDef, Token, WireError, millis, session_call, status};
use crate::RunId;
use crate::runtime::redis::keys::{JobId, SessionKeys};

pub(crate) static SUBMIT: ScriptDef = ScriptDef::new(
    "submit",
    include_str!("../scripts/submit.lua"),
    &[],
    &[
        "max_queued",
        "created_event",
        "events_channel",
        "events_max_len",
        "dedup",
        "caller",
        "caller_token",
        "lease_ms",
        "quota",
        "retry_of",
    ],
);

/// One run to queue.
pub(crate) struct NewRun<'a> {
    pub(crate) run: RunId,
    /// The contract fingerprint of the processor (its job's, see `served.rs`).
    pub(crate) fingerprint: &'a str,
    pub(crate) priority: i32,
    pub(crate) name: &'a str,
    /// Lease it to the submitter when it can start at once (nothing of the session queued
    /// ahead, room in the session's concurrency quota).
    pub(crate) lease: bool,
    /// The encoded body (`protocol::body`).
    pub(crate) body: &'a [u8],
}

/// Queues `runs` in one session.
pub(crate) struct Submit<'a> {
    pub(crate) session: &'a SessionKeys,
    /// The session's queue quota (0: none).
    pub(crate) max_queued: u64,
    /// The `SessionCreated` event (JSON), stored and published if this creates the session.
    pub(crate) created_event: &'a str,
    pub(crate) events_channel: &'a str,
    pub(crate) events_max_len: u64,
    /// A child call (`ctx.call` as a run): the calling job and its lease token. Its runs may
    /// exist already (the caller ran again), and the caller waits outside the quota.
    pub(crate) caller: Option<(JobId, Token)>,
    /// The lease of a run leased to the submitter.
    pub(crate) lease: Duration,
    /// The session's concurrency quota (0: none), which runs leased here respect.
    pub(crate) quota: u64,
    /// A retry: the failed or dead-lettered run that the one run of this call submits
    /// again, linked both ways, once.
    pub(crate) retry_of: Option<RunId>,
    pub(crate) runs: &'a [NewRun<'a>],
}

/// What became of one run of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunQueued {
    /// Queued for any worker.
    Queued,
    /// Leased to the submitter (its record is among `leased`).
    Leased,
    /// It existed already (a child call whose caller runs again).
    Duplicate,
    /// The session's queue is at its quota: nothing of it was written.
    Quota,
}

/// What a submission did.
#[derive(Debug)]
pub(crate) enum Submitted {
    /// Written: what became of each run, in order.
    Queued {
        /// The call created the session.
        created: bool,
        /// The session's epoch: which incarnation of its id the runs were queued in.
        epoch: u64,
        /// The session got ready jobs: enlist it with this generation.
        enlist: Option<Generation>,
        runs: Vec<RunQueued>,
        /// The runs leased to the submitter, in order (their bodies left empty: the
        /// submitter has them).
        leased: Vec<LeasedJob>,
    },
    /// The session is being stopped: nothing was written.
    Stopping,
    /// The calling job no longer holds its lease: nothing was written.
    CallerGone,
    /// A retry of a run that is neither failed nor dead-lettered: nothing was written.
    NotRetryable,
    /// A retry of a run retried already, by this run: nothing was written.
    Retried(RunId),
}

impl Submit<'_> {
    pub(crate) async fn call(&self, redis: &Redis) -> Result<Submitted, WireError> {
        let mut call = session_call(&SUBMIT, self.session);
        let (caller, token) = match &self.caller {
            Some((job, token)) => (job.to_string(), token.to_string()),
            None => (String::new(), String::new()),
        };
        call.arg(self.max_queued)
            .arg(self.created_event)
            .arg(self.events_channel)
            .arg(self.events_max_len)
            .arg(if self.caller.is_some() { "1" } else { "0" })
            .arg(caller)
            .arg(token)
            .arg(millis(self.lease))
            .arg(self.quota)
            .arg(self.retry_of.map(|run| run.to_string()).unwrap_or_default());
        for run in self.runs {
            call.arg(run.run.to_string())
                .arg(run.fingerprint)
                .arg(run.priority)
                .arg(run.name)
                .arg(if run.lease { "1" } else { "0" })
                .arg(run.body);
        }
        let fields = redis.run_durable(&SUBMIT, &call).await?;
        Submitted::read(fields, self.runs.len())
    }
}

impl Submitted {
    fn read(mut fields: Fields, runs: usize) -> Result<Self, WireError> {
        let submitted = match status(
            &mut fields,
            "submit",
            &["ok", "stopping", "caller_gone", "not_retryable", "retried"],
        )?
        .as_str()
        {
            "ok" => {
                let created = fields.flag("created")?;
                let epoch = fields.count("epoch")?;
                let enlist = Generation::of(fields.count("enlist")?);
                let statuses = fields.texts("runs")?;
                if statuses.len() != runs {
                    return Err(WireError::reply(
                        "submit",
                        format!("{} statuses for {runs} runs", statuses.len()),
                    ));
                }
                let runs = statuses
                    .iter()
                    .map(|s| match s.as_str() {
                        "queued" => Ok(RunQueued::Queued),
                        "leased" => Ok(RunQueued::Leased),
                        "duplicate" => Ok(RunQueued::Duplicate),
                        "quota" => Ok(RunQueued::Quota),
                        other => Err(WireError::reply("submit", format!("run status `{other}`"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let leased = fields
                    .rows("leased", LeasedJob::COLUMNS)?
                    .into_iter()
                    .map(|record| LeasedJob::read(record, "submit"))
                    .collect::<Result<Vec<_>, _>>()?;
                let expected = runs.iter().filter(|r| **r == RunQueued::Leased).count();
                if leased.len() != expected {
                    return Err(WireError::reply(
                        "submit",
                        format!("{} leased records for {expected} leased runs", leased.len()),
                    ));
                }
                Submitted::Queued {
                    created,
                    epoch,
                    enlist,
                    runs,
                    leased,
                }
            }
            "stopping" => Submitted::Stopping,
            "not_retryable" => Submitted::NotRetryable,
            "retried" => {
                let run = fields.text("run")?;
                Submitted::Retried(
                    run.parse()
                        .map_err(|_| WireError::reply("submit", format!("run `{run}`")))?,
                )
            }
            _ => Submitted::CallerGone,
        };
        fields.finish()?;
        Ok(submitted)
    }
}
