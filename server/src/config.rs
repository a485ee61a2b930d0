//! Endpoint declarations, shared by the TOML file (`runtime serve --config`) and the REST
//! API (`POST /api/2.0/serving-endpoints`): the same serde structs, Databricks' field names.
//!
//! ```toml
//! [[endpoints]]
//! name = "chat"
//! rate_limits = [{ calls = 600, key = "user", renewal_period = "minute" }]
//! [[endpoints.config.served_entities]]
//! name = "small"
//! entity_name = "smollm2"        # anything `--model` accepts
//! max_concurrency = 32
//! scale_to_zero_enabled = true
//! scale_to_zero_idle_seconds = 1800  # keel extension (Databricks fixes it at ~30 min)
//! [[endpoints.config.traffic_config.routes]]
//! served_entity_name = "small"
//! traffic_percentage = 100
//! [endpoints.config.auto_capture_config]   # inference table tables/chat_logs_payload/
//! enabled = true
//! table_name_prefix = "chat_logs"
//! ```
//!
//! Invariants after [`EndpointSpec::validate`]: a non-empty name of `[A-Za-z0-9_-]`, 1–10
//! entities with distinct names, routes naming existing entities with integer
//! percentages summing to 100 (when `traffic_config` is omitted, one entity gets 100);
//! a capture `table_name_prefix` that is a safe directory name and a `sampling_fraction`
//! in (0, 1].

use crate::error::ApiError;
use serde::{Deserialize, Serialize};

pub const MAX_ENTITIES: usize = 10;
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;
pub const DEFAULT_SCALE_TO_ZERO_IDLE_S: u64 = 1800;

/// The body of `POST /api/2.0/serving-endpoints` and one `[[endpoints]]` of the file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub name: String,
    pub config: EndpointConfig,
    #[serde(default)]
    pub rate_limits: Vec<RateLimitSpec>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Accepted for compatibility with Databricks clients; keel does not use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_optimized: Option<bool>,
}

/// `config` of an endpoint, and the body of `PUT .../{name}/config`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub served_entities: Vec<ServedEntitySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_config: Option<TrafficConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_capture_config: Option<AutoCaptureConfig>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServedEntitySpec {
    /// Defaults to `entity_name` (with `-version`), as Databricks does.
    #[serde(default)]
    pub name: String,
    /// What to load: a registry URI, a path, or a known model name (`smollm2`).
    pub entity_name: String,
    /// A registry version or alias; with a path it must be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_version: Option<String>,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    #[serde(default)]
    pub scale_to_zero_enabled: bool,
    #[serde(default = "default_idle")]
    pub scale_to_zero_idle_seconds: u64,
    /// Databricks sizing fields, accepted and ignored (one process serves everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_type: Option<String>,
}

fn default_max_concurrency() -> usize {
    DEFAULT_MAX_CONCURRENCY
}

fn default_idle() -> u64 {
    DEFAULT_SCALE_TO_ZERO_IDLE_S
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrafficConfig {
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub served_entity_name: String,
    pub traffic_percentage: u32,
}

/// Inference-table capture (SPEC §6.1): when `enabled`, every request routed to the
/// endpoint is logged to `<data_dir>/tables/<table_name_prefix>_payload/`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AutoCaptureConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Defaults to the endpoint's name, as on Databricks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_name_prefix: Option<String>,
    /// Unity Catalog location: accepted for compatibility, unused (tables are files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_name: Option<String>,
    /// keel extension: the fraction of requests logged, in (0, 1] (default 1). The
    /// choice is a hash of the request id, and the fraction is stored in every row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_fraction: Option<f64>,
}

impl AutoCaptureConfig {
    /// The table's directory name under `tables/`: `<prefix>_payload`.
    pub fn table_name(&self, endpoint: &str) -> String {
        format!("{}_payload", self.table_name_prefix.as_deref().unwrap_or(endpoint))
    }

    fn validate(&self) -> Result<(), ApiError> {
        if let Some(p) = &self.table_name_prefix {
            let ok = p.len() <= 63
                && p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(ApiError::invalid(
                    "config.auto_capture_config.table_name_prefix",
                    format!("{p:?} must be 1-63 letters, digits, '_' or '-', starting with a letter or digit"),
                ));
            }
        }
        if let Some(f) = self.sampling_fraction {
            if !(f > 0.0 && f <= 1.0) {
                return Err(ApiError::invalid(
                    "config.auto_capture_config.sampling_fraction",
                    format!("{f} is not in (0, 1]"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub calls: u32,
    #[serde(default = "default_key")]
    pub key: RateLimitKey,
    #[serde(default = "default_period")]
    pub renewal_period: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitKey {
    User,
    Endpoint,
}

fn default_key() -> RateLimitKey {
    RateLimitKey::User
}

fn default_period() -> String {
    "minute".into()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The `--config` file: a list of endpoints.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
}

impl ServeFile {
    pub fn parse(text: &str) -> Result<ServeFile, String> {
        let f: ServeFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if f.endpoints.is_empty() {
            return Err("no [[endpoints]] declared".into());
        }
        let mut seen = std::collections::HashSet::new();
        for e in &f.endpoints {
            if !seen.insert(e.name.as_str()) {
                return Err(format!("endpoint {:?} is declared twice", e.name));
            }
        }
        Ok(f)
    }
}

/// A valid endpoint name: 1–63 characters of letters, digits, `-` and `_`.
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 63 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ApiError::invalid(
            field,
            format!("{name:?} must be 1-63 characters of letters, digits, '-' and '_'"),
        ));
    }
    Ok(())
}

impl EndpointSpec {
    /// Checks the invariants in the module doc and fills defaults (entity names, a
    /// single entity's route).
    pub fn validate(&mut self) -> Result<(), ApiError> {
        check_name("name", &self.name)?;
        self.config.validate()?;
        for (i, r) in self.rate_limits.iter().enumerate() {
            if r.renewal_period != "minute" {
                return Err(ApiError::invalid(
                    format!("rate_limits[{i}].renewal_period"),
                    format!("{:?}: only \"minute\" is supported", r.renewal_period),
                ));
            }
        }
        Ok(())
    }
}

impl EndpointConfig {
    pub fn validate(&mut self) -> Result<(), ApiError> {
        let n = self.served_entities.len();
        if n == 0 || n > MAX_ENTITIES {
            return Err(ApiError::invalid(
                "config.served_entities",
                format!("an endpoint serves 1 to {MAX_ENTITIES} entities, got {n}"),
            ));
        }
        for (i, e) in self.served_entities.iter_mut().enumerate() {
            if e.entity_name.trim().is_empty() {
                return Err(ApiError::invalid(format!("config.served_entities[{i}].entity_name"), "must not be empty"));
            }
            if e.entity_name.starts_with("models:/") && e.entity_version.is_some() {
                return Err(ApiError::invalid(
                    format!("config.served_entities[{i}].entity_version"),
                    "must be absent when entity_name is a models:/ URI (the URI names the version or alias)",
                ));
            }
            if e.name.is_empty() {
                e.name = default_entity_name(&e.entity_name, e.entity_version.as_deref());
            }
            check_name(&format!("config.served_entities[{i}].name"), &e.name)?;
            if e.max_concurrency == 0 {
                return Err(ApiError::invalid(
                    format!("config.served_entities[{i}].max_concurrency"),
                    "must be at least 1",
                ));
            }
            if e.scale_to_zero_enabled && e.scale_to_zero_idle_seconds == 0 {
                return Err(ApiError::invalid(
                    format!("config.served_entities[{i}].scale_to_zero_idle_seconds"),
                    "must be at least 1",
                ));
            }
        }
        let names: Vec<&str> = self.served_entities.iter().map(|e| e.name.as_str()).collect();
        for (i, a) in names.iter().enumerate() {
            if names[..i].contains(a) {
                return Err(ApiError::invalid(
                    "config.served_entities",
                    format!("two served entities are named {a:?}"),
                ));
            }
        }
        if self.traffic_config.is_none() {
            if n > 1 {
                return Err(ApiError::invalid(
                    "config.traffic_config",
                    "required when an endpoint serves more than one entity",
                ));
            }
            self.traffic_config = Some(TrafficConfig {
                routes: vec![Route { served_entity_name: names[0].to_string(), traffic_percentage: 100 }],
            });
        }
        let routes = &self.traffic_config.as_ref().map(|t| t.routes.clone()).unwrap_or_default();
        if routes.is_empty() {
            return Err(ApiError::invalid("config.traffic_config.routes", "must not be empty"));
        }
        let mut sum = 0u64;
        for (i, r) in routes.iter().enumerate() {
            if !names.contains(&r.served_entity_name.as_str()) {
                return Err(ApiError::invalid(
                    format!("config.traffic_config.routes[{i}].served_entity_name"),
                    format!("{:?} is not one of the served entities {names:?}", r.served_entity_name),
                ));
            }
            if routes[..i].iter().any(|p| p.served_entity_name == r.served_entity_name) {
                return Err(ApiError::invalid(
                    format!("config.traffic_config.routes[{i}].served_entity_name"),
                    format!("{:?} has two routes", r.served_entity_name),
                ));
            }
            if r.traffic_percentage > 100 {
                return Err(ApiError::invalid(
                    format!("config.traffic_config.routes[{i}].traffic_percentage"),
                    format!("{} is not in 0..=100", r.traffic_percentage),
                ));
            }
            sum += u64::from(r.traffic_percentage);
        }
        if sum != 100 {
            return Err(ApiError::invalid(
                "config.traffic_config.routes",
                format!("traffic percentages must sum to 100, got {sum}"),
            ));
        }
        if let Some(ac) = &self.auto_capture_config {
            ac.validate()?;
        }
        Ok(())
    }
}

/// Databricks names an unnamed entity `<model>-<version>`; keel keeps the last path
/// component of paths and URIs so names stay valid.
fn default_entity_name(entity: &str, version: Option<&str>) -> String {
    // `models:/m@champion` → `m-champion`, `models:/m/3` → `m-3`.
    if let Some(uri) = entity.strip_prefix("models:/") {
        return default_entity_name(&uri.replace(['@', '/'], "-"), version);
    }
    let base = entity.trim_end_matches('/').rsplit(['/', '\\', ':', '@']).next().unwrap_or(entity);
    let base = base.strip_suffix(".gguf").unwrap_or(base);
    let mut s: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    if let Some(v) = version {
        s.push('-');
        s.extend(v.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }));
    }
    s.truncate(63);
    if s.is_empty() {
        "entity".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(name: &str) -> ServedEntitySpec {
        ServedEntitySpec {
            name: name.into(),
            entity_name: "m".into(),
            entity_version: None,
            max_concurrency: 4,
            scale_to_zero_enabled: false,
            scale_to_zero_idle_seconds: 30,
            workload_size: None,
            workload_type: None,
        }
    }

    #[test]
    fn registry_uris_get_readable_default_names_and_no_second_version() {
        assert_eq!(default_entity_name("models:/summarizer@champion", None), "summarizer-champion");
        assert_eq!(default_entity_name("models:/main.ml.summarizer/3", None), "main-ml-summarizer-3");
        assert_eq!(default_entity_name("summarizer", Some("champion")), "summarizer-champion");
        let mut e = entity("");
        e.entity_name = "models:/m@champion".into();
        e.entity_version = Some("2".into());
        let mut c = EndpointConfig { served_entities: vec![e], traffic_config: None, auto_capture_config: None };
        let err = c.validate().unwrap_err();
        assert!(err.message.contains("served_entities[0].entity_version"), "{}", err.message);
    }

    fn routes(r: &[(&str, u32)]) -> Option<TrafficConfig> {
        Some(TrafficConfig {
            routes: r
                .iter()
                .map(|(n, p)| Route { served_entity_name: n.to_string(), traffic_percentage: *p })
                .collect(),
        })
    }

    #[test]
    fn traffic_must_sum_to_100() {
        let mut c = EndpointConfig {
            served_entities: vec![entity("a"), entity("b")],
            traffic_config: routes(&[("a", 60), ("b", 30)]),
            auto_capture_config: None,
        };
        let e = c.validate().unwrap_err();
        assert!(e.message.contains("sum to 100, got 90"), "{e}");
        c.traffic_config = routes(&[("a", 60), ("b", 40)]);
        c.validate().unwrap();
        c.traffic_config = routes(&[("a", 60), ("c", 40)]);
        assert!(c.validate().unwrap_err().param.unwrap().contains("served_entity_name"));
    }

    #[test]
    fn single_entity_gets_all_traffic_and_a_default_name() {
        let mut e = entity("");
        e.entity_name = "/models/SmolLM2.Q4_1.gguf".into();
        let mut c = EndpointConfig { served_entities: vec![e], traffic_config: None, auto_capture_config: None };
        c.validate().unwrap();
        assert_eq!(c.served_entities[0].name, "SmolLM2-Q4_1");
        assert_eq!(c.traffic_config.unwrap().routes[0].traffic_percentage, 100);
    }

    #[test]
    fn entity_count_and_names_are_checked() {
        let mut c = EndpointConfig { served_entities: vec![], traffic_config: None, auto_capture_config: None };
        assert!(c.validate().is_err());
        c.served_entities = (0..11).map(|i| entity(&format!("e{i}"))).collect();
        assert!(c.validate().unwrap_err().message.contains("1 to 10"));
        c.served_entities = vec![entity("a"), entity("a")];
        c.traffic_config = routes(&[("a", 100)]);
        assert!(c.validate().unwrap_err().message.contains("two served entities"));
        c.served_entities = vec![entity("a b")];
        assert!(c.validate().is_err());
    }

    #[test]
    fn capture_config_is_checked() {
        let capture = |prefix: Option<&str>, fraction: Option<f64>| EndpointConfig {
            served_entities: vec![entity("a")],
            traffic_config: None,
            auto_capture_config: Some(AutoCaptureConfig {
                enabled: true,
                table_name_prefix: prefix.map(String::from),
                catalog_name: None,
                schema_name: None,
                sampling_fraction: fraction,
            }),
        };
        capture(Some("chat_logs"), Some(0.5)).validate().unwrap();
        capture(None, None).validate().unwrap();
        for bad in ["", "../x", "a/b", "_hidden", ".x", "a b"] {
            let e = capture(Some(bad), None).validate().unwrap_err();
            assert!(e.message.contains("table_name_prefix"), "{bad:?}: {}", e.message);
        }
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            let e = capture(None, Some(bad)).validate().unwrap_err();
            assert!(e.message.contains("sampling_fraction"), "{bad}: {}", e.message);
        }
        let ac = capture(None, None).auto_capture_config.unwrap();
        assert_eq!(ac.table_name("chat"), "chat_payload");
    }

    #[test]
    fn toml_file_parses_with_databricks_fields() {
        let f = ServeFile::parse(
            r#"
[[endpoints]]
name = "chat"
rate_limits = [{ calls = 10, key = "endpoint", renewal_period = "minute" }]
[[endpoints.config.served_entities]]
name = "a"
entity_name = "smollm2"
scale_to_zero_enabled = true
[[endpoints.config.served_entities]]
name = "b"
entity_name = "smollm2"
[[endpoints.config.traffic_config.routes]]
served_entity_name = "a"
traffic_percentage = 50
[[endpoints.config.traffic_config.routes]]
served_entity_name = "b"
traffic_percentage = 50
"#,
        )
        .unwrap();
        let mut e = f.endpoints[0].clone();
        e.validate().unwrap();
        assert_eq!(e.rate_limits[0].key, RateLimitKey::Endpoint);
        assert_eq!(e.config.served_entities[0].max_concurrency, DEFAULT_MAX_CONCURRENCY);
        assert!(ServeFile::parse("[[endpoints]]\nname='x'\nbogus=1\n").unwrap_err().contains("bogus"));
    }
}
