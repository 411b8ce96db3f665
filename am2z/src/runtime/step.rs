//! The step executor: one step's attempts, with delay, limits, timeout, panics, retries,
//! backoff, stats and events. Shared by every runtime that executes steps in-process.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tracing::Instrument;

use super::stats::{Counters, Stage};
use crate::event::EventKind;
use crate::{Ctx, Error, Processor};

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
    let events = run.host.events();

    // A step job's own step (not one it calls) parks its waits with its worker instead.
    let parking = run.parking.as_ref().filter(|_| parent.depth == 0);
    let parked = |attempt: u32, delay: Duration| {
        parking.map(|parking| {
            parking.park(attempt, delay);
            StepFailure::new(Error::Cancelled {
                reason: format!("parked for {delay:?} before attempt {attempt}"),
            })
        })
    };
    let resume = parking.map_or(0, |p| p.resume);
    if let Some(delay) = config.delay.filter(|_| resume == 0) {
        if let Some(parked) = parked(1, delay) {
            return Err(parked);
        }
        let _delayed = InStage::enter(&slot.counters, Stage::Delayed);
        tokio::time::sleep(delay).await;
    }

    let mut attempt = resume.max(1);
    loop {
        let waiting = InStage::enter(&slot.counters, Stage::Waiting);
        // The cluster-wide gate first, so the in-process gates (exact on tokio's clock, and
        // ordered by priority) are the last word before the body.
        let limited = config.concurrency.is_some() || config.rate_limit.is_some();
        let shared_permit = match &run.gate {
            Some(gate) if limited => Some(gate.admit(name, config).await),
            _ => None,
        };
        if let Some(rate) = &slot.rate {
            rate.acquire().await;
        }
        let mut permits = Vec::with_capacity(slot.gates.len());
        for gate in &slot.gates {
            permits.push(gate.acquire(config.priority).await);
        }
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
        };
        if events.is_observed() {
            events.publish(run.event(Some(name), EventKind::StepStarted { attempt }));
        }
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
        drop(permits);
        drop(shared_permit);
        drop(ctx);
        drop(active);

        match result {
            Ok(output) => {
                run.step_committed();
                for counters in &slot.counters {
                    counters.finish(true);
                }
                if events.is_observed() {
                    let execution_time = started.elapsed();
                    events.publish(run.event(
                        Some(name),
                        EventKind::StepCompleted {
                            attempt,
                            execution_time,
                        },
                    ));
                }
                return Ok(output);
            }
            Err(error) if config.retry.should_retry(&error, attempt + 1) => {
                let delay = config.retry.backoff.delay_after(attempt);
                tracing::debug!(processor = name, attempt, ?delay, %error, "attempt failed; retrying");
                if events.is_observed() {
                    events.publish(run.event(
                        Some(name),
                        EventKind::StepRetrying {
                            attempt,
                            next_attempt: attempt + 1,
                            delay,
                            error,
                        },
                    ));
                }
                if !delay.is_zero() {
                    if let Some(parked) = parked(attempt + 1, delay) {
                        return Err(parked);
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
                if events.is_observed() {
                    events.publish(run.event(
                        Some(name),
                        EventKind::StepFailed {
                            attempt,
                            error: error.clone(),
                        },
                    ));
                }
                return Err(StepFailure {
                    error,
                    input: Some(input),
                });
            }
        }
    }
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
