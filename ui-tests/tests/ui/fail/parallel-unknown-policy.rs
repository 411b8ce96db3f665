use am2z::{processor, workflow, Error};

#[derive(Clone, Debug)]
pub struct Order;

#[processor]
async fn check_stock(_: Order) -> Result<u32, Error> {
    Ok(1)
}

#[processor]
async fn score_fraud(_: Order) -> Result<String, Error> {
    Ok("low".into())
}

workflow! {
    pub Checks(Order) -> (Result<u32, Error>, Result<String, Error>) {
        parallel![check_stock, score_fraud, policy = collect_all]
    }
}

fn main() {}
