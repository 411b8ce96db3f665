//! `am2z::metrics` on both runtimes: real workloads (a success, a retry then a success, a
//! failure), then a scrape, parsed by the small exposition-format parser below (every line
//! valid, HELP and TYPE before the samples, histogram buckets cumulative with `+Inf` equal to
//! `_count`), and the counts per processor checked.

use std::collections::BTreeMap;
use std::time::Duration;

use am2z::metrics::{Metrics, Source};
use am2z::{Executes, LocalRuntime, RedisConfig, RedisRuntime, RunId, Runtime, SessionId};
use am2z_tests::fault::{redis_cli, scan_keys};
use am2z_tests::processors::{AddOne, AlwaysFails, Flaky, FlakyPlan};

fn redis_url() -> String {
    std::env::var("AM2Z_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// One sample of a scrape.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed and checked line by line.
#[derive(Debug, Default)]
struct Scrape {
    samples: Vec<Sample>,
    /// Each family's type.
    types: BTreeMap<String, String>,
}

fn is_name(name: &str, colons: bool) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'));
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|e| format!("`{text}` is not a value: {e}")),
    }
}

/// `{a="x",b="y\"z"}` (the braces' content), unescaped.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("no `=\"` in labels `{text}`"))?;
        if !is_name(name, false) {
            return Err(format!("`{name}` is not a label name"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated label value in `{text}`")),
                Some((at, '"')) => break at,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in `{text}`")),
                },
                Some((_, '\n')) => return Err("a raw line feed in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label `{name}` twice"));
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(labels)
}

/// A series' labels but `le`, in order.
type Labels = Vec<(String, String)>;

/// The family a sample belongs to: its name, or a histogram's name without the suffix.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

impl Scrape {
    fn parse(text: &str) -> Result<Scrape, String> {
        let mut scrape = Scrape::default();
        let mut helped = BTreeMap::<String, ()>::new();
        let mut sampled = BTreeMap::<String, ()>::new();
        if !text.ends_with('\n') {
            return Err("the text does not end with a line feed".into());
        }
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("HELP"), Some(name), Some(help)) => {
                        if !is_name(name, true) {
                            return Err(format!("HELP of a bad name: {line}"));
                        }
                        if sampled.contains_key(name) {
                            return Err(format!("HELP after {name}'s samples"));
                        }
                        if helped.insert(name.to_owned(), ()).is_some() {
                            return Err(format!("HELP of {name} twice"));
                        }
                        let mut chars = help.chars();
                        while let Some(c) = chars.next() {
                            if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                                return Err(format!("bad escape in HELP: {line}"));
                            }
                        }
                    }
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        let known = ["counter", "gauge", "histogram", "summary", "untyped"];
                        if !known.contains(&kind) || !is_name(name, true) {
                            return Err(format!("bad TYPE line: {line}"));
                        }
                        if sampled.contains_key(name) {
                            return Err(format!("TYPE after {name}'s samples"));
                        }
                        if scrape
                            .types
                            .insert(name.to_owned(), kind.to_owned())
                            .is_some()
                        {
                            return Err(format!("TYPE of {name} twice"));
                        }
                    }
                    _ => {} // Any other comment.
                }
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let (name, labels, rest) = match line.find('{') {
                Some(open) => {
                    let close = line
                        .rfind('}')
                        .ok_or_else(|| format!("unclosed labels: {line}"))?;
                    (
                        &line[..open],
                        parse_labels(&line[open + 1..close])?,
                        &line[close + 1..],
                    )
                }
                None => {
                    let (name, rest) = line
                        .split_once(' ')
                        .ok_or_else(|| format!("no value: {line}"))?;
                    (name, BTreeMap::new(), rest)
                }
            };
            if !is_name(name, true) {
                return Err(format!("`{name}` is not a metric name"));
            }
            let mut fields = rest.split_whitespace();
            let value = parse_value(fields.next().ok_or_else(|| format!("no value: {line}"))?)?;
            if let Some(timestamp) = fields.next() {
                timestamp
                    .parse::<i64>()
                    .map_err(|_| format!("bad timestamp: {line}"))?;
            }
            if fields.next().is_some() {
                return Err(format!("trailing text: {line}"));
            }
            let family = family_of(name, &scrape.types);
            if !scrape.types.contains_key(&family) {
                return Err(format!("sample of {family} before its TYPE"));
            }
            sampled.insert(family, ());
            scrape.samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        scrape.check_histograms()?;
        Ok(scrape)
    }

    /// Each histogram's series: buckets in increasing `le`, cumulative, `+Inf` == `_count`.
    fn check_histograms(&self) -> Result<(), String> {
        for (family, _) in self.types.iter().filter(|(_, t)| *t == "histogram") {
            let bucket = format!("{family}_bucket");
            let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
            for sample in self.samples.iter().filter(|s| s.name == bucket) {
                let le = sample
                    .labels
                    .get("le")
                    .ok_or_else(|| format!("{bucket} without le"))?;
                let key = sample
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "le")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                series
                    .entry(key)
                    .or_default()
                    .push((parse_value(le)?, sample.value));
            }
            for (key, buckets) in series {
                for pair in buckets.windows(2) {
                    if pair[0].0 >= pair[1].0 || pair[0].1 > pair[1].1 {
                        return Err(format!("{family}{key:?}: buckets not cumulative: {pair:?}"));
                    }
                }
                let last = buckets.last().ok_or("no bucket")?;
                if last.0 != f64::INFINITY {
                    return Err(format!("{family}{key:?}: no +Inf bucket"));
                }
                let labels: BTreeMap<String, String> = key.into_iter().collect();
                let count = self
                    .get(&format!("{family}_count"), &labels)
                    .ok_or_else(|| format!("{family}: no _count for {labels:?}"))?;
                if count != last.1 {
                    return Err(format!(
                        "{family}{labels:?}: +Inf {} != _count {count}",
                        last.1
                    ));
                }
                self.get(&format!("{family}_sum"), &labels)
                    .ok_or_else(|| format!("{family}: no _sum for {labels:?}"))?;
            }
        }
        Ok(())
    }

    /// The value of the sample `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == *labels)
            .map(|s| s.value)
    }

    /// The value of `name` for `processor` (0 when the sample is absent).
    fn by_processor(&self, name: &str, processor: &str) -> f64 {
        let labels = BTreeMap::from([("processor".to_owned(), processor.to_owned())]);
        self.get(name, &labels).unwrap_or(0.0)
    }

    fn plain(&self, name: &str) -> Option<f64> {
        self.get(name, &BTreeMap::new())
    }

    fn with(&self, name: &str, label: &str, value: &str) -> Option<f64> {
        let labels = BTreeMap::from([(label.to_owned(), value.to_owned())]);
        self.get(name, &labels)
    }
}

/// What the workload must have produced, per processor: (runs started, completed, failed,
/// steps started, completed, retried, failed). Each run starts once, its retries included
/// (on Redis a retry waits in Redis and the job is delivered again: not a new start).
const EXPECTED: [(&str, [f64; 7]); 3] = [
    ("add_one", [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]),
    ("flaky", [1.0, 1.0, 0.0, 2.0, 1.0, 1.0, 0.0]),
    ("always_fails", [1.0, 0.0, 1.0, 2.0, 0.0, 1.0, 1.0]),
];

const COUNTERS: [&str; 7] = [
    "am2z_runs_started_total",
    "am2z_runs_completed_total",
    "am2z_runs_failed_total",
    "am2z_steps_started_total",
    "am2z_steps_completed_total",
    "am2z_steps_retried_total",
    "am2z_steps_failed_total",
];

/// Runs the workload in `session`: a success, a retry then a success, a failure.
async fn workload<R>(runtime: &R, session: &SessionId)
where
    R: Executes<AddOne> + Executes<Flaky> + Executes<AlwaysFails>,
{
    let one = runtime.execute_in_session(session, &AddOne, 1).await;
    assert_eq!(one.expect("add_one completes").output, 2);
    let flaky = runtime
        .execute_in_session(session, &Flaky, FlakyPlan { failures: 1 })
        .await;
    assert_eq!(flaky.expect("flaky completes on its 2nd attempt").output, 2);
    let failed = runtime.execute_in_session(session, &AlwaysFails, 0).await;
    assert!(failed.is_err(), "always_fails fails");
}

/// Scrapes until the event counters show the whole workload (events reach the collector
/// after the outcomes, through Redis on the Redis runtime), then checks every count.
async fn scrape_after_workload<R: Source>(metrics: &Metrics<R>) -> Scrape {
    let settled = |scrape: &Scrape| {
        EXPECTED.iter().all(|(processor, counts)| {
            COUNTERS
                .iter()
                .zip(counts)
                .all(|(name, want)| scrape.by_processor(name, processor) >= *want)
        })
    };
    let mut last = String::new();
    for _ in 0..600 {
        last = metrics.render().await.expect("render");
        let scrape = Scrape::parse(&last).unwrap_or_else(|e| panic!("{e}\n{last}"));
        if settled(&scrape) {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the counters never showed the workload:\n{last}");
}

fn check_counts(scrape: &Scrape) {
    for (processor, counts) in EXPECTED {
        for (name, want) in COUNTERS.iter().zip(counts) {
            assert_eq!(
                scrape.by_processor(name, processor),
                want,
                "{name}{{processor={processor:?}}}"
            );
        }
        // One duration observed per successful attempt.
        let completed = counts[4];
        assert_eq!(
            scrape.by_processor("am2z_step_duration_seconds_count", processor),
            completed,
            "{processor}'s durations"
        );
    }
    assert_eq!(scrape.types["am2z_step_duration_seconds"], "histogram");
    assert_eq!(scrape.types["am2z_runs_completed_total"], "counter");
    assert_eq!(scrape.types["am2z_runs_started_total"], "counter");
    assert_eq!(scrape.types["am2z_queue_depth"], "gauge");
    // No per-session or per-run label anywhere.
    for sample in &scrape.samples {
        for label in sample.labels.keys() {
            assert!(
                ["processor", "state", "le", "worker"].contains(&label.as_str()),
                "unexpected label {label} on {}",
                sample.name
            );
        }
    }
    // The ended runs kept, by state, and nothing live.
    assert_eq!(scrape.with("am2z_runs", "state", "completed"), Some(2.0));
    assert_eq!(scrape.with("am2z_runs", "state", "failed"), Some(1.0));
    assert_eq!(scrape.with("am2z_runs", "state", "live"), Some(0.0));
    assert_eq!(scrape.plain("am2z_sessions"), Some(1.0));
    assert_eq!(scrape.plain("am2z_dead_letters"), Some(0.0));
    for state in ["waiting", "active", "delayed"] {
        assert_eq!(scrape.with("am2z_queue_depth", "state", state), Some(0.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_local_workload_by_processor() {
    let runtime = LocalRuntime::new();
    runtime.start().await.expect("starts");
    let metrics = Metrics::new(&runtime);
    let session = SessionId::new("metrics-local").expect("a valid id");
    workload(&runtime, &session).await;
    let scrape = scrape_after_workload(&metrics).await;
    check_counts(&scrape);
    // The gauges alone, without a collector: the same gauges, no counts.
    let gauges = am2z::metrics::render(&runtime).await.expect("render");
    let gauges = Scrape::parse(&gauges).unwrap_or_else(|e| panic!("{e}\n{gauges}"));
    assert_eq!(gauges.plain("am2z_sessions"), Some(1.0));
    assert!(!gauges.types.contains_key("am2z_runs_completed_total"));
    runtime.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_redis_workload_by_processor_with_the_fleet_gauges() {
    let url = redis_url();
    let prefix = format!("am2z-metrics-test-{}", RunId::generate());
    let config = RedisConfig::new(&url)
        .prefix(prefix.clone())
        .idle_poll(Duration::from_millis(50))
        .session_ttl(Duration::from_secs(120))
        .result_ttl(Duration::from_secs(120));
    let runtime = RedisRuntime::new(config);
    runtime.serve(AddOne);
    runtime.serve(Flaky);
    runtime.serve(AlwaysFails);
    runtime.start().await.expect("starts");
    let metrics = Metrics::new(&runtime);
    let session = SessionId::new("metrics-redis").expect("a valid id");
    workload(&runtime, &session).await;
    let scrape = scrape_after_workload(&metrics).await;
    check_counts(&scrape);
    // This process is the one worker; it committed every run and had none refused.
    assert_eq!(scrape.plain("am2z_workers"), Some(1.0));
    let up: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.name == "am2z_worker_up")
        .collect();
    assert_eq!(up.len(), 1);
    assert_eq!(scrape.plain("am2z_refused_commits_total"), Some(0.0));
    assert_eq!(scrape.plain("am2z_leases_held"), Some(0.0));
    assert_eq!(scrape.types["am2z_refused_commits_total"], "counter");

    // A second collector in another (non-worker) process sees the same fleet-wide counts: the
    // events come through Redis.
    let observer = RedisRuntime::new(RedisConfig::new(&url).prefix(prefix.clone()).worker(false));
    observer.start().await.expect("the observer starts");
    let watching = Metrics::new(&observer);
    workload(&runtime, &session).await;
    let seen = scrape_after_workload(&watching).await;
    for (processor, counts) in EXPECTED {
        for (name, want) in COUNTERS.iter().zip(counts) {
            assert_eq!(
                seen.by_processor(name, processor),
                want,
                "{name} {processor}"
            );
        }
    }

    drop(watching);
    observer.stop().await.expect("the observer stops");
    runtime.stop_session(&session).await.expect("stop_session");
    runtime.stop().await.expect("stops");
    for key in scan_keys(&url, &format!("{prefix}:*")) {
        redis_cli(&url, &["DEL", &key]);
    }
}

#[test]
fn the_parser_refuses_what_is_not_the_format() {
    let ok = "# HELP a_total Counts.\n# TYPE a_total counter\na_total{p=\"x\\\"y\"} 3\n";
    let scrape = Scrape::parse(ok).expect("valid");
    assert_eq!(scrape.samples[0].labels["p"], "x\"y");
    for bad in [
        "a_total 3\n",                                                 // no TYPE
        "# TYPE a_total counter\na_total{p=\"x} 3\n",                  // unterminated value
        "# TYPE a_total counter\na_total 3\n# TYPE a_total counter\n", // TYPE after samples
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\nh_sum 0\n",
        "# TYPE a_total counter\na_total{p=\"x\\q\"} 3\n", // bad escape
    ] {
        assert!(Scrape::parse(bad).is_err(), "refused: {bad}");
    }
}
