//! Registered models and versions through the public API: numbering (never reused, across
//! version and model deletes), soft-delete visibility, artifact copies, checksums, MLmodel,
//! all-or-nothing registration, directory sources.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{assert_invalid, assert_not_found, staging_entries, tiny_file, version_of};
use keel_registry::{NewVersion, Registry, RegistryError};

fn setup() -> (tempfile::TempDir, Registry) {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(&d.path().join("home")).unwrap();
    (d, r)
}

#[test]
fn model_create_get_update_delete() {
    let (_d, r) = setup();
    let tags = vec![("team".to_string(), "nlp".to_string())];
    let m = r.create_model("main.default.tiny", Some("a tiny llama"), &tags).unwrap();
    assert_eq!(m.name, "main.default.tiny");
    assert_eq!(m.description, "a tiny llama");
    assert_eq!(m.tags.get("team").map(String::as_str), Some("nlp"));
    assert_eq!(m.latest_version, None);
    assert!(m.creation_timestamp > 1_600_000_000_000);

    let dup = r.create_model("main.default.tiny", None, &[]);
    match dup {
        Err(RegistryError::AlreadyExists(msg)) => {
            assert_eq!(msg, "registered model \"main.default.tiny\" already exists")
        }
        other => panic!("{other:?}"),
    }
    let u = r.update_model("main.default.tiny", "new words").unwrap();
    assert_eq!(u.description, "new words");
    assert!(u.last_updated_timestamp >= m.last_updated_timestamp);
    assert_eq!(r.get_model("main.default.tiny").unwrap().description, "new words");

    assert_eq!(assert_not_found(r.get_model("nope"), "nope"), "registered model \"nope\" does not exist");
    assert_not_found(r.update_model("nope", "x"), "does not exist");
    assert_not_found(r.delete_model("nope"), "does not exist");

    r.delete_model("main.default.tiny").unwrap();
    assert_not_found(r.get_model("main.default.tiny"), "does not exist");
    assert_not_found(r.delete_model("main.default.tiny"), "does not exist");
    // The name is free again; old tags do not come back.
    let again = r.create_model("main.default.tiny", None, &[]).unwrap();
    assert!(again.tags.is_empty());
    assert_eq!(again.description, "");
}

#[test]
fn bad_names_are_rejected_before_touching_anything() {
    let (d, r) = setup();
    let src = tiny_file(d.path(), "tiny.gguf", 1);
    for bad in ["../escape", "a/b", "..", ".hidden", "a..b", "", "sp ace"] {
        assert_invalid(r.create_model(bad, None, &[]), "invalid model name");
        assert_invalid(r.create_version(bad, version_of(&src)), "invalid model name");
        assert_invalid(r.get_model(bad), "invalid model name");
        assert_invalid(r.get_version(bad, 1), "invalid model name");
        assert_invalid(r.delete_model(bad), "invalid model name");
    }
    assert!(!d.path().join("escape").exists());
    assert_eq!(
        fs::read_dir(r.home().join("artifacts"))
            .unwrap()
            .filter(|e| { e.as_ref().unwrap().file_name() != ".staging" })
            .count(),
        0
    );
    assert_invalid(r.get_version("m", 0), "versions are integers from 1");
    assert_invalid(r.create_model("m", None, &[(String::new(), "v".into())]), "tag key must not be empty");
}

#[test]
fn version_numbers_are_never_reused_after_deleting_versions() {
    let (d, r) = setup();
    let src = tiny_file(d.path(), "tiny.gguf", 1);
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(r.create_version("m", version_of(&src)).unwrap().version);
    }
    assert_eq!(created, [1, 2, 3]);
    r.delete_version("m", 3).unwrap();
    assert_eq!(assert_not_found(r.get_version("m", 3), "version 3"), "registered model \"m\" has no version 3");
    assert_not_found(r.delete_version("m", 3), "no version 3");
    assert_eq!(r.create_version("m", version_of(&src)).unwrap().version, 4);
    r.delete_version("m", 4).unwrap();
    r.delete_version("m", 1).unwrap();
    assert_eq!(r.create_version("m", version_of(&src)).unwrap().version, 5);
    assert_eq!(r.get_model("m").unwrap().latest_version, Some(5));
    let live: Vec<u64> = r.search_versions("name = 'm'", 100, None).unwrap().items.iter().map(|v| v.version).collect();
    assert_eq!(live, [5, 2]);
    assert_not_found(r.get_version("m", 99), "no version 99");
}

#[test]
fn numbering_continues_after_deleting_and_recreating_the_model() {
    let (d, r) = setup();
    let src = tiny_file(d.path(), "tiny.gguf", 1);
    r.create_version("m", version_of(&src)).unwrap();
    r.create_version("m", version_of(&src)).unwrap();
    r.set_alias("m", "champion", 2).unwrap();
    r.set_model_tag("m", "k", "v").unwrap();
    r.delete_model("m").unwrap();
    assert_not_found(r.get_version("m", 1), "does not exist");
    assert!(r.search_versions("", 100, None).unwrap().items.is_empty());
    assert!(!r.home().join("artifacts/m").exists(), "deleting the model removes its artifacts");

    let v = r.create_version("m", version_of(&src)).unwrap();
    assert_eq!(v.version, 3);
    let m = r.get_model("m").unwrap();
    assert!(m.aliases.is_empty(), "aliases of the deleted model stay deleted");
    assert!(m.tags.is_empty(), "tags of the deleted model stay deleted");
    assert_eq!(m.latest_version, Some(3));
    assert_not_found(r.get_version("m", 2), "no version 2");
    r.create_model("other", None, &[]).unwrap();
    r.delete_model("other").unwrap();
    r.create_model("other", None, &[]).unwrap();
    assert_eq!(r.create_version("other", version_of(&src)).unwrap().version, 1);
}

#[test]
fn create_version_copies_a_file_source_and_records_everything() {
    let (d, r) = setup();
    let src = tiny_file(d.path(), "tiny.gguf", 7);
    let nv = NewVersion {
        description: Some("first".into()),
        tags: vec![("quant".into(), "Q4_1".into())],
        aliases: vec!["champion".into(), "candidate".into()],
        run_id: Some("run-1".into()),
        ..version_of(&src)
    };
    let v = r.create_version("tiny", nv).unwrap();
    assert_eq!(v.version, 1);
    assert_eq!(v.status, "READY");
    assert_eq!(v.description, "first");
    assert_eq!(v.run_id.as_deref(), Some("run-1"));
    assert_eq!(v.source, src.display().to_string());
    assert_eq!(v.artifact_dir, r.home().join("artifacts/tiny/1"));
    assert_eq!(v.model_path, v.artifact_dir.join("tiny.gguf"));
    assert_eq!(fs::read(&v.model_path).unwrap(), fs::read(&src).unwrap());
    assert_eq!(v.size_bytes, 4096);
    assert_eq!(v.sha256, Registry::digest_source(&src).unwrap());
    assert_eq!(v.sha256.len(), 64);
    assert_eq!(v.aliases, ["candidate", "champion"]);
    assert_eq!(v.info, common::info());
    assert!(fs::metadata(&v.model_path).unwrap().permissions().readonly(), "registered files are read-only");

    let got = r.get_version("tiny", 1).unwrap();
    assert_eq!(serde_json::to_value(&got).unwrap(), serde_json::to_value(&v).unwrap());
    let m = r.get_model("tiny").unwrap();
    assert_eq!(m.aliases.get("champion"), Some(&1));
    assert_eq!(m.latest_version, Some(1));
    r.verify(&got).unwrap();
    // The source is not touched, and changing it later does not change the version.
    fs::write(&src, b"changed").unwrap();
    r.verify(&got).unwrap();
    assert_ne!(Registry::digest_source(&src).unwrap(), got.sha256);
}

#[test]
fn update_version_changes_only_the_description() {
    let (d, r) = setup();
    let src = tiny_file(d.path(), "tiny.gguf", 1);
    let v = r.create_version("m", version_of(&src)).unwrap();
    let u = r.update_version("m", 1, "better words").unwrap();
    assert_eq!(u.description, "better words");
    assert!(u.last_updated_timestamp >= v.last_updated_timestamp);
    assert_eq!((u.sha256, u.creation_timestamp), (v.sha256, v.creation_timestamp));
    assert_not_found(r.update_version("m", 2, "x"), "no version 2");
}

#[test]
fn directory_sources_are_copied_recursively_under_model() {
    let (d, r) = setup();
    let src = d.path().join("hf-model");
    fs::create_dir_all(src.join("nested")).unwrap();
    fs::write(src.join("config.json"), br#"{"model_type": "llama"}"#).unwrap();
    tiny_file(&src, "model.safetensors", 3);
    tiny_file(&src.join("nested"), "extra.bin", 4);
    let v = r.create_version("hf", version_of(&src)).unwrap();
    assert_eq!(v.model_path, v.artifact_dir.join("model"));
    assert_eq!(fs::read(v.model_path.join("config.json")).unwrap(), fs::read(src.join("config.json")).unwrap());
    assert_eq!(
        fs::read(v.model_path.join("nested/extra.bin")).unwrap(),
        fs::read(src.join("nested/extra.bin")).unwrap()
    );
    assert_eq!(v.size_bytes, 2 * 4096 + 23);
    r.verify(&v).unwrap();
    assert_eq!(v.sha256, Registry::digest_source(&src).unwrap());

    let found = r.find_version_by_sha256("hf", &v.sha256).unwrap().unwrap();
    assert_eq!(found.version, 1);
    assert!(r.find_version_by_sha256("hf", "00").unwrap().is_none());
    assert!(r.find_version_by_sha256("absent", &v.sha256).unwrap().is_none());
    let v2 = r.create_version("hf", version_of(&src)).unwrap();
    assert_eq!(r.find_version_by_sha256("hf", &v.sha256).unwrap().unwrap().version, v2.version);
    r.delete_version("hf", 2).unwrap();
    r.delete_version("hf", 1).unwrap();
    assert!(r.find_version_by_sha256("hf", &v.sha256).unwrap().is_none());
}

#[test]
fn verify_detects_one_changed_byte_and_a_missing_file() {
    let (d, r) = setup();
    let src = tiny_file(d.path(), "tiny.gguf", 9);
    let v = r.create_version("m", version_of(&src)).unwrap();
    r.verify(&v).unwrap();

    fs::set_permissions(&v.model_path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&v.model_path).unwrap();
    bytes[1234] ^= 1;
    fs::write(&v.model_path, &bytes).unwrap();
    match r.verify(&v) {
        Err(e @ RegistryError::ChecksumMismatch { .. }) => {
            let RegistryError::ChecksumMismatch { path, expected, actual } = &e else { unreachable!() };
            assert_eq!(path, &v.model_path);
            assert_ne!(expected, actual);
            assert_eq!(e.http_status(), 500);
            assert!(e.to_string().contains("register the model again"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    fs::remove_file(&v.model_path).unwrap();
    match r.verify(&v) {
        Err(RegistryError::ChecksumMismatch { actual, .. }) => assert_eq!(actual, "no file"),
        other => panic!("{other:?}"),
    }
    // The MLmodel file is metadata, not covered by the manifest; a stray file is.
    let v2 = r.create_version("m", version_of(&src)).unwrap();
    fs::write(v2.artifact_dir.join("stray.bin"), b"x").unwrap();
    assert!(matches!(r.verify(&v2), Err(RegistryError::ChecksumMismatch { .. })));
    r.delete_version("m", 2).unwrap();
    assert_not_found(r.verify(&v2), "no version 2");
}

#[test]
fn mlmodel_and_input_example_are_written() {
    let (d, r) = setup();
    let src = tiny_file(d.path(), "tiny.gguf", 2);
    let v = r.create_version("main.default.tiny", version_of(&src)).unwrap();
    let text = fs::read_to_string(v.artifact_dir.join("MLmodel")).unwrap();
    let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(doc["flavors"]["llm"]["architecture"], "llama");
    assert_eq!(doc["flavors"]["llm"]["format"], "gguf");
    assert_eq!(doc["flavors"]["llm"]["dtype"], "Q4_1");
    assert_eq!(doc["flavors"]["llm"]["parameter_count"], 134_515_008);
    assert_eq!(doc["flavors"]["llm"]["context_length"], 8192);
    assert_eq!(doc["flavors"]["llm"]["model_file"], "tiny.gguf");
    assert_eq!(doc["signature"]["inputs"], r#"[{"type": "string", "name": "prompt"}]"#);
    assert_eq!(doc["signature"]["outputs"], r#"[{"type": "string"}]"#);
    assert_eq!(doc["saved_input_example_info"]["artifact_path"], "input_example.json");
    assert_eq!(doc["model_size_bytes"], 4096);
    assert_eq!(doc["source"], src.display().to_string());
    assert_eq!(doc["registered_model_name"], "main.default.tiny");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["sha256"], v.sha256.as_str());
    assert_eq!(doc["artifact_path"], "main.default.tiny/1");
    assert!(doc["utc_time_created"].as_str().unwrap().starts_with("20"));
    assert!(doc["keel_version"].is_string());
    let example: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(v.artifact_dir.join("input_example.json")).unwrap()).unwrap();
    assert_eq!(example, serde_json::json!({"prompt": "Hello"}));
}

#[test]
fn failed_registrations_leave_nothing_behind() {
    let (d, r) = setup();
    // A missing source: InvalidParameter naming the path, no model created.
    let missing = d.path().join("no-such-model.gguf");
    let msg = assert_invalid(r.create_version("m", version_of(&missing)), "does not exist");
    assert!(msg.contains("no-such-model.gguf"), "{msg}");
    assert_not_found(r.get_model("m"), "does not exist");

    // A bad alias or tag fails before any copy.
    let src = tiny_file(d.path(), "tiny.gguf", 1);
    let nv = NewVersion { aliases: vec!["latest".into()], ..version_of(&src) };
    assert_invalid(r.create_version("m", nv), "reserved");
    let nv = NewVersion { tags: vec![("k".into(), "v".repeat(5001))], ..version_of(&src) };
    assert_invalid(r.create_version("m", nv), "longer than 5000");
    assert_not_found(r.get_model("m"), "does not exist");

    // A failure inside the transaction (the model directory cannot be created because a
    // file sits there): the copy is removed and no row survives, not even the model.
    fs::write(r.home().join("artifacts/m"), b"in the way").unwrap();
    let err = r.create_version("m", version_of(&src)).unwrap_err();
    assert!(matches!(err, RegistryError::Io { .. }), "{err}");
    assert_eq!(staging_entries(r.home()), 0);
    assert_not_found(r.get_model("m"), "does not exist");
    fs::remove_file(r.home().join("artifacts/m")).unwrap();
    assert_eq!(r.create_version("m", version_of(&src)).unwrap().version, 1);
    assert_eq!(staging_entries(r.home()), 0);
}

#[test]
fn a_leftover_directory_at_the_next_number_is_cleared() {
    let (d, r) = setup();
    let src = tiny_file(d.path(), "tiny.gguf", 1);
    // What a registration that died between its rename and its commit leaves behind.
    let leftover = r.home().join("artifacts/m/1");
    fs::create_dir_all(&leftover).unwrap();
    fs::write(leftover.join("junk"), b"junk").unwrap();
    let v = r.create_version("m", version_of(&src)).unwrap();
    assert_eq!(v.version, 1);
    assert!(!leftover.join("junk").exists());
    r.verify(&v).unwrap();
}

#[test]
fn deleting_removes_artifacts() {
    let (d, r) = setup();
    let src = tiny_file(d.path(), "tiny.gguf", 1);
    let v1 = r.create_version("m", version_of(&src)).unwrap();
    let v2 = r.create_version("m", version_of(&src)).unwrap();
    r.delete_version("m", 1).unwrap();
    assert!(!v1.artifact_dir.exists());
    assert!(v2.artifact_dir.exists());
    r.delete_model("m").unwrap();
    assert!(!v2.artifact_dir.exists());
    assert!(!r.home().join("artifacts/m").exists());
}

#[test]
fn one_registry_is_shared_by_threads() {
    let (d, r) = setup();
    let src = tiny_file(d.path(), "tiny.gguf", 1);
    let mut versions: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| (0..3).map(|_| r.create_version("m", version_of(&src)).unwrap().version).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    versions.sort();
    assert_eq!(versions, (1..=12).collect::<Vec<_>>());
    r.check_integrity().unwrap();
}
