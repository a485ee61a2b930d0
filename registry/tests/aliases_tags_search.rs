//! Aliases, tags, `models:/` resolution and search through the public API.

mod common;

use common::{assert_invalid, assert_not_found, tiny_file, version_of};
use keel_registry::{ModelUri, NewVersion, Registry};

fn setup_with_versions(name: &str, n: usize) -> (tempfile::TempDir, Registry) {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(&d.path().join("home")).unwrap();
    let src = tiny_file(d.path(), "tiny.gguf", 1);
    for _ in 0..n {
        r.create_version(name, version_of(&src)).unwrap();
    }
    (d, r)
}

#[test]
fn aliases_point_move_and_resolve() {
    let (_d, r) = setup_with_versions("m", 3);
    r.set_alias("m", "champion", 1).unwrap();
    assert_eq!(r.get_version_by_alias("m", "champion").unwrap().version, 1);
    assert_eq!(r.get_version("m", 1).unwrap().aliases, ["champion"]);
    // Setting it again moves it.
    r.set_alias("m", "champion", 3).unwrap();
    assert_eq!(r.get_version_by_alias("m", "champion").unwrap().version, 3);
    assert!(r.get_version("m", 1).unwrap().aliases.is_empty());
    r.set_alias("m", "b-2", 3).unwrap();
    assert_eq!(r.get_version("m", 3).unwrap().aliases, ["b-2", "champion"]);
    let m = r.get_model("m").unwrap();
    assert_eq!(m.aliases.into_iter().collect::<Vec<_>>(), [("b-2".to_string(), 3), ("champion".to_string(), 3)]);

    r.delete_alias("m", "b-2").unwrap();
    assert_eq!(assert_not_found(r.delete_alias("m", "b-2"), "b-2"), "registered model \"m\" has no alias \"b-2\"");
    assert_not_found(r.get_version_by_alias("m", "b-2"), "no alias");
    assert_not_found(r.get_version_by_alias("nope", "champion"), "does not exist");
}

#[test]
fn alias_rules() {
    let (_d, r) = setup_with_versions("m", 2);
    for reserved in ["latest", "Latest", "v1", "V12"] {
        assert_invalid(r.set_alias("m", reserved, 1), "is reserved");
    }
    assert_eq!(
        assert_invalid(r.set_alias("m", "latest", 1), "reserved"),
        "alias \"latest\" is reserved ('latest' and 'v<number>' name versions, not aliases)"
    );
    for bad in ["", "a.b", "a b", &"a".repeat(256)] {
        assert_invalid(r.set_alias("m", bad, 1), "invalid alias");
    }
    r.set_alias("m", &"a".repeat(255), 1).unwrap();
    assert_not_found(r.set_alias("m", "x", 7), "no version 7");
    assert_not_found(r.set_alias("nope", "x", 1), "does not exist");
    r.delete_version("m", 2).unwrap();
    assert_not_found(r.set_alias("m", "x", 2), "no version 2");
}

#[test]
fn deleting_a_version_deletes_its_aliases() {
    let (_d, r) = setup_with_versions("m", 2);
    r.set_alias("m", "champion", 2).unwrap();
    r.set_alias("m", "backup", 1).unwrap();
    r.delete_version("m", 2).unwrap();
    assert_not_found(r.get_version_by_alias("m", "champion"), "no alias \"champion\"");
    assert_eq!(r.get_model("m").unwrap().aliases.keys().collect::<Vec<_>>(), ["backup"]);
    // A new version with the alias in its NewVersion takes it over in the same transaction.
    let d = tempfile::tempdir().unwrap();
    let src = tiny_file(d.path(), "t.gguf", 5);
    let nv = NewVersion { aliases: vec!["backup".into()], ..version_of(&src) };
    let v3 = r.create_version("m", nv).unwrap();
    assert_eq!(v3.version, 3);
    assert_eq!(r.get_version_by_alias("m", "backup").unwrap().version, 3);
    assert!(r.get_version("m", 1).unwrap().aliases.is_empty());
}

#[test]
fn tags_upsert_and_delete_as_no_op() {
    let (_d, r) = setup_with_versions("m", 1);
    r.set_model_tag("m", "task", "chat").unwrap();
    r.set_model_tag("m", "task", "code").unwrap();
    assert_eq!(r.get_model("m").unwrap().tags.get("task").map(String::as_str), Some("code"));
    r.delete_model_tag("m", "task").unwrap();
    r.delete_model_tag("m", "task").unwrap(); // missing tag: no-op
    assert!(r.get_model("m").unwrap().tags.is_empty());
    assert_not_found(r.set_model_tag("nope", "k", "v"), "does not exist");
    assert_not_found(r.delete_model_tag("nope", "k"), "does not exist");

    r.set_version_tag("m", 1, "key.with.dots", "a").unwrap();
    r.set_version_tag("m", 1, "key.with.dots", "b").unwrap();
    assert_eq!(r.get_version("m", 1).unwrap().tags.get("key.with.dots").map(String::as_str), Some("b"));
    r.delete_version_tag("m", 1, "key.with.dots").unwrap();
    r.delete_version_tag("m", 1, "key.with.dots").unwrap();
    assert!(r.get_version("m", 1).unwrap().tags.is_empty());
    assert_not_found(r.set_version_tag("m", 2, "k", "v"), "no version 2");
    assert_not_found(r.delete_version_tag("m", 2, "k"), "no version 2");

    assert_invalid(r.set_model_tag("m", "", "v"), "must not be empty");
    assert_invalid(r.set_model_tag("m", &"k".repeat(251), "v"), "longer than 250");
    assert_invalid(r.set_version_tag("m", 1, "k", &"v".repeat(5001)), "longer than 5000");
    r.set_version_tag("m", 1, &"k".repeat(250), &"v".repeat(5000)).unwrap();
}

#[test]
fn uris_resolve() {
    let (_d, r) = setup_with_versions("m", 3);
    r.set_alias("m", "champion", 2).unwrap();
    let resolve = |s: &str| r.resolve(&ModelUri::parse(s).unwrap());
    assert_eq!(resolve("models:/m/1").unwrap().version, 1);
    assert_eq!(resolve("models:/m@champion").unwrap().version, 2);
    assert_eq!(resolve("models:/m/latest").unwrap().version, 3);
    r.delete_version("m", 3).unwrap();
    assert_eq!(resolve("models:/m/latest").unwrap().version, 2, "latest is the highest live version");
    assert_not_found(resolve("models:/m/3"), "no version 3");
    assert_not_found(resolve("models:/m@nope"), "no alias \"nope\"");
    assert_not_found(resolve("models:/other/latest"), "does not exist");

    r.set_alias("m", "production", 1).unwrap();
    assert_eq!(resolve("models:/m/Production").unwrap().version, 1);
    let msg = assert_not_found(resolve("models:/m/Staging"), "no alias \"staging\"");
    assert!(msg.contains("models:/m/Staging"), "{msg}");
    r.set_alias("m", "staging", 2).unwrap();
    assert_eq!(resolve("models:/m/staging").unwrap().version, 2);

    r.delete_version("m", 2).unwrap();
    r.delete_version("m", 1).unwrap();
    assert_eq!(assert_not_found(resolve("models:/m/latest"), "no versions"), "registered model \"m\" has no versions");
}

/// The deprecation note goes to stderr: checked in a child process running this test binary.
#[test]
fn stage_uris_print_one_deprecation_note() {
    if let Ok(home) = std::env::var("KEEL_REGISTRY_STAGE_CHILD") {
        let r = Registry::open(std::path::Path::new(&home)).unwrap();
        let v = r.resolve(&ModelUri::parse("models:/m/Production").unwrap()).unwrap();
        println!("resolved version {}", v.version);
        return;
    }
    let (d, r) = setup_with_versions("m", 2);
    r.set_alias("m", "production", 2).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "stage_uris_print_one_deprecation_note", "--nocapture", "--test-threads=1"])
        .env("KEEL_REGISTRY_STAGE_CHILD", d.path().join("home"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("resolved version 2"), "{stdout}");
    let notes: Vec<&str> = stderr.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(
        notes,
        ["note: models:/m/Production is a deprecated stage URI; resolving alias @production (use models:/m@production)"]
    );
}

#[test]
fn search_models_filters_orders_and_pages() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(&d.path().join("home")).unwrap();
    for (name, task) in [("llama-b", "chat"), ("qwen", "code"), ("llama-a", "chat"), ("Llama-c", "base")] {
        r.create_model(name, None, &[("task".into(), task.into()), ("a.b".into(), name.into())]).unwrap();
    }
    r.create_model("gone", None, &[]).unwrap();
    r.delete_model("gone").unwrap();
    let names = |filter: &str| -> Vec<String> {
        r.search_models(filter, 100, None).unwrap().items.into_iter().map(|m| m.name).collect()
    };
    assert_eq!(names(""), ["Llama-c", "llama-a", "llama-b", "qwen"]);
    assert_eq!(names("name LIKE 'llama%'"), ["llama-a", "llama-b"]);
    assert_eq!(names("name ILIKE 'llama%'"), ["Llama-c", "llama-a", "llama-b"]);
    assert_eq!(names("name = 'qwen'"), ["qwen"]);
    assert_eq!(names("name != 'qwen'"), ["Llama-c", "llama-a", "llama-b"]);
    assert_eq!(names("tags.task = 'chat'"), ["llama-a", "llama-b"]);
    assert_eq!(names("tags.task = 'chat' AND name LIKE '%-b'"), ["llama-b"]);
    assert_eq!(names("tags.`a.b` = 'qwen'"), ["qwen"]);
    assert!(names("name = 'gone'").is_empty());

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = r.search_models("", 3, token.as_deref()).unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().map(|m| m.name));
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, names(""));

    assert_invalid(r.search_models("owner = 'me'", 10, None), "unknown key");
    assert_invalid(r.search_models("version_number = 1", 10, None), "unknown key");
    assert_invalid(r.search_models("", 0, None), "max_results");
    assert_invalid(r.search_models("", 1001, None), "max_results");
    assert_invalid(r.search_models("", 10, Some("not-a-token")), "page_token");
}

#[test]
fn search_versions_filters_orders_and_pages() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(&d.path().join("home")).unwrap();
    let src = tiny_file(d.path(), "tiny.gguf", 1);
    for (name, n) in [("b", 3), ("a", 2)] {
        for i in 0..n {
            let nv = NewVersion {
                tags: vec![("parity".into(), if i % 2 == 0 { "odd" } else { "even" }.into())],
                run_id: Some(format!("run-{name}{i}")),
                ..version_of(&src)
            };
            r.create_version(name, nv).unwrap();
        }
    }
    r.delete_version("b", 2).unwrap();
    let keys = |filter: &str| -> Vec<(String, u64)> {
        r.search_versions(filter, 100, None).unwrap().items.into_iter().map(|v| (v.name, v.version)).collect()
    };
    let k = |n: &str, v: u64| (n.to_string(), v);
    assert_eq!(keys(""), [k("a", 2), k("a", 1), k("b", 3), k("b", 1)]);
    assert_eq!(keys("name = 'b'"), [k("b", 3), k("b", 1)]);
    assert_eq!(keys("name='b' AND version_number > 1"), [k("b", 3)]);
    assert_eq!(keys("version_number <= 1"), [k("a", 1), k("b", 1)]);
    assert_eq!(keys("version = '2'"), [k("a", 2)]);
    assert_eq!(keys("tags.parity = 'odd'"), [k("a", 1), k("b", 3), k("b", 1)]);
    assert_eq!(keys("tags.parity != 'odd'"), [k("a", 2)]);
    assert_eq!(keys("run_id = 'run-b2'"), [k("b", 3)]);
    assert_eq!(keys("run_id LIKE 'run-a%'"), [k("a", 2), k("a", 1)]);
    assert_eq!(keys("source_path LIKE '%tiny.gguf'").len(), 4);

    let first = r.search_versions("", 3, None).unwrap();
    assert_eq!(first.items.len(), 3);
    let token = first.next_page_token.expect("a second page");
    let second = r.search_versions("", 3, Some(&token)).unwrap();
    assert_eq!(second.items.iter().map(|v| (v.name.clone(), v.version)).collect::<Vec<_>>(), [k("b", 1)]);
    assert_eq!(second.next_page_token, None);

    assert_invalid(r.search_versions("version_number LIKE '1'", 10, None), "version_number takes");
    assert_invalid(r.search_versions("name = 'a' OR name = 'b'", 10, None), "expected AND");
    assert_invalid(r.search_versions("", 10, Some("x")), "page_token");
}
