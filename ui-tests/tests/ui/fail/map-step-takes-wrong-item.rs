use am2z::{processor, workflow, Error};

#[derive(Clone, Debug)]
pub struct Invoice;
#[derive(Clone, Debug)]
pub struct Receipt;

#[processor]
async fn send_receipt(_: Receipt) -> Result<(), Error> {
    Ok(())
}

// `map!` runs `send_receipt` on each `Invoice` of the list, but it takes a `Receipt`.
workflow! {
    pub SendAll(Vec<Invoice>) -> Vec<Result<(), Error>> {
        map![send_receipt]
    }
}

fn main() {}
