//! Inspection of the local runtime.

use am2z::runtime::inspect::{PageRequest, RunFilter, RunState, Shown};
use am2z::{Executes, Inspect, LocalRuntime, Runtime};
use am2z_tests::processors::*;
use am2z_tests::suite::session;

#[tokio::test]
async fn smoke() {
    let runtime = LocalRuntime::new();
    runtime.start().await.unwrap();
    let s = session("smoke");
    runtime.execute_in_session(&s, &AddOne, 1).await.unwrap();
    let failed = runtime
        .execute_in_session(&s, &AlwaysFails, 1)
        .await
        .unwrap_err();
    let page = runtime
        .runs(&s, &RunFilter::all(), PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.items[0].state, RunState::Failed);
    let detail = runtime.run(&s, failed.meta.run_id).await.unwrap().unwrap();
    assert_eq!(detail.input, Shown::Value(serde_json::json!(1)));
    println!("{detail:#?}");
}
