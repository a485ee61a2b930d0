//! Serving endpoints (Databricks model): a name, an active configuration of served
//! entities with a traffic split, rate limits, and config updates that load the new
//! entities before switching traffic.
//!
//! Invariants: the active config always holds 1–10 entities and routes summing to 100;
//! it is replaced atomically (`RwLock<Arc<_>>`), so a request routed to an entity keeps
//! that entity (an `Arc`) until it finishes even if the config changes meanwhile. At most
//! one update is in progress per endpoint. Traffic is split with smooth weighted
//! round-robin (nginx's algorithm): deterministic and exact to within one request per
//! cycle of 100, so every split holds over any window of requests.

use crate::config::{EndpointConfig, EndpointSpec, RateLimitKey};
use crate::entity::{ModelLoader, ResolvedModel, ServedEntity};
use crate::error::ApiError;
use crate::rate_limit::RateLimiter;
use axum::http::StatusCode;
use keel_runtime::engine::EngineConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigUpdate {
    NotUpdating,
    InProgress,
    UpdateFailed,
}

impl ConfigUpdate {
    fn as_str(self) -> &'static str {
        match self {
            ConfigUpdate::NotUpdating => "NOT_UPDATING",
            ConfigUpdate::InProgress => "IN_PROGRESS",
            ConfigUpdate::UpdateFailed => "UPDATE_FAILED",
        }
    }
}

/// The entities receiving traffic, with their router.
pub struct ActiveConfig {
    pub config: EndpointConfig,
    pub entities: Vec<Arc<ServedEntity>>,
    pub version: u64,
    router: Mutex<Router>,
}

/// Smooth weighted round-robin over entity indices.
struct Router {
    weights: Vec<i64>,
    current: Vec<i64>,
}

impl Router {
    fn new(weights: Vec<i64>) -> Router {
        Router { current: vec![0; weights.len()], weights }
    }

    fn pick(&mut self) -> Option<usize> {
        let total: i64 = self.weights.iter().sum();
        if total == 0 {
            return None;
        }
        for (c, w) in self.current.iter_mut().zip(&self.weights) {
            *c += w;
        }
        let best = (0..self.current.len()).max_by_key(|&i| (self.current[i], std::cmp::Reverse(i)))?;
        self.current[best] -= total;
        Some(best)
    }
}

impl ActiveConfig {
    fn new(config: EndpointConfig, entities: Vec<Arc<ServedEntity>>, version: u64) -> ActiveConfig {
        let routes = config.traffic_config.as_ref().map(|t| t.routes.clone()).unwrap_or_default();
        let weights = entities
            .iter()
            .map(|e| {
                routes.iter().find(|r| r.served_entity_name == e.name()).map_or(0, |r| i64::from(r.traffic_percentage))
            })
            .collect();
        ActiveConfig { config, entities, version, router: Mutex::new(Router::new(weights)) }
    }

    /// The entity the next request goes to.
    pub fn route(&self) -> Option<Arc<ServedEntity>> {
        let i = self.router.lock().unwrap_or_else(|p| p.into_inner()).pick()?;
        Some(self.entities[i].clone())
    }

    pub fn entity(&self, name: &str) -> Option<Arc<ServedEntity>> {
        self.entities.iter().find(|e| e.name() == name).cloned()
    }
}

pub struct Endpoint {
    pub name: String,
    spec: Mutex<EndpointSpec>,
    active: RwLock<Arc<ActiveConfig>>,
    pending: Mutex<Option<EndpointConfig>>,
    update: Mutex<ConfigUpdate>,
    update_error: Mutex<Option<String>>,
    limiters: Vec<(RateLimitKey, u32, RateLimiter)>,
    created_ms: u64,
    updated_ms: Mutex<u64>,
    /// Hot-swap targets that failed to load, by entity name: not retried until the
    /// declaration resolves to something else.
    failed_swaps: Mutex<BTreeMap<String, ResolvedModel>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Endpoint {
    /// Creates the endpoint and starts loading its entities (it serves once they load;
    /// requests meanwhile wait for the load).
    fn create(spec: EndpointSpec, loader: &ModelLoader, engine_config: &EngineConfig) -> Arc<Endpoint> {
        let entities: Vec<_> = spec
            .config
            .served_entities
            .iter()
            .map(|s| ServedEntity::new(s.clone(), loader.clone(), engine_config.clone()))
            .collect();
        for e in &entities {
            e.start_loading();
        }
        let limiters = spec.rate_limits.iter().map(|r| (r.key, r.calls, RateLimiter::new(r.calls))).collect();
        let now = now_ms();
        Arc::new(Endpoint {
            name: spec.name.clone(),
            active: RwLock::new(Arc::new(ActiveConfig::new(spec.config.clone(), entities, 1))),
            spec: Mutex::new(spec),
            pending: Mutex::new(None),
            update: Mutex::new(ConfigUpdate::NotUpdating),
            update_error: Mutex::new(None),
            limiters,
            created_ms: now,
            updated_ms: Mutex::new(now),
            failed_swaps: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn active(&self) -> Arc<ActiveConfig> {
        self.active.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// READY when every entity of the active config serves (scaled to zero counts).
    pub fn is_ready(&self) -> bool {
        self.active().entities.iter().all(|e| e.is_serving())
    }

    /// Applies the endpoint's rate limits to a call by `user` (429 when over).
    pub fn check_rate(&self, user: &str) -> Result<(), ApiError> {
        for (key, calls, limiter) in &self.limiters {
            let k = match key {
                RateLimitKey::User => user,
                RateLimitKey::Endpoint => "",
            };
            if let Err(wait) = limiter.check(k) {
                let who = if *key == RateLimitKey::User { "user" } else { "endpoint" };
                return Err(ApiError::rate_limited(
                    format!("rate limit of {calls} calls per minute per {who} exceeded on endpoint {:?}", self.name),
                    wait.as_secs_f64().ceil() as u64,
                ));
            }
        }
        Ok(())
    }

    /// Starts a config update: new entities load while the old config keeps serving;
    /// traffic switches when all are ready; on failure the old config stays.
    pub fn update_config(
        self: &Arc<Self>,
        mut config: EndpointConfig,
        loader: &ModelLoader,
        engine_config: &EngineConfig,
    ) -> Result<(), ApiError> {
        config.validate()?;
        {
            let mut u = self.update.lock().unwrap_or_else(|p| p.into_inner());
            if *u == ConfigUpdate::InProgress {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "RESOURCE_CONFLICT",
                    format!(
                        "endpoint {:?} is already being updated; retry when config_update is NOT_UPDATING",
                        self.name
                    ),
                ));
            }
            *u = ConfigUpdate::InProgress;
        }
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(config.clone());
        let old = self.active();
        // Entities whose declaration is unchanged keep their loaded engine.
        let entities: Vec<Arc<ServedEntity>> = config
            .served_entities
            .iter()
            .map(|s| match old.entity(&s.name) {
                Some(e) if e.spec == *s => e,
                _ => ServedEntity::new(s.clone(), loader.clone(), engine_config.clone()),
            })
            .collect();
        let me = self.clone();
        tokio::spawn(async move {
            let mut failure = None;
            for e in &entities {
                if let Err(m) = e.wait_loaded().await {
                    failure = Some(format!("served entity {:?}: {m}", e.name()));
                    break;
                }
            }
            *me.pending.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let state = match failure {
                None => {
                    let version = old.version + 1;
                    *me.active.write().unwrap_or_else(|p| p.into_inner()) =
                        Arc::new(ActiveConfig::new(config.clone(), entities, version));
                    me.spec.lock().unwrap_or_else(|p| p.into_inner()).config = config;
                    *me.update_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    tracing::info!("endpoint {}: config version {version} now serves", me.name);
                    ConfigUpdate::NotUpdating
                }
                Some(m) => {
                    tracing::error!("endpoint {}: config update failed, the old config keeps serving: {m}", me.name);
                    *me.update_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
                    ConfigUpdate::UpdateFailed
                }
            };
            *me.updated_ms.lock().unwrap_or_else(|p| p.into_inner()) = now_ms();
            *me.update.lock().unwrap_or_else(|p| p.into_inner()) = state;
        });
        Ok(())
    }

    /// Marks a hot swap in progress (shown as `config_update: IN_PROGRESS`); false when
    /// a config update or another swap is already running.
    pub(crate) fn begin_swap(&self) -> bool {
        let mut u = self.update.lock().unwrap_or_else(|p| p.into_inner());
        if *u == ConfigUpdate::InProgress {
            return false;
        }
        *u = ConfigUpdate::InProgress;
        true
    }

    /// Ends a hot swap begun with [`Endpoint::begin_swap`]: on success the active config
    /// keeps its declaration but serves `replacements` (entity index → new entity); on
    /// failure the old entities keep serving and the message is shown.
    pub(crate) fn finish_swap(&self, outcome: Result<Vec<(usize, Arc<ServedEntity>)>, String>) {
        let state = match outcome {
            Ok(replacements) => {
                let old = self.active();
                let mut entities = old.entities.clone();
                for (i, e) in replacements {
                    entities[i] = e;
                }
                let version = old.version + 1;
                *self.active.write().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(ActiveConfig::new(old.config.clone(), entities, version));
                *self.update_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                ConfigUpdate::NotUpdating
            }
            Err(m) => {
                *self.update_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
                ConfigUpdate::UpdateFailed
            }
        };
        *self.updated_ms.lock().unwrap_or_else(|p| p.into_inner()) = now_ms();
        *self.update.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Whether a swap of `entity` to `target` already failed (so it is not retried).
    pub(crate) fn swap_failed(&self, entity: &str, target: &ResolvedModel) -> bool {
        self.failed_swaps.lock().unwrap_or_else(|p| p.into_inner()).get(entity) == Some(target)
    }

    pub(crate) fn record_swap_failure(&self, entity: &str, target: Option<ResolvedModel>) {
        let mut f = self.failed_swaps.lock().unwrap_or_else(|p| p.into_inner());
        match target {
            Some(t) => f.insert(entity.to_string(), t),
            None => f.remove(entity),
        };
    }

    /// The endpoint as `GET /api/2.0/serving-endpoints/{name}` shows it.
    pub fn to_json(&self) -> Value {
        let spec = self.spec.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let active = self.active();
        let entities: Vec<Value> = active
            .entities
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(&e.spec).unwrap_or(Value::Null);
                let mut state = json!({"deployment": e.state().as_str()});
                if let Some(m) = e.failure() {
                    state["deployment_state_message"] = Value::String(m);
                }
                v["state"] = state;
                if let Some(n) = e.model_name() {
                    v["model_name"] = Value::String(n);
                }
                if let Some(version) = e.model_version() {
                    v["resolved_version"] = json!(version.to_string());
                }
                v
            })
            .collect();
        let mut config = serde_json::to_value(&active.config).unwrap_or(Value::Null);
        config["served_entities"] = Value::Array(entities);
        config["config_version"] = json!(active.version);
        let update = *self.update.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = json!({
            "ready": if self.is_ready() { "READY" } else { "NOT_READY" },
            "config_update": update.as_str(),
        });
        if let Some(m) = self.update_error.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            state["config_update_message"] = Value::String(m);
        }
        let mut v = json!({
            "name": self.name,
            "id": self.name,
            "creator": "keel",
            "creation_timestamp": self.created_ms,
            "last_updated_timestamp": *self.updated_ms.lock().unwrap_or_else(|p| p.into_inner()),
            "state": state,
            "config": config,
            "rate_limits": spec.rate_limits,
            "tags": spec.tags,
            "task": "llm/v1/chat",
        });
        if let Some(p) = self.pending.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            v["pending_config"] = serde_json::to_value(p).unwrap_or(Value::Null);
        }
        v
    }
}

/// All endpoints of the server, by name.
pub struct Endpoints {
    map: RwLock<BTreeMap<String, Arc<Endpoint>>>,
    pub loader: ModelLoader,
    pub engine_config: EngineConfig,
}

impl Endpoints {
    pub fn new(loader: ModelLoader, engine_config: EngineConfig) -> Endpoints {
        Endpoints { map: RwLock::new(BTreeMap::new()), loader, engine_config }
    }

    /// Validates and adds an endpoint (409 if the name is taken); loading starts now.
    pub fn create(&self, mut spec: EndpointSpec) -> Result<Arc<Endpoint>, ApiError> {
        spec.validate()?;
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&spec.name) {
            return Err(ApiError::conflict(format!("endpoint {:?} already exists", spec.name)));
        }
        let ep = Endpoint::create(spec, &self.loader, &self.engine_config);
        map.insert(ep.name.clone(), ep.clone());
        Ok(ep)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Endpoint>> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// 404 `ENDPOINT_NOT_FOUND` naming the endpoint.
    pub fn require(&self, name: &str) -> Result<Arc<Endpoint>, ApiError> {
        self.get(name).ok_or_else(|| {
            ApiError::not_found("ENDPOINT_NOT_FOUND", format!("serving endpoint {name:?} does not exist"))
        })
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Endpoint>> {
        self.map.write().unwrap_or_else(|p| p.into_inner()).remove(name)
    }

    pub fn all(&self) -> Vec<Arc<Endpoint>> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Every entity of every endpoint's active config.
    pub fn entities(&self) -> Vec<(Arc<Endpoint>, Arc<ServedEntity>)> {
        self.all()
            .into_iter()
            .flat_map(|ep| ep.active().entities.clone().into_iter().map(move |e| (ep.clone(), e)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_round_robin_is_exact_per_cycle() {
        let mut r = Router::new(vec![70, 20, 10]);
        let mut counts = [0; 3];
        for _ in 0..1000 {
            counts[r.pick().unwrap()] += 1;
        }
        assert_eq!(counts, [700, 200, 100]);
        // Interleaved, not bursts: the 10% entity never gets two in a row.
        let picks: Vec<usize> = (0..100).map(|_| r.pick().unwrap()).collect();
        assert!(picks.windows(2).all(|w| !(w[0] == 2 && w[1] == 2)));
    }

    #[test]
    fn zero_weight_entities_get_nothing() {
        let mut r = Router::new(vec![0, 100]);
        assert!((0..50).all(|_| r.pick() == Some(1)));
        assert_eq!(Router::new(vec![0]).pick(), None);
    }
}
