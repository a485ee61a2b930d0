//! End to end: the registry's MLflow REST API under `/api/2.0/mlflow/` on a real
//! `runtime serve` (SPEC §2, §3; README "Registry REST").
//!
//! Each test runs its own server on a loopback port with its own `$KEEL_HOME` (a scratch
//! directory). Checked: MLflow's paths, verbs, JSON shapes (versions as strings, tags as
//! `[{key, value}]`), error statuses and codes, paging, auth on these routes, and that the
//! CLI and a running server see one store.

mod serve_common;

use serde_json::{json, Value};
use serve_common::{scratch, tiny_str, Answer, Server};
use std::path::{Path, PathBuf};
use std::process::Command;

const API: &str = "/api/2.0/mlflow";

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(name).to_str().unwrap().to_string()
}

fn home(name: &str) -> PathBuf {
    let h = scratch(name);
    std::fs::create_dir_all(&h).expect("scratch home");
    h
}

/// `runtime serve --model <tiny fixture>` with `KEEL_HOME=home` (plus `env`), ready.
async fn serve(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let home = home.to_str().unwrap();
    let mut all_env = vec![("KEEL_HOME", home)];
    all_env.extend_from_slice(env);
    let tiny = tiny_str();
    let mut all_args = vec!["--model", tiny.as_str()];
    all_args.extend_from_slice(args);
    let s = Server::spawn_with_env(&all_args, &all_env);
    s.wait_ready().await;
    s
}

fn p(route: &str) -> String {
    format!("{API}/{route}")
}

/// `runtime registry ARGS` against `home`; asserts exit 0, returns stdout.
fn cli(home: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .arg("registry")
        .args(args)
        .env("KEEL_HOME", home)
        .output()
        .expect("runtime registry runs");
    assert!(out.status.success(), "runtime registry {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a 200 and returns the JSON body.
fn ok(a: Answer, what: &str) -> Value {
    assert_eq!(a.status, 200, "{what}: {}", a.text);
    assert!(a.json.is_object(), "{what}: not a JSON object: {}", a.text);
    a.json
}

/// Asserts MLflow's error shape, exactly `{"error_code", "message"}`; returns the message.
fn err(a: &Answer, status: u16, code: &str) -> String {
    let m = a.expect_error(status, code);
    let keys: Vec<&String> = a.json.as_object().expect("error object").keys().collect();
    assert_eq!(keys, ["error_code", "message"], "{}", a.text);
    assert!(!m.is_empty() && !m.contains('\n'), "{}", a.text);
    m
}

fn names(v: &Value, list: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} is a list: {v}"))
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_string())
        .collect()
}

fn versions(v: &Value) -> Vec<String> {
    v["model_versions"]
        .as_array()
        .unwrap_or_else(|| panic!("model_versions is a list: {v}"))
        .iter()
        .map(|m| m["version"].as_str().expect("version is a string").to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_by_key(|x| x.parse::<u64>().unwrap_or(u64::MAX));
    v
}

/// Every page of a GET search: the names (or versions) in order, and the page count.
async fn all_pages(s: &Server, route: &str, filter: &str, max_results: &str, list: &str) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = vec![("filter", filter), ("max_results", max_results)];
        if let Some(t) = &token {
            q.push(("page_token", t.as_str()));
        }
        let v = ok(s.get_query(&p(route), &q).await, route);
        pages += 1;
        assert!(pages <= 20, "{route}: paging does not end");
        let page: Vec<String> = if list == "model_versions" {
            v[list]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| format!("{}/{}", m["name"].as_str().unwrap(), m["version"].as_str().unwrap()))
                .collect()
        } else {
            names(&v, list)
        };
        assert!(page.len() <= max_results.parse().unwrap(), "{route}: page larger than max_results: {v}");
        out.extend(page);
        match v.get("next_page_token").and_then(Value::as_str) {
            Some(t) => token = Some(t.to_string()),
            None => return (out, pages),
        }
    }
}

/// `GET registered-models/alias?name=..&alias=..`.
async fn by_alias(s: &Server, name: &str, alias: &str) -> Answer {
    s.get_query(&p("registered-models/alias"), &[("name", name), ("alias", alias)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_models_create_get_update_search_tag_delete() {
    let h = home("rest-models");
    let s = serve(&h, &[], &[]).await;

    let v = ok(
        s.post(
            &p("registered-models/create"),
            &json!({"name": "m", "description": "first", "tags": [{"key": "team", "value": "nlp"}]}),
        )
        .await,
        "create",
    );
    let m = &v["registered_model"];
    assert_eq!(m["name"], "m");
    assert_eq!(m["description"], "first");
    assert_eq!(m["tags"], json!([{"key": "team", "value": "nlp"}]));
    assert_eq!(m["aliases"], json!([]));
    assert_eq!(m["latest_versions"], json!([]));
    assert!(m["creation_timestamp"].as_i64().is_some_and(|t| t > 0), "{m}");
    let msg = err(&s.post(&p("registered-models/create"), &json!({"name": "m"})).await, 409, "RESOURCE_ALREADY_EXISTS");
    assert!(msg.contains("\"m\""), "{msg}");

    let v = ok(s.get_query(&p("registered-models/get"), &[("name", "m")]).await, "get");
    assert_eq!(v["registered_model"]["name"], "m");
    assert_eq!(v["registered_model"]["description"], "first");
    let msg = err(&s.get_query(&p("registered-models/get"), &[("name", "nope")]).await, 404, "RESOURCE_DOES_NOT_EXIST");
    assert!(msg.contains("\"nope\""), "{msg}");

    let v = ok(s.patch(&p("registered-models/update"), &json!({"name": "m", "description": "second"})).await, "update");
    assert_eq!(v["registered_model"]["description"], "second");
    let v = ok(s.get_query(&p("registered-models/get"), &[("name", "m")]).await, "get");
    assert_eq!(v["registered_model"]["description"], "second");
    err(
        &s.patch(&p("registered-models/update"), &json!({"name": "nope", "description": "x"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );

    // Search: filter, max_results and page_token paging, ordered by name.
    for (name, team) in [("d", "cv"), ("a", "nlp"), ("c", "nlp"), ("b", "cv"), ("main.default.e", "nlp")] {
        let body = json!({"name": name, "tags": [{"key": "team", "value": team}]});
        ok(s.post(&p("registered-models/create"), &body).await, name);
    }
    let (all, pages) = all_pages(&s, "registered-models/search", "", "2", "registered_models").await;
    assert_eq!(all, ["a", "b", "c", "d", "m", "main.default.e"]);
    assert_eq!(pages, 3);
    let (nlp, pages) = all_pages(&s, "registered-models/search", "tags.team = 'nlp'", "2", "registered_models").await;
    assert_eq!(nlp, ["a", "c", "m", "main.default.e"]);
    assert_eq!(pages, 2);
    let (one, _) = all_pages(&s, "registered-models/search", "name='c'", "100", "registered_models").await;
    assert_eq!(one, ["c"]);
    let v = ok(s.get_query(&p("registered-models/search"), &[("filter", "name LIKE 'm%'")]).await, "LIKE");
    assert_eq!(names(&v, "registered_models"), ["m", "main.default.e"]);
    assert!(v.get("next_page_token").is_none(), "{v}");
    let v = ok(
        s.post(&p("registered-models/search"), &json!({"filter": "tags.team='cv'", "max_results": 1})).await,
        "POST",
    );
    assert_eq!(names(&v, "registered_models"), ["b"]);
    assert!(v["next_page_token"].as_str().is_some(), "{v}");
    for q in
        [[("max_results", "0")], [("max_results", "1001")], [("page_token", "not-a-token")], [("filter", "name ~ 'x'")]]
    {
        err(&s.get_query(&p("registered-models/search"), &q).await, 400, "INVALID_PARAMETER_VALUE");
    }

    // Tags: upsert; deleting a missing tag is fine; the model must exist.
    ok(s.post(&p("registered-models/set-tag"), &json!({"name": "m", "key": "owner", "value": "ana"})).await, "set");
    ok(s.post(&p("registered-models/set-tag"), &json!({"name": "m", "key": "owner", "value": "bo"})).await, "set");
    let v = ok(s.get_query(&p("registered-models/get"), &[("name", "m")]).await, "get");
    assert_eq!(
        v["registered_model"]["tags"],
        json!([{"key": "owner", "value": "bo"}, {"key": "team", "value": "nlp"}])
    );
    let v = ok(s.get_query(&p("registered-models/search"), &[("filter", "tags.owner='bo'")]).await, "search");
    assert_eq!(names(&v, "registered_models"), ["m"]);
    let v = ok(s.delete_json(&p("registered-models/delete-tag"), &json!({"name": "m", "key": "owner"})).await, "del");
    assert_eq!(v, json!({}));
    ok(s.delete_json(&p("registered-models/delete-tag"), &json!({"name": "m", "key": "owner"})).await, "del again");
    let v = ok(s.get_query(&p("registered-models/get"), &[("name", "m")]).await, "get");
    assert_eq!(v["registered_model"]["tags"], json!([{"key": "team", "value": "nlp"}]));
    err(
        &s.post(&p("registered-models/set-tag"), &json!({"name": "nope", "key": "k", "value": "v"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    err(
        &s.delete_json(&p("registered-models/delete-tag"), &json!({"name": "nope", "key": "k"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    err(
        &s.post(&p("registered-models/set-tag"), &json!({"name": "m", "key": "", "value": "v"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );

    // Delete.
    ok(s.delete_json(&p("registered-models/delete"), &json!({"name": "a"})).await, "delete");
    err(&s.get_query(&p("registered-models/get"), &[("name", "a")]).await, 404, "RESOURCE_DOES_NOT_EXIST");
    err(&s.delete_json(&p("registered-models/delete"), &json!({"name": "a"})).await, 404, "RESOURCE_DOES_NOT_EXIST");
    let (all, _) = all_pages(&s, "registered-models/search", "", "100", "registered_models").await;
    assert_eq!(all, ["b", "c", "d", "m", "main.default.e"]);
    // The name is free again.
    ok(s.post(&p("registered-models/create"), &json!({"name": "a"})).await, "re-create");
    let v = ok(s.get_query(&p("registered-models/get"), &[("name", "a")]).await, "get");
    assert_eq!(v["registered_model"]["tags"], json!([]), "a re-created model starts clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_versions_create_get_search_update_tag_delete() {
    let h = home("rest-versions");
    let s = serve(&h, &[], &[]).await;
    let a = fixture("llama_gqa_tied");
    let b = fixture("qwen2_bias");
    ok(s.post(&p("registered-models/create"), &json!({"name": "m"})).await, "create model");

    let v = ok(
        s.post(
            &p("model-versions/create"),
            &json!({"name": "m", "source": a, "description": "one", "tags": [{"key": "k", "value": "v"}], "run_id": "r1"}),
        )
        .await,
        "create v1",
    );
    let mv = &v["model_version"];
    assert_eq!(mv["name"], "m");
    assert_eq!(mv["version"], "1");
    assert_eq!(mv["source"], a.as_str());
    assert_eq!(mv["status"], "READY");
    assert_eq!(mv["description"], "one");
    assert_eq!(mv["run_id"], "r1");
    assert_eq!(mv["tags"], json!([{"key": "k", "value": "v"}]));
    assert_eq!(mv["aliases"], json!([]));
    assert_eq!(mv["keel_model_info"]["architecture"], "llama");
    let stored = PathBuf::from(mv["keel_artifact_path"].as_str().expect("artifact path"));
    assert!(stored.starts_with(&h) && stored.exists(), "copied into KEEL_HOME: {}", stored.display());
    let v = ok(s.post(&p("model-versions/create"), &json!({"name": "m", "source": b})).await, "create v2");
    assert_eq!(v["model_version"]["version"], "2");
    assert_eq!(v["model_version"]["keel_model_info"]["architecture"], "qwen2");
    assert_eq!(v["model_version"]["tags"], json!([]));

    let v = ok(s.get_query(&p("model-versions/get"), &[("name", "m"), ("version", "1")]).await, "get");
    assert_eq!(v["model_version"]["version"], "1");
    assert_eq!(v["model_version"]["source"], a.as_str());
    let v = ok(s.get_query(&p("model-versions/get"), &[("name", "m"), ("version", "2")]).await, "get");
    assert_eq!(v["model_version"]["source"], b.as_str());
    let v = ok(s.get_query(&p("registered-models/get"), &[("name", "m")]).await, "get model");
    assert_eq!(versions(&json!({"model_versions": v["registered_model"]["latest_versions"].clone()})), ["2"]);
    err(
        &s.get_query(&p("model-versions/get"), &[("name", "m"), ("version", "3")]).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    err(
        &s.get_query(&p("model-versions/get"), &[("name", "nope"), ("version", "1")]).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );

    // Search by name and by tag; paging.
    ok(s.post(&p("registered-models/create"), &json!({"name": "other"})).await, "create other");
    ok(
        s.post(
            &p("model-versions/create"),
            &json!({"name": "other", "source": b, "tags": [{"key": "k", "value": "v"}]}),
        )
        .await,
        "other",
    );
    let v = ok(s.get_query(&p("model-versions/search"), &[("filter", "name='m'")]).await, "search");
    assert_eq!(sorted(versions(&v)), ["1", "2"]);
    assert_eq!(names(&v, "model_versions"), ["m", "m"]);
    let v = ok(s.get_query(&p("model-versions/search"), &[("filter", "tags.k='v'")]).await, "search tag");
    let mut found: Vec<String> = v["model_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| format!("{}/{}", x["name"].as_str().unwrap(), x["version"].as_str().unwrap()))
        .collect();
    found.sort();
    assert_eq!(found, ["m/1", "other/1"]);
    let v = ok(s.get_query(&p("model-versions/search"), &[("filter", "name='m' and tags.k='v'")]).await, "search");
    assert_eq!(versions(&v), ["1"]);
    let v = ok(s.get_query(&p("model-versions/search"), &[("filter", "name='nope'")]).await, "search");
    assert_eq!(v["model_versions"], json!([]));
    let (mut all, pages) = all_pages(&s, "model-versions/search", "", "1", "model_versions").await;
    assert_eq!(pages, 3);
    all.sort();
    assert_eq!(all, ["m/1", "m/2", "other/1"]);
    let v =
        ok(s.post(&p("model-versions/search"), &json!({"filter": "name = 'm' AND version_number = 2"})).await, "POST");
    assert_eq!(versions(&v), ["2"]);

    // Update and tags.
    let v = ok(
        s.patch(&p("model-versions/update"), &json!({"name": "m", "version": "1", "description": "uno"})).await,
        "upd",
    );
    assert_eq!(v["model_version"]["description"], "uno");
    assert_eq!(v["model_version"]["version"], "1");
    let v = ok(s.get_query(&p("model-versions/get"), &[("name", "m"), ("version", "1")]).await, "get");
    assert_eq!(v["model_version"]["description"], "uno");
    err(
        &s.patch(&p("model-versions/update"), &json!({"name": "m", "version": "9", "description": "x"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    ok(
        s.post(&p("model-versions/set-tag"), &json!({"name": "m", "version": "2", "key": "stage", "value": "qa"}))
            .await,
        "tag",
    );
    ok(
        s.post(&p("model-versions/set-tag"), &json!({"name": "m", "version": 2, "key": "stage", "value": "prod"}))
            .await,
        "tag",
    );
    let v = ok(s.get_query(&p("model-versions/get"), &[("name", "m"), ("version", "2")]).await, "get");
    assert_eq!(v["model_version"]["tags"], json!([{"key": "stage", "value": "prod"}]));
    let v = ok(s.get_query(&p("model-versions/search"), &[("filter", "tags.stage='prod'")]).await, "search");
    assert_eq!(versions(&v), ["2"]);
    ok(
        s.delete_json(&p("model-versions/delete-tag"), &json!({"name": "m", "version": "2", "key": "stage"})).await,
        "del",
    );
    ok(
        s.delete_json(&p("model-versions/delete-tag"), &json!({"name": "m", "version": "2", "key": "stage"})).await,
        "again",
    );
    let v = ok(s.get_query(&p("model-versions/get"), &[("name", "m"), ("version", "2")]).await, "get");
    assert_eq!(v["model_version"]["tags"], json!([]));
    err(
        &s.post(&p("model-versions/set-tag"), &json!({"name": "m", "version": "9", "key": "a", "value": "b"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    err(
        &s.delete_json(&p("model-versions/delete-tag"), &json!({"name": "m", "version": "9", "key": "a"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );

    // Delete: gone, its number never handed out again.
    let v = ok(s.delete_json(&p("model-versions/delete"), &json!({"name": "m", "version": "2"})).await, "delete");
    assert_eq!(v, json!({}));
    err(
        &s.get_query(&p("model-versions/get"), &[("name", "m"), ("version", "2")]).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    err(
        &s.delete_json(&p("model-versions/delete"), &json!({"name": "m", "version": "2"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    let v = ok(s.get_query(&p("model-versions/search"), &[("filter", "name='m'")]).await, "search");
    assert_eq!(versions(&v), ["1"]);
    let v = ok(s.post(&p("model-versions/create"), &json!({"name": "m", "source": a})).await, "create v3");
    assert_eq!(v["model_version"]["version"], "3");

    // A source that is not a model: 400 naming `source`, nothing registered.
    let txt = scratch("notes.txt");
    std::fs::write(&txt, "plain text\n").unwrap();
    for bad in [txt.to_str().unwrap(), "/no/such/model"] {
        let m = err(
            &s.post(&p("model-versions/create"), &json!({"name": "m", "source": bad})).await,
            400,
            "INVALID_PARAMETER_VALUE",
        );
        assert!(m.contains("source"), "{m}");
    }
    let m = err(
        &s.post(&p("model-versions/create"), &json!({"name": "a/b", "source": a})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert!(m.contains("a/b"), "{m}");
    let v = ok(s.get_query(&p("model-versions/search"), &[("filter", "name='m'")]).await, "search");
    assert_eq!(sorted(versions(&v)), ["1", "3"]);

    // Deleting the model and registering again continues the numbering.
    ok(s.delete_json(&p("registered-models/delete"), &json!({"name": "m"})).await, "delete model");
    err(
        &s.get_query(&p("model-versions/get"), &[("name", "m"), ("version", "1")]).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    err(&s.post(&p("model-versions/create"), &json!({"name": "m", "source": b})).await, 404, "RESOURCE_DOES_NOT_EXIST");
    ok(s.post(&p("registered-models/create"), &json!({"name": "m"})).await, "create the model again");
    let v = ok(s.post(&p("model-versions/create"), &json!({"name": "m", "source": b})).await, "create v4");
    assert_eq!(v["model_version"]["version"], "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_latest_versions_and_bad_requests() {
    let h = home("rest-aliases");
    let s = serve(&h, &[], &[]).await;
    // As MLflow's REST API, a version needs its registered model to exist.
    let a = s.post(&p("model-versions/create"), &json!({"name": "m", "source": fixture("llama_gqa_tied")})).await;
    let msg = err(&a, 404, "RESOURCE_DOES_NOT_EXIST");
    assert!(msg.contains("\"m\""), "{msg}");
    // A wrong method is a JSON error too.
    let a = s.get_text(&p("registered-models/create")).await;
    assert_eq!(a.0, 405, "{}", a.1);
    assert_eq!(serve_common::parse(&a.1)["error_code"], "METHOD_NOT_ALLOWED", "{}", a.1);
    ok(s.post(&p("registered-models/create"), &json!({"name": "m"})).await, "create model");
    for src in [fixture("llama_gqa_tied"), fixture("llama_gguf_q")] {
        ok(s.post(&p("model-versions/create"), &json!({"name": "m", "source": src})).await, "create");
    }
    let alias = |name: &'static str, alias: &'static str| by_alias(&s, name, alias);

    let v = ok(
        s.post(&p("registered-models/alias"), &json!({"name": "m", "alias": "champion", "version": "1"})).await,
        "set",
    );
    assert_eq!(v, json!({}));
    let v = ok(alias("m", "champion").await, "get alias");
    assert_eq!(v["model_version"]["version"], "1");
    assert_eq!(v["model_version"]["aliases"], json!(["champion"]));
    // Set again: moves (version as a JSON number works too).
    ok(s.post(&p("registered-models/alias"), &json!({"name": "m", "alias": "champion", "version": 2})).await, "move");
    let v = ok(alias("m", "champion").await, "get alias");
    assert_eq!(v["model_version"]["version"], "2");
    assert_eq!(v["model_version"]["aliases"], json!(["champion"]));
    let v = ok(s.get_query(&p("model-versions/get"), &[("name", "m"), ("version", "1")]).await, "v1");
    assert_eq!(v["model_version"]["aliases"], json!([]), "moved away from v1");
    ok(
        s.post(&p("registered-models/alias"), &json!({"name": "m", "alias": "challenger", "version": "1"})).await,
        "set",
    );
    let v = ok(s.get_query(&p("registered-models/get"), &[("name", "m")]).await, "model");
    assert_eq!(
        v["registered_model"]["aliases"],
        json!([{"alias": "challenger", "version": "1"}, {"alias": "champion", "version": "2"}])
    );

    // Delete an alias; then it is gone.
    let v = ok(s.delete_json(&p("registered-models/alias"), &json!({"name": "m", "alias": "challenger"})).await, "del");
    assert_eq!(v, json!({}));
    let m = err(&alias("m", "challenger").await, 404, "RESOURCE_DOES_NOT_EXIST");
    assert!(m.contains("challenger"), "{m}");
    err(
        &s.delete_json(&p("registered-models/alias"), &json!({"name": "m", "alias": "challenger"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    err(&alias("nope", "champion").await, 404, "RESOURCE_DOES_NOT_EXIST");
    err(
        &s.post(&p("registered-models/alias"), &json!({"name": "m", "alias": "x", "version": "9"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );

    // Reserved and malformed aliases.
    for bad in ["latest", "v1", "V22"] {
        let m = err(
            &s.post(&p("registered-models/alias"), &json!({"name": "m", "alias": bad, "version": "1"})).await,
            400,
            "INVALID_PARAMETER_VALUE",
        );
        assert!(m.contains(bad) && m.contains("reserved"), "{m}");
    }
    err(
        &s.post(&p("registered-models/alias"), &json!({"name": "m", "alias": "a.b", "version": "1"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );

    // get-latest-versions: the highest live version.
    let v = ok(s.get_query(&p("registered-models/get-latest-versions"), &[("name", "m")]).await, "latest");
    assert_eq!(versions(&v), ["2"]);
    let v = ok(s.post(&p("registered-models/get-latest-versions"), &json!({"name": "m"})).await, "latest POST");
    assert_eq!(versions(&v), ["2"]);
    err(
        &s.get_query(&p("registered-models/get-latest-versions"), &[("name", "nope")]).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    // Deleting a version deletes its aliases; latest falls back.
    ok(s.delete_json(&p("model-versions/delete"), &json!({"name": "m", "version": "2"})).await, "delete v2");
    err(&alias("m", "champion").await, 404, "RESOURCE_DOES_NOT_EXIST");
    let v = ok(s.get_query(&p("registered-models/get-latest-versions"), &[("name", "m")]).await, "latest");
    assert_eq!(versions(&v), ["1"]);

    // Missing required fields: 400 naming the parameter.
    let missing: [(&str, Value, &str); 5] = [
        ("registered-models/create", json!({}), "name"),
        ("registered-models/create", json!({"name": ""}), "name"),
        ("model-versions/create", json!({"name": "m"}), "source"),
        ("registered-models/alias", json!({"name": "m", "alias": "x"}), "version"),
        ("registered-models/alias", json!({"name": "m", "version": "1"}), "alias"),
    ];
    for (route, body, field) in missing {
        let m = err(&s.post(&p(route), &body).await, 400, "INVALID_PARAMETER_VALUE");
        assert!(m.contains(&format!("'{field}'")), "{route} {body}: {m}");
    }
    let m = err(&s.get_query(&p("model-versions/get"), &[("name", "m")]).await, 400, "INVALID_PARAMETER_VALUE");
    assert!(m.contains("'version'"), "{m}");
    let m = err(&s.get_query(&p("registered-models/get"), &[]).await, 400, "INVALID_PARAMETER_VALUE");
    assert!(m.contains("'name'"), "{m}");
    // Wrong types and values.
    for bad in ["abc", "0", "-1", "1.5"] {
        let m = err(
            &s.get_query(&p("model-versions/get"), &[("name", "m"), ("version", bad)]).await,
            400,
            "INVALID_PARAMETER_VALUE",
        );
        assert!(m.contains("version"), "{bad}: {m}");
    }
    let m = err(&s.post(&p("registered-models/create"), &json!({"name": 5})).await, 400, "INVALID_PARAMETER_VALUE");
    assert!(m.contains("name"), "{m}");
    let m = err(
        &s.post(&p("registered-models/create"), &json!({"name": "t", "tags": "x"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert!(m.contains("tags"), "{m}");
    let m = err(
        &s.post(&p("registered-models/create"), &json!({"name": "bad/name"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert!(m.contains("bad/name"), "{m}");
    // Bodies that are not a JSON object.
    for body in ["{not json", "[1, 2]", "\"m\""] {
        let a = s.post_raw(&p("registered-models/create"), "application/json", body.as_bytes().to_vec()).await;
        let m = err(&a, 400, "BAD_REQUEST");
        assert!(m.contains("JSON"), "{body}: {m}");
    }
    // None of the refused calls created anything.
    let (all, _) = all_pages(&s, "registered-models/search", "", "100", "registered_models").await;
    assert_eq!(all, ["m"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_routes_need_the_bearer_token_when_keys_are_configured() {
    let h = home("rest-auth");
    let keys = scratch("keys");
    std::fs::write(&keys, "# registry tokens\ntok-file\n").unwrap();
    let s = serve(&h, &["--api-keys-file", keys.to_str().unwrap()], &[("KEEL_API_KEYS", "tok-env")]).await;

    let calls: Vec<(reqwest::Method, String, Value)> = vec![
        (reqwest::Method::POST, p("registered-models/create"), json!({"name": "m"})),
        (reqwest::Method::GET, p("registered-models/get?name=m"), json!(null)),
        (reqwest::Method::GET, p("registered-models/search"), json!(null)),
        (reqwest::Method::POST, p("model-versions/create"), json!({"name": "m", "source": fixture("llama_gguf_q")})),
        (reqwest::Method::GET, p("model-versions/search"), json!(null)),
        (reqwest::Method::GET, p("registered-models/alias?name=m&alias=a"), json!(null)),
        (reqwest::Method::DELETE, p("registered-models/delete"), json!({"name": "m"})),
    ];
    for token in [None, Some("wrong"), Some("tok-file2")] {
        for (method, path, body) in &calls {
            let mut rb = s.client.request(method.clone(), s.url(path));
            if !body.is_null() {
                rb = rb.json(body);
            }
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            let a = Answer::of(rb.send().await.expect("sent")).await;
            let m = err(&a, 401, "UNAUTHENTICATED");
            assert!(!m.contains("tok-"), "never echo a token: {m}");
        }
    }
    // 401 came before any work: nothing was created.
    let f = s.with_token("tok-file");
    let v = ok(f.get_query(&p("registered-models/search"), &[]).await, "search");
    assert_eq!(v["registered_models"], json!([]));
    // Both token sources work.
    ok(f.post(&p("registered-models/create"), &json!({"name": "m"})).await, "create with the file's token");
    let a = f.client.get(f.url(&p("registered-models/get?name=m"))).bearer_auth("tok-env").send().await.expect("sent");
    let v = ok(Answer::of(a).await, "get with KEEL_API_KEYS's token");
    assert_eq!(v["registered_model"]["name"], "m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_server_share_one_store() {
    let h = home("rest-cli");
    cli(&h, &["register", "--name", "m", "--path", &fixture("llama_gqa_tied"), "--alias", "champion"]);
    cli(&h, &["register", "--name", "m", "--path", &fixture("llama_gguf_q")]);
    let s = serve(&h, &[], &[]).await;
    let by_alias = || by_alias(&s, "m", "champion");

    let v = ok(by_alias().await, "alias");
    assert_eq!(v["model_version"]["version"], "1");
    // Moved by another process while the server runs: the next REST read sees it.
    cli(&h, &["alias", "set", "m", "champion", "2"]);
    let v = ok(by_alias().await, "alias after the CLI moved it");
    assert_eq!(v["model_version"]["version"], "2");
    assert_eq!(v["model_version"]["aliases"], json!(["champion"]));
    cli(&h, &["tag", "set", "m", "team=nlp"]);
    let v = ok(s.get_query(&p("registered-models/get"), &[("name", "m")]).await, "model");
    assert_eq!(v["registered_model"]["tags"], json!([{"key": "team", "value": "nlp"}]));
    cli(&h, &["delete", "m", "--version", "1"]);
    err(
        &s.get_query(&p("model-versions/get"), &[("name", "m"), ("version", "1")]).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );

    // And the other way: changes made over REST are what the CLI shows.
    let v =
        ok(s.post(&p("model-versions/create"), &json!({"name": "m", "source": fixture("qwen2_bias")})).await, "create");
    assert_eq!(v["model_version"]["version"], "3");
    ok(
        s.post(&p("registered-models/alias"), &json!({"name": "m", "alias": "champion", "version": "3"})).await,
        "alias",
    );
    let shown: Value = serde_json::from_str(&cli(&h, &["show", "m", "--version", "3", "--json"])).expect("JSON");
    assert_eq!(shown["model_version"]["aliases"], json!(["champion"]));
    assert_eq!(shown["model_version"]["keel_model_info"]["architecture"], "qwen2");
    let out = cli(&h, &["show", "m"]);
    assert!(out.contains("models:/m/3") && out.contains("models:/m/2") && !out.contains("models:/m/1 "), "{out}");
}
