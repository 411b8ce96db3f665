use am2z::{processor, workflow, Error};

#[derive(Clone, Debug)]
pub struct Order;
#[derive(Clone, Debug)]
pub struct Shipment;

#[processor]
async fn check_stock(_: Order) -> Result<u32, Error> {
    Ok(1)
}

#[processor]
async fn score_fraud(_: Order) -> Result<u32, Error> {
    Ok(2)
}

#[processor]
async fn ship(_: Order) -> Result<Shipment, Error> {
    Ok(Shipment)
}

// `ship` takes an `Order`, but the `parallel!` before it returns the tuple of its branches.
workflow! {
    pub Fulfil(Order) -> Shipment {
        chain![parallel![check_stock, score_fraud], ship]
    }
}

fn main() {}
