//! A small shop for the dashboard's tests: a checkout workflow whose card charge fails until
//! the test "heals" the order's card, and can be held at a gate so a test sees it running.
//! Orders are keyed, so tests running at once never touch each other's orders.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use am2z::{Error, ProcessorConfig, processor, processor_fn, workflow};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// An order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Names the order for [`heal`] and [`hold`].
    pub key: String,
    /// Its amount.
    pub cents: u64,
    /// Where it ships.
    pub country: String,
}

impl Order {
    /// An order of `cents` to `country`, keyed `key`.
    pub fn new(key: &str, cents: u64, country: &str) -> Self {
        Order {
            key: key.to_owned(),
            cents,
            country: country.to_owned(),
        }
    }
}

/// An order that passed its checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checked {
    /// The order.
    pub order: Order,
    /// Whether it is in stock.
    pub in_stock: bool,
    /// Its fraud score.
    pub risk: u32,
}

/// What a paid order gets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The order's key.
    pub key: String,
    /// The amount charged.
    pub cents: u64,
    /// Where it ships.
    pub country: String,
    /// How it ships.
    pub shipping: String,
}

fn healed() -> &'static Mutex<HashSet<String>> {
    static HEALED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    HEALED.get_or_init(|| Mutex::new(HashSet::new()))
}

fn gates() -> &'static Mutex<HashMap<String, Arc<Semaphore>>> {
    static GATES: OnceLock<Mutex<HashMap<String, Arc<Semaphore>>>> = OnceLock::new();
    GATES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// From now on, charging order `key` succeeds.
pub fn heal(key: &str) {
    healed()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key.to_owned());
}

/// Holds every successful charge of order `key` until the gate is opened.
pub fn hold(key: &str) -> Gate {
    let gate = Arc::new(Semaphore::new(0));
    gates()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key.to_owned(), Arc::clone(&gate));
    Gate(gate)
}

/// A gate made by [`hold`].
pub struct Gate(Arc<Semaphore>);

impl Gate {
    /// Lets the held charges through.
    pub fn open(&self) {
        self.0.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

/// Checks the amount.
#[processor]
pub async fn validate_order(order: Order) -> Result<Order, Error> {
    if order.cents == 0 {
        return Err(Error::validation("cents", "an order costs something"));
    }
    Ok(order)
}

/// Looks the order up in stock.
#[processor]
pub async fn check_stock(order: Order) -> Result<(Order, bool), Error> {
    Ok((order, true))
}

/// Scores the order for fraud.
#[processor]
pub async fn score_fraud(order: Order) -> Result<u32, Error> {
    Ok(u32::try_from(order.cents / 1000).unwrap_or(u32::MAX))
}

/// Joins the checks.
pub fn merge_checks((order, in_stock): (Order, bool), risk: u32) -> Checked {
    Checked {
        order,
        in_stock,
        risk,
    }
}

/// Charges the card: fails (retryable, 2 attempts) until the order is healed; waits at the
/// order's gate when it has one.
#[processor(retries = 2, backoff = fixed("5ms"))]
pub async fn charge_card(checked: Checked) -> Result<Receipt, Error> {
    let key = checked.order.key.clone();
    let ok = healed()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&key);
    if !ok {
        return Err(Error::unavailable(
            "payment gateway",
            format!("card for order {key} declined by the gateway (HTTP 503)"),
        ));
    }
    let gate = gates()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .cloned();
    if let Some(gate) = gate {
        let _permit = gate.acquire().await;
    }
    Ok(Receipt {
        key,
        cents: checked.order.cents,
        country: checked.order.country,
        shipping: String::new(),
    })
}

/// Ships within France.
#[processor]
pub async fn ship_domestic(receipt: Receipt) -> Result<Receipt, Error> {
    Ok(Receipt {
        shipping: "colissimo".to_owned(),
        ..receipt
    })
}

/// Ships abroad.
#[processor]
pub async fn ship_abroad(receipt: Receipt) -> Result<Receipt, Error> {
    Ok(Receipt {
        shipping: "dhl".to_owned(),
        ..receipt
    })
}

workflow! {
    /// An order to a receipt: checks in parallel, the charge, then shipping by country.
    pub Checkout(Order) -> Receipt {
        chain![
            validate_order,
            parallel![check_stock, score_fraud] => merge_checks,
            charge_card,
            route!(|r: &Receipt| r.country.clone(), {
                "FR" => ship_domestic,
                _ => ship_abroad,
            }),
        ]
    }
}

/// Stores a card number; configured with `redact`, so inspection never shows its values.
async fn vault_card(card: String) -> Result<String, Error> {
    Ok(format!("tok_{}", card.len()))
}

/// The `vault_card` processor, redacted.
pub fn vault() -> impl am2z::Processor<Input = String, Output = String> {
    processor_fn(vault_card)
        .named("vault_card")
        .with_config(ProcessorConfig::default().redact(true))
}
