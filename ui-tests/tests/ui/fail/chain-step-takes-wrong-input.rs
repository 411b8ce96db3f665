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

#[processor]
async fn charge(_: Payment) -> Result<Receipt, Error> {
    Ok(Receipt)
}

#[processor]
async fn archive(_: Receipt) -> Result<Receipt, Error> {
    Ok(Receipt)
}

// `charge` takes `Payment`, but `validate_order` returns `ValidOrder`. The steps after it still
// check against `charge`'s output, so this is the only error.
workflow! {
    pub Checkout(Order) -> Receipt {
        chain![validate_order, charge, archive]
    }
}

fn main() {}
