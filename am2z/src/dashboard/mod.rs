//! A web dashboard for any runtime that implements [`Inspect`]: its sessions, runs, workflow
//! graphs, errors and events, live, with retry, cancel and stop-session actions.
//!
//! Mount it in your own axum app with [`router`], or run it on its own with [`serve`] (or
//! [`bind`], which tells the address it got). It is read-only and on loopback unless told
//! otherwise (see [`DashboardConfig`]).
//!
//! ```no_run
//! use am2z::dashboard::{self, DashboardConfig};
//! use am2z::{LocalRuntime, Runtime};
//!
//! # async fn demo() -> Result<(), am2z::Error> {
//! let runtime = LocalRuntime::new();
//! runtime.start().await?;
//!
//! // Standalone, on http://127.0.0.1:7480 until the future is dropped:
//! let config = DashboardConfig::new().actions_token(std::env::var("AM2Z_DASHBOARD_TOKEN").unwrap_or_default());
//! dashboard::serve(runtime.clone(), config).await?;
//!
//! // Or inside your own app, under /ops:
//! let config = DashboardConfig::new().base_path("/ops");
//! let app = axum::Router::new().nest("/ops", dashboard::router(runtime, &config));
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! The pages: `/` (overview: sessions, throughput and failures of the last minutes, workers),
//! `/sessions/{session}` (runs, filtered and paged), `/sessions/{session}/runs/{run}` (the
//! workflow graph with each step's state, values, error chain and events). The JSON API they
//! use lives under `/api` (see `docs/dashboard.md`); `/api/events` streams events as
//! server-sent events; `/metrics` serves what [`DashboardConfig::metrics`] renders.

mod actions;
mod activity;
mod api;
mod config;
mod html;
mod pages;
mod routes;
mod sse;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{DEFAULT_LISTEN, DashboardConfig, MetricsRenderer};

use crate::runtime::Inspect;
use crate::{Error, EventStream};
use activity::{Activity, Watching};

/// What every handler shares: the runtime, the settings, and the activity counters.
struct Dashboard<R> {
    runtime: R,
    /// The actions token; `None`: actions are off.
    token: Option<String>,
    /// Prefix of every link, such as `/ops` (empty at the root).
    prefix: String,
    metrics: Option<MetricsRenderer>,
    activity: Arc<Activity>,
    /// The subscription the counters read, until a tokio runtime is there to read it.
    watch: Mutex<Watch>,
    /// Fired when a [`Running`] dashboard shuts down: live event streams end with it.
    closing: CancellationToken,
}

struct Watch {
    /// Subscribed, not read yet (the router was built outside a tokio runtime).
    pending: Option<EventStream>,
    /// The task reading it, stopped when the dashboard is dropped.
    reading: Option<Watching>,
}

impl<R: Inspect> Dashboard<R> {
    fn new(runtime: R, config: &DashboardConfig, closing: CancellationToken) -> Arc<Self> {
        let token = config.actions_token.clone().filter(|token| {
            let usable = !token.trim().is_empty();
            if !usable {
                tracing::warn!("the dashboard's actions token is empty: actions stay off");
            }
            usable
        });
        let events = runtime.subscribe();
        let dashboard = Arc::new(Dashboard {
            runtime,
            token,
            prefix: config.base_path.clone(),
            metrics: config.metrics.clone(),
            activity: Arc::new(Activity::new(SystemTime::now())),
            watch: Mutex::new(Watch {
                pending: Some(events),
                reading: None,
            }),
            closing,
        });
        dashboard.start_watching();
        dashboard
    }

    /// Starts reading events into the counters, once, as soon as a tokio runtime is there.
    fn start_watching(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut watch = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(events) = watch.pending.take() {
            watch.reading = Some(activity::watch(Arc::clone(&self.activity), events));
        }
    }

    /// Whether actions are on.
    fn actions_enabled(&self) -> bool {
        self.token.is_some()
    }
}

/// The dashboard as an axum [`Router`](axum::Router), to mount in your own app.
///
/// Nest it at the path given to [`DashboardConfig::base_path`] (the root by default), so its
/// links resolve: `app.nest("/ops", router(runtime, &config.base_path("/ops")))`. The listen
/// address, the non-loopback check and the loopback `Host` check are [`serve`]'s business:
/// your app decides where it listens and who reaches it. An empty actions token leaves
/// actions off.
pub fn router<R: Inspect + Clone>(runtime: R, config: &DashboardConfig) -> axum::Router {
    routes::routes(Dashboard::new(runtime, config, CancellationToken::new()))
}

/// Serves the dashboard on [`DashboardConfig::listen`] until the future is dropped.
///
/// ```no_run
/// # async fn demo(
/// #     runtime: am2z::LocalRuntime,
/// #     shutdown: tokio::sync::oneshot::Receiver<()>,
/// # ) -> Result<(), am2z::Error> {
/// use am2z::dashboard::{serve, DashboardConfig};
///
/// // Serves until `shutdown` fires (or, in a binary, `tokio::signal::ctrl_c()`).
/// tokio::select! {
///     served = serve(runtime, DashboardConfig::new()) => served?,
///     _ = shutdown => {}
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Configuration`] for a non-loopback address without
/// [`DashboardConfig::allow_non_loopback`], or an address it cannot listen on;
/// [`Error::Unavailable`] if the server fails while serving.
pub async fn serve<R: Inspect + Clone>(runtime: R, config: DashboardConfig) -> Result<(), Error> {
    let listener = listen(&config).await?;
    let app = mounted(runtime, &config, CancellationToken::new());
    axum::serve(listener, app)
        .await
        .map_err(|error| Error::unavailable("dashboard", error.to_string()))
}

/// Binds the dashboard's address and serves it in the background; the returned [`Running`]
/// tells the address (useful with port 0) and stops it.
///
/// # Errors
/// As [`serve`], for what can go wrong before serving.
pub async fn bind<R: Inspect + Clone>(
    runtime: R,
    config: DashboardConfig,
) -> Result<Running, Error> {
    let listener = listen(&config).await?;
    let local_addr = listener
        .local_addr()
        .map_err(|error| Error::unavailable("dashboard", error.to_string()))?;
    let closing = CancellationToken::new();
    let app = mounted(runtime, &config, closing.clone());
    let task = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(closing.clone().cancelled_owned())
            .into_future(),
    );
    Ok(Running {
        local_addr,
        closing,
        task: Some(task),
    })
}

async fn listen(config: &DashboardConfig) -> Result<tokio::net::TcpListener, Error> {
    config.validate()?;
    tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| {
            Error::configuration(format!(
                "the dashboard cannot listen on {}: {error}; choose another address with \
                 `DashboardConfig::listen`",
                config.listen
            ))
        })
}

/// The router, nested at the configured base path.
fn mounted<R: Inspect + Clone>(
    runtime: R,
    config: &DashboardConfig,
    closing: CancellationToken,
) -> axum::Router {
    let routes = routes::routes(Dashboard::new(runtime, config, closing));
    let app = if config.base_path.is_empty() {
        routes
    } else {
        axum::Router::new().nest(&config.base_path, routes)
    };
    if config.listen.ip().is_loopback() {
        app.layer(axum::middleware::from_fn(routes::loopback_hosts_only))
    } else {
        app
    }
}

/// A dashboard served in the background by [`bind`]; dropping it stops the server.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    closing: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, ends the live event streams, and waits for the requests
    /// in flight to finish.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the server had failed.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.closing.cancel();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Error::unavailable("dashboard", error.to_string())),
            Err(error) => Err(Error::unavailable("dashboard", error.to_string())),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.closing.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
