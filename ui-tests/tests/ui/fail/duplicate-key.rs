use am2z::{processor, Error};

#[processor(timeout = "30s", retries = 3, timeout = "1m")]
async fn charge(input: u64) -> Result<u64, Error> {
    Ok(input)
}

fn main() {}
