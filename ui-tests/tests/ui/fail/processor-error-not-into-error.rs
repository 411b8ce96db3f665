use am2z::processor;

pub struct Declined;

#[processor]
async fn charge(input: u64) -> Result<u64, Declined> {
    Ok(input)
}

fn main() {}
