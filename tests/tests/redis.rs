//! The conformance suite on the Redis runtime, with workers in the test process, against the
//! Redis on 127.0.0.1:6379 (or `AM2Z_TEST_REDIS_URL`). Each runtime gets its own key prefix,
//! so tests never see each other's keys; every key a test makes carries a short TTL, and the
//! Redis-only tests below also delete what they made and check that nothing is left.

use std::time::Duration;

use am2z::{RedisConfig, RedisRuntime, RunId};
use am2z_tests::flows::Arith;
use am2z_tests::processors::AddOne;
use am2z_tests::suite::Harness;

fn redis_url() -> String {
    std::env::var("AM2Z_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Settings for a test runtime: its own prefix, short TTLs, a quick idle poll.
fn test_config(url: &str) -> RedisConfig {
    RedisConfig::new(url)
        .prefix(format!("am2z-test-{}", RunId::generate()))
        .worker_concurrency(64)
        .idle_poll(Duration::from_millis(50))
        .session_ttl(Duration::from_secs(120))
        .result_ttl(Duration::from_secs(120))
}

struct Redis;

impl Harness for Redis {
    type Runtime = RedisRuntime;
    const SLACK: Duration = Duration::from_millis(150);
    async fn runtime() -> RedisRuntime {
        let runtime = RedisRuntime::new(test_config(&redis_url()));
        // What this worker serves by name (`execute` serves what it runs by itself).
        runtime.serve(AddOne);
        runtime.serve(Arith);
        runtime
    }
}

am2z_tests::conformance_suite!(Redis, paused = false);
