//! `am2z dashboard`: the web dashboard and `/metrics` of the deployment, until ctrl-c.

use std::net::SocketAddr;
use std::sync::Arc;

use am2z::RedisRuntime;
use am2z::dashboard::{self, DashboardConfig};
use am2z::metrics::Metrics;
use futures::FutureExt;

use crate::failure::Failure;
use crate::output::print;

/// The environment variable that holds the actions token: a token given as an argument would
/// show in every `ps` listing.
pub(crate) const TOKEN_VAR: &str = "AM2Z_DASHBOARD_TOKEN";

/// Serves the dashboard on `listen` (refused off loopback unless `allow_non_loopback`), with
/// actions when `AM2Z_DASHBOARD_TOKEN` holds a token, until ctrl-c.
pub(crate) async fn serve(
    runtime: &RedisRuntime,
    listen: SocketAddr,
    allow_non_loopback: bool,
) -> Result<(), Failure> {
    let metrics = Arc::new(Metrics::new(runtime));
    let mut config = DashboardConfig::new()
        .listen(listen)
        .allow_non_loopback(allow_non_loopback)
        .metrics(move || {
            let metrics = Arc::clone(&metrics);
            async move { metrics.render().await }.boxed()
        });
    let token = std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty());
    let actions = token.is_some();
    if let Some(token) = token {
        config = config.actions_token(token);
    }
    let running = dashboard::bind(runtime.clone(), config).await?;
    let actions = if actions {
        "actions on (token from AM2Z_DASHBOARD_TOKEN)"
    } else {
        "read-only: set AM2Z_DASHBOARD_TOKEN to enable retry, cancel and stop"
    };
    print(&format!(
        "dashboard on http://{}/ ({actions}); metrics on /metrics; ctrl-c stops it\n",
        running.local_addr()
    ))?;
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| Failure::other(format!("cannot wait for ctrl-c: {e}")))?;
    running.shutdown().await?;
    Ok(())
}
