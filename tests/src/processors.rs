//! The processors the conformance suite runs, written as users write them: `#[processor]` on
//! plain async fns. Data types are serde types so the same suite runs on Redis.

use std::sync::OnceLock;
use std::time::Duration;

use am2z::{Ctx, Error, processor};
use serde::{Deserialize, Serialize};

use crate::probe::record;

/// Microseconds on tokio's clock relative to a process-wide origin (negative before it):
/// differences between two readings in one test are exact on a paused clock.
pub fn now_us() -> i64 {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    let now = tokio::time::Instant::now().into_std();
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    match now.checked_duration_since(origin) {
        Some(after) => micros(after),
        None => -micros(origin.duration_since(now)),
    }
}

/// x + 1.
#[processor(description = "Adds one")]
pub async fn add_one(x: i64) -> Result<i64, Error> {
    Ok(x + 1)
}

/// x × 2.
#[processor]
pub async fn double(x: i64) -> Result<i64, Error> {
    Ok(x * 2)
}

/// x + 10.
#[processor]
pub async fn add_ten(x: i64) -> Result<i64, Error> {
    Ok(x + 10)
}

/// −x.
#[processor]
pub async fn negate(x: i64) -> Result<i64, Error> {
    Ok(-x)
}

/// Fails on negative numbers: the failing step of chain tests.
#[processor]
pub async fn reject_negative(x: i64) -> Result<i64, Error> {
    if x < 0 {
        Err(Error::validation("x", format!("{x} is negative")))
    } else {
        Ok(x)
    }
}

/// The number as text.
#[processor]
pub async fn to_text(x: i64) -> Result<String, Error> {
    Ok(x.to_string())
}

/// The length of a text.
#[processor]
pub async fn text_len(s: String) -> Result<usize, Error> {
    Ok(s.len())
}

/// The text in capitals.
#[processor]
pub async fn shout(s: String) -> Result<String, Error> {
    Ok(s.to_uppercase())
}

/// Returns the session and run it saw, through a nested `ctx.call` too.
#[processor]
pub async fn whoami(tag: String, ctx: &Ctx) -> Result<String, Error> {
    let nested = ctx.call(&Whoami2, tag.clone()).await?;
    Ok(format!("{}|{}|{}", ctx.session_id(), tag, nested))
}

/// The session, run and tag it saw.
#[processor]
pub async fn whoami2(tag: String, ctx: &Ctx) -> Result<String, Error> {
    tokio::task::yield_now().await;
    Ok(format!("{}:{}:{}", ctx.session_id(), ctx.run_id(), tag))
}

/// Sleeps `ms` milliseconds unless cancelled; records `cancelled` when its token fires.
#[processor]
pub async fn sleep_ms(ms: i64, ctx: &Ctx) -> Result<i64, Error> {
    record(ctx, format!("start:{}", now_us()));
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())) => {
            record(ctx, format!("done:{}", now_us()));
            Ok(ms)
        }
        () = ctx.cancelled() => {
            record(ctx, "cancelled");
            Err(Error::Cancelled { reason: "token fired".into() })
        }
    }
}

/// Sleeps 200 ms under a 100 ms timeout, watching its token.
#[processor(timeout = "100ms")]
pub async fn too_slow(ms: i64, ctx: &Ctx) -> Result<i64, Error> {
    let token = ctx.cancellation_token().clone();
    // Watch the token from a detached task: the attempt's own future is dropped on timeout.
    let session = ctx.session_id().clone();
    tokio::spawn(async move {
        token.cancelled().await;
        crate::probe::record_for(&session, format!("token-fired:{}", now_us()));
    });
    tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())).await;
    record(ctx, "finished");
    Ok(ms)
}

/// Input of [`flaky`]: fail this many attempts, then succeed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlakyPlan {
    /// Attempts that fail before one succeeds.
    pub failures: u32,
}

/// Fails `input.failures` attempts, then returns the attempt number.
#[processor(retries = 3)]
pub async fn flaky(input: FlakyPlan, ctx: &Ctx) -> Result<u32, Error> {
    record(ctx, format!("attempt:{}", ctx.attempt()));
    if ctx.attempt() <= input.failures {
        return Err(Error::execution(
            "flaky",
            format!("attempt {} failed", ctx.attempt()),
        ));
    }
    Ok(ctx.attempt())
}

/// Fails every attempt, with the attempt number in the message.
#[processor(retries = 2)]
pub async fn always_fails(_x: i64, ctx: &Ctx) -> Result<i64, Error> {
    record(ctx, format!("attempt:{}", ctx.attempt()));
    Err(Error::execution(
        "always_fails",
        format!("attempt {}", ctx.attempt()),
    ))
}

/// Always unavailable; records the time of each attempt.
#[processor(retries = 4, backoff = exponential(base = "100ms", multiplier = 2, max = "10s"))]
pub async fn backs_off(_x: i64, ctx: &Ctx) -> Result<i64, Error> {
    record(ctx, format!("t:{}", now_us()));
    Err(Error::unavailable("upstream", "down"))
}

/// Retries while the next attempt is below 3, whatever the error.
pub fn below_three(error: &Error, next_attempt: u32) -> bool {
    let _ = error;
    next_attempt < 3
}

/// Always a validation error; its `retry_if` decides.
#[processor(retries = 5, retry_if = below_three)]
pub async fn judged(_x: i64, ctx: &Ctx) -> Result<i64, Error> {
    record(ctx, format!("attempt:{}", ctx.attempt()));
    // A validation error, which is not retryable by itself: the predicate decides.
    Err(Error::validation("x", "always wrong"))
}

/// Always a validation error on `email`.
#[processor(retries = 3)]
pub async fn invalid_email(email: String, ctx: &Ctx) -> Result<String, Error> {
    record(ctx, format!("attempt:{}", ctx.attempt()));
    Err(Error::validation("email", format!("`{email}` has no @")))
}

/// Always a business error with details.
#[processor(retries = 3)]
pub async fn declines_card(amount: i64, ctx: &Ctx) -> Result<i64, Error> {
    record(ctx, format!("attempt:{}", ctx.attempt()));
    Err(Error::business_with(
        "card_declined",
        "insufficient funds",
        serde_json::json!({ "amount": amount, "limit": 100 }),
    ))
}

fn parse_positive(s: &str) -> Result<i64, Error> {
    let n: i64 = s
        .parse()
        .map_err(|_| Error::validation("input", format!("`{s}` is not a number")))?;
    if n <= 0 {
        return Err(Error::business(
            "not_positive",
            format!("{n} is not positive"),
        ));
    }
    Ok(n)
}

/// Raises its errors with `?`.
#[processor]
pub async fn parse_number(s: String) -> Result<i64, Error> {
    let n = parse_positive(&s)?;
    Ok(n)
}

/// Panics on non-negative input.
#[processor(retries = 2)]
pub async fn panics(x: i64) -> Result<i64, Error> {
    if x >= 0 {
        panic!("boom at {x}");
    }
    Ok(x)
}

/// Reports progress 25, 50, 75, 100 and a custom event.
#[processor]
pub async fn reports(x: i64, ctx: &Ctx) -> Result<i64, Error> {
    for step in 1..=4 {
        ctx.progress(step * 25);
    }
    ctx.emit("order.created", serde_json::json!({ "order": x }))?;
    Ok(x)
}

/// Calls itself through `ctx.call` until the depth limit stops it.
#[processor]
pub async fn recurse(depth: u32, ctx: &Ctx) -> Result<u32, Error> {
    record(ctx, format!("depth:{}", ctx.call_depth()));
    ctx.call(&Recurse, depth + 1).await
}

/// `ctx.call` with a fallback on failure.
#[processor]
pub async fn call_with_fallback(x: i64, ctx: &Ctx) -> Result<i64, Error> {
    let added = ctx.call(&AddOne, x).await?;
    let fallback = ctx
        .call(&AlwaysFails, x)
        .await
        .or_else(|_| Ok::<_, Error>(-1))?;
    Ok(added * 100 + fallback)
}

/// At most 2 at a time; records how many ran at once.
#[processor(concurrency = 2)]
pub async fn limited(ms: i64, ctx: &Ctx) -> Result<i64, Error> {
    record(ctx, "enter");
    tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())).await;
    record(ctx, "leave");
    Ok(ms)
}

/// Records when it started, under `rate = "2/s"`.
#[processor(rate = "2/s")]
pub async fn rate_limited(_x: i64, ctx: &Ctx) -> Result<i64, Error> {
    record(ctx, format!("t:{}", now_us()));
    Ok(0)
}

/// Records when it started, under `delay = "300ms"`.
#[processor(delay = "300ms")]
pub async fn delayed(x: i64, ctx: &Ctx) -> Result<i64, Error> {
    record(ctx, format!("t:{}", now_us()));
    Ok(x)
}

/// A customer tier, for route tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    /// Best customers.
    Gold,
    /// Everyone else.
    Standard,
}

/// An order, for route tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The customer's tier.
    pub tier: Tier,
    /// A free-form channel key.
    pub channel: String,
    /// The amount.
    pub amount: i64,
}

/// 20 % off.
#[processor]
pub async fn gold_discount(order: Order) -> Result<i64, Error> {
    Ok(order.amount * 80 / 100)
}

/// The amount as is.
#[processor]
pub async fn standard_price(order: Order) -> Result<i64, Error> {
    Ok(order.amount)
}

/// The amount plus a fee of 1.
#[processor]
pub async fn web_fee(order: Order) -> Result<i64, Error> {
    Ok(order.amount + 1)
}

/// 1000 / x; a validation error for 0.
#[processor]
pub async fn invert(x: i64) -> Result<i64, Error> {
    if x == 0 {
        Err(Error::validation("x", "cannot invert zero"))
    } else {
        Ok(1000 / x)
    }
}

/// Merges a length and a shout: the merge fn of parallel tests.
pub fn describe_text(len: usize, loud: String) -> String {
    format!("{loud}:{len}")
}

// Inspection (`inspect_suite`).

/// Fails the first time it sees `x` in its session and returns `x` after: a run an operator
/// retries.
#[processor]
pub async fn fails_first_time(x: i64, ctx: &Ctx) -> Result<i64, Error> {
    let mark = format!("fails-first-time:{x}");
    if crate::probe::seen(ctx.session_id().as_str()).contains(&mark) {
        return Ok(x);
    }
    record(ctx, mark);
    Err(Error::execution(
        "fails_first_time",
        format!("{x} is new here"),
    ))
}

/// One at a time: sleeps `ms` milliseconds unless cancelled (the second run waits, queued).
#[processor(concurrency = 1)]
pub async fn one_at_a_time(ms: i64, ctx: &Ctx) -> Result<i64, Error> {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())) => Ok(ms),
        () = ctx.cancelled() => Err(Error::Cancelled { reason: "token fired".into() }),
    }
}

/// Starts an hour after it is submitted (a run that stays delayed).
#[processor(delay = "1h")]
pub async fn starts_late(x: i64) -> Result<i64, Error> {
    Ok(x)
}

/// Handles a secret, so inspection redacts it; it also emits it in a custom event.
#[processor(redact)]
pub async fn keeps_secret(secret: String, ctx: &Ctx) -> Result<String, Error> {
    ctx.emit("secret.kept", serde_json::json!({ "secret": secret }))?;
    Ok(format!("kept {secret}"))
}
