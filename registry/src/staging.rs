//! A version's files on their way into the store. `Staged::copy` copies a listed source into
//! a fresh directory under `artifacts/.staging/` (unique per process, time and call),
//! hashing each file while copying and syncing it to disk; the files are made read-only,
//! since a registered version is immutable. `move_to` renames the directory into its final
//! place (same file system, so the rename is atomic). Until `keep` is called, dropping a
//! `Staged` removes the directory wherever it currently is: a failed registration leaves
//! nothing behind. `.staging` cannot collide with a model directory, as model names never
//! start with `.`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{RegistryError, Result};
use crate::manifest::{self, Manifest, ManifestEntry};
use crate::source::SourceTree;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Copied, hashed files awaiting (or holding) their place in the store.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    manifest: Manifest,
    kept: bool,
}

impl Staged {
    /// Copies every file of `tree` into a new directory under `staging_root`.
    pub fn copy(tree: &SourceTree, staging_root: &Path) -> Result<Staged> {
        fs::create_dir_all(staging_root).map_err(|e| RegistryError::io(staging_root, e))?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let unique = format!("{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = staging_root.join(unique);
        fs::create_dir(&dir).map_err(|e| RegistryError::io(&dir, e))?;
        // From here on, dropping `staged` removes `dir`, whatever fails below.
        let mut staged = Staged { dir, manifest: Manifest::default(), kept: false };
        let mut entries = Vec::with_capacity(tree.files.len());
        for file in &tree.files {
            let to = staged.dir.join(&file.rel);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(|e| RegistryError::io(parent, e))?;
            }
            let (sha256, size) = manifest::copy_and_hash(&file.path, &to)?;
            make_read_only(&to)?;
            entries.push(ManifestEntry { path: file.rel.clone(), sha256, size });
        }
        staged.manifest = Manifest::new(entries);
        Ok(staged)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where the files are now.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Renames the directory to `target` (whose parent is created; `target` must not exist
    /// or be an empty directory).
    pub fn move_to(&mut self, target: &Path) -> Result<()> {
        let parent = target.parent().unwrap_or(target);
        fs::create_dir_all(parent).map_err(|e| RegistryError::io(parent, e))?;
        fs::rename(&self.dir, target).map_err(|e| RegistryError::io(target, e))?;
        self.dir = target.to_path_buf();
        // Make the rename itself durable; a failure here only weakens crash safety.
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The registration committed: keep the files.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Marks a registered file read-only (a registered version is immutable).
pub fn make_read_only(path: &Path) -> Result<()> {
    let mut perms = fs::metadata(path).map_err(|e| RegistryError::io(path, e))?.permissions();
    perms.set_readonly(true);
    fs::set_permissions(path, perms).map_err(|e| RegistryError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_hashes_and_cleans_up_unless_kept() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.json"), b"{}").unwrap();
        fs::write(src.join("sub/b.bin"), b"bb").unwrap();
        let tree = SourceTree::list(&src).unwrap();
        let staging = d.path().join("artifacts/.staging");

        let staged = Staged::copy(&tree, &staging).unwrap();
        let dir = staged.dir().to_path_buf();
        assert!(dir.starts_with(&staging));
        assert_eq!(fs::read(dir.join("model/sub/b.bin")).unwrap(), b"bb");
        assert!(fs::metadata(dir.join("model/a.json")).unwrap().permissions().readonly());
        assert_eq!(staged.manifest(), &tree.manifest().unwrap());
        drop(staged);
        assert!(!dir.exists(), "dropped staging dir must be removed");

        let mut staged = Staged::copy(&tree, &staging).unwrap();
        let target = d.path().join("artifacts/m/1");
        staged.move_to(&target).unwrap();
        assert_eq!(staged.dir(), target);
        staged.keep();
        assert_eq!(fs::read(target.join("model/a.json")).unwrap(), b"{}");
        assert_eq!(fs::read_dir(&staging).unwrap().count(), 0);
    }

    #[test]
    fn failed_copy_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("a"), b"a").unwrap();
        fs::write(src.join("b"), b"b").unwrap();
        let tree = SourceTree::list(&src).unwrap();
        fs::remove_file(src.join("b")).unwrap(); // vanishes between listing and copying
        let staging = d.path().join(".staging");
        let err = Staged::copy(&tree, &staging).unwrap_err();
        assert!(matches!(err, RegistryError::Io { .. }), "{err}");
        assert_eq!(fs::read_dir(&staging).unwrap().count(), 0);
    }
}
