//! `release.lua` (give leases back) and `promote.lua` (due delayed jobs become ready).

use super::schedule::Generation;
use super::{Redis, ScriptDef, Token, WireError, session_call};
use crate::runtime::redis::keys::{JobId, SessionKeys};

pub(crate) static RELEASE: ScriptDef =
    ScriptDef::new("release", include_str!("../scripts/release.lua"), &[], &[]);

pub(crate) static PROMOTE: ScriptDef = ScriptDef::new(
    "promote",
    include_str!("../scripts/promote.lua"),
    &[],
    &["most"],
);

/// Gives leased jobs of one session back at once, without consuming their deliveries.
pub(crate) struct Release<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) leases: &'a [(JobId, Token)],
}

/// What a release did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Released {
    /// How many leases were still held and went back.
    pub(crate) released: u64,
    pub(crate) enlist: Option<Generation>,
}

impl Release<'_> {
    pub(crate) async fn call(&self, redis: &Redis) -> Result<Released, WireError> {
        let mut call = session_call(&RELEASE, self.session);
        for (job, token) in self.leases {
            call.arg(job.to_string()).arg(*token);
        }
        let mut fields = redis.run_fenced(&RELEASE, &call).await?;
        let released = Released {
            released: fields.count("released")?,
            enlist: Generation::of(fields.count("enlist")?),
        };
        fields.finish()?;
        Ok(released)
    }
}

/// Moves up to `most` due delayed jobs of one session to its queue.
pub(crate) struct Promote<'a> {
    pub(crate) session: &'a SessionKeys,
    pub(crate) most: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Promoted {
    pub(crate) moved: u64,
    /// The earliest due time left (ms on Redis' clock), if any.
    pub(crate) next_due: Option<u64>,
    pub(crate) enlist: Option<Generation>,
}

impl Promote<'_> {
    pub(crate) async fn call(&self, redis: &Redis) -> Result<Promoted, WireError> {
        let mut call = session_call(&PROMOTE, self.session);
        call.arg(self.most);
        let mut fields = redis.run(&PROMOTE, &call).await?;
        let promoted = Promoted {
            moved: fields.count("moved")?,
            next_due: Some(fields.count("next_due")?).filter(|d| *d > 0),
            enlist: Generation::of(fields.count("enlist")?),
        };
        fields.finish()?;
        Ok(promoted)
    }
}
