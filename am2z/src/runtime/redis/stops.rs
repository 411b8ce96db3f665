//! Acknowledged stops: `stop_session` announces `stop <session> <nonce>` on the control
//! channel, every process that hears it fires its runs of the session and answers
//! `stopped <nonce>`, and the caller returns once as many processes answered as heard it (or a
//! short bound passed). So when `stop_session` returns, no live process starts another step
//! of the stopped session's runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::SessionId;

/// The longest `stop_session` waits for processes to answer (one that is frozen or cut off
/// never does; its runs' commits are refused anyway).
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(2);

/// One stop awaiting its answers.
#[derive(Default)]
pub(crate) struct PendingStop {
    answered: AtomicUsize,
    notify: Notify,
}

impl PendingStop {
    /// Waits until `heard` processes answered, for at most `limit`; returns how many did.
    pub(crate) async fn answered_by(&self, heard: usize, limit: Duration) -> usize {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            let answered = self.answered.load(Ordering::SeqCst);
            if answered >= heard {
                return answered;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.answered.load(Ordering::SeqCst);
            }
        }
    }
}

/// Answers being collected for one stop; dropping it stops collecting.
pub(crate) struct Expected<'a> {
    stops: &'a Stops,
    nonce: &'a str,
    pending: Arc<PendingStop>,
}

impl std::ops::Deref for Expected<'_> {
    type Target = PendingStop;

    fn deref(&self) -> &PendingStop {
        &self.pending
    }
}

impl Drop for Expected<'_> {
    fn drop(&mut self) {
        self.stops.lock().remove(self.nonce);
    }
}

/// How long a heard stop is remembered: far longer than a claim takes to start running.
const REMEMBER: Duration = Duration::from_secs(60);

/// The stops this process announced and awaits answers for, by nonce, and the stops it heard.
#[derive(Default)]
pub(crate) struct Stops {
    pending: Mutex<HashMap<String, Arc<PendingStop>>>,
    heard: Mutex<HashMap<SessionId, Instant>>,
}

impl Stops {
    /// Collects answers to the stop announced with `nonce` while the guard lives.
    pub(crate) fn expect<'a>(&'a self, nonce: &'a str) -> Expected<'a> {
        let pending = Arc::new(PendingStop::default());
        self.lock().insert(nonce.to_owned(), Arc::clone(&pending));
        Expected {
            stops: self,
            nonce,
            pending,
        }
    }

    /// A process answered the stop announced with `nonce` (ignored if it is not ours).
    pub(crate) fn answered(&self, nonce: &str) {
        if let Some(pending) = self.lock().get(nonce) {
            pending.answered.fetch_add(1, Ordering::SeqCst);
            pending.notify.notify_waiters();
        }
    }

    /// This process heard that `session` was stopped.
    pub(crate) fn heard(&self, session: &SessionId) {
        let now = Instant::now();
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.retain(|_, at| now.duration_since(*at) < REMEMBER);
        heard.insert(session.clone(), now);
    }

    /// Whether a stop of `session` was heard after `asked`: a job claimed by a request sent
    /// then may belong to the stopped session (its claim may have preceded the stop), so it
    /// must not start.
    pub(crate) fn heard_since(&self, session: &SessionId, asked: Instant) -> bool {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.get(session).is_some_and(|at| *at >= asked)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PendingStop>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stop_waits_for_every_answer_or_the_bound() {
        let stops = Arc::new(Stops::default());
        {
            let pending = stops.expect("n1");
            stops.answered("n1");
            stops.answered("other");
            let answering = tokio::spawn({
                let stops = Arc::clone(&stops);
                async move { stops.answered("n1") }
            });
            assert_eq!(pending.answered_by(2, Duration::from_secs(2)).await, 2);
            answering.await.unwrap();
            let begin = tokio::time::Instant::now();
            assert_eq!(pending.answered_by(3, Duration::from_secs(2)).await, 2);
            assert_eq!(begin.elapsed(), Duration::from_secs(2));
        }
        assert!(stops.lock().is_empty(), "a dropped guard stops collecting");
    }
}
