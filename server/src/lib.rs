//! keel's HTTP server (axum): OpenAI-compatible routes, the MLflow scoring protocol,
//! Databricks-style serving endpoints (traffic split, scale to zero, management REST),
//! auth, rate limits, Prometheus metrics and the `/dashboard` page. See ../shared/SPEC.md §2.
//!
//! [`serve`] runs until its shutdown future resolves, then drains: readiness turns 503,
//! new generation requests get 503, the listener stops accepting, in-flight requests
//! (streams included) finish, and after `drain_timeout` whatever remains is cut; last,
//! the inference tables are flushed and compacted.

pub mod app;
pub mod auth;
pub mod capture;
pub mod config;
pub mod dashboard;
pub mod endpoint;
pub mod entity;
pub mod error;
pub mod generation;
pub mod hot_swap;
pub mod invocations;
pub mod llm_request;
pub mod management;
pub mod metrics;
pub mod mlflow;
pub mod model_info;
pub mod monitoring;
pub mod openai;
pub mod rate_limit;
pub mod scoring;

use app::AppState;
use auth::ApiKeys;
use config::EndpointSpec;
use endpoint::Endpoints;
use entity::ModelLoader;
use keel_runtime::engine::EngineConfig;
use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct ServeOptions {
    pub endpoints: Vec<EndpointSpec>,
    pub loader: ModelLoader,
    pub engine_config: EngineConfig,
    pub keys: Arc<ApiKeys>,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub drain_timeout: Duration,
    pub version: String,
    /// How often floating references (aliases, `latest`) are re-resolved for hot swap.
    pub follow_interval: Duration,
    /// The model registry behind `/api/2.0/mlflow/` (503 there when absent).
    pub registry: Option<Arc<keel_registry::Registry>>,
    /// Where inference tables live (`$KEEL_HOME/tables`); `None`: capture is refused.
    pub tables_dir: Option<std::path::PathBuf>,
}

/// Builds the state: validates and creates every endpoint (loading starts now), and
/// opens the inference tables of those that capture (replaying a crashed WAL first).
pub fn build_state(opts: &ServeOptions) -> Result<Arc<AppState>, error::ApiError> {
    let endpoints = Arc::new(Endpoints::new(opts.loader.clone(), opts.engine_config.clone()));
    let captures = capture::Captures::new(opts.tables_dir.clone());
    for spec in &opts.endpoints {
        let mut checked = spec.clone();
        checked.validate()?;
        captures.prepare(&checked.name, &checked.config)?;
        endpoints.create(spec.clone())?;
    }
    Ok(Arc::new(AppState {
        endpoints,
        metrics: Arc::new(metrics::Metrics::new()),
        keys: opts.keys.clone(),
        draining: AtomicBool::new(false),
        request_timeout: opts.request_timeout,
        max_body_bytes: opts.max_body_bytes,
        version: opts.version.clone(),
        follower: hot_swap::Follower::default(),
        registry: opts.registry.clone(),
        captures,
    }))
}

/// Unloads idle scale-to-zero entities, checking once a second.
fn spawn_scale_to_zero(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let endpoints = state.endpoints.clone();
            // Unloading joins the engine thread: keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || {
                let now = Instant::now();
                for (_, e) in endpoints.entities() {
                    e.maybe_scale_to_zero(now);
                }
            })
            .await;
        }
    });
}

/// Serves on `listener` until `shutdown` resolves, then drains (see the module doc).
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let state = build_state(&opts).map_err(|e| e.message)?;
    spawn_scale_to_zero(state.clone());
    state.follower.spawn(state.endpoints.clone(), opts.follow_interval);
    let (tx, rx) = tokio::sync::watch::channel(false);
    {
        let state = state.clone();
        tokio::spawn(async move {
            shutdown.await;
            state.draining.store(true, Ordering::Release);
            tracing::info!("draining: no new requests; waiting for in-flight ones to finish");
            let _ = tx.send(true);
        });
    }
    let mut graceful = rx.clone();
    // TCP_NODELAY: SSE chunks are small writes right after the headers; with Nagle they
    // wait for the client's delayed ACK (~40 ms) instead of leaving at once.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let server = axum::serve(listener, app::router(state.clone()))
        .with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|d| *d).await;
        })
        .into_future();
    let mut deadline = rx;
    let drain_timeout = opts.drain_timeout;
    let result = tokio::select! {
        r = server => r.map_err(|e| e.to_string()),
        _ = async move {
            let _ = deadline.wait_for(|d| *d).await;
            tokio::time::sleep(drain_timeout).await;
        } => {
            tracing::warn!("drain timeout of {}s reached; cutting the remaining requests", drain_timeout.as_secs());
            Ok(())
        }
    };
    // Stop the engines (their threads end with the endpoints), then flush and compact
    // the inference tables: every answered request is in them.
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for ep in st.endpoints.all() {
            st.endpoints.remove(&ep.name);
        }
        st.captures.close_all();
    })
    .await;
    result
}
