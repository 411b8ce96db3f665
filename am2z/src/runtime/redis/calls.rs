//! `ctx.call` as a child job. A step executing on a worker that calls a processor this worker
//! serves (and whose data is serde) does not run it inline: the callee is queued as a child
//! run in the caller's session, for any worker, and the caller waits for its outcome with its
//! own slot given back, so no slot is held waiting for a child and recursion cannot deadlock
//! even at a worker concurrency of 1. The child runs under the caller's run id (what
//! `ctx.run_id()` shows, and what its events carry), one call level deeper, without run-level
//! events of its own; its outcome is stored under its own id like any run's.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::Inner;
use super::keys::JobId;
use crate::plan::Fnv;
use crate::portable::Json;
use crate::runtime::host::ChildCall;
use crate::{Error, RunId};

/// The child run for the `ordinal`-th call of `caller`'s step, or `None` to run the call
/// inline (this worker does not serve the callee, or the runtime's handles are gone).
pub(crate) fn start<'a>(
    inner: &Arc<Inner>,
    caller: JobId,
    ordinal: u32,
    call: ChildCall<'a>,
) -> Option<BoxFuture<'a, Result<Json, Error>>> {
    let fingerprint = call.contract.fingerprint.to_string();
    inner.served_for(&call.contract.name, &fingerprint)?;
    let runtime = inner.runtime()?;
    let child = child_run(&caller, call.attempt, ordinal);
    Some(Box::pin(
        async move { runtime.call_child(call, child).await },
    ))
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
