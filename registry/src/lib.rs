//! keel's model registry, with MLflow model-registry semantics (SPEC.md §3): registered
//! models, immutable numbered versions whose files are copied into the store and
//! checksummed, aliases, tags, `models:/` URIs and MLflow-style search filters, kept in an
//! SQLite database (`home/registry.db`) beside an artifact directory (`home/artifacts/`).
//!
//! Invariants: version numbers start at 1 and are never reused (deleted rows are kept,
//! flagged); an alias points at exactly one live version; a version's files never change
//! after registration (`verify` proves it); every change is one SQLite transaction, safe
//! across threads and processes sharing a home.

mod aliases;
mod error;
mod filter;
mod manifest;
mod mlmodel;
mod models;
mod rows;
mod schema;
mod source;
mod staging;
mod store;
mod tags;
mod types;
mod uri;
pub mod validate;
mod versions;

pub use error::{RegistryError, Result};
pub use mlmodel::{INPUT_EXAMPLE_FILE, MLMODEL_FILE};
pub use store::Registry;
pub use types::{
    ModelInfo, ModelVersion, NewVersion, Page, RegisteredModel, MAX_RESULTS_LIMIT, MAX_VERSION_RESULTS_LIMIT,
};
pub use uri::ModelUri;
