//! Eight OS processes register versions of one model and move aliases at the same time,
//! against one home directory (the test re-runs its own binary in child mode). Afterwards
//! the versions are exactly 1..=8N, every artifact verifies, every alias points where its
//! writer last put it, and SQLite's integrity check passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{staging_entries, tiny_file, version_of};
use keel_registry::{NewVersion, Registry};

const CHILDREN: u64 = 8;
const PER_CHILD: u64 = 10;
const TEST_NAME: &str = "eight_processes_register_and_alias_concurrently";
const MODEL: &str = "shared";

#[test]
fn eight_processes_register_and_alias_concurrently() {
    if let (Ok(home), Ok(id)) = (std::env::var("KEEL_REGISTRY_CHILD"), std::env::var("KEEL_REGISTRY_CHILD_ID")) {
        child(Path::new(&home), id.parse().unwrap());
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    // Nobody opens the registry first: the children also race to create the database.
    let children: Vec<_> = (0..CHILDREN)
        .map(|id| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                .env("KEEL_REGISTRY_CHILD", &home)
                .env("KEEL_REGISTRY_CHILD_ID", id.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (id, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child {id} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("child {id} registered {PER_CHILD}")), "child {id} did no work:\n{stdout}");
    }

    let r = Registry::open(&home).unwrap();
    r.check_integrity().unwrap();
    let versions = r.search_versions(&format!("name = '{MODEL}'"), 1000, None).unwrap().items;
    let mut numbers: Vec<u64> = versions.iter().map(|v| v.version).collect();
    numbers.sort();
    assert_eq!(numbers, (1..=CHILDREN * PER_CHILD).collect::<Vec<_>>(), "no gaps, no duplicates");
    for v in &versions {
        r.verify(v).unwrap_or_else(|e| panic!("version {}: {e}", v.version));
    }
    for id in 0..CHILDREN {
        let mine: Vec<u64> =
            versions.iter().filter(|v| v.tags.get("child") == Some(&id.to_string())).map(|v| v.version).collect();
        assert_eq!(mine.len() as u64, PER_CHILD, "child {id}");
        // Each child registers one after another, so its alias ends on its highest version.
        let aliased = r.get_version_by_alias(MODEL, &format!("child-{id}")).unwrap();
        assert_eq!(Some(aliased.version), mine.iter().max().copied(), "alias child-{id}");
    }
    let last = r.get_version_by_alias(MODEL, "last").unwrap();
    assert!(numbers.contains(&last.version));
    let model = r.get_model(MODEL).unwrap();
    assert_eq!(model.latest_version, Some(CHILDREN * PER_CHILD));
    assert_eq!(model.tags.len() as u64, CHILDREN);
    assert!(model.tags.values().all(|v| v == &(PER_CHILD - 1).to_string()));
    assert_eq!(staging_entries(&home), 0);
}

fn child(home: &Path, id: u64) {
    let r = Registry::open(home).unwrap();
    let src_dir: PathBuf = home.parent().unwrap().join(format!("src-{id}"));
    std::fs::create_dir_all(&src_dir).unwrap();
    let src = tiny_file(&src_dir, "tiny.gguf", id);
    for seq in 0..PER_CHILD {
        let nv = NewVersion {
            tags: vec![("child".into(), id.to_string()), ("seq".into(), seq.to_string())],
            aliases: vec![format!("child-{id}")],
            ..version_of(&src)
        };
        let v = r.create_version(MODEL, nv).unwrap();
        r.set_alias(MODEL, "last", v.version).unwrap();
        r.set_model_tag(MODEL, &format!("child-{id}"), &seq.to_string()).unwrap();
    }
    println!("child {id} registered {PER_CHILD}");
}
