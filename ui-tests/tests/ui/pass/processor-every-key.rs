//! Every `#[processor]` key, with the config it builds checked at run time.

use std::time::Duration;

use am2z::{processor, Backoff, Ctx, Error, LocalRuntime, Processor, Runtime};

#[derive(Clone, Debug)]
pub struct Payment {
    pub cents: u64,
}

#[derive(Debug, PartialEq)]
pub struct Receipt {
    pub cents: u64,
}

fn retry_transient(error: &Error, attempt: u32) -> bool {
    attempt < 3 && error.is_retryable()
}

/// Charges the card.
#[processor(
    name = "payments.charge",
    description = "Charges the customer's card",
    timeout = "30s",
    retries = 3,
    backoff = exponential(base = "100ms", multiplier = 2, max = "10s"),
    retry_if = retry_transient,
    concurrency = 5,
    priority = -10,
    rate = "100/min",
    delay = "1500ms",
    version = 2,
    redact = true,
    crate = ::am2z,
)]
pub async fn charge_card(input: Payment, ctx: &Ctx) -> Result<Receipt, Error> {
    let _ = ctx.attempt();
    Ok(Receipt { cents: input.cents })
}

#[processor(backoff = fixed("1s"), redact)]
async fn refund(input: u64) -> am2z::Result<u64> {
    Ok(input)
}

#[derive(Debug)]
struct Custom;

impl From<Custom> for Error {
    fn from(_: Custom) -> Error {
        Error::validation("input", "custom")
    }
}

#[processor]
async fn with_own_error(input: String) -> Result<usize, Custom> {
    if input.is_empty() { Err(Custom) } else { Ok(input.len()) }
}

fn main() {
    let config = ChargeCard.config();
    assert_eq!(ChargeCard.name(), "payments.charge");
    assert_eq!(config.description, Some("Charges the customer's card"));
    assert_eq!(config.timeout, Some(Duration::from_secs(30)));
    assert_eq!(config.retry.max_attempts, 3);
    assert_eq!(
        config.retry.backoff,
        Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(10))
    );
    assert!(config.retry.retry_if.is_some());
    assert_eq!(config.concurrency, Some(5));
    assert_eq!(config.priority, -10);
    let rate = config.rate_limit.expect("rate");
    assert_eq!((rate.max, rate.per), (100, Duration::from_secs(60)));
    assert_eq!(config.delay, Some(Duration::from_millis(1500)));
    assert_eq!(config.version, 2);
    assert!(config.redact);
    assert!(Refund.config().redact, "`redact` alone means `redact = true`");
    assert!(!WithOwnError.config().redact);

    assert_eq!(Refund.name(), "refund");
    assert_eq!(Refund.config().retry.backoff, Backoff::fixed(Duration::from_secs(1)));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    runtime.block_on(async {
        // The fn stays callable on its own.
        assert_eq!(refund(4).await.expect("refund"), 4);
        let rt = LocalRuntime::new();
        rt.start().await.expect("start");
        let out = WithOwnError::run(&rt, "abc".to_owned()).await.expect("run");
        assert_eq!(out.output, 3);
        assert!(WithOwnError::run(&rt, String::new()).await.is_err());
        let session = am2z::SessionId::new("tenant").expect("session");
        let out = Refund::run_in_session(&rt, &session, 9).await.expect("run");
        assert_eq!(out.output, 9);
    });
}
