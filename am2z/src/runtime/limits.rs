//! In-process gates: a semaphore that serves higher priorities first, and a rate limiter.
//!
//! Both run on tokio's clock, so tests drive them with paused time.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// A counting semaphore whose waiters are served by priority (higher first), then in arrival
/// order.
#[derive(Debug)]
pub(crate) struct PrioritySemaphore {
    state: Mutex<SemaphoreState>,
}

#[derive(Debug)]
struct SemaphoreState {
    available: usize,
    waiters: BinaryHeap<Waiter>,
    arrivals: u64,
}

#[derive(Debug)]
struct Waiter {
    priority: i32,
    arrival: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority first, then the earlier arrival.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.arrival.cmp(&self.arrival))
    }
}

/// A held slot; dropping it hands the slot to the next waiter.
#[derive(Debug)]
pub(crate) struct Permit(Arc<PrioritySemaphore>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Gives the slot back if the acquiring future is dropped after the slot was handed to it.
struct PendingAcquire {
    semaphore: Arc<PrioritySemaphore>,
    wake: Option<oneshot::Receiver<()>>,
}

impl Drop for PendingAcquire {
    fn drop(&mut self) {
        if let Some(mut wake) = self.wake.take() {
            wake.close();
            if wake.try_recv().is_ok() {
                self.semaphore.release();
            }
        }
    }
}

impl PrioritySemaphore {
    pub(crate) fn new(slots: usize) -> Self {
        PrioritySemaphore {
            state: Mutex::new(SemaphoreState {
                available: slots,
                waiters: BinaryHeap::new(),
                arrivals: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SemaphoreState> {
        // The state is consistent after every statement, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) async fn acquire(self: &Arc<Self>, priority: i32) -> Permit {
        let wake = {
            let mut state = self.lock();
            if state.available > 0 && state.waiters.is_empty() {
                state.available -= 1;
                return Permit(Arc::clone(self));
            }
            let (wake, woken) = oneshot::channel();
            state.arrivals += 1;
            let arrival = state.arrivals;
            state.waiters.push(Waiter {
                priority,
                arrival,
                wake,
            });
            woken
        };
        let mut pending = PendingAcquire {
            semaphore: Arc::clone(self),
            wake: Some(wake),
        };
        if let Some(wake) = pending.wake.as_mut() {
            // The sender lives in our own heap; it is only dropped after sending.
            let _ = wake.await;
        }
        pending.wake = None;
        Permit(Arc::clone(self))
    }

    fn release(&self) {
        let mut state = self.lock();
        while let Some(waiter) = state.waiters.pop() {
            if waiter.wake.send(()).is_ok() {
                return;
            }
        }
        state.available += 1;
    }
}

/// Lets at most `max` attempts start in any window of length `per` (a sliding log of the
/// last `max` start times: exact, and small for the limits people configure).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    max: usize,
    per: Duration,
    starts: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    pub(crate) fn new(max: u32, per: Duration) -> Self {
        let max = usize::try_from(max.max(1)).unwrap_or(usize::MAX);
        RateLimiter {
            max,
            per,
            starts: Mutex::new(VecDeque::with_capacity(max.min(1024))),
        }
    }

    /// Reserves the earliest allowed start and waits for it.
    pub(crate) async fn acquire(&self) {
        let start_at = {
            let mut starts = self.starts.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let mut at = now;
            if starts.len() >= self.max
                && let Some(oldest) = starts.pop_front()
            {
                at = at.max(oldest + self.per);
            }
            if let Some(&last) = starts.back() {
                at = at.max(last);
            }
            starts.push_back(at);
            at
        };
        if start_at > Instant::now() {
            tokio::time::sleep_until(start_at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn serves_higher_priority_first() {
        let sem = Arc::new(PrioritySemaphore::new(1));
        let held = sem.acquire(0).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [("low", 1), ("high", 10), ("mid", 5)] {
            let (sem, order) = (Arc::clone(&sem), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire(priority).await;
                order.lock().unwrap().push(name);
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high", "mid", "low"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_does_not_leak_its_slot() {
        let sem = Arc::new(PrioritySemaphore::new(1));
        let held = sem.acquire(0).await;
        let waiting = tokio::spawn({
            let sem = Arc::clone(&sem);
            async move { sem.acquire(0).await }
        });
        tokio::task::yield_now().await;
        waiting.abort();
        drop(held);
        let _again = tokio::time::timeout(Duration::from_secs(1), sem.acquire(0))
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_allows_a_burst_then_spaces_starts() {
        let limiter = RateLimiter::new(2, Duration::from_secs(1));
        let begin = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..4 {
            limiter.acquire().await;
            starts.push((Instant::now() - begin).as_millis());
        }
        assert_eq!(starts, [0, 0, 1000, 1000]);
    }
}
