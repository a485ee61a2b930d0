//! What a `--model` value (or a served entity's `entity_name` + `entity_version`) names,
//! and how it becomes something to load.
//!
//! Accepted, first match wins (SPEC §1, §3):
//! 1. `models:/name/N`, `models:/name@alias`, `models:/name/latest` (and the deprecated
//!    stage URIs `models:/name/Production|Staging`): the registry in `$KEEL_HOME`;
//! 2. an existing file or directory;
//! 3. a known model name (`smollm2`): pulled on first use;
//! 4. a registered model name: its latest version.
//!
//! A served entity with `entity_version` names registry model `entity_name` at that
//! version (`3`), alias (`champion`) or `latest`. Models from the registry are verified
//! against their sha256 manifest before every load.

use crate::model_store::{self, BadModelArg, KnownModel, KNOWN_MODELS};
use anyhow::Result;
use keel_registry::{ModelUri, Registry, RegistryError};
use keel_runtime::loader::LoadedModel;
use keel_server::config::ServedEntitySpec;
use keel_server::entity::{ModelSource, ResolvedModel};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The registry in `$KEEL_HOME`.
pub fn open_registry() -> Result<Registry> {
    let home = model_store::keel_home();
    Registry::open(&home).map_err(|e| anyhow::anyhow!("opening the model registry in {}: {e}", home.display()))
}

/// A registry URI for `entity_version` of `name`: a number, `latest`, or an alias.
fn uri_for_version(name: &str, version: &str) -> Result<ModelUri, RegistryError> {
    let v = version.trim();
    if v.eq_ignore_ascii_case("latest") {
        ModelUri::parse(&format!("models:/{name}/latest"))
    } else if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        ModelUri::parse(&format!("models:/{name}/{v}"))
    } else {
        ModelUri::parse(&format!("models:/{name}@{v}"))
    }
}

/// What a reference resolves to now.
pub enum Target {
    Path(PathBuf),
    Registry { uri: ModelUri, version: Box<keel_registry::ModelVersion> },
}

fn registry_target(reg: &Registry, uri: ModelUri) -> Result<Target> {
    let version = reg.resolve(&uri).map_err(|e| user_or_not(e, &uri.to_string()))?;
    Ok(Target::Registry { uri, version: Box::new(version) })
}

/// Registry errors that are the caller's mistake become [`BadModelArg`] (exit 2).
fn user_or_not(e: RegistryError, what: &str) -> anyhow::Error {
    if e.is_user_error() {
        BadModelArg(format!("{what}: {e}")).into()
    } else {
        anyhow::anyhow!("{what}: {e}")
    }
}

/// Resolves a `--model` value (the default model when absent); see the module doc.
/// Opens the registry only when the value needs it and `reg` is None.
pub fn resolve(arg: Option<&str>, reg: Option<&Registry>) -> Result<Target> {
    let arg = arg.unwrap_or(model_store::DEFAULT_MODEL);
    if arg.starts_with("models:/") {
        let uri = ModelUri::parse(arg).map_err(|e| user_or_not(e, arg))?;
        return with_registry(reg, |r| registry_target(r, uri));
    }
    if Path::new(arg).exists() || model_store::known(arg).is_some() {
        return model_store::resolve(Some(arg)).map(Target::Path);
    }
    with_registry(reg, |r| {
        if r.get_model(arg).is_err() {
            return Err(BadModelArg(format!(
                "{arg}: no such file or directory, not a known model ({}) and not a registered model \
                 (see `runtime registry list`; URIs look like models:/name@alias or models:/name/3)",
                KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
            ))
            .into());
        }
        let uri = ModelUri::parse(&format!("models:/{arg}/latest")).map_err(|e| user_or_not(e, arg))?;
        registry_target(r, uri)
    })
}

fn with_registry<T>(reg: Option<&Registry>, f: impl FnOnce(&Registry) -> Result<T>) -> Result<T> {
    match reg {
        Some(r) => f(r),
        None => f(&open_registry()?),
    }
}

/// Resolves `arg` and, for registry models, verifies the files' checksums.
pub fn resolve_verified_target(arg: Option<&str>) -> Result<Target> {
    let target = resolve(arg, None)?;
    if let Target::Registry { uri, version } = &target {
        open_registry()?.verify(version).map_err(|e| anyhow::anyhow!("{uri}: {e}"))?;
    }
    Ok(target)
}

/// The alias a known model's first registration gets.
pub const KNOWN_MODEL_ALIAS: &str = "champion";

/// Registers a pulled known model as `m.registry_name` unless a version with the same
/// files exists; the first version registered also gets alias `champion` (a later pull
/// never moves an alias the user has set). Returns the version.
pub fn register_known(m: &KnownModel, path: &Path) -> Result<keel_registry::ModelVersion> {
    let reg = open_registry()?;
    let digest = Registry::digest_source(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(v) = reg.find_version_by_sha256(m.registry_name, &digest).map_err(|e| anyhow::anyhow!("{e}"))? {
        return Ok(v);
    }
    let info = keel_server::model_info::describe(path).map_err(anyhow::Error::msg)?;
    let has_alias = reg.get_model(m.registry_name).is_ok_and(|rm| rm.aliases.contains_key(KNOWN_MODEL_ALIAS));
    let v = reg
        .create_version(
            m.registry_name,
            keel_registry::NewVersion {
                source: path.to_path_buf(),
                description: Some(m.description.to_string()),
                tags: vec![("keel.known_model".into(), m.name.into()), ("keel.package".into(), m.package.into())],
                aliases: if has_alias { Vec::new() } else { vec![KNOWN_MODEL_ALIAS.into()] },
                info,
                run_id: None,
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "registered {} as models:/{}/{}{}",
        m.name,
        v.name,
        v.version,
        if has_alias { String::new() } else { format!(" (alias @{KNOWN_MODEL_ALIAS})") }
    );
    Ok(v)
}

/// The server's model source: the registry plus paths and known models.
pub struct RegistrySource {
    pub registry: Arc<Registry>,
}

impl ModelSource for RegistrySource {
    fn resolve(&self, spec: &ServedEntitySpec) -> Result<ResolvedModel, String> {
        let target = match &spec.entity_version {
            Some(v) if !spec.entity_name.starts_with("models:/") => uri_for_version(&spec.entity_name, v)
                .map_err(|e| format!("entity_version {v:?}: {e}"))
                .and_then(|uri| registry_target(&self.registry, uri).map_err(|e| format!("{e:#}"))),
            _ => resolve(Some(&spec.entity_name), Some(&self.registry)).map_err(|e| format!("{e:#}")),
        }?;
        Ok(match target {
            Target::Path(path) => {
                ResolvedModel { model_name: spec.entity_name.clone(), version: None, path, floating: false }
            }
            Target::Registry { uri, version } => ResolvedModel {
                model_name: version.name.clone(),
                version: Some(version.version),
                path: version.model_path.clone(),
                floating: uri.is_floating(),
            },
        })
    }

    fn load(&self, m: &ResolvedModel) -> Result<LoadedModel, String> {
        let mut display = None;
        if let Some(v) = m.version {
            let mv = self.registry.get_version(&m.model_name, v).map_err(|e| e.to_string())?;
            self.registry.verify(&mv).map_err(|e| e.to_string())?;
            display = Some(mv.info.display_name).filter(|n| !n.is_empty());
        }
        let mut lm = keel_runtime::loader::load(&m.path).map_err(|e| format!("loading {}: {e}", m.path.display()))?;
        // The stored copy's file name says nothing (`model/`): keep the name registered.
        if let Some(n) = display {
            lm.name = n;
        }
        Ok(lm)
    }
}
