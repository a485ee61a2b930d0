//! End-to-end: `runtime batch` on the real binary with a tiny fixture model and Parquet
//! inputs written here (SPEC §5): output rows and columns, per-row errors, usage errors
//! (exit 2), shards, resume after `kill -9`, refusal to mix arguments, directory input.

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Float64Array, Int64Array, RecordBatch, RecordBatchReader, StringArray,
};
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn tiny() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llama_gqa_tied").to_str().expect("utf8").into()
}

/// A fresh directory for one test (also its KEEL_HOME, so no test touches the user's).
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("keel-batch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn cmd(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runtime"));
    c.arg("batch").args(args).env("KEEL_HOME", home).env_remove("KEEL_LOG");
    c
}

fn run(home: &Path, args: &[&str]) -> Output {
    cmd(home, args).output().expect("runtime runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let mut w = ArrowWriter::try_new(File::create(path).expect("create"), batch.schema(), None).expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
}

fn read_parquet(path: &Path) -> RecordBatch {
    let r = ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("open output"))
        .expect("parquet")
        .build()
        .expect("reader");
    let schema = r.schema();
    let batches: Vec<RecordBatch> = r.map(|b| b.expect("batch")).collect();
    arrow::compute::concat_batches(&schema, &batches).expect("concat")
}

const WORDS: [&str; 12] = ["the", "cat", "sat", "on", "a", "mat", "and", "looked", "at", "one", "small", "bird"];

/// A short document that differs per row.
fn doc(i: usize) -> String {
    (0..4 + i % 5).map(|k| WORDS[(i * 7 + k * 3) % WORDS.len()]).collect::<Vec<_>>().join(" ")
}

/// `n` rows: `id` (Int64, from `first`), `text` (Utf8), `score` (Float64).
fn docs(first: usize, n: usize) -> RecordBatch {
    let ids: Int64Array = (first..first + n).map(|i| i as i64).collect();
    let text: StringArray = (first..first + n).map(|i| Some(doc(i))).collect();
    let score: Float64Array = (first..first + n).map(|i| i as f64 / 2.0).collect();
    RecordBatch::try_from_iter([
        ("id", Arc::new(ids) as ArrayRef),
        ("text", Arc::new(text) as ArrayRef),
        ("score", Arc::new(score) as ArrayRef),
    ])
    .expect("batch")
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    b.column_by_name(name).unwrap_or_else(|| panic!("output has no column {name}"))
}

fn ids(b: &RecordBatch) -> Vec<i64> {
    col(b, "id").as_primitive::<Int64Type>().values().to_vec()
}

/// id → generated text.
fn texts(b: &RecordBatch) -> BTreeMap<i64, Option<String>> {
    let t = col(b, "generated_text").as_string::<i32>();
    ids(b).into_iter().enumerate().map(|(i, id)| (id, (!t.is_null(i)).then(|| t.value(i).to_string()))).collect()
}

fn summary(o: &Output) -> Value {
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {out}"))
}

/// Polls until `parts` holds a finished part file, while `child` keeps running.
fn wait_for_a_part(child: &mut std::process::Child, parts: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let has_part = || {
        std::fs::read_dir(parts).ok().is_some_and(|rd| {
            rd.filter_map(|e| e.ok()).any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("part-") && n.ends_with(".parquet")
            })
        })
    };
    while !has_part() {
        assert!(child.try_wait().expect("wait").is_none(), "the job ended before writing a part");
        assert!(Instant::now() < deadline, "no part after 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.try_wait().expect("wait").is_none(), "the job finished before it could be killed; make it slower");
}

#[test]
fn output_has_every_row_in_order_with_input_columns_and_results() {
    let d = scratch("basic");
    let (input, output) = (d.join("in.parquet"), d.join("out.parquet"));
    let batch = docs(0, 40);
    write_parquet(&input, &batch);
    let m = tiny();
    let o = run(
        &d,
        &[
            "--input",
            s(&input),
            "--output",
            s(&output),
            "--model",
            &m,
            "--max-tokens",
            "8",
            "--id-column",
            "id",
            "--json-summary",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let j = summary(&o);
    assert_eq!(j["rows"], 40);
    assert_eq!(j["errors"], 0);
    assert!(j["completion_tokens"].as_u64().expect("completion_tokens") > 0);
    assert!(stderr(&o).contains("40 rows (0 errors)"), "{}", stderr(&o));
    assert!(!d.join("out.parquet.parts").exists(), "the parts directory is removed when done");

    let out = read_parquet(&output);
    assert_eq!(out.num_rows(), 40);
    assert_eq!(ids(&out), (0..40).collect::<Vec<i64>>());
    for (i, f) in batch.schema().fields().iter().enumerate() {
        let g = out.schema().field(i).clone();
        assert_eq!((g.name(), g.data_type()), (f.name(), f.data_type()), "input column {i} unchanged");
        assert_eq!(out.column(i).as_ref(), batch.column(i).as_ref(), "input column {} values", f.name());
    }
    let added: Vec<(String, DataType)> =
        out.schema().fields().iter().skip(3).map(|f| (f.name().clone(), f.data_type().clone())).collect();
    let expect = [
        ("generated_text", DataType::Utf8),
        ("prompt_tokens", DataType::Int32),
        ("completion_tokens", DataType::Int32),
        ("finish_reason", DataType::Utf8),
        ("error", DataType::Utf8),
        ("model_name", DataType::Utf8),
        ("model_version", DataType::Utf8),
    ];
    assert_eq!(added, expect.map(|(n, t)| (n.to_string(), t)).to_vec());
    assert_eq!(col(&out, "error").null_count(), 40);
    assert_eq!(col(&out, "generated_text").null_count(), 0);
    let completion = col(&out, "completion_tokens").as_primitive::<Int32Type>();
    let prompt = col(&out, "prompt_tokens").as_primitive::<Int32Type>();
    let reason = col(&out, "finish_reason").as_string::<i32>();
    for i in 0..40 {
        assert!((1..=8).contains(&completion.value(i)), "row {i}: {} completion tokens", completion.value(i));
        assert!(prompt.value(i) > 0);
        assert!(["stop", "length"].contains(&reason.value(i)), "{}", reason.value(i));
    }
    assert_eq!(col(&out, "model_name").as_string::<i32>().value(0), "llama_gqa_tied");
    assert_eq!(col(&out, "model_version").null_count(), 40, "no registry version for a path");
}

#[test]
fn bad_rows_get_an_error_and_the_job_goes_on() {
    let d = scratch("badrows");
    let (input, output) = (d.join("in.parquet"), d.join("out.parquet"));
    let long = vec!["word"; 400].join(" ");
    let text = BinaryArray::from(vec![
        Some(b"the cat sat".as_slice()),
        None,
        Some(b"".as_slice()),
        Some(b"caf\xff\xfe".as_slice()),
        Some(long.as_bytes()),
        Some(b"a small bird".as_slice()),
    ]);
    let id: Int64Array = (0..6).collect();
    let batch = RecordBatch::try_from_iter([("id", Arc::new(id) as ArrayRef), ("text", Arc::new(text) as ArrayRef)])
        .expect("batch");
    write_parquet(&input, &batch);
    let m = tiny();
    let o = run(
        &d,
        &["--input", s(&input), "--output", s(&output), "--model", &m, "--max-tokens", "6", "--id-column", "id"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = read_parquet(&output);
    assert_eq!(ids(&out), (0..6).collect::<Vec<i64>>());
    assert_eq!(out.schema().field(1).data_type(), &DataType::Binary, "the Binary column stays Binary");
    let err = col(&out, "error").as_string::<i32>();
    let gen = col(&out, "generated_text");
    for (row, want) in [(1, "null"), (2, "empty"), (3, "UTF-8"), (4, "context window")] {
        assert!(!err.is_null(row), "row {row} has no error");
        assert!(err.value(row).contains(want), "row {row}: {:?} should mention {want:?}", err.value(row));
        assert!(gen.is_null(row));
    }
    assert!(col(&out, "prompt_tokens").as_primitive::<Int32Type>().value(4) > 256, "too long: prompt tokens counted");
    for row in [0, 5] {
        assert!(err.is_null(row), "row {row}: {}", err.value(row));
        assert!(!gen.is_null(row));
    }
    assert!(stderr(&o).contains("row 1 (id = 1): column text is null"), "{}", stderr(&o));
}

#[test]
fn missing_column_is_a_usage_error() {
    let d = scratch("nocol");
    let input = d.join("in.parquet");
    write_parquet(&input, &docs(0, 3));
    let m = tiny();
    let o = run(&d, &["--input", s(&input), "--output", s(&d.join("o.parquet")), "--model", &m, "--column", "body"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--column body") && stderr(&o).contains("no such column"), "{}", stderr(&o));
    let o = run(&d, &["--input", s(&input), "--output", s(&d.join("o.parquet")), "--model", &m, "--column", "score"]);
    assert_eq!(o.status.code(), Some(2), "a Float64 column is no text: {}", stderr(&o));
}

#[test]
fn unreadable_input_is_a_usage_error() {
    let d = scratch("unreadable");
    let junk = d.join("junk.parquet");
    std::fs::write(&junk, b"this is not parquet at all").expect("write");
    let m = tiny();
    for input in [junk, d.join("missing.parquet")] {
        let o = run(&d, &["--input", s(&input), "--output", s(&d.join("o.parquet")), "--model", &m]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("--input") && e.contains(s(&input)) && e.lines().count() == 1, "{e}");
    }
}

#[test]
fn unknown_model_is_a_usage_error() {
    let d = scratch("nomodel");
    let input = d.join("in.parquet");
    write_parquet(&input, &docs(0, 3));
    let o = run(&d, &["--input", s(&input), "--output", s(&d.join("o.parquet")), "--model", "no-such-model-anywhere"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-model-anywhere"), "{}", stderr(&o));
}

#[test]
fn three_shards_together_equal_the_unsharded_output() {
    let d = scratch("shards");
    let input = d.join("in.parquet");
    write_parquet(&input, &docs(0, 31));
    let m = tiny();
    let all = d.join("all.parquet");
    let o = run(&d, &["--input", s(&input), "--output", s(&all), "--model", &m, "--max-tokens", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = texts(&read_parquet(&all));
    let mut union = BTreeMap::new();
    for k in 1..=3 {
        let out = d.join(format!("shard-{k}.parquet"));
        let shard = format!("{k}/3");
        let o = run(
            &d,
            &["--input", s(&input), "--output", s(&out), "--model", &m, "--max-tokens", "10", "--shard", &shard],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let b = read_parquet(&out);
        let got = ids(&b);
        assert_eq!(got, (0..31).filter(|i| i % 3 == k - 1).collect::<Vec<i64>>(), "shard {shard} rows, in order");
        for (id, t) in texts(&b) {
            assert!(union.insert(id, t).is_none(), "row {id} in two shards");
        }
    }
    assert_eq!(union, want);
}

#[test]
fn killed_job_resumes_to_the_uninterrupted_output() {
    let d = scratch("resume");
    let input = d.join("in.parquet");
    write_parquet(&input, &docs(0, 400));
    let m = tiny();
    let args = |out: &Path| -> Vec<String> {
        ["--input", s(&input), "--output", s(out), "--model", &m, "--max-tokens", "48", "--threads", "1"]
            .iter()
            .map(|a| a.to_string())
            .chain(["--max-num-seqs", "2", "--part-rows", "8"].iter().map(|a| a.to_string()))
            .collect()
    };
    let reference = d.join("reference.parquet");
    let t = Instant::now();
    let o = cmd(&d, &args(&reference).iter().map(String::as_str).collect::<Vec<_>>()).output().expect("runs");
    assert!(o.status.success(), "{}", stderr(&o));
    eprintln!("uninterrupted run: {:.2} s", t.elapsed().as_secs_f64());

    let out = d.join("out.parquet");
    let parts = d.join("out.parquet.parts");
    let a = args(&out);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut child = cmd(&d, &a).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    wait_for_a_part(&mut child, &parts);
    child.kill().expect("kill -9"); // SIGKILL
    child.wait().expect("reap");
    assert!(!out.exists(), "no output before the job is done");

    let o = cmd(&d, &a).output().expect("rerun");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming after"), "{}", stderr(&o));
    assert!(!parts.exists());
    let (got, want) = (read_parquet(&out), read_parquet(&reference));
    assert_eq!(ids(&got), (0..400).collect::<Vec<i64>>(), "every row exactly once, in order");
    assert_eq!(texts(&got), texts(&want), "resumed text equals the uninterrupted run's");
}

#[test]
fn rerun_with_other_arguments_over_parts_is_refused() {
    let d = scratch("refuse");
    let input = d.join("in.parquet");
    write_parquet(&input, &docs(0, 200));
    let out = d.join("out.parquet");
    let m = tiny();
    let base = [
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--model",
        &m,
        "--threads",
        "1",
        "--max-num-seqs",
        "1",
        "--part-rows",
        "2",
    ];
    // Leave parts behind: kill the job once it has written one.
    let mut child = cmd(&d, &[&base[..], &["--max-tokens", "32"]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for_a_part(&mut child, &d.join("out.parquet.parts"));
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    let o = run(&d, &[&base[..], &["--max-tokens", "16"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("other arguments") && e.contains("max_tokens: the parts have 32, this run has 16"), "{e}");
    let o = run(&d, &[&base[..], &["--max-tokens", "32", "--shard", "1/2"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("shard"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn directory_input_reads_its_files_in_order() {
    let d = scratch("dir");
    let dir = d.join("in");
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_parquet(&dir.join("part-0001.parquet"), &docs(5, 7));
    write_parquet(&dir.join("part-0000.parquet"), &docs(0, 5));
    std::fs::write(dir.join("_SUCCESS"), b"").expect("marker");
    let out = d.join("out.parquet");
    let m = tiny();
    let o = run(&d, &["--input", s(&dir), "--output", s(&out), "--model", &m, "--max-tokens", "4", "--shard", "2/2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids(&read_parquet(&out)), vec![1, 3, 5, 7, 9, 11], "shard 2/2 of 12 rows over two files");
    let o = run(&d, &["--input", s(&dir), "--output", s(&out), "--model", &m, "--max-tokens", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids(&read_parquet(&out)), (0..12).collect::<Vec<i64>>());
}

#[test]
fn template_file_sees_text_and_other_columns() {
    let d = scratch("template");
    let input = d.join("in.parquet");
    write_parquet(&input, &docs(0, 4));
    let m = tiny();
    let tpl = d.join("t.j2");
    std::fs::write(&tpl, "Score {{ score }}. Document {{ id }}: {{ text }}").expect("template");
    let out = d.join("out.parquet");
    let o = run(
        &d,
        &["--input", s(&input), "--output", s(&out), "--model", &m, "--max-tokens", "4", "--template-file", s(&tpl)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let b = read_parquet(&out);
    assert_eq!(col(&b, "error").null_count(), 4);
    let bad = d.join("bad.j2");
    std::fs::write(&bad, "{{ titel }}: {{ text }}").expect("template");
    let o = run(&d, &["--input", s(&input), "--output", s(&out), "--model", &m, "--template-file", s(&bad)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("titel"), "{}", stderr(&o));
}

#[test]
fn registry_model_rows_carry_its_name_and_version() {
    let d = scratch("registry");
    let input = d.join("in.parquet");
    write_parquet(&input, &docs(0, 3));
    let reg = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .args(["registry", "register", "--name", "tiny-summarizer", "--path", &tiny()])
        .env("KEEL_HOME", &d)
        .output()
        .expect("runtime registry runs");
    assert!(reg.status.success(), "{}", stderr(&reg));
    let out = d.join("out.parquet");
    let o = run(
        &d,
        &["--input", s(&input), "--output", s(&out), "--model", "models:/tiny-summarizer/1", "--max-tokens", "4"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let b = read_parquet(&out);
    let (name, version) = (col(&b, "model_name").as_string::<i32>(), col(&b, "model_version").as_string::<i32>());
    for i in 0..3 {
        assert_eq!((name.value(i), version.value(i)), ("tiny-summarizer", "1"));
    }
}
