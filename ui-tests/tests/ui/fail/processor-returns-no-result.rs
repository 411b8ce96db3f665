use am2z::processor;

#[processor]
async fn charge(input: u64) -> u64 {
    input
}

fn main() {}
