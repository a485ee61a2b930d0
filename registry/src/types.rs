//! The registry's public records. `RegisteredModel` and `ModelVersion` are snapshots read
//! in one SQLite read transaction: tags, aliases and `latest_version` are consistent with
//! each other at the moment of the read. `Page` carries one page of a search and the
//! opaque token for the next one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{RegistryError, Result};

/// What the caller knows about the model files (filled from keel-runtime's loaders).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    /// MLflow flavor name; `llm` for everything keel serves.
    pub flavor: String,
    /// Model family: `llama`, `qwen2`, ...
    pub architecture: String,
    /// `gguf` or `safetensors`.
    pub format: String,
    /// Weight dtype, e.g. `Q4_1`, `F16`.
    pub dtype: String,
    pub parameter_count: u64,
    pub context_length: u64,
    /// Human name, e.g. GGUF `general.name`.
    pub display_name: String,
}

/// A version to register: where its files are and what is known about them.
#[derive(Clone, Debug, Default)]
pub struct NewVersion {
    /// A file or a directory; copied into the store.
    pub source: PathBuf,
    pub description: Option<String>,
    /// Version tags.
    pub tags: Vec<(String, String)>,
    /// Aliases set on the new version in the same transaction (moved if they exist).
    pub aliases: Vec<String>,
    pub info: ModelInfo,
    pub run_id: Option<String>,
}

/// One registered version of a model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub description: String,
    /// The source path given at registration (absolute, display form).
    pub source: String,
    pub run_id: Option<String>,
    /// Always `READY`: a version becomes visible only once its files are in place.
    pub status: String,
    pub tags: BTreeMap<String, String>,
    /// Sorted.
    pub aliases: Vec<String>,
    /// `$home/artifacts/<name>/<version>`.
    pub artifact_dir: PathBuf,
    /// What to load: `artifact_dir/<file name>` for a file source, `artifact_dir/model` for a
    /// directory source.
    pub model_path: PathBuf,
    /// Total size of the manifest's files.
    pub size_bytes: u64,
    /// sha256 over the manifest's sorted `"relpath sha256\n"` lines.
    pub sha256: String,
    pub info: ModelInfo,
}

/// A registered model (the named container of versions).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RegisteredModel {
    pub name: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    /// alias -> version.
    pub aliases: BTreeMap<String, u64>,
    /// Highest live version, if any.
    pub latest_version: Option<u64>,
}

/// One page of search results.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Largest `max_results` a registered-model search accepts (MLflow's limit).
pub const MAX_RESULTS_LIMIT: usize = 1000;

/// Largest `max_results` a model-version search accepts (MLflow's limit; its client asks
/// for 10 000 by default).
pub const MAX_VERSION_RESULTS_LIMIT: usize = 200_000;

impl<T> Page<T> {
    /// Cuts one page out of the full, ordered result list. The token is the base-10 offset
    /// of the next item; results shift if the registry changes between calls (as in MLflow's
    /// offset tokens).
    pub(crate) fn cut(all: Vec<T>, max_results: usize, limit: usize, page_token: Option<&str>) -> Result<Page<T>> {
        if max_results == 0 || max_results > limit {
            return Err(RegistryError::InvalidParameter(format!(
                "max_results must be between 1 and {limit}, got {max_results}"
            )));
        }
        let offset = match page_token {
            None | Some("") => 0,
            Some(t) => t.parse::<usize>().map_err(|_| {
                RegistryError::InvalidParameter(format!("invalid page_token {t:?}: pass a token returned by a search"))
            })?,
        };
        let end = offset.saturating_add(max_results);
        let next_page_token = (end < all.len()).then(|| end.to_string());
        let items = all.into_iter().skip(offset).take(max_results).collect();
        Ok(Page { items, next_page_token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_the_whole_list_once() {
        let all: Vec<u32> = (0..7).collect();
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = Page::cut(all.clone(), 3, MAX_RESULTS_LIMIT, token.as_deref()).unwrap();
            assert!(page.items.len() <= 3);
            seen.extend(page.items);
            pages += 1;
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, all);
        assert_eq!(pages, 3);
    }

    #[test]
    fn exact_fit_has_no_next_token() {
        let page = Page::cut(vec![1, 2, 3], 3, MAX_RESULTS_LIMIT, None).unwrap();
        assert_eq!(page, Page { items: vec![1, 2, 3], next_page_token: None });
        let page = Page::cut(vec![1, 2, 3], 2, MAX_RESULTS_LIMIT, Some("")).unwrap();
        assert_eq!(page.next_page_token.as_deref(), Some("2"));
        let past = Page::cut(vec![1, 2, 3], 2, MAX_RESULTS_LIMIT, Some("10")).unwrap();
        assert_eq!(past, Page { items: vec![], next_page_token: None });
    }

    #[test]
    fn bad_arguments_are_invalid_parameter() {
        for (max, token) in [(0, None), (1001, None), (10, Some("abc")), (10, Some("-1")), (10, Some("1.5"))] {
            let err = Page::cut(vec![1], max, MAX_RESULTS_LIMIT, token).unwrap_err();
            assert!(matches!(err, RegistryError::InvalidParameter(_)), "{max} {token:?}: {err}");
        }
        assert!(Page::cut(vec![1], 1000, MAX_RESULTS_LIMIT, None).is_ok());
        assert!(Page::cut(vec![1], 10_000, MAX_VERSION_RESULTS_LIMIT, None).is_ok());
    }
}
