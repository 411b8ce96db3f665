//! `submit.lua`: queues new runs of one session.

use super::schedule::Generation;
use super::{Fields, Redis, ScriptDef, Token, WireError, session_call, status};
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
    ],
);

/// One run to queue.
pub(crate) struct NewRun<'a> {
    pub(crate) run: RunId,
    /// The contract fingerprint of the processor (its job's, see `served.rs`).
    pub(crate) fingerprint: &'a str,
    pub(crate) priority: i32,
    pub(crate) name: &'a str,
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
    pub(crate) runs: &'a [NewRun<'a>],
}

/// What a submission did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Submitted {
    /// Queued: per run, whether it was new (`false`: it existed already, for a child call).
    Queued {
        /// The call created the session.
        created: bool,
        /// The session's epoch: which incarnation of its id the runs were queued in.
        epoch: u64,
        /// The session got ready jobs: enlist it with this generation.
        enlist: Option<Generation>,
        fresh: Vec<bool>,
    },
    /// The session is being stopped: nothing was written.
    Stopping,
    /// The session's queue quota would be exceeded: nothing was written.
    Quota,
    /// The calling job no longer holds its lease: nothing was written.
    CallerGone,
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
            .arg(token);
        for run in self.runs {
            call.arg(run.run.to_string())
                .arg(run.fingerprint)
                .arg(run.priority)
                .arg(run.name)
                .arg(run.body);
        }
        let fields = redis.run(&SUBMIT, &call).await?;
        Submitted::read(fields, self.runs.len())
    }
}

impl Submitted {
    fn read(mut fields: Fields, runs: usize) -> Result<Self, WireError> {
        let submitted = match status(
            &mut fields,
            "submit",
            &["ok", "stopping", "quota", "caller_gone"],
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
                let fresh = statuses
                    .iter()
                    .map(|s| match s.as_str() {
                        "queued" => Ok(true),
                        "duplicate" => Ok(false),
                        other => Err(WireError::reply("submit", format!("run status `{other}`"))),
                    })
                    .collect::<Result<_, _>>()?;
                Submitted::Queued {
                    created,
                    epoch,
                    enlist,
                    fresh,
                }
            }
            "stopping" => Submitted::Stopping,
            "quota" => Submitted::Quota,
            _ => Submitted::CallerGone,
        };
        fields.finish()?;
        Ok(submitted)
    }
}
