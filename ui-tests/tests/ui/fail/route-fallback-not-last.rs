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
async fn gold(_: Order) -> Result<Receipt, Error> {
    Ok(Receipt)
}

#[processor]
async fn standard(_: Order) -> Result<Receipt, Error> {
    Ok(Receipt)
}

workflow! {
    pub Tiered(Order) -> Receipt {
        route!(|_order: &Order| "gold", {
            _ => standard,
            "gold" => gold,
        })
    }
}

fn main() {}
