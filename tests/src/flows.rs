//! The compositions the suite runs, built with the typed combinators.
//!
//! Each has a named type so a runtime's `Executes<…>` capability can be stated for it.

use am2z::{
    AllOrNothing, Arm, Chain, CollectResults, Fallback, Map, Merge, NoArms, Parallel, Route,
    Workflow,
};

use crate::processors::*;

/// 5 → +1 → ×2 → +10.
pub type Arith = Workflow<Chain<Chain<AddOne, Double>, AddTen>>;

/// The arithmetic chain, registered as `arith`.
pub fn arith() -> Arith {
    Workflow::new("arith", Chain::new(AddOne, Double).then(AddTen))
}

/// +1 → negate → reject negatives: fails at position 2.
pub type NegateThenReject = Chain<Chain<AddOne, Negate>, RejectNegative>;

/// The failing chain.
pub fn negate_then_reject() -> NegateThenReject {
    Chain::new(AddOne, Negate).then(RejectNegative)
}

/// Length and shout of the same text, as a tuple.
pub type TextFan = Parallel<String, (TextLen, Shout), AllOrNothing>;

/// The tuple fan-out.
pub fn text_fan() -> TextFan {
    Parallel::new((TextLen, Shout))
}

/// Length and shout, merged.
pub type TextMerged = Merge<TextFan, fn(usize, String) -> String>;

/// The merged fan-out.
pub fn text_merged() -> TextMerged {
    Parallel::new((TextLen, Shout)).merge(describe_text as fn(usize, String) -> String)
}

/// A slow branch beside one that always fails.
pub type FailFast = Parallel<i64, (SleepMs, AlwaysFails), AllOrNothing>;

/// The fail-fast fan-out.
pub fn fail_fast() -> FailFast {
    Parallel::new((SleepMs, AlwaysFails))
}

/// A failing and a succeeding branch, both kept.
pub type Collected = Parallel<i64, (AlwaysFails, AddOne), CollectResults>;

/// The collecting fan-out.
pub fn collected() -> Collected {
    Parallel::collect((AlwaysFails, AddOne))
}

type ChannelSelector = fn(&Order) -> String;

fn channel(order: &Order) -> String {
    order.channel.clone()
}

/// Routes on the channel: `web` pays a fee, everything else the standard price.
pub type ChannelRoute = Route<
    Order,
    i64,
    String,
    ChannelSelector,
    Fallback<StandardPrice, Arm<String, WebFee, NoArms>>,
>;

/// The channel route with a fallback.
pub fn channel_route() -> ChannelRoute {
    Route::new(channel as ChannelSelector)
        .arm("web".to_owned(), WebFee)
        .fallback(StandardPrice)
}

/// The channel route without a fallback.
pub type StrictChannelRoute =
    Route<Order, i64, String, ChannelSelector, Arm<String, WebFee, NoArms>>;

/// The channel route without a fallback.
pub fn strict_channel_route() -> StrictChannelRoute {
    Route::new(channel as ChannelSelector).arm("web".to_owned(), WebFee)
}

type TierSelector = fn(&Order) -> &'static str;

fn tier(order: &Order) -> &'static str {
    // An exhaustive match: a new tier does not compile until it is routed.
    match order.tier {
        Tier::Gold => "Gold",
        Tier::Standard => "Standard",
    }
}

/// Routes on the tier, exhaustively.
pub type TierRoute = Route<
    Order,
    i64,
    &'static str,
    TierSelector,
    Arm<&'static str, StandardPrice, Arm<&'static str, GoldDiscount, NoArms>>,
>;

/// The exhaustive tier route.
pub fn tier_route() -> TierRoute {
    Route::new(tier as TierSelector)
        .arm("Gold", GoldDiscount)
        .arm("Standard", StandardPrice)
        .exhaustive()
}

type Fan = Parallel<i64, (AddOne, Double), AllOrNothing>;

/// A parallel inside a chain inside a route.
pub type Nested = Route<
    Order,
    (i64, i64),
    &'static str,
    TierSelector,
    Arm<
        &'static str,
        Chain<StandardPrice, Fan>,
        Arm<&'static str, Chain<GoldDiscount, Fan>, NoArms>,
    >,
>;

/// The nested composition.
pub fn nested() -> Nested {
    Route::new(tier as TierSelector)
        .arm(
            "Gold",
            Chain::new(GoldDiscount, Parallel::new((AddOne, Double))),
        )
        .arm(
            "Standard",
            Chain::new(StandardPrice, Parallel::new((AddOne, Double))),
        )
        .named("nested")
}

/// `invert` over a list, two at a time.
pub type Inverts = Map<Invert>;

/// The map.
pub fn inverts() -> Inverts {
    Map::new(Invert).concurrency(2)
}
