//! What a dashboard listens on, who may act through it, and where it is mounted.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::Error;

/// The address a dashboard listens on by default: loopback only, port 7480.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7480);

/// Renders the Prometheus text exposition served at `GET /metrics`.
pub type MetricsRenderer = Arc<dyn Fn() -> BoxFuture<'static, Result<String, Error>> + Send + Sync>;

/// How a dashboard is served.
///
/// The defaults are the safe ones: it listens on loopback, and it is read-only (every action
/// answers 403) until [`actions_token`](DashboardConfig::actions_token) is set.
///
/// ```
/// use am2z::dashboard::DashboardConfig;
///
/// let config = DashboardConfig::new()
///     .listen("127.0.0.1:9000".parse().unwrap())
///     .actions_token("s3cret-token")
///     .base_path("/ops");
/// assert_eq!(config.listen_addr().port(), 9000);
/// assert_eq!(config.path_prefix(), "/ops");
/// ```
#[derive(Clone)]
pub struct DashboardConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) actions_token: Option<String>,
    pub(crate) allow_non_loopback: bool,
    pub(crate) base_path: String,
    pub(crate) metrics: Option<MetricsRenderer>,
}

impl DashboardConfig {
    /// The defaults: [`DEFAULT_LISTEN`], no actions, mounted at `/`, no `/metrics`.
    pub fn new() -> Self {
        DashboardConfig {
            listen: DEFAULT_LISTEN,
            actions_token: None,
            allow_non_loopback: false,
            base_path: String::new(),
            metrics: None,
        }
    }

    /// The address [`serve`](super::serve) and [`bind`](super::bind) listen on (port 0 picks
    /// a free port). A non-loopback address also needs
    /// [`allow_non_loopback`](DashboardConfig::allow_non_loopback).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Turns the actions (retry run, cancel run, stop session) on: each must then carry
    /// `Authorization: Bearer <token>`. Without a token every action answers 403.
    pub fn actions_token(mut self, token: impl Into<String>) -> Self {
        self.actions_token = Some(token.into());
        self
    }

    /// Whether listening on a non-loopback address is allowed (off by default: anyone who
    /// reaches the port can read every run's data that is not redacted).
    pub fn allow_non_loopback(mut self, allow: bool) -> Self {
        self.allow_non_loopback = allow;
        self
    }

    /// The path the dashboard is mounted under, such as `/ops` (default: the root). Links in
    /// the pages carry it; [`serve`](super::serve) mounts there, and a router from
    /// [`router`](super::router) must be nested at the same path.
    pub fn base_path(mut self, path: impl AsRef<str>) -> Self {
        let trimmed = path.as_ref().trim_matches('/');
        self.base_path = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
        self
    }

    /// Serves `GET /metrics` (Prometheus text format 0.0.4) with what `render` returns.
    ///
    /// ```
    /// use am2z::dashboard::DashboardConfig;
    /// use futures::FutureExt;
    ///
    /// let config = DashboardConfig::new()
    ///     .metrics(|| async { Ok("am2z_up 1\n".to_owned()) }.boxed());
    /// # let _ = config;
    /// ```
    pub fn metrics<F>(mut self, render: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<String, Error>> + Send + Sync + 'static,
    {
        self.metrics = Some(Arc::new(render));
        self
    }

    /// The address it listens on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The path it is mounted under: empty for the root, else `/name` without a trailing slash.
    pub fn path_prefix(&self) -> &str {
        &self.base_path
    }

    /// Checks what can be checked before binding.
    ///
    /// # Errors
    /// [`Error::Configuration`] for a non-loopback address without
    /// [`allow_non_loopback`](DashboardConfig::allow_non_loopback), or an empty actions token.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.listen.ip().is_loopback() && !self.allow_non_loopback {
            return Err(Error::configuration(format!(
                "the dashboard would listen on {}, which is not a loopback address: anyone who \
                 reaches it could read your runs; listen on 127.0.0.1 (the default), or call \
                 `DashboardConfig::allow_non_loopback(true)` and put it behind your own \
                 authentication",
                self.listen
            )));
        }
        if self
            .actions_token
            .as_deref()
            .is_some_and(|token| token.trim().is_empty())
        {
            return Err(Error::configuration(
                "the dashboard's actions token is empty: give a long random token, or none to \
                 keep the dashboard read-only",
            ));
        }
        Ok(())
    }
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig::new()
    }
}

impl fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: say only whether there is one.
        f.debug_struct("DashboardConfig")
            .field("listen", &self.listen)
            .field(
                "actions_token",
                &self.actions_token.as_ref().map(|_| "<set>"),
            )
            .field("allow_non_loopback", &self.allow_non_loopback)
            .field("base_path", &self.base_path)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_the_opt_in() {
        let open: SocketAddr = "0.0.0.0:7480".parse().unwrap_or(DEFAULT_LISTEN);
        let refused = DashboardConfig::new().listen(open).validate();
        assert!(
            matches!(refused, Err(Error::Configuration { .. })),
            "{refused:?}"
        );
        assert!(
            DashboardConfig::new()
                .listen(open)
                .allow_non_loopback(true)
                .validate()
                .is_ok()
        );
        assert!(DashboardConfig::new().validate().is_ok());
        let v6: SocketAddr = "[::1]:0".parse().unwrap_or(DEFAULT_LISTEN);
        assert!(DashboardConfig::new().listen(v6).validate().is_ok());
    }

    #[test]
    fn base_paths_are_normalised() {
        assert_eq!(
            DashboardConfig::new().base_path("ops/").path_prefix(),
            "/ops"
        );
        assert_eq!(DashboardConfig::new().base_path("/").path_prefix(), "");
        assert_eq!(
            DashboardConfig::new().base_path("/a/b").path_prefix(),
            "/a/b"
        );
    }

    #[test]
    fn debug_hides_the_token() {
        let text = format!("{:?}", DashboardConfig::new().actions_token("hunter2"));
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn an_empty_token_is_refused() {
        let refused = DashboardConfig::new().actions_token(" ").validate();
        assert!(matches!(refused, Err(Error::Configuration { .. })));
    }
}
