//! What a registration copies: the files of a model source, a single file or a directory
//! tree, each with its path relative to the version's artifact directory (`<file name>` for
//! a file source, `model/<relpath>` for a directory source).
//!
//! Invariants: every listed file is a regular file that lies inside the source (symlinks
//! are followed only when they resolve inside a directory source, and a directory reached
//! twice along one path is a cycle); relative paths are UTF-8 without control characters,
//! so manifest lines stay unambiguous. Sockets, FIFOs and devices are refused. Listing
//! costs one `stat` per entry; nothing is read.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{RegistryError, Result};
use crate::manifest::{self, Manifest, ManifestEntry, METADATA_FILES};

/// Where a directory source's files go inside the artifact directory.
pub const MODEL_DIR: &str = "model";

/// One file to copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the artifact directory, `/`-separated.
    pub rel: String,
    /// Where to read it (a symlink's target already resolved).
    pub path: PathBuf,
}

/// The listed files of a source.
#[derive(Clone, Debug)]
pub struct SourceTree {
    /// The source as given, made absolute (for display and the `source` field).
    pub display: String,
    /// What a loader opens, relative to the artifact directory: the file name, or `model`.
    pub model_file: String,
    pub files: Vec<SourceFile>,
}

fn invalid(msg: String) -> RegistryError {
    RegistryError::InvalidParameter(msg)
}

impl SourceTree {
    /// Lists `source` (a file or a directory).
    pub fn list(source: &Path) -> Result<SourceTree> {
        let absolute = std::path::absolute(source).map_err(|e| RegistryError::io(source, e))?;
        let display = absolute.display().to_string();
        let meta = match fs::metadata(&absolute) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(invalid(format!("model source {display:?} does not exist")));
            }
            Err(e) => return Err(RegistryError::io(absolute, e)),
        };
        if meta.is_file() {
            let canonical = fs::canonicalize(&absolute).map_err(|e| RegistryError::io(&absolute, e))?;
            let name =
                absolute.file_name().or(canonical.file_name()).map(|n| checked_name(n, &absolute)).transpose()?;
            let Some(name) = name else {
                return Err(invalid(format!("model source {display:?} has no file name")));
            };
            if METADATA_FILES.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "model source {display:?}: a file named {name:?} would overwrite the registry's own metadata; rename it"
                )));
            }
            let files = vec![SourceFile { rel: name.clone(), path: canonical }];
            return Ok(SourceTree { display, model_file: name, files });
        }
        if !meta.is_dir() {
            return Err(invalid(format!(
                "model source {display:?} is not a regular file or directory (sockets, FIFOs and devices cannot be registered)"
            )));
        }
        let root = fs::canonicalize(&absolute).map_err(|e| RegistryError::io(&absolute, e))?;
        let mut files = Vec::new();
        let mut stack = vec![root.clone()];
        walk(&root, &root, MODEL_DIR, &mut stack, &mut files)?;
        if files.is_empty() {
            return Err(invalid(format!("model source directory {display:?} contains no files")));
        }
        Ok(SourceTree { display, model_file: MODEL_DIR.to_string(), files })
    }

    /// Hashes the listed files in place (no copy): the manifest registration would record.
    pub fn manifest(&self) -> Result<Manifest> {
        let entries = self
            .files
            .iter()
            .map(|f| {
                let (sha256, size) = manifest::hash_file(&f.path)?;
                Ok(ManifestEntry { path: f.rel.clone(), sha256, size })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Manifest::new(entries))
    }
}

/// A file name as UTF-8 without control characters.
fn checked_name(name: &std::ffi::OsStr, path: &Path) -> Result<String> {
    match name.to_str() {
        Some(s) if !s.chars().any(char::is_control) => Ok(s.to_string()),
        _ => Err(invalid(format!(
            "{:?}: file names in a model source must be UTF-8 without control characters",
            path.display().to_string()
        ))),
    }
}

/// Lists `dir` (whose canonical path is the last of `stack`) into `out` under `rel`.
fn walk(root: &Path, dir: &Path, rel: &str, stack: &mut Vec<PathBuf>, out: &mut Vec<SourceFile>) -> Result<()> {
    let mut entries = fs::read_dir(dir)
        .map_err(|e| RegistryError::io(dir, e))?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| RegistryError::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let shown = || path.display().to_string();
        let child_rel = format!("{rel}/{}", checked_name(&entry.file_name(), &path)?);
        let mut meta = fs::symlink_metadata(&path).map_err(|e| RegistryError::io(&path, e))?;
        let mut canonical = stack.last().map_or_else(|| path.clone(), |parent| parent.join(entry.file_name()));
        if meta.file_type().is_symlink() {
            canonical = fs::canonicalize(&path)
                .map_err(|_| invalid(format!("symlink {:?} in the model source points to nothing", shown())))?;
            if !canonical.starts_with(root) {
                return Err(invalid(format!(
                    "{:?} is a symlink to {:?}, outside the model source directory; copy the directory with \
                     links resolved (cp -rL) and register the copy",
                    shown(),
                    canonical.display().to_string()
                )));
            }
            meta = fs::metadata(&canonical).map_err(|e| RegistryError::io(&canonical, e))?;
        }
        if meta.is_dir() {
            if stack.contains(&canonical) {
                return Err(invalid(format!("symlink {:?} in the model source makes a cycle", shown())));
            }
            stack.push(canonical.clone());
            walk(root, &canonical, &child_rel, stack, out)?;
            stack.pop();
        } else if meta.is_file() {
            out.push(SourceFile { rel: child_rel, path: canonical });
        } else {
            return Err(invalid(format!(
                "{:?} is not a regular file or directory (sockets, FIFOs and devices cannot be registered)",
                shown()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn rels(t: &SourceTree) -> Vec<&str> {
        t.files.iter().map(|f| f.rel.as_str()).collect()
    }

    fn invalid_msg(r: Result<SourceTree>) -> String {
        match r {
            Err(RegistryError::InvalidParameter(m)) => m,
            other => panic!("expected InvalidParameter, got {other:?}"),
        }
    }

    #[test]
    fn file_source_keeps_its_name() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("tiny.gguf");
        fs::write(&f, b"GGUF").unwrap();
        let t = SourceTree::list(&f).unwrap();
        assert_eq!(rels(&t), ["tiny.gguf"]);
        assert_eq!(t.model_file, "tiny.gguf");
        assert_eq!(t.display, f.display().to_string());
        // A link to a file keeps the link's name and reads the target.
        let blob = d.path().join("sha256-abc");
        fs::write(&blob, b"x").unwrap();
        let link = d.path().join("model.gguf");
        symlink(&blob, &link).unwrap();
        let t = SourceTree::list(&link).unwrap();
        assert_eq!(rels(&t), ["model.gguf"]);
        assert_eq!(t.files[0].path, fs::canonicalize(&blob).unwrap());
    }

    #[test]
    fn directory_source_is_listed_recursively_under_model() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m");
        fs::create_dir_all(m.join("sub/deeper")).unwrap();
        fs::write(m.join("config.json"), b"{}").unwrap();
        fs::write(m.join("sub/deeper/w.safetensors"), b"w").unwrap();
        fs::create_dir(m.join("empty")).unwrap();
        symlink("config.json", m.join("alias.json")).unwrap();
        symlink("sub", m.join("sublink")).unwrap();
        let t = SourceTree::list(&m).unwrap();
        assert_eq!(t.model_file, "model");
        assert_eq!(
            rels(&t),
            [
                "model/alias.json",
                "model/config.json",
                "model/sub/deeper/w.safetensors",
                "model/sublink/deeper/w.safetensors"
            ]
        );
        let manifest = t.manifest().unwrap();
        assert_eq!(manifest.entries().len(), 4);
        assert_eq!(manifest.entries()[0].sha256, manifest.entries()[1].sha256);
    }

    #[test]
    fn refuses_missing_empty_escaping_cyclic_and_special_sources() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let msg = invalid_msg(SourceTree::list(&missing));
        assert!(msg.contains("does not exist") && msg.contains("nope"), "{msg}");

        let empty = d.path().join("empty");
        fs::create_dir_all(empty.join("sub")).unwrap();
        assert!(invalid_msg(SourceTree::list(&empty)).contains("contains no files"));

        let outside = d.path().join("secret");
        fs::write(&outside, b"s").unwrap();
        let esc = d.path().join("esc");
        fs::create_dir(&esc).unwrap();
        symlink(&outside, esc.join("link")).unwrap();
        let msg = invalid_msg(SourceTree::list(&esc));
        assert!(msg.contains("outside the model source directory"), "{msg}");

        let dotdot = d.path().join("dotdot");
        fs::create_dir(&dotdot).unwrap();
        symlink("../secret", dotdot.join("link")).unwrap();
        assert!(invalid_msg(SourceTree::list(&dotdot)).contains("outside"));

        let cyc = d.path().join("cyc");
        fs::create_dir_all(cyc.join("a")).unwrap();
        fs::write(cyc.join("a/f"), b"f").unwrap();
        symlink("..", cyc.join("a/up")).unwrap();
        assert!(invalid_msg(SourceTree::list(&cyc)).contains("cycle"));

        let dangling = d.path().join("dangling");
        fs::create_dir(&dangling).unwrap();
        symlink("nothing-here", dangling.join("l")).unwrap();
        assert!(invalid_msg(SourceTree::list(&dangling)).contains("points to nothing"));

        let fifo_dir = d.path().join("fifo");
        fs::create_dir(&fifo_dir).unwrap();
        let fifo = fifo_dir.join("pipe");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if status.is_ok_and(|s| s.success()) {
            assert!(invalid_msg(SourceTree::list(&fifo_dir)).contains("not a regular file"));
            assert!(invalid_msg(SourceTree::list(&fifo)).contains("not a regular file"));
        }

        let meta = d.path().join("MLmodel");
        fs::write(&meta, b"x").unwrap();
        assert!(invalid_msg(SourceTree::list(&meta)).contains("metadata"));
    }

    #[test]
    fn refuses_control_characters_in_names() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m");
        fs::create_dir(&m).unwrap();
        fs::write(m.join("a\nb"), b"x").unwrap();
        assert!(invalid_msg(SourceTree::list(&m)).contains("control characters"));
    }
}
