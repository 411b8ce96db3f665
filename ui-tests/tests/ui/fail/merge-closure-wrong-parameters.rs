use am2z::{processor, workflow, Error};

#[derive(Clone, Debug)]
pub struct Invoice;

#[processor]
async fn count_lines(_: Invoice) -> Result<u32, Error> {
    Ok(1)
}

#[processor]
async fn customer_name(_: Invoice) -> Result<String, Error> {
    Ok("Ada".into())
}

// The second branch returns a `String`, but the closure takes a `u64`: the error covers the
// whole closure.
workflow! {
    pub Summary(Invoice) -> String {
        parallel![count_lines, customer_name] => |lines: u32, name: u64| format!("{name}: {lines}")
    }
}

fn main() {}
