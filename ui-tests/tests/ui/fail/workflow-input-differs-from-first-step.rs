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
async fn charge(_: Payment) -> Result<Receipt, Error> {
    Ok(Receipt)
}

workflow! {
    pub Checkout(Order) -> Receipt {
        chain![charge]
    }
}

fn main() {}
