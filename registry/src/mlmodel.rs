//! The `MLmodel` file each version carries, in MLflow's YAML layout, plus its
//! `input_example.json`. Both are written by the registry into the artifact directory after
//! the files are in place and are not part of the manifest (the manifest digest is one of
//! their fields). `artifact_path` is the version's path relative to the store's artifact
//! root (`<name>/<version>`); `flavors.llm.model_file` is what a loader opens, relative to
//! the artifact directory.

use std::path::Path;

use crate::error::{RegistryError, Result};
use crate::staging::make_read_only;
use crate::types::ModelVersion;

/// MLflow signature of every keel LLM: one string column `prompt` in, a string out.
pub const SIGNATURE_INPUTS: &str = r#"[{"type": "string", "name": "prompt"}]"#;
pub const SIGNATURE_OUTPUTS: &str = r#"[{"type": "string"}]"#;
/// The saved input example.
pub const INPUT_EXAMPLE: &str = r#"{"prompt": "Hello"}"#;
pub const INPUT_EXAMPLE_FILE: &str = "input_example.json";
pub const MLMODEL_FILE: &str = "MLmodel";

#[derive(serde::Serialize)]
struct MlModel<'a> {
    artifact_path: String,
    flavors: Flavors<'a>,
    keel_version: &'static str,
    model_size_bytes: u64,
    registered_model_name: &'a str,
    saved_input_example_info: InputExampleInfo,
    sha256: &'a str,
    signature: Signature,
    source: &'a str,
    utc_time_created: String,
    version: u64,
}

#[derive(serde::Serialize)]
struct Flavors<'a> {
    llm: LlmFlavor<'a>,
}

#[derive(serde::Serialize)]
struct LlmFlavor<'a> {
    architecture: &'a str,
    context_length: u64,
    dtype: &'a str,
    format: &'a str,
    model_file: String,
    parameter_count: u64,
}

#[derive(serde::Serialize)]
struct InputExampleInfo {
    artifact_path: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(serde::Serialize)]
struct Signature {
    inputs: &'static str,
    outputs: &'static str,
}

/// The `MLmodel` YAML text for `mv`.
pub fn render(mv: &ModelVersion) -> Result<String> {
    let model_file = mv.model_path.strip_prefix(&mv.artifact_dir).unwrap_or(&mv.model_path);
    let doc = MlModel {
        artifact_path: format!("{}/{}", mv.name, mv.version),
        flavors: Flavors {
            llm: LlmFlavor {
                architecture: &mv.info.architecture,
                context_length: mv.info.context_length,
                dtype: &mv.info.dtype,
                format: &mv.info.format,
                model_file: model_file.display().to_string(),
                parameter_count: mv.info.parameter_count,
            },
        },
        keel_version: env!("CARGO_PKG_VERSION"),
        model_size_bytes: mv.size_bytes,
        registered_model_name: &mv.name,
        saved_input_example_info: InputExampleInfo { artifact_path: INPUT_EXAMPLE_FILE, kind: "json_object" },
        sha256: &mv.sha256,
        signature: Signature { inputs: SIGNATURE_INPUTS, outputs: SIGNATURE_OUTPUTS },
        source: &mv.source,
        utc_time_created: utc_time(mv.creation_timestamp),
        version: mv.version,
    };
    serde_norway::to_string(&doc).map_err(|e| RegistryError::Db(format!("cannot render MLmodel: {e}")))
}

/// Writes `MLmodel` and `input_example.json` into `mv.artifact_dir` (read-only, like the
/// rest of the version).
pub fn write(mv: &ModelVersion) -> Result<()> {
    let text = render(mv)?;
    for (name, body) in [(MLMODEL_FILE, text.as_str()), (INPUT_EXAMPLE_FILE, INPUT_EXAMPLE)] {
        let path = mv.artifact_dir.join(name);
        write_new(&path, body)?;
        make_read_only(&path)?;
    }
    Ok(())
}

fn write_new(path: &Path, body: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create_new(path).map_err(|e| RegistryError::io(path, e))?;
    f.write_all(body.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| RegistryError::io(path, e))
}

/// MLflow's `utc_time_created` form, `YYYY-MM-DD HH:MM:SS.ffffff`, from ms since the epoch.
pub fn utc_time(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000 * 1000
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ModelInfo;
    use std::collections::BTreeMap;

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00.000000");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00.000000");
        assert_eq!(utc_time(1_795_332_000_123), "2026-11-22 07:20:00.123000");
        assert_eq!(utc_time(4_107_542_399_999), "2100-02-28 23:59:59.999000");
        assert_eq!(utc_time(-1), "1969-12-31 23:59:59.999000");
    }

    fn version() -> ModelVersion {
        ModelVersion {
            name: "main.default.tiny".into(),
            version: 3,
            creation_timestamp: 1_795_332_000_123,
            last_updated_timestamp: 1_795_332_000_123,
            description: String::new(),
            source: "/data/it's: #tiny.gguf".into(),
            run_id: None,
            status: "READY".into(),
            tags: BTreeMap::new(),
            aliases: vec![],
            artifact_dir: "/h/artifacts/main.default.tiny/3".into(),
            model_path: "/h/artifacts/main.default.tiny/3/tiny.gguf".into(),
            size_bytes: 4096,
            sha256: "ab".repeat(32),
            info: ModelInfo {
                flavor: "llm".into(),
                architecture: "llama".into(),
                format: "gguf".into(),
                dtype: "Q4_1".into(),
                parameter_count: 134_515_008,
                context_length: 8192,
                display_name: "Tiny".into(),
            },
        }
    }

    #[test]
    fn mlmodel_has_mlflow_fields_and_parses_back() {
        let text = render(&version()).unwrap();
        let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
        let llm = &doc["flavors"]["llm"];
        assert_eq!(llm["architecture"], "llama");
        assert_eq!(llm["format"], "gguf");
        assert_eq!(llm["dtype"], "Q4_1");
        assert_eq!(llm["parameter_count"], 134_515_008);
        assert_eq!(llm["context_length"], 8192);
        assert_eq!(llm["model_file"], "tiny.gguf");
        assert_eq!(doc["signature"]["inputs"], SIGNATURE_INPUTS);
        assert_eq!(doc["signature"]["outputs"], SIGNATURE_OUTPUTS);
        let inputs: serde_json::Value = serde_json::from_str(doc["signature"]["inputs"].as_str().unwrap()).unwrap();
        assert_eq!(inputs[0]["name"], "prompt");
        assert_eq!(doc["saved_input_example_info"]["artifact_path"], "input_example.json");
        assert_eq!(doc["saved_input_example_info"]["type"], "json_object");
        assert_eq!(doc["model_size_bytes"], 4096);
        assert_eq!(doc["utc_time_created"], "2026-11-22 07:20:00.123000");
        assert_eq!(doc["source"], "/data/it's: #tiny.gguf");
        assert_eq!(doc["registered_model_name"], "main.default.tiny");
        assert_eq!(doc["version"], 3);
        assert_eq!(doc["sha256"], "ab".repeat(32));
        assert_eq!(doc["artifact_path"], "main.default.tiny/3");
        assert_eq!(doc["keel_version"], env!("CARGO_PKG_VERSION"));
        // The JSON signature is a YAML string, not a YAML list.
        assert!(text.contains("inputs: '[{\"type\": \"string\", \"name\": \"prompt\"}]'"), "{text}");
    }

    #[test]
    fn write_creates_both_files_once() {
        let d = tempfile::tempdir().unwrap();
        let mut mv = version();
        mv.artifact_dir = d.path().to_path_buf();
        mv.model_path = d.path().join("tiny.gguf");
        write(&mv).unwrap();
        let example: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.path().join(INPUT_EXAMPLE_FILE)).unwrap()).unwrap();
        assert_eq!(example, serde_json::json!({"prompt": "Hello"}));
        assert!(std::fs::read_to_string(d.path().join(MLMODEL_FILE)).unwrap().contains("model_file: tiny.gguf"));
        assert!(write(&mv).is_err(), "metadata files are never overwritten");
    }
}
