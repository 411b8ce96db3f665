use am2z::{workflow, Error};

#[derive(Clone, Debug)]
pub struct Order;
#[derive(Clone, Debug)]
pub struct ValidOrder;
#[derive(Clone, Debug)]
pub struct Payment;
#[derive(Clone, Debug)]
pub struct Receipt;

async fn charge(_: Order) -> Result<Receipt, Error> {
    Ok(Receipt)
}

workflow! {
    pub Checkout(Order) -> Receipt {
        charge
    }
}

fn main() {}
