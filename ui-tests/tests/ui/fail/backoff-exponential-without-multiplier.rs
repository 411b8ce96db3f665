use am2z::{processor, Error};

#[processor(backoff = exponential(base = "100ms"))]
async fn charge(input: u64) -> Result<u64, Error> {
    Ok(input)
}

fn main() {}
