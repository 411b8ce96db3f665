use am2z::{processor, workflow, Error};

#[derive(Clone, Debug)]
pub struct Order;
#[derive(Clone, Debug)]
pub struct ValidOrder;
#[derive(Clone, Debug)]
pub struct Payment;
#[derive(Clone, Debug)]
pub struct Receipt;

#[processor]
async fn validate_order(_: Order) -> Result<ValidOrder, Error> {
    Ok(ValidOrder)
}

workflow! {
    pub Checkout(Order) -> Receipt {
        chain![validate_order]
    }
}

fn main() {}
