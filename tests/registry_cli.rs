//! End to end: `runtime registry ...` and `runtime generate --model models:/...` on the real
//! binary (SPEC §1, §3; README "Commands").
//!
//! Every test gets its own `$KEEL_HOME` (a scratch directory), so tests are independent and
//! never touch `~/.cache/keel`. The store's own rules are unit-tested in `registry/tests`;
//! these tests check what a user of the command line sees: exit codes (0 / 2 bad input /
//! 1 runtime failure), one-line errors, MLflow-shaped `--json`, what `--model` references
//! resolve to, checksum verification before a load, and many CLI processes at once.

mod serve_common;

use serde_json::Value;
use serve_common::scratch;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(name)
}

fn fixture_str(name: &str) -> String {
    fixture(name).to_str().expect("utf-8 path").to_string()
}

/// A scratch `$KEEL_HOME` and the `runtime` binary run against it.
struct Keel {
    home: PathBuf,
}

impl Keel {
    fn new(name: &str) -> Keel {
        let home = scratch(name);
        std::fs::create_dir_all(&home).expect("scratch home");
        Keel { home }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_runtime"));
        c.args(args)
            .env("KEEL_HOME", &self.home)
            .env_remove("KEEL_LOG")
            // Plain names like `m` must not match a file in the working directory.
            .current_dir(&self.home)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("runtime runs")
    }

    /// Runs `args`, asserts exit 0, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(o.status.code(), Some(0), "runtime {args:?} failed:\n{}", text(&o.stderr));
        assert!(!text(&o.stderr).contains("panicked"), "runtime {args:?}: {}", text(&o.stderr));
        text(&o.stdout)
    }

    /// Runs `args` with `--json` output, asserts exit 0, parses stdout.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("runtime {args:?}: stdout is not JSON ({e}): {out}"))
    }

    /// Runs `args`, asserts exit `code` and a single stderr line (no panic) that contains
    /// every `needles`; returns that line.
    fn fails(&self, code: i32, args: &[&str], needles: &[&str]) -> String {
        let o = self.run(args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "runtime {args:?}: stdout {}\nstderr {err}", text(&o.stdout));
        assert!(!err.contains("panicked"), "runtime {args:?} panicked: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "runtime {args:?}: one line on stderr, got:\n{err}");
        for n in needles {
            assert!(lines[0].contains(n), "runtime {args:?}: stderr does not mention {n:?}: {err}");
        }
        lines[0].to_string()
    }

    /// `registry register --name NAME --path PATH EXTRA... --json` → the version number.
    fn register(&self, name: &str, path: &str, extra: &[&str]) -> Value {
        let mut args = vec!["registry", "register", "--name", name, "--path", path];
        args.extend_from_slice(extra);
        args.push("--json");
        let v = self.json(&args);
        assert!(v["model_version"].is_object(), "{v}");
        v["model_version"].clone()
    }

    fn show_version(&self, name: &str, version: u32) -> Value {
        let v = version.to_string();
        self.json(&["registry", "show", name, "--version", &v, "--json"])["model_version"].clone()
    }

    fn show_model(&self, name: &str) -> Value {
        self.json(&["registry", "show", name, "--json"])["registered_model"].clone()
    }

    /// Versions of `name` (as strings), sorted numerically, from `show --json`.
    fn versions(&self, name: &str) -> Vec<String> {
        let m = self.show_model(name);
        let mut vs: Vec<String> = m["keel_versions"]
            .as_array()
            .unwrap_or_else(|| panic!("keel_versions: {m}"))
            .iter()
            .map(|v| v["version"].as_str().expect("version string").to_string())
            .collect();
        vs.sort_by_key(|v| v.parse::<u64>().expect("numeric version"));
        vs
    }

    /// `generate --model M --prompt hi --max-tokens 3 --ignore-eos --json` → (stdout JSON, stderr).
    fn generate(&self, model: &str) -> (Value, String) {
        let args = [
            "generate",
            "--model",
            model,
            "--prompt",
            "hi",
            "--max-tokens",
            "3",
            "--ignore-eos",
            "--threads",
            "1",
            "--json",
        ];
        let o = self.run(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "runtime {args:?}: {err}");
        let out = text(&o.stdout);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{model}: not JSON ({e}): {out}"));
        assert!(v["text"].is_string(), "{model}: {v}");
        assert_eq!(v["completion_tokens"], 3, "{model}: {v}");
        (v, err)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tags(v: &Value) -> Vec<(String, String)> {
    v["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("tags is a list: {v}"))
        .iter()
        .map(|t| (t["key"].as_str().expect("key").to_string(), t["value"].as_str().expect("value").to_string()))
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn aliases(v: &Value) -> Vec<String> {
    v["aliases"]
        .as_array()
        .unwrap_or_else(|| panic!("aliases is a list: {v}"))
        .iter()
        .map(|a| a.as_str().expect("alias string").to_string())
        .collect()
}

/// `models:/N/V` lines in a text listing.
fn uris(out: &str) -> Vec<String> {
    out.split_whitespace().filter(|w| w.starts_with("models:/")).map(str::to_string).collect()
}

#[test]
fn register_list_show_and_search() {
    let k = Keel::new("cli-register");
    let v1 = k.register(
        "m",
        &fixture_str("llama_gqa_tied"),
        &["--tag", "team=nlp", "--tag", "owner=ana", "--alias", "champion", "--description", "first cut"],
    );
    // MLflow's shape: versions are strings, tags [{key, value}], aliases a list.
    assert_eq!(v1["name"], "m");
    assert_eq!(v1["version"], "1");
    assert_eq!(v1["status"], "READY");
    assert_eq!(v1["current_stage"], "None");
    assert_eq!(v1["description"], "first cut");
    assert_eq!(v1["source"], fixture_str("llama_gqa_tied"));
    assert_eq!(aliases(&v1), ["champion"]);
    assert_eq!(tags(&v1), pairs(&[("owner", "ana"), ("team", "nlp")]));
    assert_eq!(v1["keel_model_info"]["flavor"], "llm");
    assert_eq!(v1["keel_model_info"]["architecture"], "llama");
    assert_eq!(v1["keel_sha256"].as_str().map(str::len), Some(64), "{v1}");
    assert!(v1["creation_timestamp"].as_i64().is_some_and(|t| t > 0), "{v1}");
    // The stored copy is inside this KEEL_HOME, with an MLmodel file beside it.
    let stored = PathBuf::from(v1["keel_artifact_path"].as_str().expect("artifact path"));
    assert!(stored.starts_with(&k.home), "{} is outside KEEL_HOME", stored.display());
    assert!(stored.exists());
    assert!(k.home.join("artifacts/m/1/MLmodel").is_file());

    let v2 = k.register("m", &fixture_str("qwen2_bias"), &["--tag", "team=cv"]);
    assert_eq!(v2["version"], "2");
    assert_eq!(aliases(&v2), Vec::<String>::new());
    assert_eq!(tags(&v2), pairs(&[("team", "cv")]));
    assert_eq!(v2["keel_model_info"]["architecture"], "qwen2");
    let other = k.register("other.schema.model", &fixture_str("llama_gguf_q"), &[]);
    assert_eq!(other["version"], "1", "numbering is per model");

    // list: one line per model.
    let out = k.ok(&["registry", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("m ") && lines[0].contains("latest v2") && lines[0].contains("@champion=v1"), "{out}");
    assert!(lines[1].starts_with("other.schema.model ") && lines[1].contains("latest v1"), "{out}");
    let out = k.ok(&["registry", "list", "--filter", "name='m'"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("m "), "{out}");
    let listed = k.json(&["registry", "list", "--json"]);
    let names: Vec<&str> =
        listed["registered_models"].as_array().expect("list").iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["m", "other.schema.model"]);

    // show: the model and every version; show --version: just that one.
    let out = k.ok(&["registry", "show", "m"]);
    let mut seen = uris(&out);
    seen.sort();
    assert_eq!(seen, ["models:/m/1", "models:/m/2"], "{out}");
    assert!(!out.contains("other.schema.model"), "{out}");
    let out = k.ok(&["registry", "show", "m", "--version", "2"]);
    assert_eq!(uris(&out), ["models:/m/2"], "{out}");
    assert!(out.contains("qwen2") && out.contains("team=cv"), "{out}");
    assert_eq!(k.versions("m"), ["1", "2"]);
    let m = k.show_model("m");
    assert_eq!(m["name"], "m");
    assert_eq!(m["aliases"], serde_json::json!([{"alias": "champion", "version": "1"}]), "{m}");
    assert_eq!(k.show_version("m", 1)["description"], "first cut");

    // search: version tags and names, joined by AND.
    let out = k.ok(&["registry", "search", "--filter", "name='m' and tags.team='nlp'"]);
    assert_eq!(uris(&out), ["models:/m/1"], "{out}");
    let out = k.ok(&["registry", "search", "--filter", "name='m' AND tags.team='cv'"]);
    assert_eq!(uris(&out), ["models:/m/2"], "{out}");
    let out = k.ok(&["registry", "search", "--filter", "tags.team='nobody'"]);
    assert_eq!(uris(&out), Vec::<String>::new(), "{out}");
    let found = k.json(&["registry", "search", "--filter", "name='other.schema.model'", "--json"]);
    let found = found["model_versions"].as_array().expect("model_versions");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["name"], "other.schema.model");
    assert_eq!(found[0]["version"], "1");
    let everything = k.json(&["registry", "search", "--json"]);
    assert_eq!(everything["model_versions"].as_array().map(Vec::len), Some(3), "{everything}");
    // A malformed filter is the caller's mistake.
    k.fails(2, &["registry", "search", "--filter", "name ~ 'm'"], &[]);
}

#[test]
fn aliases_move_and_reserved_ones_are_refused() {
    let k = Keel::new("cli-alias");
    k.register("m", &fixture_str("llama_gqa_tied"), &["--alias", "champion"]);
    k.register("m", &fixture_str("qwen2_bias"), &[]);
    assert_eq!(aliases(&k.show_version("m", 1)), ["champion"]);

    let out = k.ok(&["registry", "alias", "set", "m", "champion", "2"]);
    assert!(out.contains("models:/m@champion -> version 2"), "{out}");
    assert_eq!(aliases(&k.show_version("m", 1)), Vec::<String>::new(), "the alias moved away from v1");
    assert_eq!(aliases(&k.show_version("m", 2)), ["champion"]);
    k.ok(&["registry", "alias", "set", "m", "challenger", "1"]);
    assert_eq!(
        k.show_model("m")["aliases"],
        serde_json::json!([{"alias": "challenger", "version": "1"}, {"alias": "champion", "version": "2"}])
    );

    k.ok(&["registry", "alias", "delete", "m", "champion"]);
    assert_eq!(aliases(&k.show_version("m", 2)), Vec::<String>::new());
    assert_eq!(aliases(&k.show_version("m", 1)), ["challenger"]);
    k.fails(2, &["registry", "alias", "delete", "m", "champion"], &["champion"]);

    // Reserved names: one line naming the alias; nothing changes.
    for reserved in ["latest", "v1", "V12", "LATEST"] {
        k.fails(2, &["registry", "alias", "set", "m", reserved, "1"], &[reserved, "reserved"]);
    }
    k.fails(2, &["registry", "alias", "set", "m", "bad.alias", "1"], &["bad.alias"]);
    let line = k.fails(
        2,
        &["registry", "register", "--name", "m", "--path", &fixture_str("llama_gqa_tied"), "--alias", "v3"],
        &["v3", "reserved"],
    );
    assert!(!line.contains("registered "), "{line}");
    assert_eq!(k.versions("m"), ["1", "2"], "a refused alias registers nothing");
    // Aliases on versions or models that do not exist.
    k.fails(2, &["registry", "alias", "set", "m", "champion", "7"], &["7"]);
    k.fails(2, &["registry", "alias", "set", "nope", "champion", "1"], &["nope"]);
    assert_eq!(k.show_model("m")["aliases"], serde_json::json!([{"alias": "challenger", "version": "1"}]));
}

#[test]
fn tags_on_models_and_versions() {
    let k = Keel::new("cli-tags");
    k.register("m", &fixture_str("llama_gqa_tied"), &["--tag", "team=nlp"]);

    k.ok(&["registry", "tag", "set", "m", "owner=ana"]);
    k.ok(&["registry", "tag", "set", "m", "domain=a=b"]);
    assert_eq!(tags(&k.show_model("m")), pairs(&[("domain", "a=b"), ("owner", "ana")]));
    k.ok(&["registry", "tag", "set", "m", "owner=bo"]);
    assert_eq!(tags(&k.show_model("m")), pairs(&[("domain", "a=b"), ("owner", "bo")]), "set again upserts");
    k.ok(&["registry", "tag", "delete", "m", "owner"]);
    assert_eq!(tags(&k.show_model("m")), pairs(&[("domain", "a=b")]));
    k.ok(&["registry", "tag", "delete", "m", "owner"]); // missing tag: a no-op
    assert_eq!(tags(&k.show_version("m", 1)), pairs(&[("team", "nlp")]), "model tags are not version tags");

    k.ok(&["registry", "tag", "set", "m", "team=cv", "--version", "1"]);
    k.ok(&["registry", "tag", "set", "m", "checked=", "--version", "1"]);
    assert_eq!(tags(&k.show_version("m", 1)), pairs(&[("checked", ""), ("team", "cv")]));
    k.ok(&["registry", "tag", "delete", "m", "team", "--version", "1"]);
    k.ok(&["registry", "tag", "delete", "m", "team", "--version", "1"]);
    assert_eq!(tags(&k.show_version("m", 1)), pairs(&[("checked", "")]));
    assert_eq!(tags(&k.show_model("m")), pairs(&[("domain", "a=b")]));

    // Mistakes: exit 2, one line.
    k.fails(2, &["registry", "tag", "set", "m", "k=v", "--version", "9"], &["9"]);
    k.fails(2, &["registry", "tag", "delete", "m", "k", "--version", "9"], &["9"]);
    k.fails(2, &["registry", "tag", "set", "nope", "k=v"], &["nope"]);
    let o = k.run(&["registry", "tag", "set", "m", "novalue"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("novalue"), "{}", text(&o.stderr));
}

#[test]
fn version_numbers_are_never_reused() {
    let k = Keel::new("cli-numbers");
    let src = fixture_str("llama_gguf_q");
    assert_eq!(k.register("m", &src, &[])["version"], "1");
    assert_eq!(k.register("m", &src, &["--alias", "champion"])["version"], "2");

    // Deleting the highest version does not free its number; its alias goes with it.
    let out = k.ok(&["registry", "delete", "m", "--version", "2"]);
    assert!(out.contains("models:/m/2"), "{out}");
    k.fails(2, &["registry", "show", "m", "--version", "2"], &["2"]);
    assert_eq!(k.show_model("m")["aliases"], serde_json::json!([]));
    assert!(!k.home.join("artifacts/m/2").exists(), "a deleted version's files are removed");
    assert_eq!(k.register("m", &src, &[])["version"], "3");
    k.ok(&["registry", "delete", "m", "--version", "1"]);
    assert_eq!(k.register("m", &src, &[])["version"], "4");
    assert_eq!(k.versions("m"), ["3", "4"]);
    k.fails(2, &["registry", "delete", "m", "--version", "1"], &["1"]);

    // Deleting the model: gone from list and show; a new model of that name continues.
    k.ok(&["registry", "delete", "m"]);
    k.fails(2, &["registry", "show", "m"], &["\"m\""]);
    assert_eq!(k.json(&["registry", "list", "--json"])["registered_models"], serde_json::json!([]));
    k.fails(2, &["registry", "delete", "m"], &["\"m\""]);
    assert_eq!(k.register("m", &src, &[])["version"], "5");
    assert_eq!(k.versions("m"), ["5"]);
}

#[test]
fn bad_input_exits_2_and_registers_nothing() {
    let k = Keel::new("cli-bad");
    let good = fixture_str("llama_gqa_tied");
    let not_a_model = k.home.join("notes.txt");
    std::fs::write(&not_a_model, "just some text\n").unwrap();
    let not_a_model = not_a_model.to_str().unwrap().to_string();
    let empty_dir = k.home.join("empty");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let empty_dir = empty_dir.to_str().unwrap().to_string();

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--name", "a/b", "--path", &good], vec!["a/b", "'/'"]),
        (vec!["--name", "../escape", "--path", &good], vec!["../escape"]),
        (vec!["--name", "a..b", "--path", &good], vec!["a..b", "'..'"]),
        (vec!["--name", ".hidden", "--path", &good], vec![".hidden"]),
        (vec!["--name", "sp ace", "--path", &good], vec!["sp ace"]),
        (vec!["--name", "m", "--path", "/no/such/model/dir"], vec!["/no/such/model/dir"]),
        (vec!["--name", "m", "--path", &not_a_model], vec![&not_a_model, "not a model"]),
        (vec!["--name", "m", "--path", &empty_dir], vec![&empty_dir]),
    ];
    for (extra, needles) in &cases {
        let mut args = vec!["registry", "register"];
        args.extend_from_slice(extra);
        k.fails(2, &args, needles);
    }
    // Argument errors are clap's usage errors (exit 2) naming the argument.
    let usage: [(&[&str], &str); 2] = [
        (&["registry", "register", "--name", "m"], "--path"),
        (&["registry", "register", "--name", "m", "--path", &good, "--tag", "=v"], "=v"),
    ];
    for (args, needle) in usage {
        let o = k.run(args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("error:") && err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    // Nothing was registered, and nothing was left in the artifact store.
    assert_eq!(k.json(&["registry", "list", "--json"])["registered_models"], serde_json::json!([]));
    assert_eq!(k.json(&["registry", "search", "--json"])["model_versions"], serde_json::json!([]));
    let left: Vec<_> = walk(&k.home.join("artifacts")).into_iter().filter(|p| p.is_file()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    let out = k.run(&["registry", "list"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).is_empty());
    assert!(text(&out.stderr).contains("no registered models"), "{}", text(&out.stderr));

    // Unknown models and versions.
    k.fails(2, &["registry", "show", "nope"], &["\"nope\"", "does not exist"]);
    k.register("m", &good, &[]);
    k.fails(2, &["registry", "show", "m", "--version", "2"], &["\"m\"", "2"]);
    k.fails(2, &["registry", "alias", "set", "m", "champion", "2"], &["\"m\"", "2"]);
    k.fails(2, &["registry", "delete", "nope"], &["\"nope\""]);
    assert_eq!(k.versions("m"), ["1"]);
}

/// Every path under `dir` (files and directories), empty if it does not exist.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn generate_resolves_every_kind_of_model_reference() {
    let k = Keel::new("cli-generate");
    let a = fixture_str("llama_gqa_tied");
    let b = fixture_str("qwen2_bias");
    k.register("m", &a, &["--alias", "champion"]);
    k.register("m", &b, &[]);
    // What each fixture generates when named by path: the reference must reach the same files.
    let (ga, _) = k.generate(&a);
    let (gb, _) = k.generate(&b);
    let ids = |v: &Value| v["completion_ids"].clone();
    assert_ne!(ids(&ga), ids(&gb), "the two fixtures must be told apart by their output");

    for (model, want) in [("models:/m@champion", &ga), ("models:/m/1", &ga), ("models:/m/latest", &gb), ("m", &gb)] {
        let (got, err) = k.generate(model);
        assert_eq!(ids(&got), ids(want), "{model} resolved to the wrong version");
        assert_eq!(got["text"], want["text"], "{model}");
        assert!(!err.contains("deprecated"), "{model}: {err}");
    }
    // Without the alias: exit 2 naming it (after the deprecation note).
    let o = k.run(&["generate", "--model", "models:/m/Production", "--prompt", "hi"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.lines().last().is_some_and(|l| l.starts_with("error:") && l.contains("\"production\"")), "{err}");

    // Deprecated stage URIs resolve through the lower-case alias, with a note on stderr.
    k.ok(&["registry", "alias", "set", "m", "production", "2"]);
    let (got, err) = k.generate("models:/m/Production");
    assert_eq!(ids(&got), ids(&gb));
    assert!(err.contains("deprecated") && err.contains("models:/m@production"), "{err}");
    k.ok(&["registry", "alias", "set", "m", "champion", "2"]);
    assert_eq!(ids(&k.generate("models:/m@champion").0), ids(&gb), "the alias moved");

    let gen = |m: &'static str| -> Vec<&'static str> { vec!["generate", "--model", m, "--prompt", "hi"] };
    k.fails(2, &gen("models:/m/Archived"), &["Archived"]);
    k.fails(2, &gen("models:/nope@x"), &["\"nope\""]);
    k.fails(2, &gen("models:/m@nope"), &["nope"]);
    k.fails(2, &gen("models:/m/9"), &["9"]);
    k.fails(2, &gen("models:/m@latest"), &["models:/m/latest"]);
    k.fails(2, &gen("nope"), &["nope", "registry"]);
}

/// The weights file of a stored version (`keel_artifact_path` is a file, or a directory).
fn weights_file(path: &Path) -> PathBuf {
    if path.is_file() {
        return path.to_path_buf();
    }
    walk(path)
        .into_iter()
        .find(|p| p.extension().is_some_and(|x| x == "gguf" || x == "safetensors"))
        .unwrap_or_else(|| panic!("no weights under {}", path.display()))
}

fn flip_a_byte(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(file).unwrap().permissions();
    assert!(perms.readonly(), "stored files are read-only: {}", file.display());
    perms.set_mode(perms.mode() | 0o200);
    std::fs::set_permissions(file, perms).unwrap();
    let mut bytes = std::fs::read(file).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_corrupted_version_fails_its_checksum_and_others_still_load() {
    let k = Keel::new("cli-checksum");
    k.register("m", &fixture_str("llama_gguf_q"), &[]);
    k.register("m", &fixture_str("llama_gqa_tied"), &[]);
    k.register("m", &fixture_str("llama_gguf_q/model.gguf"), &["--alias", "champion"]);
    for v in [1, 2, 3] {
        let stored = PathBuf::from(k.show_version("m", v)["keel_artifact_path"].as_str().expect("path").to_string());
        let w = weights_file(&stored);
        if v == 3 {
            assert_eq!(w, stored, "a file source is stored as that file");
        }
        if v != 2 {
            flip_a_byte(&w);
        }
    }
    for model in ["models:/m/1", "models:/m@champion"] {
        let line = k.fails(
            1,
            &["generate", "--model", model, "--prompt", "hi", "--max-tokens", "3", "--threads", "1"],
            &[model, "checksum"],
        );
        assert!(line.contains("register the model again"), "says what to do: {line}");
    }
    k.generate("models:/m/2");
    // Following the advice repairs it.
    k.ok(&["registry", "delete", "m", "--version", "3"]);
    assert_eq!(k.register("m", &fixture_str("llama_gguf_q/model.gguf"), &["--alias", "champion"])["version"], "4");
    k.generate("models:/m@champion");
}

#[test]
fn concurrent_register_processes_get_distinct_numbers() {
    const N: u64 = 6;
    let k = Keel::new("cli-concurrent");
    let src = fixture_str("llama_gguf_q");
    // Nobody has opened this home yet: the processes also race to create the database.
    let children: Vec<_> = (0..N)
        .map(|i| {
            let tag = format!("writer={i}");
            k.cmd(&["registry", "register", "--name", "m", "--path", &src, "--tag", &tag, "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("runtime starts")
        })
        .collect();
    let mut got = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().expect("runtime runs");
        assert_eq!(o.status.code(), Some(0), "writer {i}: {}", text(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).expect("--json output");
        let w = i.to_string();
        assert_eq!(tags(&v["model_version"]), pairs(&[("writer", w.as_str())]));
        got.push(v["model_version"]["version"].as_str().expect("version").parse::<u64>().unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (1..=N).collect::<Vec<_>>(), "each process got its own number");

    let all: Vec<String> = (1..=N).map(|v| v.to_string()).collect();
    assert_eq!(k.versions("m"), all);
    let found = k.json(&["registry", "search", "--filter", "name='m'", "--json"]);
    let found = found["model_versions"].as_array().expect("model_versions");
    assert_eq!(found.len(), N as usize);
    // Same source, same digest: every copy is whole.
    let digests: std::collections::BTreeSet<&str> = found.iter().map(|v| v["keel_sha256"].as_str().unwrap()).collect();
    assert_eq!(digests.len(), 1, "{digests:?}");
    assert_eq!(k.show_model("m")["aliases"], serde_json::json!([]));
    k.generate(&format!("models:/m/{N}"));
}
