use am2z::{processor, Error};

#[processor(redact = "yes")]
async fn store_card(number: String) -> Result<usize, Error> {
    Ok(number.len())
}

fn main() {}
