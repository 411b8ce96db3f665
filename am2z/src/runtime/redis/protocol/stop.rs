//! `stop_begin.lua`, `stop_runs.lua`, `stop_end.lua`: the three phases of `stop_session`
//! (see `docs/architecture.md`, "Cancellation and cleanup").

use std::time::Duration;

use super::{Fields, Redis, ScriptDef, WireError, millis, session_call, status};
use crate::RunId;
use crate::runtime::redis::keys::SessionKeys;

pub(crate) static STOP_BEGIN: ScriptDef = ScriptDef::new(
    "stop_begin",
    include_str!("../scripts/stop_begin.lua"),
    &[],
    &["stop_lease", "page"],
);

pub(crate) static STOP_RUNS: ScriptDef = ScriptDef::new(
    "stop_runs",
    include_str!("../scripts/stop_runs.lua"),
    &[],
    &["stop_lease", "page"],
);

pub(crate) static STOP_END: ScriptDef = ScriptDef::new(
    "stop_end",
    include_str!("../scripts/stop_end.lua"),
    &[],
    &["page"],
);

/// How many run hashes one call unlinks.
pub(crate) const PAGE: usize = 500;

/// How long a stop may take before the sweeper counts it as abandoned and finishes it.
pub(crate) const STOP_LEASE: Duration = Duration::from_secs(30);

fn runs(fields: &mut Fields, script: &'static str) -> Result<Vec<RunId>, WireError> {
    fields
        .texts("runs")?
        .iter()
        .map(|run| {
            run.parse()
                .map_err(|_| WireError::reply(script, format!("run `{run}`")))
        })
        .collect()
}

/// Stops `session`, whatever its size: marks it stopping (every script refuses it from then
/// on), unlinks its run hashes a page at a time, then its fixed keys and the mark.
pub(crate) async fn stop_session(redis: &Redis, session: &SessionKeys) -> Result<(), WireError> {
    let mut call = session_call(&STOP_BEGIN, session);
    call.arg(millis(STOP_LEASE)).arg(PAGE);
    let mut fields = redis.run(&STOP_BEGIN, &call).await?;
    let mut page = runs(&mut fields, "stop_begin")?;
    fields.finish()?;
    loop {
        while !page.is_empty() {
            let mut call = session_call(&STOP_RUNS, session);
            for run in &page {
                call.key(session.run(*run));
            }
            call.arg(millis(STOP_LEASE)).arg(PAGE);
            for run in &page {
                call.arg(run.to_string());
            }
            let mut fields = redis.run(&STOP_RUNS, &call).await?;
            let state = status(&mut fields, "stop_runs", &["stopping", "gone"])?;
            page = runs(&mut fields, "stop_runs")?;
            fields.finish()?;
            if state == "gone" {
                return Ok(());
            }
        }
        let mut call = session_call(&STOP_END, session);
        call.arg(PAGE);
        let mut fields = redis.run(&STOP_END, &call).await?;
        let state = status(&mut fields, "stop_end", &["stopped", "more", "gone"])?;
        page = runs(&mut fields, "stop_end")?;
        fields.finish()?;
        if state != "more" {
            return Ok(());
        }
    }
}
