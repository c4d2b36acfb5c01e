//! Admin HTTP API: `/healthz` (200, or 503 while draining, for load
//! balancers), `/metrics` (Prometheus text) and `/calls` (live calls, JSON).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::runtime::Shared;

#[derive(Clone)]
struct AdminState {
    shared: Arc<Shared>,
    metrics: Option<PrometheusHandle>,
}

/// Binds and serves the admin API in a background task.
pub async fn spawn(
    addr: SocketAddr,
    shared: Arc<Shared>,
    metrics: Option<PrometheusHandle>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .route("/calls", get(calls))
        .with_state(AdminState { shared, metrics });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "admin server stopped");
        }
    });
    Ok(local)
}

async fn healthz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.shared.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn render_metrics(State(s): State<AdminState>) -> impl IntoResponse {
    match &s.metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics recorder not installed\n".to_owned(),
        ),
    }
}

async fn calls(State(s): State<AdminState>) -> impl IntoResponse {
    let list: Vec<_> = s.shared.calls.iter().map(|e| e.value().clone()).collect();
    axum::Json(list)
}
