//! `runtime serve`: the HTTP server (SPEC §2). With `--config endpoints.toml` it serves
//! the endpoints declared there; otherwise one endpoint named `default` serving
//! `--model` (the default model when absent).
//!
//! Prints `listening on http://ADDR` on stderr once the socket is bound (models load in
//! the background; `/health/ready` turns 200 when they are loaded). SIGTERM or Ctrl-C
//! drains: in-flight requests finish (up to `--drain-timeout`), the inference tables
//! (`$KEEL_HOME/tables/`) are flushed and compacted, then the process exits 0.

use super::engine_args::EngineArgs;
use super::{parse_bytes, KernelArgs, UsageError};
use crate::model_ref::{open_registry, RegistrySource};
use crate::model_store;
use anyhow::{Context, Result};
use clap::Args;
use keel_runtime::engine::EngineConfig;
use keel_server::auth::{is_loopback_host, ApiKeys};
use keel_server::config::{
    AutoCaptureConfig, EndpointConfig, EndpointSpec, RateLimitKey, RateLimitSpec, ServeFile, ServedEntitySpec,
    DEFAULT_MAX_CONCURRENCY, DEFAULT_SCALE_TO_ZERO_IDLE_S,
};
use keel_server::ServeOptions;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Model of the `default` endpoint (models:/name@alias, models:/name/N, path, known name); default: smollm2.
    #[arg(long, conflicts_with = "config")]
    model: Option<String>,
    /// TOML file declaring endpoints (`[[endpoints]]`, Databricks fields).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Name of the default endpoint's served entity (default: from the model).
    #[arg(long, conflicts_with = "config")]
    served_model_name: Option<String>,
    /// Address to bind; use 0.0.0.0 to accept remote clients.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0 = any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Bearer tokens, one per line (also: KEEL_API_KEYS, comma-separated).
    #[arg(long)]
    api_keys_file: Option<PathBuf>,
    /// Most concurrent requests of the default endpoint's entity (more get 429).
    #[arg(long, conflicts_with = "config")]
    max_concurrency: Option<usize>,
    /// Calls per minute per user on the default endpoint (more get 429).
    #[arg(long, conflicts_with = "config")]
    rate_limit_per_user: Option<u32>,
    /// Calls per minute on the default endpoint, all users together.
    #[arg(long, conflicts_with = "config")]
    rate_limit_per_endpoint: Option<u32>,
    /// Seconds a request may take before it gets 504 (streams end with an error).
    #[arg(long, default_value_t = 600)]
    request_timeout: u64,
    /// Largest request body, e.g. 16MiB (more gets 413).
    #[arg(long, default_value = "16MiB", value_parser = parse_bytes)]
    max_body: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    #[command(flatten)]
    kernels: KernelArgs,
    /// Log every request of the `default` endpoint to the inference table
    /// `$KEEL_HOME/tables/<PREFIX>_payload/` (Parquet; see the README's "Inference tables").
    #[arg(long, value_name = "PREFIX", conflicts_with = "config")]
    capture_prefix: Option<String>,
    /// Fraction of requests logged with --capture-prefix, in (0, 1].
    #[arg(long, default_value_t = 1.0, requires = "capture_prefix")]
    capture_sampling_fraction: f64,
    /// Seconds between checks of registry aliases served by reference (`models:/m@champion`):
    /// when one moves, the endpoint hot-swaps to the new version. Changes made through this
    /// server's registry REST API are followed at once.
    #[arg(long, default_value_t = 2.0)]
    alias_poll: f64,
    #[command(flatten)]
    engine: EngineArgs,
}

fn default_endpoint(a: &ServeArgs) -> EndpointSpec {
    let entity_name = a.model.clone().unwrap_or_else(|| model_store::DEFAULT_MODEL.to_string());
    let mut rate_limits = Vec::new();
    if let Some(calls) = a.rate_limit_per_user {
        rate_limits.push(RateLimitSpec { calls, key: RateLimitKey::User, renewal_period: "minute".into() });
    }
    if let Some(calls) = a.rate_limit_per_endpoint {
        rate_limits.push(RateLimitSpec { calls, key: RateLimitKey::Endpoint, renewal_period: "minute".into() });
    }
    EndpointSpec {
        name: "default".into(),
        config: EndpointConfig {
            served_entities: vec![ServedEntitySpec {
                name: a.served_model_name.clone().unwrap_or_default(),
                entity_name,
                entity_version: None,
                max_concurrency: a.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY),
                scale_to_zero_enabled: false,
                scale_to_zero_idle_seconds: DEFAULT_SCALE_TO_ZERO_IDLE_S,
                workload_size: None,
                workload_type: None,
            }],
            traffic_config: None,
            auto_capture_config: a.capture_prefix.as_ref().map(|p| AutoCaptureConfig {
                enabled: true,
                table_name_prefix: Some(p.clone()),
                catalog_name: None,
                schema_name: None,
                sampling_fraction: Some(a.capture_sampling_fraction),
            }),
        },
        rate_limits,
        tags: Vec::new(),
        route_optimized: None,
    }
}

fn api_keys(a: &ServeArgs) -> Result<ApiKeys> {
    let mut keys = ApiKeys::none();
    if let Some(f) = &a.api_keys_file {
        keys = ApiKeys::from_file(f).map_err(|e| UsageError(format!("--api-keys-file: {e}")))?;
    }
    if let Ok(v) = std::env::var("KEEL_API_KEYS") {
        keys = keys.merge(ApiKeys::from_env_value(&v));
    }
    Ok(keys)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

pub fn run(a: ServeArgs, version: &str) -> Result<()> {
    a.kernels.apply()?;
    let endpoints = match &a.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| UsageError(format!("--config {}: {e}", path.display())))?;
            ServeFile::parse(&text).map_err(|e| UsageError(format!("--config {}: {e}", path.display())))?.endpoints
        }
        None => vec![default_endpoint(&a)],
    };
    let keys = api_keys(&a)?;
    if a.request_timeout == 0 {
        return Err(UsageError("--request-timeout must be at least 1 second".into()).into());
    }
    let engine_config =
        a.engine.resolve(EngineConfig { kv_cache_dtype: a.kernels.kv_cache_dtype(), ..EngineConfig::default() })?;
    if !(a.alias_poll.is_finite() && a.alias_poll >= 0.05) {
        return Err(UsageError("--alias-poll must be at least 0.05 seconds".into()).into());
    }
    let registry = Arc::new(open_registry()?);
    let opts = ServeOptions {
        endpoints,
        loader: Arc::new(RegistrySource { registry: registry.clone() }),
        engine_config,
        keys: Arc::new(keys),
        request_timeout: Duration::from_secs(a.request_timeout),
        max_body_bytes: a.max_body,
        drain_timeout: Duration::from_secs(a.drain_timeout),
        version: version.to_string(),
        follow_interval: Duration::from_secs_f64(a.alias_poll),
        registry: Some(registry),
        tables_dir: Some(model_store::keel_home().join("tables")),
    };
    // Validate the declarations before binding, so mistakes exit 2 at once.
    for spec in &opts.endpoints {
        spec.clone().validate().map_err(|e| UsageError(format!("endpoint {:?}: {}", spec.name, e.message)))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async move {
        let addr = format!("{}:{}", a.host, a.port);
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr().context("reading the bound address")?;
        if opts.keys.is_enabled() {
            tracing::info!("auth: {} bearer token(s) configured", opts.keys.len());
        } else if !is_loopback_host(&a.host) {
            tracing::warn!(
                "no API keys configured and bound to {}: anyone who can reach this port can use it \
                 (set --api-keys-file or KEEL_API_KEYS)",
                a.host
            );
        }
        eprintln!("listening on http://{local}");
        keel_server::serve(listener, opts, shutdown_signal()).await.map_err(anyhow::Error::msg)
    })
}
