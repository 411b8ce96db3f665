//! `ctx.call` as a child run. A step executing on a worker that calls a processor this worker
//! serves (and whose data is serde) does not run it inline: the callee is queued as a child
//! run in the caller's session, for any worker, and the caller waits for its outcome holding
//! none of the limits the child may need (invariant 6): its worker slot is lent back, and its
//! lease moves out of the session's concurrency quota (`submit.lua` moves it to `calls`,
//! `call_return.lua` back). The child runs under the caller's run id (what `ctx.run_id()`
//! shows, and what its events carry), one call level deeper, without run-level events of its
//! own; its outcome is stored under its own id like any run's.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;

use super::client::{ChildOf, Client, RunHandle, Submission};
use super::job::ClaimedJob;
use super::keys::JobId;
use super::protocol::Token;
use super::protocol::commit::CallReturn;
use super::served::{ServedTable, job_fingerprint};
use super::slots::JobSlot;
use crate::plan::Fnv;
use crate::portable::Json;
use crate::runtime::embed::ChildCall;
use crate::{Error, RunId, SessionId};

/// The job whose step makes calls, and what its calls need.
pub(crate) struct Caller {
    pub(crate) session: SessionId,
    pub(crate) job: JobId,
    pub(crate) token: Token,
    pub(crate) client: Arc<Client>,
    pub(crate) served: Arc<ServedTable>,
    pub(crate) slot: Arc<JobSlot>,
}

impl Caller {
    pub(crate) fn of(
        job: &ClaimedJob,
        client: Arc<Client>,
        served: Arc<ServedTable>,
        slot: Arc<JobSlot>,
    ) -> Self {
        Caller {
            session: job.session.clone(),
            job: job.id(),
            token: job.token(),
            client,
            served,
            slot,
        }
    }

    /// The child run for the `ordinal`-th call of this job's step, or `None` to run the call
    /// inline (this worker does not serve the callee).
    pub(crate) fn call<'a>(
        &'a self,
        ordinal: u32,
        call: ChildCall<'a>,
    ) -> Option<BoxFuture<'a, Result<Json, Error>>> {
        let fingerprint = job_fingerprint(call.contract.fingerprint, call.plan);
        let redact = self
            .served
            .for_job(&call.contract.name, &fingerprint)?
            .redacts();
        let child = child_run(&self.job, call.attempt, ordinal);
        Some(Box::pin(async move {
            self.run_child(call, child, fingerprint, redact).await
        }))
    }

    async fn run_child(
        &self,
        call: ChildCall<'_>,
        child: RunId,
        fingerprint: String,
        redact: bool,
    ) -> Result<Json, Error> {
        let client = &self.client;
        let started = Instant::now();
        let waiter = client.waiters.register(call.session, child);
        client.subscriptions.follow(call.session, false).await?;
        let accepted = client
            .submit(
                call.session,
                child,
                Submission {
                    name: &call.contract.name,
                    fingerprint: &fingerprint,
                    priority: call.priority,
                    input: call.input.to_string(),
                    call: Some(ChildOf {
                        job: self.job,
                        token: self.token,
                        run: call.run_id,
                        depth: call.depth,
                    }),
                    lease: false,
                    redact,
                },
            )
            .await?;
        let handle = RunHandle {
            session: call.session.clone(),
            run_id: child,
            processor: call.contract.name.clone(),
            epoch: Some(accepted.epoch),
        };
        // The slot this step holds runs other jobs (the child, say) while it waits.
        let lent = self.slot.lend();
        let outcome = client
            .wait::<Json>(&handle, &waiter, None, started, !accepted.fresh)
            .await;
        lent.take_back().await;
        let keys = client.keys.session(&self.session);
        let back = CallReturn {
            session: &keys,
            job: self.job,
            token: self.token,
        }
        .call(&client.redis)
        .await;
        if let Err(error) = back {
            tracing::warn!(job = %self.job, error = %error.into_error(&client.redis.errors), "moving a caller back into its session's quota failed; it commits all the same");
        }
        outcome
            .map(|result| result.output)
            .map_err(|failure| failure.error)
    }
}

/// The run id of the `ordinal`-th child call of `caller`'s `attempt`: the same when the caller
/// runs again after a crash, so it awaits the child it started rather than starting another.
fn child_run(caller: &JobId, attempt: u32, ordinal: u32) -> RunId {
    let half = |salt: &[u8]| {
        let mut hash = Fnv::new();
        hash.write(salt);
        hash.write(caller.to_string().as_bytes());
        hash.write(&attempt.to_le_bytes());
        hash.write(&ordinal.to_le_bytes());
        u128::from(hash.finish())
    };
    RunId::from_u128((half(b"child-hi") << 64) | half(b"child-lo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_run_again_names_the_same_children() {
        let caller = JobId::entry(RunId::from_u128(7));
        assert_eq!(child_run(&caller, 1, 0), child_run(&caller, 1, 0));
        assert_ne!(child_run(&caller, 1, 0), child_run(&caller, 1, 1));
        assert_ne!(child_run(&caller, 1, 0), child_run(&caller, 2, 0));
        let other = JobId::entry(RunId::from_u128(8));
        assert_ne!(child_run(&caller, 1, 0), child_run(&other, 1, 0));
    }
}
