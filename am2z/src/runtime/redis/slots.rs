//! A worker's slots, of two kinds. A **lease slot** is held by each job this worker leased,
//! from its lease to its commit's answer (a successor the commit hands over takes it on); the
//! claimer takes one per job it leases. An **execution slot** is held only while a job's
//! processor runs: `worker_concurrency` of them, so no more than that many run at once.
//! There are `worker_concurrency + lease_ahead` lease slots: a job leased ahead waits here
//! for an execution slot, which a finished job gives up before its commit's round trip, so
//! the next job starts at once instead of a round trip later.
//!
//! Leasing ahead pays only for short jobs, where a round trip is a large part of a slot's
//! cycle; for long ones it would keep jobs waiting here that another worker could run now.
//! So the lease-ahead slots are used only while the processors' recent runs are short (an
//! average under [`SHORT`]) and jobs are flowing (an execution slot was given back within
//! [`SHORT`]), and no more jobs wait here than ended within the last [`SHORT`]; otherwise a
//! job is leased only for an execution slot that is free for it. A job leased ahead that still waits after [`WAIT_AT_MOST`] (the runs turned long
//! meanwhile) is given back for another worker.
//!
//! A step waiting on a `ctx.call` lends both back meanwhile (so the child, or anything else,
//! can run on them) and takes them again before it goes on. The permits are the guard: a lent
//! slot that is never taken back (the caller gave up on its call) is simply not held, never
//! leaked.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Runs shorter than this on average (an exponential average over the worker's recent runs)
/// make leasing ahead worth it.
pub(crate) const SHORT: Duration = Duration::from_millis(10);

/// The average before any run ended: not short.
const UNKNOWN: u64 = u64::MAX;

/// How long a job leased ahead waits for an execution slot before it is given back for
/// another worker (the runs turned long while it waited).
pub(crate) const WAIT_AT_MOST: Duration = Duration::from_secs(1);

/// A worker's lease slots and execution slots.
pub(crate) struct Slots {
    leases: Arc<Semaphore>,
    running: Arc<Semaphore>,
    ahead: usize,
    /// Jobs leased that wait for an execution slot.
    waiting: AtomicUsize,
    /// The recent runs' average execution time, in microseconds ([`UNKNOWN`] before any).
    average_us: AtomicU64,
    /// When an execution slot was last given back, in microseconds since `born`.
    rested_us: AtomicU64,
    /// Execution slots given back in the current window of [`SHORT`] (started at
    /// `window_us`), and in the one before it: how fast jobs flow.
    window_us: AtomicU64,
    in_window: AtomicUsize,
    last_window: AtomicUsize,
    born: Instant,
}

impl Slots {
    /// `concurrency` execution slots and `concurrency + ahead` lease slots.
    pub(crate) fn new(concurrency: usize, ahead: usize) -> Arc<Self> {
        Arc::new(Slots {
            leases: Arc::new(Semaphore::new(concurrency + ahead)),
            running: Arc::new(Semaphore::new(concurrency)),
            ahead,
            waiting: AtomicUsize::new(0),
            average_us: AtomicU64::new(UNKNOWN),
            rested_us: AtomicU64::new(0),
            window_us: AtomicU64::new(0),
            in_window: AtomicUsize::new(0),
            last_window: AtomicUsize::new(0),
            born: Instant::now(),
        })
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether jobs may be leased ahead: the recent runs were short, and jobs are flowing (an
    /// execution slot was given back within a short run's time: otherwise the runs executing
    /// now may be long ones, which the average learns only when they end).
    fn short(&self) -> bool {
        let short = SHORT.as_micros() as u64;
        let since_rest = self
            .now_us()
            .saturating_sub(self.rested_us.load(Ordering::Relaxed));
        self.ahead > 0 && self.average_us.load(Ordering::Relaxed) < short && since_rest < short
    }

    /// Counts a run's execution time into the average (one eighth of it).
    fn ran(&self, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX - 1);
        let average = self.average_us.load(Ordering::Relaxed);
        let next = if average == UNKNOWN {
            took
        } else {
            average - average / 8 + took / 8
        };
        self.average_us.store(next, Ordering::Relaxed);
        let now = self.now_us();
        self.rested_us.store(now, Ordering::Relaxed);
        let short = SHORT.as_micros() as u64;
        let since = now.saturating_sub(self.window_us.load(Ordering::Relaxed));
        if since < short {
            self.in_window.fetch_add(1, Ordering::Relaxed);
        } else {
            // A new window; the one that ended counts only if it ended just now.
            let ended = if since < 2 * short {
                self.in_window.load(Ordering::Relaxed)
            } else {
                0
            };
            self.last_window.store(ended, Ordering::Relaxed);
            self.window_us.store(now, Ordering::Relaxed);
            self.in_window.store(1, Ordering::Relaxed);
        }
    }

    /// How many execution slots were given back within about the last [`SHORT`]: as many
    /// jobs as that may wait here, since as many are about to be wanted.
    fn flow(&self) -> usize {
        let short = SHORT.as_micros() as u64;
        let since = self
            .now_us()
            .saturating_sub(self.window_us.load(Ordering::Relaxed));
        let current = self.in_window.load(Ordering::Relaxed);
        if since < short {
            current.max(self.last_window.load(Ordering::Relaxed))
        } else if since < 2 * short {
            current
        } else {
            0
        }
    }

    /// How many more jobs may be leased now: as many as would start at once, and while runs
    /// are short, as many more as may wait here: up to `lease_ahead`, and no more than
    /// ended within the last [`SHORT`] (a worker that just ran its first quick step does not
    /// lease a whole fan-out that follows it).
    fn may_lease(&self) -> usize {
        let may_wait = if self.short() {
            self.ahead.min(self.flow())
        } else {
            0
        };
        (self.free_to_run() + may_wait).saturating_sub(self.waiting.load(Ordering::Relaxed))
    }

    /// How many more jobs would start at once: free execution slots no waiting job takes.
    fn free_now(&self) -> usize {
        self.free_to_run()
            .saturating_sub(self.waiting.load(Ordering::Relaxed))
    }

    /// Waits for a free lease slot on which a job may be leased now: while runs are short,
    /// any; otherwise one whose job would start at once (so the claimer leases no job to
    /// wait behind long runs). Checked again once the slot is free: the slot may be one a job
    /// leased ahead gave back because it waited too long, and leasing ahead may have
    /// stopped meanwhile.
    pub(crate) async fn lease_when_it_pays(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            self.until_leasing_pays().await;
            let permit = self.lease().await?;
            if self.may_lease() > 0 {
                return Some(permit);
            }
        }
    }

    /// Waits until a job leased now would be allowed to start at once, when runs are not
    /// short and none would.
    async fn until_leasing_pays(&self) {
        while self.may_lease() == 0 {
            // An execution slot given back (or the runs turning short) ends the wait.
            drop(Arc::clone(&self.running).acquire_owned().await);
            if self.may_lease() == 0 {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Waits for a free lease slot (`None`: closed, never here).
    pub(crate) async fn lease(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.leases).acquire_owned().await.ok()
    }

    /// A free lease slot now, when one is free and a job leased on it could start at once
    /// (an execution slot is free too).
    pub(crate) fn lease_to_run_now(&self) -> Option<OwnedSemaphorePermit> {
        if self.free_now() == 0 {
            return None;
        }
        Arc::clone(&self.leases).try_acquire_owned().ok()
    }

    /// How many execution slots are free.
    pub(crate) fn free_to_run(&self) -> usize {
        self.running.available_permits()
    }

    /// How many lease slots are free beyond the `lease_ahead` ones: `worker_concurrency`
    /// when no job is leased.
    pub(crate) fn free(&self) -> usize {
        self.leases.available_permits().saturating_sub(self.ahead)
    }
}

/// A job counted as waiting for an execution slot while this lives (the wait may be given
/// up: its lease lost, its run cancelled, the worker stopping).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn counted(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Up to `most` of the worker's free lease slots, taken now without waiting (each is given
/// back when its permit drops).
pub(crate) fn take_free(slots: &Slots, most: usize) -> Vec<OwnedSemaphorePermit> {
    // The caller's job, leased or ending, counts among those that start at once.
    let most = most.min(slots.may_lease().saturating_sub(1));
    let mut permits = Vec::new();
    while permits.len() < most {
        match Arc::clone(&slots.leases).try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    permits
}

/// The slots one job (and the successors handed to it) holds: its lease slot throughout, an
/// execution slot while its processor runs.
pub(crate) struct JobSlot {
    slots: Arc<Slots>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// The execution slot, and when it was taken.
    running: Mutex<Option<(OwnedSemaphorePermit, Instant)>>,
}

fn held<T>(permit: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    permit.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobSlot {
    /// A job's slot on the lease slot `permit`.
    pub(crate) fn new(slots: Arc<Slots>, permit: OwnedSemaphorePermit) -> Self {
        JobSlot {
            slots,
            permit: Mutex::new(Some(permit)),
            running: Mutex::new(None),
        }
    }

    /// Takes an execution slot if one is free now (always so without `lease_ahead`), and
    /// holds it until [`rest`](JobSlot::rest) (or the slot's drop).
    pub(crate) fn try_start(&self) -> bool {
        match Arc::clone(&self.slots.running).try_acquire_owned() {
            Ok(permit) => {
                *held(&self.running) = Some((permit, Instant::now()));
                true
            }
            Err(_) => false,
        }
    }

    /// Waits for an execution slot and holds it, as [`try_start`](JobSlot::try_start).
    pub(crate) async fn start(&self) {
        if self.try_start() {
            return;
        }
        let _waiting = Waiting::counted(&self.slots.waiting);
        let running = Arc::clone(&self.slots.running).acquire_owned().await.ok();
        *held(&self.running) = running.map(|permit| (permit, Instant::now()));
    }

    /// Gives the execution slot back (the processor returned; the commit is still to come),
    /// counting the run's time into the average.
    pub(crate) fn rest(&self) {
        if let Some((permit, since)) = held(&self.running).take() {
            self.slots.ran(since.elapsed());
            drop(permit);
        }
    }

    /// Up to `most` of the worker's free lease slots, held for jobs a commit may hand to this
    /// job's worker (a fan-out's branches): each is released when its permit drops, used or
    /// not. Only as many as would start at once, never ahead: the branches may run long
    /// whatever the steps before them took, and other workers can take the rest now.
    pub(crate) fn spare(&self, most: usize) -> Vec<OwnedSemaphorePermit> {
        // This job's own execution slot, given back, goes to its own successor.
        let now = self.slots.free_now().saturating_sub(1);
        take_free(&self.slots, most.min(now))
    }

    /// The slot of another job of this worker, on `permit` (one of [`spare`]'s).
    ///
    /// [`spare`]: JobSlot::spare
    pub(crate) fn beside(&self, permit: OwnedSemaphorePermit) -> JobSlot {
        JobSlot::new(Arc::clone(&self.slots), permit)
    }

    /// Gives both slots back to the worker while the job waits; [`Lent::take_back`] takes
    /// them again.
    pub(crate) fn lend(self: &Arc<Self>) -> Lent {
        drop(held(&self.permit).take());
        let running = held(&self.running).take();
        let was_running = running.is_some();
        drop(running);
        Lent {
            slot: Arc::clone(self),
            was_running,
        }
    }

    /// Whether the job holds its lease slot now.
    #[cfg(test)]
    fn is_held(&self) -> bool {
        held(&self.permit).is_some()
    }

    /// Whether the job holds an execution slot now.
    #[cfg(test)]
    fn is_running(&self) -> bool {
        held(&self.running).is_some()
    }
}

/// The slots of a job, lent back to the worker.
pub(crate) struct Lent {
    slot: Arc<JobSlot>,
    was_running: bool,
}

impl Lent {
    /// Waits for a free lease slot, then (when it had one) a free execution slot, and holds
    /// them for the job again.
    pub(crate) async fn take_back(self) {
        if let Some(permit) = self.slot.slots.lease().await {
            *held(&self.slot.permit) = Some(permit);
        }
        if self.was_running {
            self.slot.start().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(slots: &Slots) -> (usize, usize) {
        (slots.leases.available_permits(), slots.free_to_run())
    }

    #[tokio::test]
    async fn a_lent_slot_is_never_counted_twice_nor_leaked() {
        let slots = Slots::new(1, 0);
        let permit = slots.lease().await.unwrap();
        let slot = Arc::new(JobSlot::new(Arc::clone(&slots), permit));
        slot.start().await;
        assert_eq!(free(&slots), (0, 0));
        let lent = slot.lend();
        assert_eq!(free(&slots), (1, 1), "both lent while the job waits");
        lent.take_back().await;
        assert!(slot.is_held() && slot.is_running());
        assert_eq!(free(&slots), (0, 0));
        // A caller that gives up its call never takes the slots back: nothing is added.
        drop(slot.lend());
        assert_eq!(free(&slots), (1, 1));
        drop(slot);
        assert_eq!(free(&slots), (1, 1), "the worker has its one slot, not two");
    }

    #[tokio::test]
    async fn spare_slots_are_released_whether_used_or_not() {
        let slots = Slots::new(3, 0);
        let permit = slots.lease().await.unwrap();
        let slot = JobSlot::new(Arc::clone(&slots), permit);
        let mut spare = slot.spare(5);
        assert_eq!(spare.len(), 2, "no more than the free slots");
        assert_eq!(free(&slots).0, 0);
        // One runs a handed job, on a slot of its own; the other was not needed.
        let used = slot.beside(spare.remove(0));
        drop(spare);
        assert_eq!(free(&slots).0, 1);
        drop(used);
        assert_eq!(free(&slots).0, 2);
        drop(slot);
        assert_eq!(free(&slots), (3, 3), "every slot back, none twice");
    }

    /// With `lease_ahead`, more jobs are leased than run: a job leased ahead waits for an
    /// execution slot, and gets the one a job gives up when its processor returns (its lease
    /// slot still held for its commit).
    #[tokio::test]
    async fn a_job_leased_ahead_runs_when_another_rests() {
        let slots = Slots::new(1, 1);
        let first = Arc::new(JobSlot::new(
            Arc::clone(&slots),
            slots.lease().await.unwrap(),
        ));
        let ahead = Arc::new(JobSlot::new(
            Arc::clone(&slots),
            slots.lease().await.unwrap(),
        ));
        assert_eq!(free(&slots), (0, 1), "two leased, none running");
        first.start().await;
        assert!(
            slots.lease_to_run_now().is_none(),
            "nothing more is leased to run now: no lease slot and no execution slot"
        );
        let waiting = tokio::spawn({
            let ahead = Arc::clone(&ahead);
            async move { ahead.start().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one execution slot, taken");
        first.rest();
        waiting.await.unwrap();
        assert!(ahead.is_running() && !first.is_running() && first.is_held());
        drop(first);
        drop(ahead);
        assert_eq!(free(&slots), (2, 1));
    }

    /// Jobs are leased ahead only while the recent runs are short: before any run ended, and
    /// once runs take long on average, a job is leased only for an execution slot free for it.
    #[tokio::test]
    async fn long_runs_lease_no_job_ahead() {
        use futures::FutureExt;

        let slots = Slots::new(2, 2);
        assert_eq!(slots.may_lease(), 2, "not known to be short before any run");
        slots.ran(Duration::from_micros(300));
        assert_eq!(
            slots.may_lease(),
            3,
            "short: the free slots and one ahead (one ended)"
        );
        for _ in 0..40 {
            slots.ran(Duration::from_millis(50));
        }
        assert!(!slots.short());
        let a = JobSlot::new(Arc::clone(&slots), slots.lease().await.unwrap());
        a.start().await;
        assert_eq!(slots.may_lease(), 1);
        assert!(
            take_free(&slots, 5).is_empty(),
            "the caller's job takes the one execution slot left"
        );
        let b = JobSlot::new(Arc::clone(&slots), slots.lease().await.unwrap());
        b.start().await;
        let pays = slots.lease_when_it_pays();
        tokio::pin!(pays);
        assert!(pays.as_mut().now_or_never().is_none(), "both slots run");
        a.rest();
        let permit = pays.now_or_never().expect("a slot is free again");
        assert!(permit.is_some());
        drop(permit);
        // Short runs again: the lease-ahead slots are used.
        for _ in 0..60 {
            slots.ran(Duration::from_micros(100));
        }
        assert_eq!(
            take_free(&slots, 5).len(),
            2,
            "every free lease slot (4, less the 2 held)"
        );
    }

    /// Jobs that stop flowing (no execution slot given back for a short run's time) stop the
    /// leasing ahead, before the average learns that runs turned long.
    #[tokio::test(start_paused = true)]
    async fn stuck_jobs_stop_the_leasing_ahead() {
        let slots = Slots::new(1, 4);
        slots.ran(Duration::from_micros(200));
        let running = JobSlot::new(Arc::clone(&slots), slots.lease().await.unwrap());
        running.start().await;
        let ahead = Arc::new(JobSlot::new(
            Arc::clone(&slots),
            slots.lease().await.unwrap(),
        ));
        let waiting = tokio::spawn({
            let ahead = Arc::clone(&ahead);
            async move { ahead.start().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(slots.waiting.load(Ordering::Relaxed), 1);
        assert!(slots.short(), "a slot was given back just now");
        tokio::time::advance(SHORT).await;
        assert!(!slots.short(), "nothing moved for a short run's time");
        assert_eq!(
            slots.may_lease(),
            0,
            "nothing to lease: no execution slot is free"
        );
        running.rest();
        waiting.await.unwrap();
        assert!(slots.short(), "flowing again");
        tokio::time::advance(SHORT).await;
        assert!(!slots.short(), "an idle worker leases nothing ahead");
    }

    /// A fan-out's branches are handed only to execution slots free now, even while jobs are
    /// leased ahead: the other branches stay queued for other workers.
    #[tokio::test]
    async fn a_fan_out_is_never_handed_ahead() {
        let slots = Slots::new(2, 8);
        slots.ran(Duration::from_micros(100));
        assert!(slots.short());
        let job = JobSlot::new(Arc::clone(&slots), slots.lease().await.unwrap());
        job.start().await;
        job.rest();
        for _ in 0..10 {
            slots.ran(Duration::from_micros(100));
        }
        let spare = job.spare(5);
        assert_eq!(
            spare.len(),
            1,
            "the one other execution slot, not the 8 ahead"
        );
        assert_eq!(take_free(&slots, 5).len(), 5, "a claim may lease ahead");
    }

    /// No more jobs are leased ahead than ended within the last short run's time: a worker
    /// that just ran one quick step leases one ahead, not the whole fan-out behind it.
    #[tokio::test(start_paused = true)]
    async fn no_more_wait_than_ended_lately() {
        let slots = Slots::new(1, 16);
        slots.ran(Duration::from_micros(500));
        assert_eq!(slots.may_lease(), 1 + 1, "the free slot and one ahead");
        for _ in 0..3 {
            slots.ran(Duration::from_micros(500));
        }
        assert_eq!(slots.may_lease(), 1 + 4);
        tokio::time::advance(SHORT).await;
        assert_eq!(
            slots.may_lease(),
            1,
            "nothing ended lately: only the free slot"
        );
        for _ in 0..40 {
            slots.ran(Duration::from_micros(100));
        }
        assert_eq!(slots.may_lease(), 1 + 16, "no more ahead than lease_ahead");
    }
}
