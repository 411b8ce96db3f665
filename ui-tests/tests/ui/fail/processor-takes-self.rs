use am2z::{processor, Error};

struct Billing;

impl Billing {
    #[processor]
    async fn charge(&self, input: u64) -> Result<u64, Error> {
        Ok(input)
    }
}

fn main() {}
