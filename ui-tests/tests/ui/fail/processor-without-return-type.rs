use am2z::processor;

#[processor]
async fn charge(input: u64) {
    let _ = input;
}

fn main() {}
