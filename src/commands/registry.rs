//! `runtime registry ...`: the model registry in `$KEEL_HOME` (SPEC §3) from the command
//! line: register, list, show, alias, tag, delete, search.
//!
//! Output is for people (one line per item) unless `--json`, which prints MLflow's REST
//! shapes (the same as `/api/2.0/mlflow/...`). A change made here is seen by a running
//! server at its next alias poll. Mistakes (bad names, missing versions, reserved aliases)
//! exit 2 with one line saying what was wrong.

use super::UsageError;
use crate::model_ref::open_registry;
use anyhow::Result;
use clap::{Args, Subcommand};
use keel_registry::{ModelVersion, NewVersion, RegisteredModel, Registry};
use keel_server::mlflow::{model_json, version_json};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct RegistryArgs {
    /// Print MLflow-shaped JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Register the model at PATH as a new version of NAME (copied in and checksummed).
    Register {
        #[arg(long)]
        name: String,
        /// A .gguf file, a directory holding one, or an HF directory.
        #[arg(long)]
        path: PathBuf,
        /// key=value (repeatable).
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Alias to point at the new version (repeatable).
        #[arg(long = "alias")]
        aliases: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List registered models.
    List {
        /// e.g. "name LIKE 'sum%' and tags.team='nlp'".
        #[arg(long, default_value = "")]
        filter: String,
    },
    /// Show a model and its versions, or one version.
    #[command(disable_version_flag = true)]
    Show {
        name: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Set or delete an alias.
    Alias {
        #[command(subcommand)]
        command: AliasCommand,
    },
    /// Set or delete a tag on a model (or on a version with --version).
    Tag {
        #[command(subcommand)]
        command: TagCommand,
    },
    /// Delete a model (all its versions), or one version with --version.
    #[command(disable_version_flag = true)]
    Delete {
        name: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Search model versions, e.g. --filter "name='m' and tags.team='nlp'".
    Search {
        #[arg(long, default_value = "")]
        filter: String,
        #[arg(long, default_value_t = 1000)]
        max_results: usize,
    },
}

#[derive(Subcommand)]
enum AliasCommand {
    /// Point ALIAS of NAME at VERSION (moving it if set).
    #[command(disable_version_flag = true)]
    Set { name: String, alias: String, version: u64 },
    /// Remove ALIAS from NAME.
    Delete { name: String, alias: String },
}

#[derive(Subcommand)]
enum TagCommand {
    /// Set KEY=VALUE.
    #[command(disable_version_flag = true)]
    Set {
        name: String,
        #[arg(value_parser = parse_tag)]
        tag: (String, String),
        #[arg(long)]
        version: Option<u64>,
    },
    /// Delete KEY (no error if absent).
    #[command(disable_version_flag = true)]
    Delete {
        name: String,
        key: String,
        #[arg(long)]
        version: Option<u64>,
    },
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

fn print_json(v: serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
}

fn version_line(v: &ModelVersion) -> String {
    let aliases: Vec<String> = v.aliases.iter().map(|a| format!("@{a}")).collect();
    let tags: Vec<String> = v.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "models:/{}/{}  {}  {} {} {:.1}M params  {:.1} MB  sha256 {}  {}  {}",
        v.name,
        v.version,
        aliases.join(" "),
        v.info.architecture,
        v.info.dtype,
        v.info.parameter_count as f64 / 1e6,
        v.size_bytes as f64 / 1e6,
        &v.sha256[..v.sha256.len().min(12)],
        tags.join(" "),
        v.source,
    )
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ")
}

fn model_line(m: &RegisteredModel) -> String {
    let aliases: Vec<String> = m.aliases.iter().map(|(a, v)| format!("@{a}=v{v}")).collect();
    let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let latest = m.latest_version.map_or("no versions".to_string(), |v| format!("latest v{v}"));
    format!("{}  {latest}  {}  {}", m.name, aliases.join(" "), tags.join(" ")).trim_end().to_string()
}

fn versions_of(reg: &Registry, name: &str) -> Result<Vec<ModelVersion>> {
    // Model names cannot hold quotes (the registry refuses them), so no escaping is needed.
    let filter = format!("name = '{name}'");
    Ok(reg.search_versions(&filter, 1000, None)?.items)
}

pub fn run(a: RegistryArgs) -> Result<()> {
    let reg = open_registry()?;
    let json = a.json;
    match a.command {
        RegistryCommand::Register { name, path, tags, aliases, description } => {
            if !path.exists() {
                return Err(UsageError(format!("--path {}: no such file or directory", path.display())).into());
            }
            let info = keel_server::model_info::describe(&path).map_err(|m| UsageError(format!("--path: {m}")))?;
            let v =
                reg.create_version(&name, NewVersion { source: path, description, tags, aliases, info, run_id: None })?;
            if json {
                print_json(json!({"model_version": version_json(&v)}));
            } else {
                println!("registered {}", version_line(&v));
            }
        }
        RegistryCommand::List { filter } => {
            let models = reg.search_models(&filter, 1000, None)?.items;
            if json {
                let items: Vec<_> = models.iter().map(|m| model_json(m, None)).collect();
                print_json(json!({"registered_models": items}));
            } else if models.is_empty() {
                eprintln!("no registered models (register one with `runtime registry register --name N --path P`)");
            } else {
                for m in &models {
                    println!("{}", model_line(m));
                }
            }
        }
        RegistryCommand::Show { name, version: Some(v) } => {
            let mv = reg.get_version(&name, v)?;
            if json {
                print_json(json!({"model_version": version_json(&mv)}));
            } else {
                println!("{}", version_line(&mv));
                println!("artifacts: {}", mv.artifact_dir.display());
            }
        }
        RegistryCommand::Show { name, version: None } => {
            let m = reg.get_model(&name)?;
            let versions = versions_of(&reg, &name)?;
            if json {
                let mut v = model_json(&m, None);
                v["keel_versions"] = versions.iter().map(version_json).collect();
                print_json(json!({"registered_model": v}));
            } else {
                println!("{}", model_line(&m));
                if !m.description.is_empty() {
                    println!("  {}", m.description);
                }
                for v in &versions {
                    println!("  {}", version_line(v));
                }
            }
        }
        RegistryCommand::Alias { command: AliasCommand::Set { name, alias, version } } => {
            reg.set_alias(&name, &alias, version)?;
            if !json {
                println!("models:/{name}@{alias} -> version {version}");
            }
        }
        RegistryCommand::Alias { command: AliasCommand::Delete { name, alias } } => {
            reg.delete_alias(&name, &alias)?;
            if !json {
                println!("deleted alias @{alias} of {name}");
            }
        }
        RegistryCommand::Tag { command: TagCommand::Set { name, tag: (k, v), version } } => match version {
            Some(ver) => reg.set_version_tag(&name, ver, &k, &v)?,
            None => reg.set_model_tag(&name, &k, &v)?,
        },
        RegistryCommand::Tag { command: TagCommand::Delete { name, key, version } } => match version {
            Some(ver) => reg.delete_version_tag(&name, ver, &key)?,
            None => reg.delete_model_tag(&name, &key)?,
        },
        RegistryCommand::Delete { name, version: Some(v) } => {
            reg.delete_version(&name, v)?;
            if !json {
                println!("deleted models:/{name}/{v} (the number {v} is never reused)");
            }
        }
        RegistryCommand::Delete { name, version: None } => {
            reg.delete_model(&name)?;
            if !json {
                println!("deleted registered model {name} and all its versions");
            }
        }
        RegistryCommand::Search { filter, max_results } => {
            let page = reg.search_versions(&filter, max_results, None)?;
            if json {
                print_json(json!({"model_versions": page.items.iter().map(version_json).collect::<Vec<_>>()}));
            } else {
                for v in &page.items {
                    println!("{}", version_line(v));
                }
                if page.next_page_token.is_some() {
                    eprintln!("(more results; raise --max-results)");
                }
            }
        }
    }
    Ok(())
}
