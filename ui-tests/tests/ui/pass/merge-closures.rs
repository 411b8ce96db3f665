//! Every form of merge fn, and every node kind, type-check where the types agree.

#![deny(warnings)]

use am2z::{processor, workflow, Error};

#[derive(Clone, Debug)]
pub enum Kind {
    Small,
    Large,
}

#[derive(Clone, Debug)]
pub struct Item {
    pub kind: Kind,
    pub n: u32,
}

#[processor]
async fn start(n: u32) -> Result<Item, Error> {
    Ok(Item { kind: Kind::Small, n })
}

#[processor]
async fn count(item: Item) -> Result<u32, Error> {
    Ok(item.n)
}

#[processor]
async fn label(item: Item) -> Result<String, Error> {
    Ok(format!("{}", item.n))
}

#[processor]
async fn many(n: u32) -> Result<Vec<u32>, Error> {
    Ok(vec![n; 2])
}

#[processor]
async fn double(n: u32) -> Result<u32, Error> {
    Ok(n * 2)
}

#[processor]
async fn total(results: Vec<Result<u32, Error>>) -> Result<u32, Error> {
    results.into_iter().sum()
}

fn merge(n: u32, label: String) -> u32 {
    n + label.len() as u32
}

workflow! {
    /// A merge closure with untyped, typed and no closure; an exhaustive route; a map.
    pub Everything(u32) -> u32 {
        chain![
            start,
            parallel![count, label] => |n, label: String| n + label.len() as u32,
            start,
            parallel![count, label] => |n: u32, label: String| n + label.len() as u32,
            start,
            parallel![count, label] => merge,
            start,
            route!(match |item: &Item| item.kind {
                Kind::Small => count,
                Kind::Large => chain![count, double],
            }),
            many,
            map![double],
            total,
        ]
    }
}

fn main() {
    let _ = Everything;
}
