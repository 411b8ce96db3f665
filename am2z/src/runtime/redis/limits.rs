//! Cluster-wide limits: a processor's `concurrency` and `rate` hold across every worker, not
//! per process. Each step attempt passes the process's own gates (the step executor's), then
//! these: a sliding log of starts for the rate (`rate.lua`), and expiring permits for the
//! concurrency (`admit.lua`), renewed while the step runs so a dead worker's permits free
//! themselves. Waiters poll; cross-process waiters are not ordered by priority.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

use super::Inner;
use super::keys::JobId;
use super::worker::millis;
use crate::portable::Json;
use crate::runtime::host::{ChildCall, StepGate};
use crate::{Error, ProcessorConfig, RunId};

/// How long a worker waits before asking again for a concurrency permit.
const PERMIT_POLL: Duration = Duration::from_millis(5);

/// The gate of the runs one `RedisRuntime` executes: the cluster-wide limits, the payload
/// limit of custom events, and `ctx.call` as a child job (`calls.rs`).
pub(crate) struct ClusterGate {
    pub(crate) inner: Arc<Inner>,
    /// The job whose steps pass this gate (child calls are named after it).
    caller: JobId,
    /// The job's child calls so far.
    calls: AtomicU32,
}

/// A held concurrency permit: given back when dropped.
struct Permit {
    inner: Arc<Inner>,
    key: String,
    id: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner
            .permits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        let Ok(mut conn) = self.inner.conn() else {
            return;
        };
        let (key, id) = (std::mem::take(&mut self.key), std::mem::take(&mut self.id));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _: redis::RedisResult<i64> = redis::cmd("ZREM")
                    .arg(key)
                    .arg(id)
                    .query_async(&mut conn)
                    .await;
            });
        }
    }
}

fn unique_id() -> String {
    format!("{}-{}", std::process::id(), RunId::generate())
}

impl ClusterGate {
    pub(crate) fn new(inner: Arc<Inner>, caller: JobId) -> Self {
        ClusterGate {
            inner,
            caller,
            calls: AtomicU32::new(0),
        }
    }

    async fn rate(&self, processor: &'static str, max: u32, per: Duration) {
        let inner = &self.inner;
        let key = inner.keys.starts(processor);
        let id = unique_id();
        loop {
            let Ok(mut conn) = inner.conn() else { return };
            let wait: redis::RedisResult<u64> = inner
                .scripts
                .rate
                .key(&key)
                .arg(&id)
                .arg(max)
                .arg(millis(per).max(1))
                .invoke_async(&mut conn)
                .await;
            match wait {
                Ok(0) => return,
                Ok(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Err(error) => {
                    tracing::warn!(processor, error = %inner.errors.scrub(&error.to_string()), "the shared rate limit is unreachable; admitting");
                    return;
                }
            }
        }
    }

    async fn permit(&self, processor: &'static str, limit: u32) -> Option<Permit> {
        let inner = &self.inner;
        let key = inner.keys.permits(processor);
        let id = unique_id();
        let hold = millis(inner.config.lease);
        loop {
            let mut conn = inner.conn().ok()?;
            let taken: redis::RedisResult<i64> = inner
                .scripts
                .admit
                .key(&key)
                .arg(&id)
                .arg(limit)
                .arg(hold)
                .invoke_async(&mut conn)
                .await;
            match taken {
                Ok(1) => {
                    inner
                        .permits
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id.clone(), key.clone());
                    return Some(Permit {
                        inner: Arc::clone(inner),
                        key,
                        id,
                    });
                }
                Ok(_) => tokio::time::sleep(PERMIT_POLL).await,
                Err(error) => {
                    tracing::warn!(processor, error = %inner.errors.scrub(&error.to_string()), "the shared concurrency limit is unreachable; admitting");
                    return None;
                }
            }
        }
    }
}

impl StepGate for ClusterGate {
    fn admit<'a>(
        &'a self,
        processor: &'static str,
        config: &'a ProcessorConfig,
    ) -> BoxFuture<'a, Box<dyn Send>> {
        Box::pin(async move {
            if let Some(rate) = config.rate_limit {
                self.rate(processor, rate.max, rate.per).await;
            }
            let permit = match config.concurrency {
                Some(limit) => self.permit(processor, limit).await,
                None => None,
            };
            Box::new(permit) as Box<dyn Send>
        })
    }

    /// Custom events go to the session stream: they obey the payload limit like inputs and
    /// outcomes do.
    fn max_payload_bytes(&self) -> Option<usize> {
        Some(self.inner.config.max_payload_bytes)
    }

    fn call<'a>(&'a self, call: ChildCall<'a>) -> Option<BoxFuture<'a, Result<Json, Error>>> {
        let ordinal = self.calls.fetch_add(1, Ordering::Relaxed);
        super::calls::start(&self.inner, self.caller, ordinal, call)
    }
}

/// Extends every concurrency permit this process holds (called by the renewer).
pub(crate) async fn renew_permits(inner: &Inner) {
    let held: Vec<(String, String)> = inner
        .permits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(id, key)| (id.clone(), key.clone()))
        .collect();
    if held.is_empty() {
        return;
    }
    let Ok(conn) = inner.conn() else { return };
    let hold = millis(inner.config.lease);
    let renewals = held.into_iter().map(|(id, key)| {
        let mut conn = conn.clone();
        async move {
            let renewed: redis::RedisResult<i64> = inner
                .scripts
                .hold
                .key(&key)
                .arg(&id)
                .arg(hold)
                .invoke_async(&mut conn)
                .await;
            if let Err(error) = renewed {
                tracing::warn!(error = %inner.errors.scrub(&error.to_string()), "renewing a concurrency permit failed");
            }
        }
    });
    futures::future::join_all(renewals).await;
}
