use am2z::{processor, Error};

fn always(_error: &Error) -> bool {
    true
}

#[processor(retries = 3, retry_if = always)]
async fn charge(input: u64) -> Result<u64, Error> {
    Ok(input)
}

fn main() {}
