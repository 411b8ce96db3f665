//! The lifecycle suite (the key-lifecycle invariants both runtimes share) on the Redis
//! runtime with step jobs (the default), workers in the test process, against the Redis on
//! 127.0.0.1:6379 (or `AM2Z_TEST_REDIS_URL`), each runtime under its own key prefix, removed
//! after the test.

use std::time::Duration;

use am2z::{RedisConfig, RedisRuntime, RunId};
use am2z_tests::fault::{redis_cli, scan_keys};
use am2z_tests::lifecycle_suite::{LcCallee, LifecycleHarness};

fn redis_url() -> String {
    std::env::var("AM2Z_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn config() -> RedisConfig {
    RedisConfig::new(redis_url())
        .prefix(format!("am2z-lc-{}", RunId::generate()))
        .worker_concurrency(8)
        .idle_poll(Duration::from_millis(50))
        .lease(Duration::from_secs(3))
        .sweep_every(Duration::from_millis(250))
        .session_ttl(Duration::from_secs(120))
        .result_ttl(Duration::from_secs(120))
}

struct Redis;

impl LifecycleHarness for Redis {
    type Runtime = RedisRuntime;
    async fn runtime() -> RedisRuntime {
        RedisRuntime::new(config())
    }
    async fn one_step_at_a_time() -> RedisRuntime {
        let runtime = RedisRuntime::new(config().session_concurrency(1));
        // Served, so a `ctx.call` of it is a child job of the calling run (what a worker
        // fleet that serves the callee does), not a call run inline.
        runtime.serve(LcCallee);
        runtime
    }
    async fn clean_up(runtime: &RedisRuntime) {
        let url = redis_url();
        for key in scan_keys(&url, &format!("{}:*", runtime.config().queue_prefix())) {
            redis_cli(&url, &["DEL", &key]);
        }
    }
}

am2z_tests::lifecycle_suite!(Redis);
