//! The workflows the Redis examples share: `redis_worker` serves them, `redis_client` runs
//! them. Data crossing Redis is serde; nothing else changes from a local-runtime workflow.
//!
//! They live in this library (not in each example) because a job carries its processor's
//! contract fingerprint, made from the type names of its input and output: worker and client
//! must agree on `examples::redis_flows::Order`, as two binaries of one application share a
//! crate of workflows.

use std::time::Duration;

use am2z::{Ctx, Error, RedisRuntime, processor, workflow};
use serde::{Deserialize, Serialize};

/// An order as the shop submits it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// The order's id.
    pub id: u64,
    /// Who pays.
    pub email: String,
    /// How much, in cents.
    pub amount_cents: u64,
}

/// An order with its total.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Priced {
    /// The order's id.
    pub id: u64,
    /// The total, tax included, in cents.
    pub total_cents: u64,
}

/// What charging returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    /// The order's id.
    pub id: u64,
    /// What was charged, in cents.
    pub charged_cents: u64,
    /// The process that charged it (to see the work spread across workers).
    pub worker_pid: u32,
}

/// Rejects orders without an email.
#[processor(description = "Checks the order")]
pub async fn validate(order: Order) -> Result<Order, Error> {
    if order.email.contains('@') {
        Ok(order)
    } else {
        Err(Error::validation(
            "email",
            format!("`{}` has no @", order.email),
        ))
    }
}

/// Adds 20 % tax.
#[processor(description = "Prices the order")]
pub async fn price(order: Order, ctx: &Ctx) -> Result<Priced, Error> {
    ctx.progress(50);
    Ok(Priced {
        id: order.id,
        total_cents: order.amount_cents * 6 / 5,
    })
}

/// Pretends to call a payment provider.
#[processor(description = "Charges the card", timeout = "5s", retries = 3)]
pub async fn charge(priced: Priced, ctx: &Ctx) -> Result<Receipt, Error> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    ctx.emit("charged", priced.total_cents)?;
    Ok(Receipt {
        id: priced.id,
        charged_cents: priced.total_cents,
        worker_pid: std::process::id(),
    })
}

/// Counts down to zero by calling itself through `ctx.call`: each level is a child job of the
/// run, and a caller gives its worker slot back while it waits, so deep recursion needs no
/// free worker slot.
#[processor(description = "Recurses n deep")]
pub async fn countdown(n: u32, ctx: &Ctx) -> Result<u32, Error> {
    if n == 0 {
        return Ok(0);
    }
    Ok(ctx.call(&Countdown, n - 1).await? + 1)
}

workflow! {
    /// validate → price → charge.
    pub Checkout(Order) -> Receipt {
        chain![validate, price, charge]
    }
}

/// Lets `runtime` execute every workflow of this module.
pub fn serve_all(runtime: &RedisRuntime) {
    runtime.serve(Checkout);
    runtime.serve(Countdown);
}
