use am2z::{processor, workflow, Error};

#[derive(Clone, Debug)]
pub struct Order;
#[derive(Clone, Debug)]
pub struct ValidOrder;

#[processor]
async fn check_stock(_: Order) -> Result<u32, Error> {
    Ok(1)
}

#[processor]
async fn score_fraud(_: Order) -> Result<String, Error> {
    Ok("low".into())
}

fn merge_checks(stock: u32) -> ValidOrder {
    let _ = stock;
    ValidOrder
}

workflow! {
    pub Checks(Order) -> ValidOrder {
        parallel![check_stock, score_fraud] => merge_checks
    }
}

fn main() {}
