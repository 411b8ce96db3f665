use am2z::{processor, workflow, Error};

#[derive(Clone, Debug)]
pub struct Order;
#[derive(Clone, Debug)]
pub struct ValidOrder;
#[derive(Clone, Debug)]
pub struct Payment;
#[derive(Clone, Debug)]
pub struct Receipt;

#[derive(Clone, Debug)]
pub enum Kind {
    Card,
    Invoice,
    Crypto,
}

#[derive(Clone, Debug)]
pub struct Charge {
    pub kind: Kind,
}

#[processor]
async fn by_card(_: Charge) -> Result<Receipt, Error> {
    Ok(Receipt)
}

#[processor]
async fn by_invoice(_: Charge) -> Result<Receipt, Error> {
    Ok(Receipt)
}

workflow! {
    pub Pay(Charge) -> Receipt {
        route!(match |c: &Charge| c.kind {
            Kind::Card => by_card,
            Kind::Invoice => by_invoice,
        })
    }
}

fn main() {}
