//! A worker's execution slots: the claimer takes one per job it leases; a step waiting on a
//! `ctx.call` lends its job's slot back meanwhile (so the child, or anything else, can run on
//! it) and takes one again before it goes on. The permit is the guard: a lent slot that is
//! never taken back (the caller gave up on its call) is simply not held, never leaked.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Up to `most` of the worker's free `slots`, taken now without waiting (each is given back
/// when its permit drops).
pub(crate) fn take_free(slots: &Arc<Semaphore>, most: usize) -> Vec<OwnedSemaphorePermit> {
    let mut permits = Vec::new();
    while permits.len() < most {
        match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    permits
}

/// The slot one job (and the successors handed to it) runs on.
pub(crate) struct JobSlot {
    slots: Arc<Semaphore>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl JobSlot {
    pub(crate) fn new(slots: Arc<Semaphore>, permit: OwnedSemaphorePermit) -> Self {
        JobSlot {
            slots,
            permit: Mutex::new(Some(permit)),
        }
    }

    /// Up to `most` of the worker's free slots, held for jobs a commit may hand to this
    /// job's worker: each is released when its permit drops, used or not.
    pub(crate) fn spare(&self, most: usize) -> Vec<OwnedSemaphorePermit> {
        take_free(&self.slots, most)
    }

    /// The slot of another job of this worker, on `permit` (one of [`spare`]'s).
    ///
    /// [`spare`]: JobSlot::spare
    pub(crate) fn beside(&self, permit: OwnedSemaphorePermit) -> JobSlot {
        JobSlot::new(Arc::clone(&self.slots), permit)
    }

    /// Gives the slot back to the worker while the job waits; [`Lent::take_back`] takes one
    /// again.
    pub(crate) fn lend(self: &Arc<Self>) -> Lent {
        let permit = self.permit.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(permit);
        Lent {
            slot: Arc::clone(self),
        }
    }

    /// Whether the job holds its slot now.
    #[cfg(test)]
    fn is_held(&self) -> bool {
        self.permit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

/// A slot lent back to the worker.
pub(crate) struct Lent {
    slot: Arc<JobSlot>,
}

impl Lent {
    /// Waits for a free slot and holds it for the job again.
    pub(crate) async fn take_back(self) {
        if let Ok(permit) = Arc::clone(&self.slot.slots).acquire_owned().await {
            *self.slot.permit.lock().unwrap_or_else(|p| p.into_inner()) = Some(permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lent_slot_is_never_counted_twice_nor_leaked() {
        let slots = Arc::new(Semaphore::new(1));
        let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
        let slot = Arc::new(JobSlot::new(Arc::clone(&slots), permit));
        assert_eq!(slots.available_permits(), 0);
        let lent = slot.lend();
        assert_eq!(slots.available_permits(), 1, "lent while the job waits");
        lent.take_back().await;
        assert!(slot.is_held());
        assert_eq!(slots.available_permits(), 0);
        // A caller that gives up its call never takes the slot back: nothing is added.
        drop(slot.lend());
        assert_eq!(slots.available_permits(), 1);
        drop(slot);
        assert_eq!(
            slots.available_permits(),
            1,
            "the worker has its one slot, not two"
        );
    }

    #[tokio::test]
    async fn spare_slots_are_released_whether_used_or_not() {
        let slots = Arc::new(Semaphore::new(3));
        let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
        let slot = JobSlot::new(Arc::clone(&slots), permit);
        let mut spare = slot.spare(5);
        assert_eq!(spare.len(), 2, "no more than the free slots");
        assert_eq!(slots.available_permits(), 0);
        // One runs a handed job, on a slot of its own; the other was not needed.
        let used = slot.beside(spare.remove(0));
        drop(spare);
        assert_eq!(slots.available_permits(), 1);
        drop(used);
        assert_eq!(slots.available_permits(), 2);
        drop(slot);
        assert_eq!(slots.available_permits(), 3, "every slot back, none twice");
    }
}
