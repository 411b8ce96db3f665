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
async fn send_email(_: Receipt) -> Result<(), Error> {
    Ok(())
}

workflow! {
    pub Notify(Receipt) -> Vec<Result<(), Error>> {
        map![send_email, concurrency = 4]
    }
}

fn main() {}
