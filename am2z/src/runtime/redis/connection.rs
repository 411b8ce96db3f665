//! Connections. On one node: one multiplexed, self-reconnecting `ConnectionManager` for every
//! command, and one pub/sub connection (re-established in a loop) for wake-ups, completions,
//! control messages and events. On a cluster: a `ClusterConnection` (one multiplexed
//! connection per node, following resharding and failover) for commands, and a second one
//! for the subscriptions (`subscriptions.rs`). Their number does not depend on how many
//! sessions a process serves. Each is named (`CLIENT SETNAME am2z:<role>:<pid>`, [`Role`]) so
//! that operators can tell them apart in `CLIENT LIST`.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo,
};
use redis::{PushInfo, PushKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::config::RedisConfig;
use super::feed::Feed;
use crate::Error;

/// Turns Redis errors into [`Error::Unavailable`], never leaking the password.
#[derive(Clone)]
pub(crate) struct ErrorMap {
    service: String,
    secret: Option<String>,
    /// Whether the URL is plaintext (`redis://`), for a hint when a TLS server hangs up.
    plaintext: bool,
}

impl ErrorMap {
    pub(crate) fn new(config: &RedisConfig) -> Self {
        ErrorMap {
            service: format!("redis at {}", config.redacted_url()),
            secret: password(&config.url).filter(|p| !p.is_empty()),
            plaintext: !config.url.starts_with("rediss://"),
        }
    }

    /// `error` from opening a connection, typed by what must be fixed: refused credentials
    /// and a certificate the client does not trust are [`Error::Configuration`] (waiting
    /// cannot help), anything else [`Error::Unavailable`]; the secret scrubbed either way.
    pub(crate) fn connecting(&self, error: &redis::RedisError) -> Error {
        let message = self.scrub(&error.to_string());
        if error.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
        {
            return Error::configuration(format!(
                "{} refused the credentials (authentication failed): {message}",
                self.service
            ));
        }
        // rustls' refusals (`invalid peer certificate: UnknownIssuer`, `received fatal alert:
        // HandshakeFailure`, ...) reach us as I/O errors: recognised by their text.
        let lowered = message.to_ascii_lowercase();
        if ["certificate", "handshake", "fatal alert"]
            .iter()
            .any(|sign| lowered.contains(sign))
        {
            return Error::configuration(format!(
                "{}: the TLS handshake failed (does the CA given by `tls_ca` / \
                 `AM2Z_REDIS_TLS_CA` sign the server's certificate?): {message}",
                self.service
            ));
        }
        if self.plaintext && error.is_io_error() {
            return Error::unavailable(
                self.service.clone(),
                format!("{message} (if the server only speaks TLS, use a `rediss://` URL)"),
            );
        }
        self.unavailable(error)
    }

    /// `error`, typed: [`Error::Resource`] when Redis is out of memory (back-pressure: the
    /// write was refused whole), else [`Error::Unavailable`]; the secret scrubbed either way.
    pub(crate) fn unavailable(&self, error: &redis::RedisError) -> Error {
        let message = self.scrub(&error.to_string());
        if error.code() == Some("OOM") {
            return Error::resource(self.service.clone(), message);
        }
        Error::unavailable(self.service.clone(), message)
    }

    pub(crate) fn scrub(&self, message: &str) -> String {
        match &self.secret {
            Some(secret) => message.replace(secret.as_str(), "***"),
            None => message.to_owned(),
        }
    }
}

/// The password part of a URL's user info, if any.
fn password(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let user_info = &authority[..authority.rfind('@')?];
    Some(match user_info.find(':') {
        Some(colon) => user_info[colon + 1..].to_owned(),
        None => user_info.to_owned(),
    })
}

/// The command connection: one node's self-reconnecting manager, or a cluster's connection.
/// Every protocol call takes it as a `ConnectionLike`.
#[derive(Clone)]
pub(crate) enum Conn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Node(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Where Redis is, as the clients that reach it (no I/O yet, but the TLS CA file is read).
#[derive(Clone)]
pub(crate) enum Target {
    Node(Box<redis::Client>),
    /// A cluster: its seed nodes and TLS roots, for the command client and the subscriber's.
    Cluster {
        seeds: Vec<String>,
        certificates: Option<Box<TlsRoots>>,
    },
}

/// The CA certificates a cluster's nodes are checked against (with am2z's `tls` feature).
#[derive(Clone)]
pub(crate) struct TlsRoots(#[cfg_attr(not(feature = "tls"), allow(dead_code))] Vec<u8>);

impl Target {
    /// The client of a cluster's commands (`push`: with RESP3 and pushes sent there, for
    /// the subscriber).
    pub(crate) fn cluster_client(
        &self,
        config: &RedisConfig,
        errors: &ErrorMap,
        push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> Result<ClusterClient, Error> {
        let Target::Cluster {
            seeds,
            certificates,
        } = self
        else {
            return Err(Error::configuration("not a Redis Cluster"));
        };
        let mut builder = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
            .connection_timeout(config.response_timeout)
            .response_timeout(config.response_timeout)
            // `MOVED`, `ASK`, `TRYAGAIN` and `CLUSTERDOWN` are retried soon (a migration or a
            // failover takes tens of milliseconds to seconds), not after the default 1.28 s.
            .retries(8)
            .min_retry_wait(20)
            .max_retry_wait(1_000);
        if let Some(roots) = certificates {
            builder = with_roots(builder, roots)?;
        }
        if let Some(push) = push {
            builder = builder
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(push);
        }
        builder.build().map_err(|e| {
            Error::configuration(format!(
                "the Redis Cluster seeds `{}` are invalid: {}",
                config.redacted_url(),
                errors.scrub(&e.to_string())
            ))
        })
    }
}

#[cfg(feature = "tls")]
fn with_roots(
    builder: ClusterClientBuilder,
    roots: &TlsRoots,
) -> Result<ClusterClientBuilder, Error> {
    Ok(builder.certs(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(roots.0.clone()),
    }))
}

#[cfg(not(feature = "tls"))]
fn with_roots(_: ClusterClientBuilder, _: &TlsRoots) -> Result<ClusterClientBuilder, Error> {
    Err(Error::configuration(
        "a TLS CA is set, but am2z was built without its `tls` feature",
    ))
}

/// Opens the clients (no I/O yet, but the TLS CA file is read here).
pub(crate) fn target(config: &RedisConfig, errors: &ErrorMap) -> Result<Target, Error> {
    if let Some(seeds) = &config.cluster {
        let certificates = match &config.tls_ca {
            None => None,
            Some(ca) => Some(Box::new(TlsRoots(read_ca(config, ca)?))),
        };
        let target = Target::Cluster {
            seeds: seeds.clone(),
            certificates,
        };
        // Checks the seeds parse before any I/O.
        target.cluster_client(config, errors, None)?;
        return Ok(target);
    }
    let invalid = |e: redis::RedisError| {
        Error::configuration(format!(
            "the Redis URL `{}` is invalid: {}",
            config.redacted_url(),
            errors.scrub(&e.to_string())
        ))
    };
    let client = match &config.tls_ca {
        None => redis::Client::open(config.url.as_str()).map_err(invalid)?,
        Some(ca) => tls_client(config, ca).and_then(|built| built.map_err(invalid))?,
    };
    Ok(Target::Node(Box::new(client)))
}

/// The PEM file `ca`, checked to hold a certificate and to go with `rediss://` URLs.
fn read_ca(config: &RedisConfig, ca: &std::path::Path) -> Result<Vec<u8>, Error> {
    let unusable = |why: String| {
        Error::configuration(format!(
            "the TLS CA file `{}` cannot be used: {why}",
            ca.display()
        ))
    };
    let pem = std::fs::read(ca).map_err(|e| unusable(e.to_string()))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(unusable("it holds no PEM certificate".to_owned()));
    }
    let urls = config
        .cluster
        .clone()
        .unwrap_or_else(|| vec![config.url.clone()]);
    if let Some(plain) = urls.iter().find(|url| !url.starts_with("rediss://")) {
        return Err(Error::configuration(format!(
            "a TLS CA is set (`{}`), but the Redis URL `{}` is not `rediss://`",
            ca.display(),
            super::config::redact(plain)
        )));
    }
    Ok(pem)
}

/// A client that trusts only the CA certificates in the PEM file `ca`.
#[cfg(feature = "tls")]
fn tls_client(
    config: &RedisConfig,
    ca: &std::path::Path,
) -> Result<redis::RedisResult<redis::Client>, Error> {
    let pem = read_ca(config, ca)?;
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    Ok(redis::Client::build_with_tls(
        config.url.as_str(),
        certificates,
    ))
}

#[cfg(not(feature = "tls"))]
fn tls_client(
    _config: &RedisConfig,
    ca: &std::path::Path,
) -> Result<redis::RedisResult<redis::Client>, Error> {
    Err(Error::configuration(format!(
        "a TLS CA is set (`{}`), but am2z was built without its `tls` feature",
        ca.display()
    )))
}

/// Connects the command connection and checks the server is safe to use: at least version
/// `min` (the commands the scripts use), and not evicting keys. While Redis refuses
/// connections or is loading its data, retries with backoff for up to `start_timeout`. On a
/// cluster, the node checked is one of its masters, picked by the client.
pub(crate) async fn connect(
    target: &Target,
    errors: &ErrorMap,
    config: &RedisConfig,
    min: (u32, u32),
) -> Result<Conn, Error> {
    let client = match target {
        Target::Node(client) => (**client).clone(),
        Target::Cluster { .. } => {
            let client = target.cluster_client(config, errors, None)?;
            return connect_cluster(&client, errors, config, min).await;
        }
    };
    // One bound for a round trip and a connection attempt: a frozen server makes calls fail
    // with a typed error within it. Few reconnection retries, so callers hear of an outage
    // fast (the next call starts a new attempt).
    let settings = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.response_timeout))
        .set_response_timeout(Some(config.response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    let patience = tokio::time::Instant::now() + config.start_timeout;
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut conn = client
                .get_connection_manager_with_config(settings.clone())
                .await?;
            let version = server_version(&mut conn).await?;
            let policy = maxmemory_policy(&mut conn, errors).await?;
            Ok::<_, redis::RedisError>((conn, version, policy))
        };
        match attempt.await {
            Ok((conn, version, policy)) => {
                refuse_old(config, version.as_deref(), min)?;
                refuse_evicting(policy.as_deref())?;
                let mut conn = Conn::Node(conn);
                name(&mut conn, Role::commands(config), errors).await;
                return Ok(conn);
            }
            Err(error)
                if not_up_yet(&error) && tokio::time::Instant::now() + backoff < patience =>
            {
                tracing::warn!(error = %errors.scrub(&error.to_string()), retry_in = ?backoff, "Redis is not up yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(errors.connecting(&error)),
        }
    }
}

/// [`connect`] to a cluster.
async fn connect_cluster(
    client: &ClusterClient,
    errors: &ErrorMap,
    config: &RedisConfig,
    min: (u32, u32),
) -> Result<Conn, Error> {
    let patience = tokio::time::Instant::now() + config.start_timeout;
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut conn = client.get_async_connection().await?;
            let random = || RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
            let info = conn
                .route_command(redis::cmd("INFO").arg("server").clone(), random())
                .await?;
            let version = redis::from_redis_value::<String>(info)?
                .lines()
                .find_map(|line| line.strip_prefix("redis_version:"))
                .map(|version| version.trim().to_owned());
            let policy = match conn
                .route_command(
                    redis::cmd("CONFIG")
                        .arg("GET")
                        .arg("maxmemory-policy")
                        .clone(),
                    random(),
                )
                .await
            {
                Ok(pair) => redis::from_redis_value::<Vec<String>>(pair)?
                    .into_iter()
                    .nth(1),
                Err(error)
                    if error.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
                {
                    tracing::warn!(error = %errors.scrub(&error.to_string()), "cannot read maxmemory-policy; make sure it is `noeviction` on every node");
                    None
                }
                Err(error) => return Err(error),
            };
            Ok::<_, redis::RedisError>((conn, version, policy))
        };
        match attempt.await {
            Ok((conn, version, policy)) => {
                refuse_old(config, version.as_deref(), min)?;
                refuse_evicting(policy.as_deref())?;
                let mut conn = Conn::Cluster(conn);
                name(&mut conn, Role::commands(config), errors).await;
                return Ok(conn);
            }
            Err(error)
                if (not_up_yet(&error) || error.is_cluster_error())
                    && tokio::time::Instant::now() + backoff < patience =>
            {
                tracing::warn!(error = %errors.scrub(&error.to_string()), retry_in = ?backoff, "the Redis Cluster is not up yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(errors.connecting(&error)),
        }
    }
}

/// Whether `error` says Redis is not serving yet (nothing listens, or it loads its data), as
/// opposed to a misconfiguration that waiting does not fix.
fn not_up_yet(error: &redis::RedisError) -> bool {
    error.is_connection_refusal() || error.is_timeout() || error.code() == Some("LOADING")
}

/// The server's `maxmemory-policy` (`None` when it cannot be read: managed servers may forbid
/// `CONFIG`, and then we say so).
async fn maxmemory_policy(
    conn: &mut ConnectionManager,
    errors: &ErrorMap,
) -> redis::RedisResult<Option<String>> {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    match reply {
        Ok(pair) => Ok(pair.into_iter().nth(1)),
        Err(error)
            if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
        {
            tracing::warn!(error = %errors.scrub(&error.to_string()), "cannot read maxmemory-policy; make sure it is `noeviction`");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// The server's `redis_version` (`INFO server`), if it says.
async fn server_version(conn: &mut ConnectionManager) -> redis::RedisResult<Option<String>> {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .map(|version| version.trim().to_owned()))
}

/// A server older than `min` lacks commands the scripts use: refuse to start on it, naming
/// both versions (a server that does not say is given the benefit of the doubt).
fn refuse_old(config: &RedisConfig, version: Option<&str>, min: (u32, u32)) -> Result<(), Error> {
    let Some(version) = version else {
        return Ok(());
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found >= min {
        return Ok(());
    }
    Err(Error::configuration(format!(
        "the Redis at {} is version {version}; am2z needs Redis {}.{} or later (its scripts use \
         commands older servers lack, such as `ZMSCORE` and `ZADD ... LT`)",
        config.redacted_url(),
        min.0,
        min.1
    )))
}

/// An evicting `maxmemory-policy` would silently drop queued work: refuse to start on one.
fn refuse_evicting(policy: Option<&str>) -> Result<(), Error> {
    match policy {
        Some("noeviction") | None => Ok(()),
        Some(policy) => Err(Error::configuration(format!(
            "Redis evicts keys under memory pressure (maxmemory-policy `{policy}`), which \
             would silently lose queued work: set `maxmemory-policy noeviction`"
        ))),
    }
}

/// What a connection is for, as its name says (`am2z:<role>:<pid>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The command connection of a runtime that only submits and awaits (`worker(false)`).
    Client,
    /// The command connection of a runtime that also executes jobs.
    Worker,
    /// A pub/sub subscriber.
    Sub,
}

impl Role {
    /// The role of the command connection a runtime with `config` opens.
    pub(crate) fn commands(config: &RedisConfig) -> Role {
        match config.worker {
            true => Role::Worker,
            false => Role::Client,
        }
    }

    /// The connection's name: `am2z:<role>:<pid>`.
    pub(crate) fn connection_name(self) -> String {
        format!("am2z:{self}:{}", std::process::id())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Client => "client",
            Role::Worker => "worker",
            Role::Sub => "sub",
        })
    }
}

/// `CLIENT SETNAME am2z:<role>:<pid>`.
fn name_command(role: Role) -> redis::Cmd {
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(role.connection_name())
        .clone()
}

/// Names `conn`: one node's connection, or each master's of a cluster.
async fn set_name(conn: &mut Conn, role: Role) -> redis::RedisResult<()> {
    match conn {
        Conn::Node(conn) => name_command(role).query_async(conn).await,
        Conn::Cluster(conn) => name_masters(conn, role).await,
    }
}

/// Names each master's connection of a cluster's client; every master's, not every node's:
/// naming must not open connections to replicas the client does not otherwise use.
async fn name_masters(conn: &mut ClusterConnection, role: Role) -> redis::RedisResult<()> {
    let masters = RoutingInfo::MultiNode((
        MultipleNodeRoutingInfo::AllMasters,
        Some(ResponsePolicy::AllSucceeded),
    ));
    conn.route_command(name_command(role), masters)
        .await
        .map(drop)
}

fn unnamed(role: Role, errors: &ErrorMap, error: &redis::RedisError) {
    tracing::warn!(%role, error = %errors.scrub(&error.to_string()), "naming the Redis connection failed; it works unnamed");
}

/// Names `conn` for `role`. A name refused (a server or proxy that forbids `CLIENT`) is
/// logged, never fatal: the connection works the same unnamed.
pub(crate) async fn name(conn: &mut Conn, role: Role, errors: &ErrorMap) {
    if let Err(error) = set_name(conn, role).await {
        unnamed(role, errors, &error);
    }
}

/// [`name`] for a cluster's subscriber connection.
pub(crate) async fn name_cluster(conn: &mut ClusterConnection, role: Role, errors: &ErrorMap) {
    if let Err(error) = name_masters(conn, role).await {
        unnamed(role, errors, &error);
    }
}

/// Names the command connection again, in the background: called when the subscriber had to
/// reconnect, since whatever dropped it (a restart, a failover, a network cut) most likely
/// dropped the command connection too, and its manager reconnects unnamed. The first try
/// may meet the dropped connection (the manager reconnects on that error): it is tried again.
pub(crate) fn name_again(mut conn: Conn, role: Role, errors: ErrorMap) {
    tokio::spawn(async move {
        for _ in 0..3 {
            match set_name(&mut conn, role).await {
                Ok(()) => return,
                Err(error) if error.is_unrecoverable_error() || error.is_io_error() => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => return unnamed(role, &errors, &error),
            }
        }
        tracing::debug!(%role, "the command connection was not named again: Redis is not back yet");
    });
}

/// A message received on one of the runtime's channels. The payload is left as bytes,
/// moved out of the push: a busy prefix's `events` messages are large, and a process that
/// does not look at them should neither copy nor validate them.
pub(crate) struct Message {
    pub(crate) channel: String,
    pub(crate) payload: Vec<u8>,
}

impl Message {
    /// The message a push's data carries (`[channel, payload]`), if it is one.
    pub(crate) fn from_push(data: Vec<redis::Value>) -> Option<Message> {
        let mut data = data.into_iter();
        let channel = redis::from_redis_value::<String>(data.next()?).ok()?;
        let payload = match data.next()? {
            redis::Value::BulkString(bytes) => bytes,
            other => redis::from_redis_value::<Vec<u8>>(other).ok()?,
        };
        Some(Message { channel, payload })
    }
}

/// What one node's subscriber connection listens to: its standing channels always, and each
/// on-demand channel (`events`, `done`) while its feed wants it ([`Feed`]).
pub(crate) struct Channels {
    pub(crate) standing: Vec<String>,
    pub(crate) on_demand: [OnDemand; 2],
}

/// A channel taken while its feed wants it.
pub(crate) struct OnDemand {
    pub(crate) channel: String,
    pub(crate) feed: Arc<Feed>,
}

/// Where an on-demand channel stands on the current connection.
#[derive(Clone, Copy, Default)]
struct Taken {
    subscribed: bool,
    /// When the last user left: the channel goes at this time unless one came back.
    letting_go: Option<tokio::time::Instant>,
}

impl OnDemand {
    /// Brings the channel in line with its feed at `now`: subscribed at once when it is
    /// wanted; when it no longer is, let go once it has not been for the feed's linger.
    async fn settle(
        &self,
        conn: &mut MultiplexedConnection,
        taken: &mut Taken,
        now: tokio::time::Instant,
        errors: &ErrorMap,
    ) -> redis::RedisResult<()> {
        match (self.feed.wanted(), taken.subscribed, taken.letting_go) {
            (true, false, _) => {
                conn.subscribe(&self.channel).await?;
                *taken = Taken {
                    subscribed: true,
                    letting_go: None,
                };
                self.feed.set_subscribed(true);
            }
            (true, true, _) => taken.letting_go = None,
            (false, true, None) => taken.letting_go = Some(now + self.feed.linger()),
            (false, true, Some(at)) if at <= now => {
                *taken = Taken::default();
                self.feed.set_subscribed(false);
                if let Err(error) = conn.unsubscribe(&self.channel).await {
                    tracing::debug!(channel = %self.channel, error = %errors.unavailable(&error), "unsubscribing failed");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Resolves when the need of either on-demand channel may have changed.
async fn either_changed([first, second]: &[OnDemand; 2]) {
    tokio::select! {
        () = first.feed.changed() => {}
        () = second.feed.changed() => {}
    }
}

/// Keeps one pub/sub connection subscribed to `channels` until `stop` fires, handing every
/// message to `on_message` and calling `on_reconnect` after each re-subscription (so waiters
/// can re-check what they may have missed). `ready` learns whether the first subscription
/// worked. The connection speaks RESP3 (messages arrive as pushes), so that it can be named
/// before it subscribes, as every connection of the runtime is.
pub(crate) async fn subscribe(
    client: redis::Client,
    errors: ErrorMap,
    channels: Channels,
    ready: oneshot::Sender<Result<(), Error>>,
    stop: CancellationToken,
    on_message: impl Fn(Message) + Send + 'static,
    on_reconnect: impl Fn() + Send + 'static,
) {
    let client = match resp3(&client) {
        Ok(client) => client,
        Err(error) => {
            let _ = ready.send(Err(errors.unavailable(&error)));
            return;
        }
    };
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(50);
    let _following = channels.on_demand.each_ref().map(|o| o.feed.follow());
    loop {
        for on_demand in &channels.on_demand {
            on_demand.feed.set_subscribed(false);
        }
        let (pushes_in, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
        let attempt = async {
            let settings = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(5)))
                .set_response_timeout(Some(Duration::from_secs(5)))
                .set_push_sender(pushes_in);
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&settings)
                .await?;
            if let Err(error) = name_command(Role::Sub).query_async::<()>(&mut conn).await {
                unnamed(Role::Sub, &errors, &error);
            }
            conn.subscribe(&channels.standing).await?;
            let mut taken = [Taken::default(); 2];
            let now = tokio::time::Instant::now();
            for (on_demand, taken) in channels.on_demand.iter().zip(&mut taken) {
                on_demand.settle(&mut conn, taken, now, &errors).await?;
            }
            Ok::<_, redis::RedisError>((conn, taken))
        };
        let conn = tokio::select! {
            () = stop.cancelled() => return,
            result = tokio::time::timeout(Duration::from_secs(5), attempt) => result,
        };
        // Held while subscribed: the connection closes when the last handle is dropped.
        let (mut conn, mut taken) = match conn {
            Ok(Ok(subscribed)) => subscribed,
            Ok(Err(error)) => {
                let error = errors.unavailable(&error);
                tracing::warn!(%error, "subscribing to Redis failed; retrying");
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(error));
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_elapsed) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(Error::unavailable(
                        "redis",
                        "subscribing timed out after 5 s",
                    )));
                    return;
                }
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        match ready.take() {
            Some(ready) => {
                let _ = ready.send(Ok(()));
            }
            None => on_reconnect(),
        }
        loop {
            let deadline = taken.iter().filter_map(|t| t.letting_go).min();
            tokio::select! {
                () = stop.cancelled() => return,
                push = pushes.recv() => {
                    let Some(push) = push else { break };
                    match push.kind {
                        PushKind::Message => {
                            if let Some(message) = Message::from_push(push.data) {
                                on_message(message);
                            }
                        }
                        PushKind::Disconnection => break,
                        _ => {}
                    }
                    continue;
                }
                () = either_changed(&channels.on_demand) => {}
                () = sleep_until(deadline) => {}
            }
            let now = tokio::time::Instant::now();
            let mut settled = Ok(());
            for (on_demand, taken) in channels.on_demand.iter().zip(&mut taken) {
                settled = settled.and(on_demand.settle(&mut conn, taken, now, &errors).await);
            }
            if let Err(error) = settled {
                tracing::warn!(error = %errors.unavailable(&error), "subscribing failed; reconnecting");
                break;
            }
        }
        tracing::warn!("the Redis subscription dropped; reconnecting");
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `client`, speaking RESP3 (the same address, credentials and TLS settings).
fn resp3(client: &redis::Client) -> redis::RedisResult<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_servers_are_refused_naming_both_versions() {
        let config = RedisConfig::new("redis://:sekrit@127.0.0.1:1");
        assert!(refuse_old(&config, Some("7.0.15"), (7, 0)).is_ok());
        assert!(refuse_old(&config, Some("7.2.4"), (7, 0)).is_ok());
        assert!(refuse_old(&config, Some("8.0.0"), (7, 0)).is_ok());
        assert!(refuse_old(&config, None, (7, 0)).is_ok());
        let error = refuse_old(&config, Some("6.2.14"), (7, 0)).unwrap_err();
        assert!(matches!(error, Error::Configuration { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("6.2.14") && message.contains("7.0"),
            "{message}"
        );
        assert!(!message.contains("sekrit"), "{message}");
    }

    #[test]
    fn connections_are_named_by_role_and_process() {
        let pid = std::process::id();
        assert_eq!(Role::Client.connection_name(), format!("am2z:client:{pid}"));
        assert_eq!(Role::Worker.connection_name(), format!("am2z:worker:{pid}"));
        assert_eq!(Role::Sub.connection_name(), format!("am2z:sub:{pid}"));
        let config = RedisConfig::new("redis://127.0.0.1:1");
        assert_eq!(Role::commands(&config), Role::Worker);
        assert_eq!(Role::commands(&config.worker(false)), Role::Client);
    }

    #[test]
    fn passwords_are_found_and_scrubbed() {
        assert_eq!(password("redis://:pw@h:1/0").as_deref(), Some("pw"));
        assert_eq!(password("redis://u:pw@h").as_deref(), Some("pw"));
        assert_eq!(password("redis://h:1"), None);
        let errors = ErrorMap::new(&RedisConfig::new("redis://:sekrit@127.0.0.1:1"));
        assert_eq!(errors.scrub("bad sekrit here"), "bad *** here");
        let refused = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
            "sekrit".to_owned(),
        ));
        let error = errors.connecting(&refused);
        assert!(matches!(error, Error::Configuration { .. }), "{error:?}");
        assert!(!error.to_string().contains("sekrit"), "{error}");
    }
}
