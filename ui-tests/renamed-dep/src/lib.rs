//! am2z's macros through a renamed dependency: `Cargo.toml` declares am2z only as `renamed`,
//! so `am2z` is not in scope here, and every path the generated code names must go through
//! `crate = ::renamed`. That this crate compiles is the test; the tests below check that what
//! it built is what was declared.
//!
//! ```compile_fail,E0432
//! // Only `renamed` is a dependency: `am2z` does not resolve in this crate.
//! use am2z::Error;
//! ```

use renamed::{Ctx, Error, processor, workflow};

/// An order, routed by tier.
#[derive(Clone, Debug, PartialEq)]
pub enum Tier {
    /// Discounted.
    Gold,
    /// Full price.
    Standard,
}

/// Whether a failed attempt is worth another.
fn is_transient(error: &Error, attempt: u32) -> bool {
    attempt <= 3 && error.is_retryable()
}

/// Adds one, with every kind of configuration key.
#[processor(
    crate = ::renamed,
    name = "renamed.add_one",
    description = "Adds one",
    timeout = "30s",
    retries = 3,
    backoff = exponential(base = "100ms", multiplier = 2, max = "10s"),
    retry_if = is_transient,
    concurrency = 4,
    priority = -1,
    rate = "100/min",
    delay = "10ms",
    version = 2,
)]
pub async fn add_one(x: i64, ctx: &Ctx) -> Result<i64, Error> {
    let _ = ctx.attempt();
    Ok(x + 1)
}

/// Doubles.
#[processor(crate = ::renamed, backoff = fixed("1s"))]
pub async fn double(x: i64) -> Result<i64, Error> {
    Ok(x * 2)
}

/// The tier of an amount.
#[processor(crate = ::renamed)]
pub async fn tier_of(x: i64) -> Result<(Tier, i64), Error> {
    Ok((if x > 100 { Tier::Gold } else { Tier::Standard }, x))
}

/// The amount of a tiered amount.
#[processor(crate = ::renamed)]
pub async fn amount(t: (Tier, i64)) -> Result<i64, Error> {
    Ok(t.1)
}

/// A list of copies of an amount.
#[processor(crate = ::renamed)]
pub async fn copies(x: i64) -> Result<Vec<i64>, Error> {
    Ok(vec![x; 3])
}

/// Sums what the map returned.
#[processor(crate = ::renamed)]
pub async fn total(results: Vec<Result<i64, Error>>) -> Result<i64, Error> {
    results.into_iter().sum()
}

/// Adds the two branch outputs.
fn sum(a: i64, b: i64) -> i64 {
    a + b
}

workflow! {
    /// Every node kind, nested, through the renamed crate.
    pub Everything(i64) -> (Result<i64, Error>, Result<i64, Error>) {
        crate = ::renamed;
        name = "renamed.everything";
        timeout = "1m";
        description = "every node";
        version = 3;
        chain![
            add_one,
            parallel![add_one, double] => sum,
            route!(|x: &i64| x % 2 == 0, {
                true => double,
                _ => add_one,
            }),
            tier_of,
            route!(match |t: &(Tier, i64)| t.0 {
                Tier::Gold => amount,
                Tier::Standard => chain![amount, double],
            }),
            copies,
            map![double, concurrency = 2, name = "doubles"],
            total,
            Inner,
            parallel![add_one, double, policy = collect],
        ]
    }

    /// A workflow nested in the one above.
    pub Inner(i64) -> i64 {
        crate = ::renamed;
        chain![add_one, double, name = "inner"]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use renamed::{Backoff, LocalRuntime, Processor, ProcessorConfig, Runtime};

    use super::*;

    #[test]
    fn every_processor_key_reaches_the_config() {
        let expected = ProcessorConfig::new()
            .description("Adds one")
            .timeout(Duration::from_secs(30))
            .retries(3)
            .backoff(Backoff::exponential(
                Duration::from_millis(100),
                2.0,
                Duration::from_secs(10),
            ))
            .retry_if(is_transient)
            .concurrency(4)
            .priority(-1)
            .rate_limit(100, Duration::from_secs(60))
            .delay(Duration::from_millis(10))
            .version(2);
        assert_eq!(AddOne.name(), "renamed.add_one");
        assert_eq!(AddOne.config(), &expected);
        assert_eq!(
            Double.config().retry.backoff,
            Backoff::fixed(Duration::from_secs(1))
        );
    }

    #[test]
    fn every_node_kind_is_built() {
        assert_eq!(Everything.name(), "renamed.everything");
        let config = ProcessorConfig::new()
            .description("every node")
            .timeout(Duration::from_secs(60))
            .version(3);
        assert_eq!(Everything.config(), &config);
        assert_eq!(
            Everything.plan().step_names(),
            [
                "renamed.add_one",
                "double",
                "tier_of",
                "amount",
                "copies",
                "total"
            ]
        );
        let runtime = LocalRuntime::new();
        runtime.register(Everything);
        assert_eq!(
            runtime.registered(),
            [
                "Inner",
                "amount",
                "copies",
                "double",
                "renamed.add_one",
                "renamed.everything",
                "tier_of",
                "total"
            ]
        );
    }
}
