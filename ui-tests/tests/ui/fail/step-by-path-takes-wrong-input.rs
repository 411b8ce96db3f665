use am2z::{workflow, Error};

#[derive(Clone, Debug)]
pub struct Order;
#[derive(Clone, Debug)]
pub struct Payment;
#[derive(Clone, Debug)]
pub struct Receipt;

pub mod payments {
    use super::*;

    #[am2z::processor]
    pub async fn charge_card(_: Payment) -> Result<Receipt, Error> {
        Ok(Receipt)
    }
}

// A step named by its path: the error covers the whole path.
workflow! {
    pub Checkout(Order) -> Receipt {
        chain![payments::charge_card]
    }
}

fn main() {}
