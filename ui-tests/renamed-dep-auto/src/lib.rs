//! am2z's macros through a renamed dependency with no `crate = ...` key: `Cargo.toml` declares
//! am2z only as `flows`, and the macros find that name in the manifest themselves. That this
//! crate compiles is the test; the tests below check that what it built is what was declared.
//!
//! ```compile_fail,E0432
//! // Only `flows` is a dependency: `am2z` does not resolve in this crate.
//! use am2z::Error;
//! ```

use flows::{Error, processor, workflow};

/// Adds one.
#[processor(name = "flows.add_one", retries = 2)]
pub async fn add_one(x: i64) -> Result<i64, Error> {
    Ok(x + 1)
}

/// Doubles.
#[processor]
pub async fn double(x: i64) -> Result<i64, Error> {
    Ok(x * 2)
}

/// A list of copies of an amount.
#[processor]
pub async fn copies(x: i64) -> Result<Vec<i64>, Error> {
    Ok(vec![x; 3])
}

/// Sums what the map returned.
#[processor]
pub async fn total(results: Vec<Result<i64, Error>>) -> Result<i64, Error> {
    results.into_iter().sum()
}

/// Adds the two branch outputs.
fn sum(a: i64, b: i64) -> i64 {
    a + b
}

workflow! {
    /// Every node kind, with no `crate = ...`.
    pub Everything(i64) -> i64 {
        timeout = "1m";
        chain![
            add_one,
            parallel![add_one, double] => sum,
            route!(|x: &i64| x % 2 == 0, {
                true => double,
                _ => add_one,
            }),
            copies,
            map![double, concurrency = 2],
            total,
            Inner,
        ]
    }

    /// A workflow nested in the one above.
    pub Inner(i64) -> i64 {
        chain![add_one, double]
    }
}

#[cfg(test)]
mod tests {
    use flows::{LocalRuntime, Processor, Runtime};

    use super::*;

    #[test]
    fn the_processors_are_the_declared_ones() {
        assert_eq!(AddOne.name(), "flows.add_one");
        assert_eq!(AddOne.config().retry.max_attempts, 2);
        assert_eq!(
            Everything.plan().step_names(),
            ["flows.add_one", "double", "copies", "total"]
        );
    }

    #[tokio::test]
    async fn the_workflow_runs() {
        let runtime = LocalRuntime::new();
        runtime.start().await.expect("start");
        let done = Everything::run(&runtime, 1).await.expect("run");
        // 1 → 2 → (3 + 4) = 7 → odd: 8 → [8; 3] → [16; 3] → 48 → 49 → 98
        assert_eq!(done.output, 98);
    }
}
