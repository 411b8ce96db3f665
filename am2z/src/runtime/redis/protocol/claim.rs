//! `claim.lua` (lease ready jobs of a session) and `renew.lua` (keep them).

use std::time::Duration;

use super::schedule::Generation;
use super::{Fields, Redis, ScriptDef, Token, WireError, session_call, status};
use crate::runtime::redis::keys::{JobId, SessionKeys};

pub(crate) static CLAIM: ScriptDef = ScriptDef::new(
    "claim",
    include_str!("../scripts/claim.lua"),
    &[],
    &["lease_ms", "quota", "most"],
);

pub(crate) static RENEW: ScriptDef = ScriptDef::new(
    "renew",
    include_str!("../scripts/renew.lua"),
    &[],
    &["lease_ms"],
);

/// A job leased to this worker, as `claim.lua` (or `advance.lua`'s hand-off) gives it.
#[derive(Debug, Clone)]
pub(crate) struct LeasedJob {
    pub(crate) id: JobId,
    pub(crate) fingerprint: String,
    /// The processor the job's run runs (for a step job: the whole workflow's).
    pub(crate) name: String,
    pub(crate) token: Token,
    pub(crate) deliveries: u32,
    /// When the run was submitted (ms since the epoch, Redis' clock).
    pub(crate) created_ms: u64,
    /// The attempt the job's step resumes at after a wait (0: a fresh step).
    pub(crate) attempt: u32,
    /// Attempts the job made before it waited.
    pub(crate) attempts: u32,
    /// The run's steps completed and attempts made when this job was created (step jobs).
    pub(crate) version: u64,
    pub(crate) run_attempts: u32,
    /// When the lease runs out (ms on Redis' clock) unless renewed.
    pub(crate) deadline_ms: u64,
    /// The job's body, as stored (`protocol::body`).
    pub(crate) body: Vec<u8>,
}

impl LeasedJob {
    /// A leased job's values in a reply's flat list (`add_leased` in `include/header.lua`).
    pub(crate) const COLUMNS: &'static [&'static str] = &["id", "header", "deadline", "body"];

    /// Reads a leased job (a row of [`COLUMNS`](Self::COLUMNS)): its id, its
    /// header (`state|token|deliveries|fp|priority|created_ms|queued_ms|attempt|attempts|
    /// version|run_attempts|name`), its lease deadline and its body.
    pub(crate) fn read(mut fields: Fields, script: &'static str) -> Result<Self, WireError> {
        let id = fields.text("id")?;
        let header = fields.text("header")?;
        let deadline_ms = fields.count("deadline")?;
        let body = fields.bytes("body")?;
        fields.finish()?;
        let bad = |what: &str| WireError::reply(script, format!("{what} in header `{header}`"));
        let mut parts = header.splitn(12, '|');
        let mut next = |what: &str| parts.next().ok_or_else(|| bad(what));
        let _state = next("state")?;
        let token = next("token")?.parse().map_err(|_| bad("token"))?;
        let deliveries = next("deliveries")?.parse().map_err(|_| bad("deliveries"))?;
        let fingerprint = next("fingerprint")?.to_owned();
        let _priority = next("priority")?;
        let created_ms = next("created_ms")?.parse().map_err(|_| bad("created_ms"))?;
        let _queued_ms = next("queued_ms")?;
        let attempt = next("attempt")?.parse().map_err(|_| bad("attempt"))?;
        let attempts = next("attempts")?.parse().map_err(|_| bad("attempts"))?;
        let version = next("version")?.parse().map_err(|_| bad("version"))?;
        let run_attempts = next("run_attempts")?
            .parse()
            .map_err(|_| bad("run_attempts"))?;
        let name = next("name")?.to_owned();
        Ok(LeasedJob {
            id: JobId::parse(&id)
                .ok_or_else(|| WireError::reply(script, format!("job id `{id}`")))?,
            fingerprint,
            name,
            token,
            deliveries,
            created_ms,
            attempt,
            attempts,
            version,
            run_attempts,
            deadline_ms,
            body,
        })
    }
}

/// Leases up to `most` ready jobs of one session that this worker serves.
pub(crate) struct Claim<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) lease: Duration,
    /// The session's concurrency quota (0: none).
    pub(crate) quota: u64,
    pub(crate) most: usize,
    /// The contract fingerprints this worker serves.
    pub(crate) served: &'a [String],
}

/// What a claim found.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) outcome: ClaimOutcome,
    /// The claim took the session's last ready job: retire it from the schedule with this
    /// generation.
    pub(crate) retire: Option<Generation>,
}

#[derive(Debug)]
pub(crate) enum ClaimOutcome {
    /// Jobs leased; `left` ready jobs remain.
    Leased { jobs: Vec<LeasedJob>, left: u64 },
    /// Nothing queued.
    Empty,
    /// At quota, or nothing this worker serves.
    Busy,
    /// The session does not exist.
    Gone,
    /// The session is being stopped.
    Stopping,
}

impl Claim<'_> {
    pub(crate) async fn call(&self, redis: &Redis) -> Result<Claimed, WireError> {
        let mut call = session_call(&CLAIM, self.session);
        call.arg(super::millis(self.lease))
            .arg(self.quota)
            .arg(self.most)
            .arg(self.served);
        Claimed::read(redis.run(&CLAIM, &call).await?)
    }
}

impl Claimed {
    fn read(mut fields: Fields) -> Result<Self, WireError> {
        let outcome = match status(
            &mut fields,
            "claim",
            &["ok", "empty", "busy", "gone", "stopping"],
        )?
        .as_str()
        {
            "ok" => ClaimOutcome::Leased {
                left: fields.count("left")?,
                jobs: fields
                    .rows("jobs", LeasedJob::COLUMNS)?
                    .into_iter()
                    .map(|job| LeasedJob::read(job, "claim"))
                    .collect::<Result<_, _>>()?,
            },
            "empty" => ClaimOutcome::Empty,
            "busy" => ClaimOutcome::Busy,
            "gone" => ClaimOutcome::Gone,
            _ => ClaimOutcome::Stopping,
        };
        let retire = Generation::of(fields.count("retire")?);
        fields.finish()?;
        Ok(Claimed { outcome, retire })
    }
}

/// Extends this worker's leases in one session.
pub(crate) struct Renew<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) lease: Duration,
    pub(crate) leases: &'a [(JobId, Token)],
}

impl Renew<'_> {
    /// The jobs whose lease is lost.
    pub(crate) async fn call(&self, redis: &Redis) -> Result<Vec<JobId>, WireError> {
        let mut call = session_call(&RENEW, self.session);
        call.arg(super::millis(self.lease));
        for (job, token) in self.leases {
            call.arg(job.to_string()).arg(*token);
        }
        let mut fields = redis.run(&RENEW, &call).await?;
        let lost = fields
            .texts("lost")?
            .iter()
            .map(|id| {
                JobId::parse(id).ok_or_else(|| WireError::reply("renew", format!("job `{id}`")))
            })
            .collect::<Result<_, _>>()?;
        fields.finish()?;
        Ok(lost)
    }
}
