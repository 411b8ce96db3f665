use am2z::{processor, Error};

#[processor(retries = 0)]
async fn charge(input: u64) -> Result<u64, Error> {
    Ok(input)
}

fn main() {}
