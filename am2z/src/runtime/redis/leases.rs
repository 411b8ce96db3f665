//! The leases this process holds: for each leased job, its session and token (what the
//! renewer renews), and the signals that stop its execution (the lease was lost; the job
//! became moot). A lease is registered by a guard, so it leaves the table however the job's
//! execution ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::keys::JobId;
use super::protocol::Token;
use crate::{RunId, SessionId};

/// What the table keeps of one held lease.
struct Held {
    session: SessionId,
    token: Token,
    /// Fired when the lease is lost (the renewer was refused): the job is abandoned.
    lost: CancellationToken,
    /// Fired when the job's run ended, or a fan-out it is under closed: the job is cancelled
    /// (its step's token fires, with the cancel grace) and committed as moot.
    moot: CancellationToken,
    /// The fan-out instances the job runs under (step jobs).
    instances: Vec<String>,
}

/// The leases held by this process.
#[derive(Default)]
pub(crate) struct LeaseTable {
    held: Mutex<HashMap<JobId, Held>>,
    /// Notified each time a lease leaves the table.
    returned: Notify,
}

/// A registered lease: removed from the table when dropped.
pub(crate) struct Lease {
    table: Arc<LeaseTable>,
    pub(crate) job: JobId,
    pub(crate) lost: CancellationToken,
    pub(crate) moot: CancellationToken,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.table.lock().remove(&self.job);
        self.table.returned.notify_waiters();
    }
}

impl LeaseTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the lease on `job`.
    pub(crate) fn hold(
        self: &Arc<Self>,
        session: &SessionId,
        job: JobId,
        token: Token,
        instances: Vec<String>,
    ) -> Lease {
        let (lost, moot) = (CancellationToken::new(), CancellationToken::new());
        self.lock().insert(
            job,
            Held {
                session: session.clone(),
                token,
                lost: lost.clone(),
                moot: moot.clone(),
                instances,
            },
        );
        Lease {
            table: Arc::clone(self),
            job,
            lost,
            moot,
        }
    }

    /// The leases to renew, by session.
    pub(crate) fn by_session(&self) -> BTreeMap<SessionId, Vec<(JobId, Token)>> {
        let mut sessions: BTreeMap<SessionId, Vec<(JobId, Token)>> = BTreeMap::new();
        for (job, held) in self.lock().iter() {
            sessions
                .entry(held.session.clone())
                .or_default()
                .push((*job, held.token));
        }
        sessions
    }

    /// The lease on `job` was lost.
    pub(crate) fn lose(&self, job: &JobId) {
        if let Some(held) = self.lock().get(job) {
            held.lost.cancel();
        }
    }

    /// Cancels the jobs of `run` in `session` held here (only those under `instance`, when
    /// given): their run ended, or that fail-fast fan-out failed. Returns how many.
    pub(crate) fn cancel(&self, session: &SessionId, run: RunId, instance: Option<&str>) -> usize {
        let held = self.lock();
        let mut cancelled = 0;
        for (job, lease) in held.iter() {
            // A run's entry job is the run itself: nothing to cancel it for.
            if job.run != run || job.position.is_none() || lease.session != *session {
                continue;
            }
            if instance.is_none_or(|i| lease.instances.iter().any(|held| held == i)) {
                lease.moot.cancel();
                cancelled += 1;
            }
        }
        cancelled
    }

    /// Cancels every job of `run` in `session` held here, its entry job included: an operator
    /// cancelled the run (`cancel_run`). Returns how many.
    pub(crate) fn abort(&self, session: &SessionId, run: RunId) -> usize {
        let held = self.lock();
        let mut cancelled = 0;
        for (job, lease) in held.iter() {
            if job.run == run && lease.session == *session {
                lease.moot.cancel();
                cancelled += 1;
            }
        }
        cancelled
    }

    /// Whether this process holds the entry job of `run` (it then hands the run's outcome to
    /// its waiters here itself).
    pub(crate) fn holds_entry(&self, session: &SessionId, run: RunId) -> bool {
        self.lock()
            .get(&JobId::entry(run))
            .is_some_and(|held| held.session == *session)
    }

    /// How many leases are held.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Waits until no lease is held, or `until`.
    pub(crate) async fn all_returned(&self, until: tokio::time::Instant) {
        loop {
            let returned = self.returned.notified();
            if self.lock().is_empty() {
                return;
            }
            tokio::select! {
                () = returned => {}
                () = tokio::time::sleep_until(until) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> SessionId {
        SessionId::new(id).unwrap()
    }

    #[tokio::test]
    async fn a_lease_leaves_the_table_however_its_job_ends() {
        let table = Arc::new(LeaseTable::default());
        let run = RunId::generate();
        let job = JobId {
            run,
            position: Some(1),
        };
        {
            let _lease = table.hold(&session("a"), job, 3, vec![]);
            assert_eq!(table.len(), 1);
            assert_eq!(table.by_session()[&session("a")], vec![(job, 3)]);
        }
        assert_eq!(table.len(), 0);
        table
            .all_returned(tokio::time::Instant::now() + std::time::Duration::from_secs(5))
            .await;
    }

    #[test]
    fn cancels_reach_only_the_run_and_instance_named() {
        let table = Arc::new(LeaseTable::default());
        let (run, other) = (RunId::generate(), RunId::generate());
        let job = |run, p| JobId {
            run,
            position: Some(p),
        };
        let under = table.hold(
            &session("a"),
            job(run, 1),
            1,
            vec!["2".into(), "2/0".into()],
        );
        let beside = table.hold(&session("a"), job(run, 2), 1, vec!["5".into()]);
        let elsewhere = table.hold(&session("b"), job(run, 3), 1, vec!["2".into()]);
        let other_run = table.hold(&session("a"), job(other, 4), 1, vec!["2".into()]);
        let entry = table.hold(&session("a"), JobId::entry(run), 1, vec![]);
        assert_eq!(table.cancel(&session("a"), run, Some("2/0")), 1);
        assert!(under.moot.is_cancelled());
        assert!(!beside.moot.is_cancelled());
        assert_eq!(table.cancel(&session("a"), run, None), 2);
        assert!(beside.moot.is_cancelled());
        assert!(!elsewhere.moot.is_cancelled() && !other_run.moot.is_cancelled());
        assert!(!entry.moot.is_cancelled());
        assert!(table.holds_entry(&session("a"), run));
        assert_eq!(
            table.abort(&session("a"), run),
            3,
            "an abort reaches the entry job"
        );
        assert!(entry.moot.is_cancelled() && !other_run.moot.is_cancelled());
        assert!(!table.holds_entry(&session("b"), run));
        table.lose(&beside.job);
        assert!(beside.lost.is_cancelled());
    }
}
