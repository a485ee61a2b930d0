//! Shared helpers for the registry's integration tests: tiny model sources and
//! `NewVersion` values.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use keel_registry::{ModelInfo, NewVersion, RegistryError};

/// Writes a small (a few KB) pseudo-model file whose bytes depend on `seed`.
pub fn tiny_file(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let bytes: Vec<u8> = (0..4096u64).map(|i| (i.wrapping_mul(31).wrapping_add(seed * 7919) % 251) as u8).collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

pub fn info() -> ModelInfo {
    ModelInfo {
        flavor: "llm".into(),
        architecture: "llama".into(),
        format: "gguf".into(),
        dtype: "Q4_1".into(),
        parameter_count: 134_515_008,
        context_length: 8192,
        display_name: "Tiny".into(),
    }
}

pub fn version_of(source: &Path) -> NewVersion {
    NewVersion { source: source.to_path_buf(), info: info(), ..NewVersion::default() }
}

pub fn assert_invalid<T: std::fmt::Debug>(r: Result<T, RegistryError>, needle: &str) -> String {
    match r {
        Err(RegistryError::InvalidParameter(m)) => {
            assert!(m.contains(needle), "message {m:?} lacks {needle:?}");
            assert!(!m.contains('\n'));
            m
        }
        other => panic!("expected InvalidParameter({needle:?}), got {other:?}"),
    }
}

pub fn assert_not_found<T: std::fmt::Debug>(r: Result<T, RegistryError>, needle: &str) -> String {
    match r {
        Err(RegistryError::NotFound(m)) => {
            assert!(m.contains(needle), "message {m:?} lacks {needle:?}");
            m
        }
        other => panic!("expected NotFound({needle:?}), got {other:?}"),
    }
}

/// Entries of the staging directory (a failed registration must leave none).
pub fn staging_entries(home: &Path) -> usize {
    std::fs::read_dir(home.join("artifacts/.staging")).map_or(0, |d| d.count())
}
