//! The manifest of a version: every artifact file's relative path (`/`-separated, relative
//! to the version's artifact directory), sha256 and size, sorted by path. The version's
//! digest is the sha256 of the manifest's `"relpath sha256\n"` lines, so it changes when any
//! file's bytes, name or place change. `MLmodel` and `input_example.json` are metadata the
//! registry writes itself; they are not in the manifest (they carry the digest, so they
//! could not be covered by it). Hashing streams in 1 MiB blocks: memory stays O(1) in the
//! model size, time is one pass over the bytes.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{RegistryError, Result};

/// Files the registry writes into an artifact directory beside the manifest's files.
pub const METADATA_FILES: [&str; 2] = ["MLmodel", "input_example.json"];

const BLOCK: usize = 1 << 20;

/// One artifact file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// All artifact files of a version, sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Manifest {
    entries: Vec<ManifestEntry>,
}

impl Manifest {
    pub fn new(mut entries: Vec<ManifestEntry>) -> Manifest {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest { entries }
    }

    #[cfg(test)]
    pub fn entries(&self) -> &[ManifestEntry] {
        &self.entries
    }

    /// sha256 (hex) over the sorted `"relpath sha256\n"` lines.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for e in &self.entries {
            h.update(e.path.as_bytes());
            h.update(b" ");
            h.update(e.sha256.as_bytes());
            h.update(b"\n");
        }
        hex(&h.finalize())
    }

    pub fn size_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// Re-hashes every file under `dir` against the manifest. A changed, missing or extra
    /// file (other than the registry's own metadata files) is `ChecksumMismatch`.
    pub fn verify(&self, dir: &Path) -> Result<()> {
        for e in &self.entries {
            let path = dir.join(&e.path);
            let actual = match File::open(&path) {
                Ok(mut f) => hash_reader(&mut f, &path, None)?.0,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => "no file".to_string(),
                Err(err) => return Err(RegistryError::io(path, err)),
            };
            if actual != e.sha256 {
                return Err(RegistryError::ChecksumMismatch { path, expected: e.sha256.clone(), actual });
            }
        }
        let known: BTreeSet<&str> = self.entries.iter().map(|e| e.path.as_str()).chain(METADATA_FILES).collect();
        find_extra(dir, "", &known)
    }
}

/// Walks `dir` for anything the manifest does not list.
fn find_extra(dir: &Path, rel: &str, known: &BTreeSet<&str>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| RegistryError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| RegistryError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let kind = entry.file_type().map_err(|e| RegistryError::io(&path, e))?;
        if kind.is_dir() {
            find_extra(&path, &child, known)?;
        } else if !(kind.is_file() && known.contains(child.as_str())) {
            let actual =
                if kind.is_file() { hash_file(&path)?.0 } else { "a file that is not a regular file".to_string() };
            return Err(RegistryError::ChecksumMismatch { path, expected: "no file".into(), actual });
        }
    }
    Ok(())
}

/// sha256 (hex) and size of a file.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).map_err(|e| RegistryError::io(path, e))?;
    hash_reader(&mut f, path, None)
}

/// Copies `from` to the new file `to` (which must not exist), hashing while copying, and
/// syncs it to disk. Returns the sha256 (hex) and size.
pub fn copy_and_hash(from: &Path, to: &Path) -> Result<(String, u64)> {
    let mut src = File::open(from).map_err(|e| RegistryError::io(from, e))?;
    let mut dst = File::create_new(to).map_err(|e| RegistryError::io(to, e))?;
    let out = hash_reader(&mut src, from, Some((&mut dst, to)))?;
    dst.sync_all().map_err(|e| RegistryError::io(to, e))?;
    Ok(out)
}

fn hash_reader(src: &mut File, src_path: &Path, mut sink: Option<(&mut File, &Path)>) -> Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut size = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RegistryError::io(src_path, e)),
        };
        h.update(&buf[..n]);
        if let Some((dst, dst_path)) = sink.as_mut() {
            dst.write_all(&buf[..n]).map_err(|e| RegistryError::io(*dst_path, e))?;
        }
        size += n as u64;
    }
    Ok((hex(&h.finalize()), size))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, sha: &str, size: u64) -> ManifestEntry {
        ManifestEntry { path: path.into(), sha256: sha.into(), size }
    }

    #[test]
    fn digest_is_over_sorted_lines() {
        let m = Manifest::new(vec![entry("model/b", "22", 2), entry("model/a", "11", 1)]);
        assert_eq!(m.entries()[0].path, "model/a");
        let mut h = Sha256::new();
        h.update(b"model/a 11\nmodel/b 22\n");
        assert_eq!(m.digest(), hex(&h.finalize()));
        assert_eq!(m.size_bytes(), 3);
        let renamed = Manifest::new(vec![entry("model/c", "22", 2), entry("model/a", "11", 1)]);
        assert_ne!(m.digest(), renamed.digest());
    }

    #[test]
    fn known_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let (sha, size) = hash_file(&p).unwrap();
        assert_eq!(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(size, 3);
        let q = dir.path().join("g");
        assert_eq!(copy_and_hash(&p, &q).unwrap(), (sha, 3));
        assert_eq!(std::fs::read(&q).unwrap(), b"abc");
        assert!(copy_and_hash(&p, &q).is_err(), "copy must not overwrite");
    }

    #[test]
    fn multi_block_files_hash_like_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let data: Vec<u8> = (0..(BLOCK * 2 + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(hash_file(&p).unwrap(), (hex(&Sha256::digest(&data)), data.len() as u64));
    }

    #[test]
    fn verify_finds_changed_missing_and_extra_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("model")).unwrap();
        std::fs::write(dir.path().join("model/a"), b"hello").unwrap();
        std::fs::write(dir.path().join("MLmodel"), b"meta").unwrap();
        let (sha, size) = hash_file(&dir.path().join("model/a")).unwrap();
        let m = Manifest::new(vec![entry("model/a", &sha, size)]);
        m.verify(dir.path()).unwrap();

        std::fs::write(dir.path().join("model/extra"), b"x").unwrap();
        match m.verify(dir.path()) {
            Err(RegistryError::ChecksumMismatch { path, expected, .. }) => {
                assert!(path.ends_with("model/extra"));
                assert_eq!(expected, "no file");
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(dir.path().join("model/extra")).unwrap();

        std::fs::write(dir.path().join("model/a"), b"hellp").unwrap();
        match m.verify(dir.path()) {
            Err(RegistryError::ChecksumMismatch { path, expected, actual }) => {
                assert!(path.ends_with("model/a"));
                assert_eq!(expected, sha);
                assert_ne!(actual, sha);
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(dir.path().join("model/a")).unwrap();
        match m.verify(dir.path()) {
            Err(RegistryError::ChecksumMismatch { actual, .. }) => assert_eq!(actual, "no file"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn manifest_json_is_a_plain_list() {
        let m = Manifest::new(vec![entry("x.gguf", "ab", 7)]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"[{"path":"x.gguf","sha256":"ab","size":7}]"#);
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
    }
}
