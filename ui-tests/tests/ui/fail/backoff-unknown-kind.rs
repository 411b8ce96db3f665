use am2z::{processor, Error};

#[processor(backoff = linear("1s"))]
async fn charge(input: u64) -> Result<u64, Error> {
    Ok(input)
}

fn main() {}
