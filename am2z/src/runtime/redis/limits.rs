//! Cluster-wide limits: a processor's `concurrency` and `rate` hold across every worker, not
//! per process. Each step attempt passes these, then the process's own gates (the step
//! executor's): a sliding log of starts for the rate (`rate.lua`), and expiring permits for
//! the concurrency (`admit.lua`), renewed while the step runs so a dead worker's permits free
//! themselves. Waiters poll; cross-process waiters are not ordered by priority.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::keys::Keys;
use super::protocol::{Redis, limits};
use crate::{ProcessorConfig, RunId};

/// How long a worker waits before asking again for a concurrency permit.
const PERMIT_POLL: Duration = Duration::from_millis(5);

/// The limits this process's steps pass, and the permits they hold.
pub(crate) struct Limits {
    redis: Arc<Redis>,
    keys: Keys,
    /// How long a permit holds unless renewed (the lease).
    hold: Duration,
    /// Permits held by steps running here: id → key.
    held: Mutex<HashMap<String, String>>,
}

/// A held concurrency permit: given back when dropped.
pub(crate) struct Permit {
    limits: Arc<Limits>,
    key: String,
    id: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        let Ok(mut conn) = self.limits.redis.conn() else {
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

impl Limits {
    pub(crate) fn new(redis: Arc<Redis>, keys: Keys, hold: Duration) -> Self {
        Limits {
            redis,
            keys,
            hold,
            held: Mutex::default(),
        }
    }

    /// Passes `processor`'s limits across workers; the returned guard holds its concurrency
    /// permit, if it has a limit. When Redis cannot be reached it admits (and logs), rather
    /// than turn a limiter outage into failed steps (the commit would fail anyway).
    pub(crate) async fn admit(
        self: &Arc<Self>,
        processor: &'static str,
        config: &ProcessorConfig,
    ) -> Option<Permit> {
        if let Some(rate) = config.rate_limit {
            self.rate(processor, rate.max, rate.per).await;
        }
        match config.concurrency {
            Some(limit) => self.permit(processor, limit).await,
            None => None,
        }
    }

    async fn rate(&self, processor: &'static str, max: u32, per: Duration) {
        let key = self.keys.starts(processor);
        let start = unique_id();
        loop {
            match limits::rate(&self.redis, &key, &start, max, per).await {
                Ok(None) => return,
                Ok(Some(wait)) => tokio::time::sleep(wait).await,
                Err(error) => {
                    tracing::warn!(processor, error = %error.into_error(&self.redis.errors), "the shared rate limit is unreachable; admitting");
                    return;
                }
            }
        }
    }

    async fn permit(self: &Arc<Self>, processor: &'static str, limit: u32) -> Option<Permit> {
        let key = self.keys.permits(processor);
        let id = unique_id();
        loop {
            match limits::admit(&self.redis, &key, &id, limit, self.hold).await {
                Ok(true) => {
                    self.held
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id.clone(), key.clone());
                    return Some(Permit {
                        limits: Arc::clone(self),
                        key,
                        id,
                    });
                }
                Ok(false) => tokio::time::sleep(PERMIT_POLL).await,
                Err(error) => {
                    tracing::warn!(processor, error = %error.into_error(&self.redis.errors), "the shared concurrency limit is unreachable; admitting");
                    return None;
                }
            }
        }
    }

    /// Extends every concurrency permit this process holds (called by the renewer).
    pub(crate) async fn renew(&self) {
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        for (id, key) in self.held.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            by_key.entry(key.clone()).or_default().push(id.clone());
        }
        for (key, ids) in by_key {
            if let Err(error) = limits::hold(&self.redis, &key, &ids, self.hold).await {
                tracing::warn!(error = %error.into_error(&self.redis.errors), "renewing concurrency permits failed");
            }
        }
    }
}
