//! A worker process for `tests/tracing_otel.rs`: it serves `Arith` on the Redis and prefix
//! of the environment (`AM2Z_REDIS_URL`, `AM2Z_QUEUE_PREFIX`) with an OpenTelemetry layer
//! whose spans go to an in-memory exporter, prints `ready` once serving, and when its stdin
//! closes stops (finishing what it runs), prints every span it exported as one line
//!
//! ```text
//! span <name> <trace id> <span id> <parent span id> <parent is remote: 0|1> <session> <processor>
//! ```
//!
//! and then `end`: the spans of a run submitted by another process, for the test to check.
#![allow(clippy::print_stdout)] // the parent reads this process's stdout

use std::io::{BufRead, Write};

use am2z::{RedisConfig, RedisRuntime, Runtime};
use am2z_tests::flows::Arith;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

fn main() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("trace-worker"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the only subscriber");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let config = RedisConfig::new("redis://127.0.0.1:6379")
            .with_env()
            .expect("the settings");
        let worker = RedisRuntime::new(config);
        worker.serve(Arith);
        worker.start().await.expect("the worker starts");
        say("ready");
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().lock().read_line(&mut line).unwrap_or(0) > 0 {
                line.clear();
            }
        })
        .await;
        worker.stop().await.expect("the worker stops");
    });
    for span in exporter.get_finished_spans().expect("the spans") {
        say(&line(&span));
    }
    say("end");
}

fn line(span: &SpanData) -> String {
    let field = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map_or_else(|| "-".to_owned(), |kv| kv.value.as_str().into_owned())
    };
    format!(
        "span {} {} {} {} {} {} {}",
        span.name,
        span.span_context.trace_id(),
        span.span_context.span_id(),
        span.parent_span_id,
        u8::from(span.parent_span_is_remote),
        field("session"),
        field("processor"),
    )
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
