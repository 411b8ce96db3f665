//! The step executor: one step's attempts, with delay, limits, timeout, panics, retries,
//! backoff, stats and events. Shared by every runtime that executes steps in-process.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::embed::{Hooks, Wait};
use super::limits::{Permit, PrioritySemaphore, RateLimiter};
use super::stats::{Counters, Stage};
use crate::event::EventKind;
use crate::{Ctx, Error, Processor, ProcessorConfig};

/// A failed step: its error, and its input when the caller may want it back (the "state
/// before the failing step").
#[derive(Debug)]
pub(crate) struct StepFailure<I> {
    pub(crate) error: Error,
    pub(crate) input: Option<I>,
}

impl<I> StepFailure<I> {
    pub(crate) fn new(error: Error) -> Self {
        StepFailure { error, input: None }
    }
}

/// Runs `processor` on `input` under `parent`: compositions run their children directly, steps
/// go through [`attempts`].
pub(crate) async fn run<P: Processor>(
    processor: &P,
    input: P::Input,
    parent: &Ctx,
) -> Result<P::Output, StepFailure<P::Input>> {
    if processor.is_step() {
        return attempts(processor, input, parent).await;
    }
    match processor.config().timeout {
        None => processor
            .process(input, parent)
            .await
            .map_err(StepFailure::new),
        Some(limit) => {
            // A workflow's total timeout: its own token, so expiry cancels every child.
            let ctx = parent.with_token(parent.token.child_token());
            match tokio::time::timeout(limit, processor.process(input, &ctx)).await {
                Ok(result) => result.map_err(StepFailure::new),
                Err(_) => {
                    ctx.token.cancel();
                    Err(StepFailure::new(Error::Timeout {
                        processor: processor.name().to_owned(),
                        limit,
                    }))
                }
            }
        }
    }
}

async fn attempts<P: Processor>(
    processor: &P,
    input: P::Input,
    parent: &Ctx,
) -> Result<P::Output, StepFailure<P::Input>> {
    let name = processor.name();
    let config = processor.config();
    let run = &parent.run;
    let slot = run.host.step_slot(&run.session, name, config);

    // An embedded run's own step (not one it calls) hands its waits back to its runtime.
    let waits = run
        .embedding
        .as_ref()
        .and_then(|e| e.waits.as_ref())
        .filter(|_| parent.depth == run.depth());
    let handed_back = |attempt: u32, delay: Duration| {
        waits.map(|waits| {
            waits.hand_back(Wait { attempt, delay });
            StepFailure::new(Error::Cancelled {
                reason: format!("waiting {delay:?} before attempt {attempt}, in its runtime"),
            })
        })
    };
    let resume = waits.map_or(0, |w| w.resume);
    if let Some(delay) = config.delay.filter(|_| resume == 0) {
        if let Some(handed_back) = handed_back(1, delay) {
            return Err(handed_back);
        }
        let _delayed = InStage::enter(&slot.counters, Stage::Delayed);
        tokio::time::sleep(delay).await;
    }

    let gates = Arc::new(Gates {
        processor: name,
        config: *config,
        rate: slot.rate.clone(),
        local: slot.gates.clone(),
        hooks: run.embedding.as_ref().map(|e| Arc::clone(&e.hooks)),
    });
    let mut attempt = resume.max(1);
    loop {
        let waiting = InStage::enter(&slot.counters, Stage::Waiting);
        let permits = Arc::new(AttemptPermits {
            held: std::sync::Mutex::new(Some(gates.admit(true).await)),
            gates: Arc::clone(&gates),
        });
        drop(waiting);
        let active = InStage::enter(&slot.counters, Stage::Active);
        run.attempts.fetch_add(1, Ordering::Relaxed);

        // Only a timeout cancels one attempt alone; without one, the attempt shares its parent's
        // token (stop_session, a failed sibling) and skips a child token's allocation.
        let token = match config.timeout {
            Some(_) => parent.token.child_token(),
            None => parent.token.clone(),
        };
        let span = tracing::info_span!(
            "am2z.step",
            session = %run.session,
            run = %run.run_id,
            processor = name,
            attempt,
        );
        let ctx = Ctx {
            run: Arc::clone(run),
            processor: name,
            attempt,
            depth: parent.depth,
            token: token.clone(),
            span: span.clone(),
            permits: Some(Arc::clone(&permits)),
        };
        run.publish(Some(name), || EventKind::StepStarted { attempt });
        let started = Instant::now();
        let body = AssertUnwindSafe(processor.process(input.clone(), &ctx)).catch_unwind();
        let outcome = match config.timeout {
            None => body.instrument(span).await,
            Some(limit) => match tokio::time::timeout(limit, body.instrument(span)).await {
                // A body that blocks its thread past the limit ignores its token and finishes
                // before the timer is looked at: its late result is refused all the same.
                Ok(outcome) if started.elapsed() <= limit => outcome,
                _ => {
                    token.cancel();
                    Ok(Err(Error::Timeout {
                        processor: name.to_owned(),
                        limit,
                    }))
                }
            },
        };
        let result = outcome.unwrap_or_else(|panic| Err(Error::from_panic(name, &*panic)));
        drop(ctx);
        drop(permits);
        drop(active);

        match result {
            Ok(output) => {
                run.step_committed();
                for counters in &slot.counters {
                    counters.finish(true);
                }
                if let Some(hooks) = &gates.hooks {
                    hooks.step_finished(name, true);
                }
                run.publish(Some(name), || EventKind::StepCompleted {
                    attempt,
                    execution_time: started.elapsed(),
                });
                return Ok(output);
            }
            Err(error) if config.retry.should_retry(&error, attempt + 1) => {
                let delay = config.retry.backoff.delay_after(attempt);
                tracing::debug!(processor = name, attempt, ?delay, %error, "attempt failed; retrying");
                run.publish(Some(name), || EventKind::StepRetrying {
                    attempt,
                    next_attempt: attempt + 1,
                    delay,
                    error,
                });
                if !delay.is_zero() {
                    if let Some(handed_back) = handed_back(attempt + 1, delay) {
                        return Err(handed_back);
                    }
                    let _delayed = InStage::enter(&slot.counters, Stage::Delayed);
                    tokio::time::sleep(delay).await;
                }
                attempt += 1;
            }
            Err(error) => {
                for counters in &slot.counters {
                    counters.finish(false);
                }
                if let Some(hooks) = &gates.hooks {
                    hooks.step_finished(name, false);
                }
                run.publish(Some(name), || EventKind::StepFailed {
                    attempt,
                    error: error.clone(),
                });
                return Err(StepFailure {
                    error,
                    input: Some(input),
                });
            }
        }
    }
}

/// The limits a step passes before each attempt: its processor's rate and concurrency across
/// processes (an embedding runtime's hooks) and in this process, and the runtime's worker
/// slots. The limits across processes come first, so the in-process gates (exact on tokio's
/// clock, and ordered by priority) are the last word before the body.
struct Gates {
    processor: &'static str,
    config: ProcessorConfig,
    rate: Option<Arc<RateLimiter>>,
    local: Vec<Arc<PrioritySemaphore>>,
    hooks: Option<Arc<dyn Hooks>>,
}

/// What an attempt holds while it runs.
struct Held {
    /// In-process permits, given back when dropped.
    _local: Vec<Permit>,
    /// The admission across processes, given back when dropped.
    _shared: Option<Box<dyn Send>>,
}

impl Gates {
    /// Passes every gate; `start`: a new attempt (which also takes a start from the rate
    /// limit), rather than a step resuming after a `ctx.call`.
    async fn admit(&self, start: bool) -> Held {
        let limited = self.config.concurrency.is_some() || self.config.rate_limit.is_some();
        let shared = match &self.hooks {
            Some(hooks) if limited => Some(hooks.admit(self.processor, &self.config).await),
            _ => None,
        };
        if let Some(rate) = self.rate.as_ref().filter(|_| start) {
            rate.acquire().await;
        }
        let mut local = Vec::with_capacity(self.local.len());
        for gate in &self.local {
            local.push(gate.acquire(self.config.priority).await);
        }
        Held {
            _local: local,
            _shared: shared,
        }
    }
}

/// The limits one attempt holds, which it gives back while it waits on a `ctx.call`
/// ([`release`](AttemptPermits::release)).
pub(crate) struct AttemptPermits {
    held: std::sync::Mutex<Option<Held>>,
    gates: Arc<Gates>,
}

/// The limits of an attempt that gave them back for a `ctx.call`. [`reacquire`]
/// (Released::reacquire) takes them again; dropped without it (the caller abandoned its
/// call), the attempt runs on without them: nothing is ever held twice or leaked.
pub(crate) struct Released {
    permits: Arc<AttemptPermits>,
}

impl AttemptPermits {
    /// Gives back the limits this attempt holds (for the length of a `ctx.call`).
    pub(crate) fn release(self: &Arc<Self>) -> Released {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(held);
        Released {
            permits: Arc::clone(self),
        }
    }
}

impl Released {
    /// Takes the limits again, waiting for them as a new attempt would (without a new start
    /// of the rate limit: the attempt already started).
    pub(crate) async fn reacquire(self) {
        let held = self.permits.gates.admit(false).await;
        *self.permits.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(held);
    }
}

/// Runs `work` until it ends or `token` fires; then lets it run for at most `grace` more, so
/// that steps watching their tokens (which fired with `token`) return after cleaning up.
/// `None` when the grace ran out and the work was dropped.
pub(crate) async fn until_cancelled<F: Future>(
    token: &CancellationToken,
    grace: Duration,
    work: F,
) -> Option<F::Output> {
    tokio::pin!(work);
    tokio::select! {
        biased;
        output = while_live(|| token.is_cancelled(), &mut work) => return Some(output),
        () = token.cancelled() => {}
    }
    within_grace(&mut work, grace).await
}

/// `work`, which stops being polled once `fired()` says its cancellation fired. A step woken
/// in the same instant as its token (its timer ran out as the stop was heard) takes no further
/// step outside the cancel grace: with no grace, a stopped step never runs to its end.
pub(crate) fn while_live<'a, F: Future + Unpin>(
    fired: impl Fn() -> bool + 'a,
    work: &'a mut F,
) -> impl Future<Output = F::Output> + 'a {
    std::future::poll_fn(move |cx| {
        if fired() {
            // The select polling this sees the cancellation's own branch ready.
            Poll::Pending
        } else {
            Pin::new(&mut *work).poll(cx)
        }
    })
}

/// Lets a cancelled `work` run for at most `grace` to return; `None` when it did not (it is
/// dropped). A zero grace drops it without polling it again.
pub(crate) async fn within_grace<F: Future + Unpin>(
    work: &mut F,
    grace: Duration,
) -> Option<F::Output> {
    if grace.is_zero() {
        return None;
    }
    tokio::time::timeout(grace, work).await.ok()
}

/// Keeps a gauge raised while alive, so a cancelled run (its future dropped mid-await) never
/// leaves a step counted as waiting or active.
struct InStage<'a> {
    counters: &'a [Arc<Counters>],
    stage: Stage,
}

impl<'a> InStage<'a> {
    fn enter(counters: &'a [Arc<Counters>], stage: Stage) -> Self {
        for c in counters {
            c.enter(stage);
        }
        InStage { counters, stage }
    }
}

impl Drop for InStage<'_> {
    fn drop(&mut self) {
        for c in self.counters {
            c.leave(self.stage);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tokio::sync::Notify;

    use super::*;

    /// A step whose awaited event comes in the instant its token fires: both wake it before
    /// it is polled again (the test's runtime has one thread).
    async fn woken_with_its_token(grace: Duration) -> (Option<()>, bool) {
        let token = CancellationToken::new();
        let event = Arc::new(Notify::new());
        let ran_to_its_end = Arc::new(AtomicBool::new(false));
        let running = tokio::spawn({
            let (token, event) = (token.clone(), Arc::clone(&event));
            let ran = Arc::clone(&ran_to_its_end);
            async move {
                let work = async {
                    event.notified().await;
                    ran.store(true, Ordering::SeqCst);
                };
                until_cancelled(&token, grace, work).await
            }
        });
        // The step starts and waits for its event.
        tokio::task::yield_now().await;
        token.cancel();
        event.notify_one();
        let output = running.await.expect("no panic");
        (output, ran_to_its_end.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_cancelled_step_takes_no_further_step_without_a_grace() {
        assert_eq!(woken_with_its_token(Duration::ZERO).await, (None, false));
    }

    #[tokio::test]
    async fn a_cancelled_step_may_end_within_its_grace() {
        assert_eq!(
            woken_with_its_token(Duration::from_secs(5)).await,
            (Some(()), true)
        );
    }
}
