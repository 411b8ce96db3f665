//! `commit.lua` (end runs executed as one job each), `park.lua` (a job waits in Redis) and
//! `call_return.lua` (a caller's child call ended).

use std::time::Duration;

use super::claim::LeasedJob;
use super::finished::{self, FinishedStep};
use super::{Redis, ScriptDef, Token, WireError, millis, session_call, session_command, status};
use crate::runtime::redis::keys::{JobId, SessionKeys};

pub(crate) static COMMIT: ScriptDef = ScriptDef::new(
    "commit",
    include_str!("../scripts/commit.lua"),
    &[],
    &[
        "done_channel",
        "session_ttl",
        "dead_max_len",
        "fields",
        "endings",
        "lease_ms",
        "quota",
        "done_all",
    ],
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
    /// The `done` message (`messages::Done`): one line.
    pub(crate) done: String,
    /// The run's processor, as the job was leased (kept beside its outcome).
    pub(crate) name: String,
    /// The slot the job frees wants the session's next ready job.
    pub(crate) refill: bool,
    /// The steps the run finished, counted when the end is committed.
    pub(crate) finished: Vec<FinishedStep>,
}

/// What one session's worker commits in one call: the ends of runs executed as one job each,
/// each with the steps it finished (their events go before it, without a script:
/// `events::append`).
pub(crate) struct Commit<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) done_channel: &'a str,
    pub(crate) session_ttl: Duration,
    pub(crate) dead_max_len: u64,
    pub(crate) endings: &'a [Ending],
    /// For refills: the lease, the session's concurrency quota (0: none), and the contract
    /// fingerprints the worker serves.
    pub(crate) lease: Duration,
    pub(crate) quota: u64,
    pub(crate) served: &'a [String],
}

/// What a commit did.
#[derive(Debug)]
pub(crate) struct Committed {
    /// Per ending, whether it was committed (`false`: refused, nothing written for it), and
    /// the job leased for its slot when it wanted one and the session had one ready.
    pub(crate) ended: Vec<(bool, Option<LeasedJob>)>,
}

impl Commit<'_> {
    /// The call as a command (sent in the forwarder's pipeline, before the session's other
    /// commits).
    pub(crate) fn command(&self) -> redis::Cmd {
        let (fields, steps) = finished::indexed(self.endings.iter().map(|e| &e.finished[..]));
        let mut call = session_command(&COMMIT, self.session, &[]);
        call.arg(self.done_channel)
            .arg(millis(self.session_ttl))
            .arg(self.dead_max_len)
            .arg(fields.len())
            .arg(self.endings.len())
            .arg(millis(self.lease))
            .arg(self.quota)
            .arg(self.done_lines())
            .arg(fields);
        for (ending, steps) in self.endings.iter().zip(steps) {
            let flags =
                u8::from(ending.ok) | u8::from(ending.dead) << 1 | u8::from(ending.refill) << 2;
            call.arg(ending.job.to_string())
                .arg(ending.token)
                .arg(&ending.outcome)
                .arg(flags)
                .arg(&ending.name)
                .arg(steps);
        }
        if self.endings.iter().any(|e| e.refill) {
            for fingerprint in self.served {
                call.arg(fingerprint);
            }
        }
        call
    }

    /// The endings' `done` lines joined, the message the script publishes when it commits
    /// them all. One argument rather than one per run: Redis' Lua hashes every byte it is
    /// given, and joining the lines again in the script would hash them once more.
    fn done_lines(&self) -> Vec<u8> {
        let len = self.endings.iter().map(|e| e.done.len() + 1).sum();
        let mut lines = Vec::with_capacity(len);
        for (i, ending) in self.endings.iter().enumerate() {
            if i > 0 {
                lines.push(b'\n');
            }
            lines.extend_from_slice(ending.done.as_bytes());
        }
        lines
    }

    /// Reads the reply of a commit of `endings` (the run ends it was sent with).
    pub(crate) fn read(reply: redis::Value, endings: &[Ending]) -> Result<Committed, WireError> {
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
        let handed = fields
            .rows("handed", LeasedJob::COLUMNS)?
            .into_iter()
            .map(|record| LeasedJob::read(record, "commit"))
            .collect::<Result<Vec<_>, _>>()?;
        fields.finish()?;
        if results.len() != endings.len() {
            return Err(WireError::reply(
                "commit",
                format!("{} results for {} jobs", results.len(), endings.len()),
            ));
        }
        // In order, to the committed ends whose slot wanted a job.
        let mut handed = handed.into_iter();
        let ended = results
            .into_iter()
            .zip(endings)
            .map(|(committed, ending)| {
                let next = (committed && ending.refill)
                    .then(|| handed.next())
                    .flatten();
                (committed, next)
            })
            .collect();
        if handed.next().is_some() {
            return Err(WireError::reply(
                "commit",
                "more jobs handed than slots freed",
            ));
        }
        Ok(Committed { ended })
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
