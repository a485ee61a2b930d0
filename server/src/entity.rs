//! A served entity: one model behind an endpoint, with its own engine, its concurrency
//! limit, and scale to zero.
//!
//! State machine: `Unloaded → Loading → Ready | Failed`; `Ready → Unloaded` when scale to
//! zero finds it idle (no request in flight for `scale_to_zero_idle_seconds`). A request
//! arriving while `Unloaded` starts a load and waits for it (no error); while `Loading` it
//! waits; while `Failed` it gets 503 naming the cause. Invariant: an engine is only shut
//! down with no request holding a permit, and a request holds a permit from admission to
//! its last event, so scale to zero never cuts a stream.
//!
//! What an entity serves is found in two steps: [`ModelSource::resolve`] turns the
//! declaration (`entity_name`, `entity_version`: a registry version, alias, `latest`,
//! a path) into a concrete [`ResolvedModel`], then [`ModelSource::load`] loads it. An
//! entity created for a hot swap is *pinned* to a resolution made beforehand, so the
//! version its first load gets is the one the swap decided on.

use crate::config::ServedEntitySpec;
use crate::error::ApiError;
use keel_runtime::engine::{Engine, EngineConfig, EngineHandle};
use keel_runtime::loader::LoadedModel;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The concrete model a served entity's declaration names at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedModel {
    /// Registry model name, or the declared name for models outside the registry.
    pub model_name: String,
    /// Registry version, when the model comes from the registry.
    pub version: Option<u64>,
    /// What to load.
    pub path: PathBuf,
    /// The declaration can point elsewhere later (an alias, `latest`): the server
    /// re-resolves it and hot-swaps when the target moves.
    pub floating: bool,
}

impl ResolvedModel {
    /// `name v3`, or the name alone outside the registry (for logs and messages).
    pub fn label(&self) -> String {
        match self.version {
            Some(v) => format!("{} v{v}", self.model_name),
            None => self.model_name.clone(),
        }
    }
}

/// Where served entities' models come from (the registry, paths, known models).
pub trait ModelSource: Send + Sync {
    /// What the declaration names now. Cheap (a registry lookup); called again and
    /// again for floating declarations.
    fn resolve(&self, spec: &ServedEntitySpec) -> Result<ResolvedModel, String>;
    /// Loads a resolved model (verifying registry checksums).
    fn load(&self, model: &ResolvedModel) -> Result<LoadedModel, String>;
}

/// A source with no models (every resolution fails): for tests and model-less servers.
pub struct NoModels;

impl ModelSource for NoModels {
    fn resolve(&self, spec: &ServedEntitySpec) -> Result<ResolvedModel, String> {
        Err(format!("no model source configured for {:?}", spec.entity_name))
    }

    fn load(&self, m: &ResolvedModel) -> Result<LoadedModel, String> {
        Err(format!("no model source configured for {}", m.label()))
    }
}

/// The model source shared by every entity of a server.
pub type ModelLoader = Arc<dyn ModelSource>;

enum Slot {
    Unloaded { scaled_to_zero: bool },
    Loading,
    Ready(Arc<Engine>),
    Failed(String),
}

/// What `GET /api/2.0/serving-endpoints/{name}` reports for an entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntityState {
    Creating,
    Ready,
    ScaledToZero,
    Failed,
}

impl EntityState {
    /// Databricks' `state.deployment` value (`DEPLOYMENT_SCALED_TO_ZERO` is keel's).
    pub fn as_str(self) -> &'static str {
        match self {
            EntityState::Creating => "DEPLOYMENT_CREATING",
            EntityState::Ready => "DEPLOYMENT_READY",
            EntityState::ScaledToZero => "DEPLOYMENT_SCALED_TO_ZERO",
            EntityState::Failed => "DEPLOYMENT_FAILED",
        }
    }
}

pub struct ServedEntity {
    pub spec: ServedEntitySpec,
    slot: Mutex<Slot>,
    changed: Notify,
    permits: Arc<Semaphore>,
    last_used: Mutex<Instant>,
    loader: ModelLoader,
    engine_config: EngineConfig,
    /// The model's display name once loaded (for `/v1/models`).
    model_name: Mutex<Option<String>>,
    /// The resolution the first load uses instead of resolving the declaration (hot
    /// swaps); later loads (after scale to zero) resolve afresh.
    pinned: Mutex<Option<ResolvedModel>>,
    /// What the entity loaded last (kept while scaled to zero).
    resolved: Mutex<Option<ResolvedModel>>,
}

/// A request's right to use an entity: an engine handle plus a concurrency permit,
/// released on drop.
pub struct Lease {
    pub handle: EngineHandle,
    pub entity: Arc<ServedEntity>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.entity.touch();
    }
}

impl ServedEntity {
    pub fn new(spec: ServedEntitySpec, loader: ModelLoader, engine_config: EngineConfig) -> Arc<ServedEntity> {
        Self::build(spec, loader, engine_config, None)
    }

    /// An entity that loads `model` (already resolved from `spec`) instead of resolving.
    pub fn pinned(
        spec: ServedEntitySpec,
        loader: ModelLoader,
        engine_config: EngineConfig,
        model: ResolvedModel,
    ) -> Arc<ServedEntity> {
        Self::build(spec, loader, engine_config, Some(model))
    }

    fn build(
        spec: ServedEntitySpec,
        loader: ModelLoader,
        engine_config: EngineConfig,
        pinned: Option<ResolvedModel>,
    ) -> Arc<ServedEntity> {
        Arc::new(ServedEntity {
            permits: Arc::new(Semaphore::new(spec.max_concurrency)),
            spec,
            slot: Mutex::new(Slot::Unloaded { scaled_to_zero: false }),
            changed: Notify::new(),
            last_used: Mutex::new(Instant::now()),
            loader,
            engine_config,
            model_name: Mutex::new(None),
            pinned: Mutex::new(pinned),
            resolved: Mutex::new(None),
        })
    }

    /// What the entity loaded (None before its first load).
    pub fn resolved(&self) -> Option<ResolvedModel> {
        self.resolved.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The registry version it serves, if any.
    pub fn model_version(&self) -> Option<u64> {
        self.resolved().and_then(|r| r.version)
    }

    pub fn engine_config(&self) -> EngineConfig {
        self.engine_config.clone()
    }

    /// The model source (for re-resolving floating declarations).
    pub fn source(&self) -> &ModelLoader {
        &self.loader
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn state(&self) -> EntityState {
        match &*self.slot() {
            Slot::Unloaded { scaled_to_zero: true } => EntityState::ScaledToZero,
            Slot::Unloaded { .. } | Slot::Loading => EntityState::Creating,
            Slot::Ready(e) if e.handle.is_alive() => EntityState::Ready,
            Slot::Ready(_) | Slot::Failed(_) => EntityState::Failed,
        }
    }

    /// The load error, if the entity failed.
    pub fn failure(&self) -> Option<String> {
        match &*self.slot() {
            Slot::Failed(m) => Some(m.clone()),
            Slot::Ready(e) if !e.handle.is_alive() => Some("the engine thread stopped".into()),
            _ => None,
        }
    }

    /// Ready to serve now, or able to be (scaled to zero loads on demand).
    pub fn is_serving(&self) -> bool {
        matches!(self.state(), EntityState::Ready | EntityState::ScaledToZero)
    }

    pub fn model_name(&self) -> Option<String> {
        self.model_name.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The engine's handle, if loaded (for metrics).
    pub fn handle(&self) -> Option<EngineHandle> {
        match &*self.slot() {
            Slot::Ready(e) => Some(e.handle.clone()),
            _ => None,
        }
    }

    /// Requests in flight (holding a permit).
    pub fn in_flight(&self) -> usize {
        self.spec.max_concurrency - self.permits.available_permits()
    }

    /// Starts loading if unloaded; returns at once.
    pub fn start_loading(self: &Arc<Self>) {
        let mut slot = self.slot();
        if matches!(*slot, Slot::Unloaded { .. }) {
            *slot = Slot::Loading;
            drop(slot);
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.load());
        }
    }

    fn load(&self) {
        let t = Instant::now();
        let pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner()).take();
        let resolved = match pinned {
            Some(m) => Ok(m),
            None => self.loader.resolve(&self.spec),
        };
        let result = resolved.and_then(|r| {
            let lm = self.loader.load(&r)?;
            let name = lm.name.clone();
            Engine::start(lm.model, Arc::new(lm.tokenizer), self.engine_config.clone())
                .map(|e| (e, name, r))
                .map_err(|e| e.to_string())
        });
        let new = match result {
            Ok((engine, name, r)) => {
                tracing::info!(
                    "entity {}: loaded {} ({name}) in {:.2}s",
                    self.spec.name,
                    r.label(),
                    t.elapsed().as_secs_f64()
                );
                *self.model_name.lock().unwrap_or_else(|p| p.into_inner()) = Some(name);
                *self.resolved.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                Slot::Ready(Arc::new(engine))
            }
            Err(m) => {
                tracing::error!("entity {}: cannot load {}: {m}", self.spec.name, self.spec.entity_name);
                Slot::Failed(m)
            }
        };
        *self.slot() = new;
        self.touch();
        self.changed.notify_waiters();
    }

    /// Waits until the entity is loaded or failed (loading it if needed).
    pub async fn wait_loaded(self: &Arc<Self>) -> Result<(), String> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let slot = self.slot();
                match &*slot {
                    Slot::Ready(_) => return Ok(()),
                    Slot::Failed(m) => return Err(m.clone()),
                    Slot::Loading => {}
                    Slot::Unloaded { .. } => {
                        drop(slot);
                        self.start_loading();
                        continue;
                    }
                }
            }
            notified.await;
        }
    }

    /// Admission: a concurrency permit (429 when `max_concurrency` requests are in
    /// flight), then the engine (waiting for a load if scaled to zero).
    pub async fn lease(self: &Arc<Self>) -> Result<Lease, ApiError> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            ApiError::rate_limited(
                format!(
                    "served entity {:?} is at its max_concurrency of {} requests; retry later",
                    self.spec.name, self.spec.max_concurrency
                ),
                1,
            )
        })?;
        self.touch();
        self.wait_loaded()
            .await
            .map_err(|m| ApiError::unavailable(format!("served entity {:?} is not available: {m}", self.spec.name)))?;
        let handle = match &*self.slot() {
            Slot::Ready(e) if e.handle.is_alive() => e.handle.clone(),
            Slot::Ready(_) => {
                return Err(ApiError::unavailable(format!("served entity {:?}: the engine stopped", self.spec.name)))
            }
            // Unloaded between the wait and now is impossible while we hold a permit.
            _ => return Err(ApiError::unavailable(format!("served entity {:?} is reloading", self.spec.name))),
        };
        Ok(Lease { handle, entity: self.clone(), _permit: permit })
    }

    /// Scale to zero: unloads the engine if enabled, loaded, idle long enough and with
    /// nothing in flight. Returns true if it unloaded.
    pub fn maybe_scale_to_zero(&self, now: Instant) -> bool {
        if !self.spec.scale_to_zero_enabled {
            return false;
        }
        let idle = Duration::from_secs(self.spec.scale_to_zero_idle_seconds);
        let last = *self.last_used.lock().unwrap_or_else(|p| p.into_inner());
        let engine = {
            let mut slot = self.slot();
            if !matches!(*slot, Slot::Ready(_)) || self.in_flight() > 0 || now.duration_since(last) < idle {
                return false;
            }
            match std::mem::replace(&mut *slot, Slot::Unloaded { scaled_to_zero: true }) {
                Slot::Ready(e) => e,
                _ => return false,
            }
        };
        tracing::info!("entity {}: idle for {}s, scaled to zero", self.spec.name, idle.as_secs());
        drop(engine); // shuts the engine thread down and frees its memory
        self.changed.notify_waiters();
        true
    }
}

impl Drop for ServedEntity {
    fn drop(&mut self) {
        if let Slot::Ready(e) = &*self.slot() {
            e.handle.shutdown();
            let what = self.resolved().map(|r| r.label()).unwrap_or_default();
            tracing::info!("entity {}: {what} unloaded", self.spec.name);
        }
    }
}
