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
async fn check_stock(_: Order) -> Result<u32, Error> {
    Ok(1)
}

#[processor]
async fn score_payment(_: Payment) -> Result<u32, Error> {
    Ok(2)
}

workflow! {
    pub Checks(Order) -> (u32, u32) {
        parallel![check_stock, score_payment]
    }
}

fn main() {}
