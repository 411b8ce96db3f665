//! An order pipeline: validate, then check stock and score fraud in parallel, then route to a
//! shipping arm by region. A second order fails validation and the failure is matched as a
//! typed error.
//!
//! ```text
//! cargo run -p examples --example order_pipeline
//! ```

use std::time::Duration;

use am2z::{Ctx, Error, LocalRuntime, Runtime, SessionId, processor, workflow};
use serde::{Deserialize, Serialize};

/// An order as it arrives.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    email: String,
    country: String,
    items: Vec<(String, u32)>,
}

/// An order that passed validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ValidOrder {
    id: u64,
    region: String,
    units: u32,
}

/// What the stock check found (with the order it checked).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stock {
    order: ValidOrder,
    available: bool,
}

/// The fraud model's opinion.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fraud {
    score: f64,
}

/// A validated, checked order ready to ship.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checked {
    order: ValidOrder,
    stock: bool,
    fraud: f64,
}

/// A shipment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Shipment {
    order: u64,
    carrier: &'static str,
    days: u32,
}

/// Rejects orders without an email or items.
#[processor(description = "Validates an incoming order")]
async fn validate_order(order: Order) -> Result<ValidOrder, Error> {
    if !order.email.contains('@') {
        return Err(Error::validation(
            "email",
            format!("`{}` is not an email address", order.email),
        ));
    }
    if order.items.is_empty() {
        return Err(Error::validation(
            "items",
            "an order needs at least one item",
        ));
    }
    let region = match order.country.as_str() {
        "FR" | "DE" | "ES" => "eu",
        "US" | "CA" => "na",
        _ => "intl",
    };
    Ok(ValidOrder {
        id: order.id,
        region: region.to_owned(),
        units: order.items.iter().map(|(_, n)| n).sum(),
    })
}

/// Looks the items up in the warehouse.
#[processor(timeout = "2s", concurrency = 10)]
async fn check_stock(order: ValidOrder) -> Result<Stock, Error> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(Stock {
        available: order.units <= 100,
        order,
    })
}

/// Scores the order for fraud; the model is flaky, so it retries.
#[processor(timeout = "2s", retries = 3, backoff = exponential(base = "50ms", multiplier = 2))]
async fn score_fraud(order: ValidOrder, ctx: &Ctx) -> Result<Fraud, Error> {
    tokio::time::sleep(Duration::from_millis(30)).await;
    ctx.emit("fraud.scored", serde_json::json!({ "order": order.id }))?;
    Ok(Fraud {
        score: if order.units > 50 { 0.7 } else { 0.1 },
    })
}

/// Joins the two checks: the merge fn of the parallel.
fn merge_checks(stock: Stock, fraud: Fraud) -> Checked {
    Checked {
        order: stock.order,
        stock: stock.available,
        fraud: fraud.score,
    }
}

/// Ships within the EU.
#[processor]
async fn ship_eu(checked: Checked) -> Result<Shipment, Error> {
    Ok(Shipment {
        order: checked.order.id,
        carrier: "EuroPost",
        days: 2,
    })
}

/// Ships within North America.
#[processor]
async fn ship_na(checked: Checked) -> Result<Shipment, Error> {
    Ok(Shipment {
        order: checked.order.id,
        carrier: "NorthFreight",
        days: 3,
    })
}

/// Ships anywhere else.
#[processor]
async fn ship_intl(checked: Checked) -> Result<Shipment, Error> {
    if checked.fraud > 0.5 {
        return Err(Error::business(
            "fraud_risk",
            "international orders need a fraud score below 0.5",
        ));
    }
    Ok(Shipment {
        order: checked.order.id,
        carrier: "GlobalAir",
        days: 7,
    })
}

workflow! {
    /// Validate → (stock ‖ fraud) → ship by region.
    OrderPipeline(Order) -> Shipment {
        timeout = "10s";
        chain![
            validate_order,
            parallel![check_stock, score_fraud] => merge_checks,
            route!(|c: &Checked| c.order.region.clone(), {
                "eu" => ship_eu,
                "na" => ship_na,
                _ => ship_intl,
            }),
        ]
    }
}

#[tokio::main]
#[allow(clippy::print_stdout)] // an example reports on stdout
async fn main() -> Result<(), Error> {
    let runtime = LocalRuntime::new();
    runtime.register(OrderPipeline);
    runtime.start().await?;
    let shop = SessionId::new("shop-eu-1")?;

    let good = Order {
        id: 1,
        email: "ada@example.com".into(),
        country: "FR".into(),
        items: vec![("keyboard".into(), 1), ("mouse".into(), 2)],
    };
    let shipped = OrderPipeline::run_in_session(&runtime, &shop, good).await?;
    println!(
        "order 1 shipped: {:?} in {:?}",
        shipped.output, shipped.execution_time
    );

    let bad = Order {
        id: 2,
        email: "not-an-email".into(),
        country: "US".into(),
        items: vec![],
    };
    match OrderPipeline::run_in_session(&runtime, &shop, bad).await {
        Ok(result) => println!("order 2 unexpectedly shipped: {:?}", result.output),
        Err(failure) => match failure.error.root_cause() {
            Error::Validation { field, message } => {
                println!("order 2 rejected: `{field}` {message} ({})", failure.error);
            }
            other => println!("order 2 failed otherwise: {other}"),
        },
    }

    let plan = am2z::Processor::plan(&OrderPipeline);
    println!("plan {}: steps {:?}", plan.fingerprint, plan.step_names());
    let stats = runtime.session_stats(&shop).await?;
    for (processor, queue) in &stats.processors {
        println!(
            "  {processor}: {} completed, {} failed",
            queue.completed, queue.failed
        );
    }
    runtime.stop().await?;
    Ok(())
}
