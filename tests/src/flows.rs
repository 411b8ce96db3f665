//! The compositions the suite runs, declared with `workflow!` as users declare them.

use am2z::{Error, workflow};

use crate::processors::*;

workflow! {
    /// 5 → +1 → ×2 → +10.
    pub Arith(i64) -> i64 {
        chain![add_one, double, add_ten]
    }

    /// +1 → negate → reject negatives: fails at position 2.
    pub NegateThenReject(i64) -> i64 {
        chain![add_one, negate, reject_negative]
    }

    /// Length and shout of the same text, as a tuple.
    pub TextFan(String) -> (usize, String) {
        parallel![text_len, shout]
    }

    /// Length and shout, merged.
    pub TextMerged(String) -> String {
        parallel![text_len, shout] => describe_text
    }

    /// A slow branch beside one that always fails.
    pub FailFast(i64) -> (i64, i64) {
        parallel![sleep_ms, always_fails]
    }

    /// Routes on the channel: `web` pays a fee, everything else the standard price.
    pub ChannelRoute(Order) -> i64 {
        route!(|order: &Order| order.channel.clone(), {
            "web" => web_fee,
            _ => standard_price,
        })
    }

    /// The channel route without a fallback.
    pub StrictChannelRoute(Order) -> i64 {
        route!(|order: &Order| order.channel.clone(), {
            "web" => web_fee,
        })
    }

    /// Routes on the tier, exhaustively: a new tier does not compile until it is routed.
    pub TierRoute(Order) -> i64 {
        route!(match |order: &Order| order.tier {
            Tier::Gold => gold_discount,
            Tier::Standard => standard_price,
        })
    }

    /// A parallel inside a chain inside a route.
    pub Nested(Order) -> (i64, i64) {
        route!(match |order: &Order| order.tier {
            Tier::Gold => chain![gold_discount, parallel![add_one, double]],
            Tier::Standard => chain![standard_price, parallel![add_one, double]],
        })
    }

    /// `invert` over a list, two at a time.
    pub Inverts(Vec<i64>) -> Vec<Result<i64, Error>> {
        map![invert, concurrency = 2]
    }

    /// Shouts a secret, then keeps it: a workflow with a redacted step.
    pub ShoutSecret(String) -> String {
        chain![shout, keeps_secret]
    }

    /// A failing and a succeeding branch, both run to their end and both results kept.
    pub Collected(i64) -> (Result<i64, Error>, Result<i64, Error>) {
        parallel![always_fails, add_one, policy = collect]
    }
}
