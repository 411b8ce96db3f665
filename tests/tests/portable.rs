//! The portable step graph, run one step at a time by the in-memory interpreter, gives the
//! same outputs and the same errors as the typed executor on `LocalRuntime`.

use std::fmt::Debug;

use am2z::portable::{self, StepByStep};
use am2z::{Error, Executes, LocalRuntime, Processor, Runtime, processor, workflow};
use am2z_tests::flows::*;
use am2z_tests::processors::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A chain inside a parallel inside a route inside a map, with a named workflow as a step and
/// a failing item.
fn add_pair(a: i64, b: i64) -> i64 {
    a + b
}

workflow! {
    /// Each order: gold ones fan out to two chains (one through a nested workflow) and merge;
    /// standard ones go through a chain that rejects negative amounts.
    pub DeepNest(Vec<Order>) -> Vec<Result<i64, Error>> {
        map![
            route!(match |order: &Order| order.tier {
                Tier::Gold => parallel![
                    chain![gold_discount, add_one],
                    chain![standard_price, Arith],
                ] => add_pair,
                Tier::Standard => chain![standard_price, negate, reject_negative, double],
            }),
            concurrency = 3
        ]
    }

    /// A collect-results parallel whose branches are chains, one failing, then merged by
    /// nothing: the tuple of results is the output.
    pub CollectChains(i64) -> (Result<i64, Error>, Result<i64, Error>) {
        parallel![
            chain![add_one, negate, reject_negative],
            chain![add_one, double],
            policy = collect
        ]
    }

    /// A route whose input is the tuple of a parallel before it (decoded by the tuple's codec).
    pub RouteOnTuple(String) -> String {
        chain![
            parallel![text_len, shout],
            route!(|pair: &(usize, String)| if pair.0 > 3 { "long" } else { "short" }, {
                "long" => long_label,
                _ => short_label,
            }),
        ]
    }
}

/// Labels a long text.
#[processor]
async fn long_label(pair: (usize, String)) -> Result<String, Error> {
    Ok(format!("long {}", pair.1))
}

/// Labels a short text.
#[processor]
async fn short_label(pair: (usize, String)) -> Result<String, Error> {
    Ok(format!("short {}", pair.1))
}

/// Data that is not serde: a workflow through it stays whole-run only.
#[derive(Debug, Clone, PartialEq)]
pub struct Opaque(i64);

/// Wraps.
#[processor]
async fn wrap(x: i64) -> Result<Opaque, Error> {
    Ok(Opaque(x))
}

/// Unwraps.
#[processor]
async fn unwrap_opaque(o: Opaque) -> Result<i64, Error> {
    Ok(o.0)
}

workflow! {
    /// Serde at both ends, not in the middle.
    pub ThroughOpaque(i64) -> i64 {
        chain![wrap, unwrap_opaque, add_one]
    }
}

/// `error` without the snapshots of failed steps' inputs: the typed run keeps them in-process
/// and the portable one as JSON, so they compare by `state_of` instead.
fn without_state(error: Error) -> Error {
    match error {
        Error::StepFailed {
            step,
            position,
            source,
            ..
        } => Error::StepFailed {
            step,
            position,
            source: Box::new(without_state(*source)),
            state_before: None,
        },
        other => other,
    }
}

/// `value` as JSON without failed steps' input snapshots (see [`without_state`]), for outputs
/// that hold errors (a map's, a collect's).
fn json_without_state<T: Serialize>(value: &T) -> serde_json::Value {
    fn strip(json: &mut serde_json::Value) {
        match json {
            serde_json::Value::Object(fields) => {
                fields.remove("state_before");
                fields.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(value).expect("the output encodes");
    strip(&mut json);
    json
}

/// The outputs of `workflow` on `input`, typed and step by step, which must agree.
async fn both<W>(workflow: W, input: W::Input) -> Result<W::Output, Error>
where
    W: Processor,
    W::Input: Serialize + DeserializeOwned,
    W::Output: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let runtime = LocalRuntime::new();
    runtime.start().await.expect("the runtime starts");
    let graph = portable::compile(&workflow).expect("the workflow is portable");
    let json = serde_json::to_value(&input).expect("the input encodes");
    let typed = runtime.execute(&workflow, input).await;
    let stepped = runtime.execute(&StepByStep::new(graph), json).await;
    match (typed, stepped) {
        (Ok(typed), Ok(stepped)) => {
            let stepped: W::Output =
                serde_json::from_value(stepped.output).expect("the output decodes");
            assert_eq!(
                json_without_state(&stepped),
                json_without_state(&typed.output)
            );
            Ok(typed.output)
        }
        (Err(typed), Err(stepped)) => {
            assert_eq!(
                without_state(stepped.error),
                without_state(typed.error.clone())
            );
            Err(typed.error)
        }
        (typed, stepped) => panic!("typed {typed:?}, step by step {stepped:?}"),
    }
}

fn order(tier: Tier, channel: &str, amount: i64) -> Order {
    Order {
        tier,
        channel: channel.to_owned(),
        amount,
    }
}

#[tokio::test(start_paused = true)]
async fn chains_agree() {
    assert_eq!(both(Arith, 5).await, Ok(22));
    let failed = both(NegateThenReject, 5)
        .await
        .expect_err("the chain fails");
    assert!(matches!(
        &failed,
        Error::StepFailed { step, position: 2, .. } if step == "reject_negative"
    ));
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_keeps_its_input_as_json() {
    let graph = portable::compile(&NegateThenReject).expect("portable");
    let runtime = LocalRuntime::new();
    runtime.start().await.expect("starts");
    let failure = runtime
        .execute(&StepByStep::new(graph), serde_json::json!(5))
        .await
        .expect_err("fails");
    let Error::StepFailed {
        state_before: Some(state),
        ..
    } = &failure.error
    else {
        panic!("no state: {failure:?}");
    };
    assert_eq!(state.decode::<i64>(), Ok(-6));
    assert_eq!(state.type_name(), "i64");
}

#[tokio::test(start_paused = true)]
async fn parallels_agree() {
    assert_eq!(
        both(TextFan, "am2z".to_owned()).await,
        Ok((4, "AM2Z".to_owned()))
    );
    assert_eq!(
        both(TextMerged, "am2z".to_owned()).await,
        Ok("AM2Z:4".to_owned())
    );
    let failed = both(FailFast, 50).await.expect_err("a branch fails");
    assert!(matches!(
        &failed,
        Error::StepFailed { step, position: 1, .. } if step == "always_fails"
    ));
    let (failed, ok) = both(Collected, 1).await.expect("collect keeps both");
    assert!(failed.is_err());
    assert_eq!(ok, Ok(2));
    let (failed, ok) = both(CollectChains, 1).await.expect("collect keeps both");
    assert!(matches!(failed, Err(Error::StepFailed { position: 2, .. })));
    assert_eq!(ok, Ok(4));
}

#[tokio::test(start_paused = true)]
async fn routes_agree() {
    assert_eq!(
        both(ChannelRoute, order(Tier::Standard, "web", 100)).await,
        Ok(101)
    );
    assert_eq!(
        both(ChannelRoute, order(Tier::Standard, "shop", 100)).await,
        Ok(100)
    );
    let missing = both(StrictChannelRoute, order(Tier::Gold, "shop", 100)).await;
    assert!(matches!(missing, Err(Error::NotFound { .. })));
    assert_eq!(both(TierRoute, order(Tier::Gold, "web", 100)).await, Ok(80));
    assert_eq!(
        both(TierRoute, order(Tier::Standard, "web", 100)).await,
        Ok(100)
    );
    assert_eq!(
        both(Nested, order(Tier::Gold, "web", 100)).await,
        Ok((81, 160))
    );
    assert_eq!(
        both(Nested, order(Tier::Standard, "web", 7)).await,
        Ok((8, 14))
    );
    assert_eq!(
        both(RouteOnTuple, "am2z".to_owned()).await,
        Ok("long AM2Z".to_owned())
    );
    assert_eq!(
        both(RouteOnTuple, "am".to_owned()).await,
        Ok("short AM".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn maps_agree() {
    let results = both(Inverts, vec![4, 0, 10])
        .await
        .expect("a map keeps each result");
    assert_eq!(results[0], Ok(250));
    assert!(results[1].is_err());
    assert_eq!(both(Inverts, Vec::new()).await, Ok(Vec::new()));
}

#[tokio::test(start_paused = true)]
async fn deep_nesting_agrees() {
    let orders = vec![
        order(Tier::Gold, "web", 100),
        order(Tier::Standard, "web", -5),
        order(Tier::Standard, "shop", 7),
        order(Tier::Gold, "shop", 10),
    ];
    let results = both(DeepNest, orders)
        .await
        .expect("a map keeps each result");
    // Gold 100: (80 + 1) + Arith(100) = 81 + 212.
    assert_eq!(results[0], Ok(293));
    assert_eq!(
        results[1],
        Ok(10),
        "a negative amount is negated, then doubled"
    );
    assert!(matches!(
        &results[2],
        Err(Error::StepFailed { step, position: 2, .. }) if step == "reject_negative"
    ));
    assert_eq!(results[3], Ok(8 + 1 + 32));
}

/// What a worker does: each job is its own run of the step node, and the transition decides
/// the next jobs; the joins are kept outside (here in memory).
#[tokio::test(start_paused = true)]
async fn each_job_runs_alone_on_a_runtime() {
    let graph = portable::compile(&Nested).expect("portable");
    let runtime = LocalRuntime::new();
    runtime.start().await.expect("starts");
    let input = serde_json::to_value(order(Tier::Gold, "web", 100)).expect("encodes");
    let mut joins = portable::JoinTable::default();
    let mut transitions = vec![graph.start(input)];
    let mut jobs: Vec<portable::Job> = Vec::new();
    let mut runs = 0;
    let output = 'run: loop {
        while let Some(transition) = transitions.pop() {
            if let Some(output) = transition.output {
                break 'run output;
            }
            jobs.extend(transition.jobs);
            for arrival in transition.arrivals {
                transitions.extend(joins.arrive(&graph, arrival));
            }
        }
        let job = jobs.pop().expect("a run ends with an output");
        let step = graph.step_node(job.node).expect("jobs are steps").clone();
        runs += 1;
        let outcome = runtime.execute(&step, job.input.clone()).await;
        let outcome = outcome
            .map(|run| run.output)
            .map_err(|failure| failure.error);
        transitions.push(graph.transition(&job, outcome));
    };
    assert_eq!(runs, 3, "gold_discount, then add_one and double");
    assert_eq!(output, Ok(serde_json::json!([81, 160])));
}

#[tokio::test]
async fn non_serde_data_is_not_portable_and_still_runs() {
    assert!(Wrap.compile(&mut portable::PortableGraph::new()).is_none());
    assert!(
        UnwrapOpaque
            .compile(&mut portable::PortableGraph::new())
            .is_none()
    );
    assert!(portable::compile(&ThroughOpaque).is_none());
    let runtime = LocalRuntime::new();
    runtime.start().await.expect("starts");
    assert_eq!(
        ThroughOpaque::run(&runtime, 41).await.map(|r| r.output),
        Ok(42)
    );
}

#[test]
fn serde_leaves_and_their_compositions_are_portable() {
    assert!(
        AddOne
            .compile(&mut portable::PortableGraph::new())
            .is_some()
    );
    let graph = portable::compile(&DeepNest).expect("portable");
    let root = graph.root().expect("finished");
    assert!(
        graph.step_node(root).is_none(),
        "the root is the named workflow"
    );
}
