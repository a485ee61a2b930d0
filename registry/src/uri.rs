//! `models:/` URIs, MLflow's way of naming a model version: a fixed number
//! (`models:/name/3`), an alias (`models:/name@champion`), the highest live version
//! (`models:/name/latest`), or a deprecated stage (`models:/name/Production`, which keel
//! resolves through the alias `production`). Parsing validates the name and alias with the
//! same rules as registration, so a parsed URI can only fail to resolve with NotFound.
//! `Display` prints the canonical form, which parses back to an equal value.

use std::fmt;

use crate::error::{RegistryError, Result};
use crate::validate;

/// A parsed `models:/` URI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModelUri {
    /// `models:/name/3`
    Version { name: String, version: u64 },
    /// `models:/name@alias`
    Alias { name: String, alias: String },
    /// `models:/name/latest`: the highest live version.
    Latest { name: String },
    /// `models:/name/Production` or `models:/name/Staging` (deprecated; `stage` is stored
    /// capitalised as `Production` / `Staging`).
    Stage { name: String, stage: String },
}

const PREFIX: &str = "models:/";
const FORMS: &str = "expected models:/<name>/<version>, models:/<name>@<alias>, models:/<name>/latest \
                     or models:/<name>/Production|Staging";

impl ModelUri {
    /// Parses a `models:/` URI; anything else is `InvalidParameter` naming the accepted forms.
    pub fn parse(s: &str) -> Result<ModelUri> {
        let invalid = |why: &str| RegistryError::InvalidParameter(format!("invalid model URI {s:?}: {why}"));
        let rest = s.strip_prefix(PREFIX).ok_or_else(|| invalid(FORMS))?;
        if rest.starts_with('/') {
            return Err(invalid(&format!("profile URIs (models://...) are not supported; {FORMS}")));
        }
        let named = |name: &str| -> Result<String> {
            validate::model_name(name).map_err(|e| invalid(&e.to_string()))?;
            Ok(name.to_string())
        };
        if let Some((name, alias)) = rest.split_once('@') {
            let name = named(name)?;
            if alias.eq_ignore_ascii_case("latest") {
                return Err(invalid(&format!("'latest' is not an alias; use models:/{name}/latest")));
            }
            validate::alias(alias).map_err(|e| invalid(&e.to_string()))?;
            return Ok(ModelUri::Alias { name, alias: alias.to_string() });
        }
        let (name, selector) = rest.split_once('/').ok_or_else(|| invalid(FORMS))?;
        let name = named(name)?;
        if selector.is_empty() || selector.contains('/') {
            return Err(invalid(FORMS));
        }
        if selector.bytes().all(|b| b.is_ascii_digit()) {
            return match selector.parse::<u64>() {
                Ok(version) if version >= 1 && i64::try_from(version).is_ok() => {
                    Ok(ModelUri::Version { name, version })
                }
                _ => Err(invalid("versions are integers from 1")),
            };
        }
        if selector.eq_ignore_ascii_case("latest") {
            return Ok(ModelUri::Latest { name });
        }
        for stage in ["Production", "Staging"] {
            if selector.eq_ignore_ascii_case(stage) {
                return Ok(ModelUri::Stage { name, stage: stage.to_string() });
            }
        }
        if ["Archived", "None"].iter().any(|st| selector.eq_ignore_ascii_case(st)) {
            return Err(invalid(&format!(
                "stage {selector:?} cannot be resolved (only Production and Staging map to aliases); {FORMS}"
            )));
        }
        Err(invalid(FORMS))
    }

    /// The registered model's name.
    pub fn name(&self) -> &str {
        match self {
            ModelUri::Version { name, .. }
            | ModelUri::Alias { name, .. }
            | ModelUri::Latest { name }
            | ModelUri::Stage { name, .. } => name,
        }
    }

    /// True when the version this URI names can change over time (alias, latest, stage).
    pub fn is_floating(&self) -> bool {
        !matches!(self, ModelUri::Version { .. })
    }

    /// The alias a deprecated stage URI resolves through (`production` / `staging`).
    pub fn stage_alias(stage: &str) -> String {
        stage.to_ascii_lowercase()
    }
}

impl fmt::Display for ModelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelUri::Version { name, version } => write!(f, "{PREFIX}{name}/{version}"),
            ModelUri::Alias { name, alias } => write!(f, "{PREFIX}{name}@{alias}"),
            ModelUri::Latest { name } => write!(f, "{PREFIX}{name}/latest"),
            ModelUri::Stage { name, stage } => write!(f, "{PREFIX}{name}/{stage}"),
        }
    }
}

impl std::str::FromStr for ModelUri {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<ModelUri> {
        ModelUri::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(s: &str) -> String {
        match ModelUri::parse(s) {
            Err(RegistryError::InvalidParameter(m)) => m,
            other => panic!("{s:?}: expected InvalidParameter, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_form() {
        let v = |name: &str, version| ModelUri::Version { name: name.into(), version };
        assert_eq!(ModelUri::parse("models:/m/3").unwrap(), v("m", 3));
        assert_eq!(ModelUri::parse("models:/main.default.llama/12").unwrap(), v("main.default.llama", 12));
        assert_eq!(ModelUri::parse("models:/m/007").unwrap(), v("m", 7));
        assert_eq!(
            ModelUri::parse("models:/m@champion").unwrap(),
            ModelUri::Alias { name: "m".into(), alias: "champion".into() }
        );
        assert_eq!(ModelUri::parse("models:/m/latest").unwrap(), ModelUri::Latest { name: "m".into() });
        assert_eq!(ModelUri::parse("models:/m/LATEST").unwrap(), ModelUri::Latest { name: "m".into() });
        for s in ["Production", "production", "PRODUCTION"] {
            let uri = ModelUri::parse(&format!("models:/m/{s}")).unwrap();
            assert_eq!(uri, ModelUri::Stage { name: "m".into(), stage: "Production".into() });
        }
        assert_eq!(
            ModelUri::parse("models:/m/staging").unwrap(),
            ModelUri::Stage { name: "m".into(), stage: "Staging".into() }
        );
    }

    #[test]
    fn display_round_trips() {
        for s in
            ["models:/m/3", "models:/a.b.c@prod-1", "models:/m/latest", "models:/m/Production", "models:/m/Staging"]
        {
            let uri = ModelUri::parse(s).unwrap();
            assert_eq!(uri.to_string(), s);
            assert_eq!(ModelUri::parse(&uri.to_string()).unwrap(), uri);
        }
        assert_eq!(ModelUri::parse("models:/m/production").unwrap().to_string(), "models:/m/Production");
    }

    #[test]
    fn name_and_floating() {
        assert_eq!(ModelUri::parse("models:/x.y/2").unwrap().name(), "x.y");
        assert!(!ModelUri::parse("models:/m/2").unwrap().is_floating());
        for s in ["models:/m@a", "models:/m/latest", "models:/m/Staging"] {
            assert!(ModelUri::parse(s).unwrap().is_floating(), "{s}");
        }
        assert_eq!(ModelUri::stage_alias("Production"), "production");
    }

    #[test]
    fn rejects_everything_else_naming_the_forms() {
        for s in [
            "",
            "m/3",
            "models:m/3",
            "models:/",
            "models:/m",
            "models:/m/",
            "models:/m/3/extra",
            "models:/m/-1",
            "models:/m/1.5",
            "models:/m/champion",
            "models://profile/m/3",
            "runs:/abc/model",
        ] {
            let msg = parse_err(s);
            assert!(msg.contains("models:/<name>@<alias>"), "{s}: {msg}");
            assert!(!msg.contains('\n'));
        }
    }

    #[test]
    fn rejects_bad_parts() {
        assert!(parse_err("models:/m/0").contains("integers from 1"));
        assert!(parse_err("models:/m/99999999999999999999").contains("integers from 1"));
        assert!(parse_err("models:/../x/1").contains("invalid model name"));
        assert!(parse_err("models:/a..b/1").contains("'..'"));
        assert!(parse_err("models:/m@").contains("invalid alias"));
        assert!(parse_err("models:/m@a/b").contains("invalid alias"));
        assert!(parse_err("models:/m@v3").contains("reserved"));
        assert!(parse_err("models:/m@latest").contains("models:/m/latest"));
        assert!(parse_err("models:/m/Archived").contains("Archived"));
        assert!(parse_err("models:/m/None").contains("only Production and Staging"));
    }
}
