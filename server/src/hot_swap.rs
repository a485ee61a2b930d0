//! Hot swap: served entities declared by a floating reference (a registry alias such as
//! `@champion`, or `latest`) follow it when it moves.
//!
//! A watcher re-resolves every loaded floating entity on a timer and whenever
//! [`Follower::poke`] is called (the registry REST handlers poke after a change, so an
//! alias moved through this server is followed at once; one moved by another process is
//! seen at the next tick). When the target moved, the endpoint shows
//! `config_update: IN_PROGRESS`, a new entity pinned to the new target loads beside the
//! old one, and only once it is ready does the active config switch to it. Requests
//! already routed to the old entity hold it (an `Arc`) and finish there; its engine stops
//! when the last of them ends. Invariant: at every instant some loaded entity serves the
//! endpoint, so a swap fails no request. A target that fails to load leaves the old
//! entity serving (`UPDATE_FAILED` with the cause) and is not retried until the reference
//! moves again.

use crate::endpoint::{Endpoint, Endpoints};
use crate::entity::{EntityState, ResolvedModel, ServedEntity};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Wakes the watcher early (after a registry change made through this server).
#[derive(Clone, Default)]
pub struct Follower {
    notify: Arc<Notify>,
}

impl Follower {
    pub fn poke(&self) {
        self.notify.notify_one();
    }

    /// Runs the watcher: every `interval`, or when poked, follows moved references.
    pub fn spawn(&self, endpoints: Arc<Endpoints>, interval: Duration) {
        let notify = self.notify.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = notify.notified() => {}
                }
                for ep in endpoints.all() {
                    follow(&ep).await;
                }
            }
        });
    }
}

/// The entities of `ep` whose floating reference now resolves elsewhere, with the new
/// target. Entities not loaded (never yet, or scaled to zero) are skipped: their next
/// load resolves afresh.
async fn moved_entities(ep: &Endpoint) -> Vec<(usize, Arc<ServedEntity>, ResolvedModel)> {
    let mut moved = Vec::new();
    for (i, e) in ep.active().entities.iter().enumerate() {
        if e.state() != EntityState::Ready {
            continue;
        }
        let Some(current) = e.resolved().filter(|r| r.floating) else { continue };
        let (entity, spec) = (e.clone(), e.spec.clone());
        let now = tokio::task::spawn_blocking(move || entity.source().resolve(&spec)).await;
        match now {
            Ok(Ok(target)) if target != current => {
                if !ep.swap_failed(e.name(), &target) {
                    moved.push((i, e.clone(), target));
                }
            }
            Ok(Ok(_)) => ep.record_swap_failure(e.name(), None),
            Ok(Err(m)) => tracing::debug!(
                "endpoint {} entity {}: cannot re-resolve {} ({m}); {} keeps serving",
                ep.name,
                e.name(),
                e.spec.entity_name,
                current.label()
            ),
            Err(_) => {}
        }
    }
    moved
}

/// Follows moved references of one endpoint (see the module doc).
pub async fn follow(ep: &Arc<Endpoint>) {
    let moved = moved_entities(ep).await;
    if moved.is_empty() || !ep.begin_swap() {
        return;
    }
    let mut replacements = Vec::new();
    let mut failure = None;
    for (i, old, target) in moved {
        tracing::info!(
            "endpoint {} entity {}: {} moved from {} to {}; loading it",
            ep.name,
            old.name(),
            old.spec.entity_version.as_deref().unwrap_or(&old.spec.entity_name),
            old.resolved().map(|r| r.label()).unwrap_or_default(),
            target.label()
        );
        let new = ServedEntity::pinned(old.spec.clone(), old.source().clone(), old.engine_config(), target.clone());
        new.start_loading();
        match new.wait_loaded().await {
            Ok(()) => replacements.push((i, new)),
            Err(m) => {
                ep.record_swap_failure(old.name(), Some(target.clone()));
                failure = Some(format!("served entity {:?}: cannot load {}: {m}", old.name(), target.label()));
                break;
            }
        }
    }
    match failure {
        None => {
            for (_, e) in &replacements {
                tracing::info!(
                    "endpoint {} entity {}: now serving {}",
                    ep.name,
                    e.name(),
                    e.resolved().map(|r| r.label()).unwrap_or_default()
                );
            }
            ep.finish_swap(Ok(replacements));
        }
        Some(m) => {
            tracing::error!("endpoint {}: hot swap failed, the loaded version keeps serving: {m}", ep.name);
            // Entities loaded for the failed swap are dropped here (their engines stop).
            let dropped = replacements;
            let _ = tokio::task::spawn_blocking(move || drop(dropped)).await;
            ep.finish_swap(Err(m));
        }
    }
}
