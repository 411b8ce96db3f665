//! [`Inspect`] for [`LocalRuntime`]: answered from the sessions' [histories](super::history).
//!
//! The local runtime is one worker (this process). Runs are kept in memory only: what a
//! session keeps is bounded by [`LocalRuntimeBuilder::history`](super::LocalRuntimeBuilder::history),
//! and `stop_session` (or `stop`) forgets it.

use std::sync::Arc;
use std::time::SystemTime;

use super::history::{NewRun, SessionHistory};
use super::session::LocalSession;
use super::{ErasedInput, ErasedRoot, LocalRuntime, Recording, erased_output};
use crate::runtime::Runtime;
use crate::runtime::inspect::{
    CancelOutcome, Cursor, Inspect, Page, PageRequest, RetryOutcome, RunDetail, RunFilter,
    RunState, RunSummary, SessionSummary, WorkerInfo,
};
use crate::{Error, RunId, SessionId};

/// What a cursor of a session listing reads: `session:<sequence>`.
const SESSION_CURSOR: &str = "session:";

impl LocalRuntime {
    fn live_session(&self, session: &SessionId) -> Option<Arc<LocalSession>> {
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(session)
            .cloned()
    }
}

fn unknown_run(session: &SessionId, run: RunId) -> Error {
    Error::not_found(
        "run",
        format!("{run} in session {session}"),
        Vec::<String>::new(),
    )
}

impl Inspect for LocalRuntime {
    async fn sessions(&self, page: PageRequest) -> Result<Page<SessionSummary>, Error> {
        let before = match &page.after {
            None => u64::MAX,
            Some(cursor) => cursor
                .as_str()
                .strip_prefix(SESSION_CURSOR)
                .and_then(|seq| seq.parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::validation(
                        "cursor",
                        format!(
                            "`{}` is not a cursor of this runtime's session listings: pass back a `next` it returned, or none for the first page",
                            cursor.as_str().escape_debug()
                        ),
                    )
                })?,
        };
        let limit = page.clamped_limit();
        let mut sessions: Vec<Arc<LocalSession>> = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|session| session.seq < before)
            .cloned()
            .collect();
        // Newest first.
        sessions.sort_unstable_by_key(|session| std::cmp::Reverse(session.seq));
        let more = sessions.len() > limit;
        sessions.truncate(limit);
        let next = sessions
            .last()
            .filter(|_| more)
            .map(|session| Cursor::new(format!("{SESSION_CURSOR}{}", session.seq)));
        let items = sessions
            .iter()
            .map(|session| {
                let (_, completed, failed) = session
                    .history
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .counts();
                SessionSummary {
                    session: session.id.clone(),
                    live_runs: session
                        .running_runs
                        .load(std::sync::atomic::Ordering::Relaxed),
                    completed,
                    failed,
                    dead_lettered: 0,
                }
            })
            .collect();
        Ok(Page { items, next })
    }

    async fn runs(
        &self,
        session: &SessionId,
        filter: &RunFilter,
        page: PageRequest,
    ) -> Result<Page<RunSummary>, Error> {
        match self.live_session(session) {
            Some(state) => state
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .list(session, filter, &page),
            None => {
                // An unknown session has no runs, but a bad cursor is refused all the same.
                super::history::SessionHistory::new(0).list(session, filter, &page)
            }
        }
    }

    async fn run(&self, session: &SessionId, run: RunId) -> Result<Option<RunDetail>, Error> {
        let Some(state) = self.live_session(session) else {
            return Ok(None);
        };
        Ok(state
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .detail(session, run))
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        if !self.is_running() {
            return Ok(Vec::new());
        }
        let pid = std::process::id();
        Ok(vec![WorkerInfo {
            id: format!("local-{pid}"),
            host: None,
            pid: Some(pid),
            processors: self.registered(),
            last_seen: SystemTime::now(),
            this_process: true,
        }])
    }

    async fn retry_run(&self, session: &SessionId, run: RunId) -> Result<RetryOutcome, Error> {
        let state = self
            .live_session(session)
            .ok_or_else(|| unknown_run(session, run))?;
        // One retry at a time per session, so a run is never retried twice.
        let _one_at_a_time = state.retrying.lock().unwrap_or_else(|p| p.into_inner());
        let original = state
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run)
            .ok_or_else(|| unknown_run(session, run))?;
        if let Some(retried_as) = original.retried_as() {
            return Ok(RetryOutcome::AlreadyRetried { run: retried_as });
        }
        match original.ended() {
            Some(RunState::Failed | RunState::DeadLettered) => {}
            Some(state) => {
                return Err(Error::validation(
                    "run",
                    format!("run {run} is {state}: only a failed run can be retried"),
                ));
            }
            None => {
                return Err(Error::validation(
                    "run",
                    format!(
                        "run {run} is still under way: only a failed run can be retried (cancel it first)"
                    ),
                ));
            }
        }
        let name = original.processor;
        let registration = self
            .shared
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| {
                Error::validation(
                    "run",
                    format!(
                        "run {run} runs `{name}`, which is not registered with this runtime: the local runtime resubmits a run by its processor's name, so register `{name}` to retry it"
                    ),
                )
            })?;
        let input = original
            .input_copy()
            .filter(|input| (**input).type_id() == registration.0.input_type().0)
            .ok_or_else(|| {
                Error::validation(
                    "run",
                    format!(
                        "run {run}'s input was not kept, or is not the input of the `{name}` registered now (`{}`): it cannot be run again",
                        registration.0.input_type().1
                    ),
                )
            })?;
        let new = NewRun {
            view: self.shared.registered_view(&registration),
            processor: registration.name(),
            input: registration.0.keep_input(&*input),
            retry_of: Some(run),
        };
        let recorded = SessionHistory::submit(&state.history, new);
        let retried = recorded.record.run_id;
        original.set_retried_as(retried);
        let runtime = self.clone();
        let session = session.clone();
        tokio::spawn(async move {
            let recording = Recording::Submitted {
                recorded,
                output: erased_output,
            };
            let root = ErasedRoot(registration);
            // The outcome is in the run's record.
            let _ = runtime
                .run(&session, &root, ErasedInput::from(input), None, recording)
                .await;
        });
        Ok(RetryOutcome::Retried { run: retried })
    }

    async fn cancel_run(&self, session: &SessionId, run: RunId) -> Result<CancelOutcome, Error> {
        let cancelled = self.live_session(session).and_then(|state| {
            state
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .cancel(run)
        });
        match cancelled {
            None => Err(unknown_run(session, run)),
            Some(Ok(())) => Ok(CancelOutcome::Cancelled),
            Some(Err(state)) => Ok(CancelOutcome::AlreadyEnded { state }),
        }
    }
}
