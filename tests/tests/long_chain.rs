//! A long chain built without macros compiles and runs (a nested chain's future used to
//! overflow rustc's layout query depth at about ten steps).

use am2z::{Chain, Error, Executes, LocalRuntime, Runtime, processor_fn};

async fn inc(x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

#[tokio::test]
async fn thirty_step_chain_runs() {
    let step = || processor_fn(inc);
    let chain = Chain::new(step(), step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step())
        .then(step());
    let runtime = LocalRuntime::new();
    runtime.start().await.unwrap();
    let result = runtime.execute(&chain, 0).await.unwrap();
    assert_eq!(result.output, 30);
    assert_eq!(result.meta.version, 30);
}
