//! The full syntax: chains, parallels with and without merge, both route forms, map, and
//! workflows nested in workflows; run, planned and registered.

use am2z::{processor, workflow, Error, LocalRuntime, Runtime, Processor};

#[derive(Clone, Debug)] pub struct Order { pub qty: u32, pub tier: String }
#[derive(Clone, Debug)] pub struct Stock(pub bool);
#[derive(Clone, Debug)] pub struct Fraud(pub u32);
#[derive(Clone, Debug, PartialEq)] pub enum Kind { A, B }
#[derive(Clone, Debug)] pub struct Checked { pub tier: String, pub kind: Kind, pub qty: u32 }
#[derive(Clone, Debug, PartialEq)] pub struct Receipt(pub String);

#[processor] async fn validate_order(o: Order) -> Result<Order, Error> { Ok(o) }
#[processor] async fn check_stock(o: Order) -> Result<Stock, Error> { Ok(Stock(o.qty > 0)) }
#[processor] async fn score_fraud(o: Order) -> Result<Fraud, Error> { Ok(Fraud(o.qty)) }
fn merge_checks(s: Stock, f: Fraud) -> Checked { Checked { tier: if s.0 { "gold".into() } else { "x".into() }, kind: if f.0 > 5 { Kind::B } else { Kind::A }, qty: f.0 } }
#[processor] async fn gold_path(c: Checked) -> Result<Checked, Error> { Ok(Checked { qty: c.qty * 10, ..c }) }
#[processor] async fn standard_path(c: Checked) -> Result<Checked, Error> { Ok(c) }
#[processor] async fn path_a(c: Checked) -> Result<Vec<u32>, Error> { Ok(vec![c.qty, 1]) }
#[processor] async fn path_b(c: Checked) -> Result<Vec<u32>, Error> { Ok(vec![c.qty]) }
#[processor] async fn send_email(n: u32) -> Result<u32, Error> { Ok(n + 1) }
#[processor] async fn summarize(r: Vec<Result<u32, Error>>) -> Result<Receipt, Error> { Ok(Receipt(format!("{:?}", r.into_iter().map(|x| x.unwrap_or(0)).collect::<Vec<_>>()))) }

workflow! {
    /// Inner.
    pub Inner(Receipt) -> Receipt { tidy }
}
#[processor] async fn tidy(r: Receipt) -> Result<Receipt, Error> { Ok(Receipt(r.0.to_uppercase())) }

workflow! {
    /// Doc comments carry over.
    pub OrderPipeline(Order) -> Receipt {
        timeout = "5m";
        description = "the pipeline";
        chain![
            validate_order,
            parallel![check_stock, score_fraud] => merge_checks,
            route!(|c: &Checked| c.tier.clone(), {
                "gold" => gold_path,
                _ => standard_path,
            }),
            route!(match |c: &Checked| c.kind { Kind::A => path_a, Kind::B => path_b }),
            map![send_email, concurrency = 8],
            summarize,
            Inner,
        ]
    }
}

workflow! {
    /// A parallel without merge fans in to a tuple; options on a combinator come last.
    pub Pair(Order) -> (Stock, Fraud) {
        chain![validate_order, parallel![check_stock, score_fraud, name = "checks"]]
    }

    /// A closure as the merge fn.
    pub Scored(Order) -> u32 {
        parallel![check_stock, score_fraud] => |s: Stock, f: Fraud| u32::from(s.0) + f.0
    }

    /// A long chain (its type stays flat).
    pub Long(u32) -> u32 {
        chain![inc, inc, inc, inc, inc, inc, inc, inc, inc, inc, inc, inc]
    }
}
#[processor] async fn inc(x: u32) -> Result<u32, Error> { Ok(x + 1) }

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = LocalRuntime::new(); r.start().await.unwrap();
        let out = OrderPipeline::run(&r, Order { qty: 3, tier: "gold".into() }).await.unwrap();
        assert_eq!(out.output, Receipt("[31, 2]".to_uppercase()));
        assert_eq!(OrderPipeline.name(), "OrderPipeline");
        assert_eq!(OrderPipeline.config().timeout, Some(std::time::Duration::from_secs(300)));
        assert_eq!(
            OrderPipeline.plan().step_names(),
            ["validate_order", "check_stock", "score_fraud", "gold_path", "standard_path", "path_a", "path_b", "send_email", "summarize", "tidy"]
        );
        // The merge fn is checked through a fn pointer, but the plan still names it.
        let merges: Vec<_> = OrderPipeline.plan().nodes.into_iter().filter_map(|n| match n.kind {
            am2z::plan::NodeKind::Parallel { merge, .. } => merge,
            _ => None,
        }).collect();
        assert_eq!(merges, ["merge_checks"]);
        r.register(OrderPipeline);
        assert_eq!(
            r.registered(),
            ["Inner", "OrderPipeline", "check_stock", "gold_path", "path_a", "path_b", "score_fraud", "send_email", "standard_path", "summarize", "tidy", "validate_order"]
        );
        let tuple = Pair::run(&r, Order { qty: 1, tier: "x".into() }).await.unwrap().output;
        assert!(tuple.0.0 && tuple.1.0 == 1);
        assert_eq!(Scored::run(&r, Order { qty: 4, tier: "x".into() }).await.unwrap().output, 5);
        let long = Long::run(&r, 0).await.unwrap().output;
        assert_eq!(long, 12);
    });
}
