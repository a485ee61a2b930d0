//! The identifiers the registry accepts: model names, aliases, tag keys and values,
//! version numbers. Invariant: a name that passes `model_name` is a single safe path
//! component (no `/`, no `..`, no leading `.`), so `artifacts/<name>/<version>` can never
//! escape `artifacts/` nor collide with the `.staging` directory. Every check is O(len).

use crate::error::{RegistryError, Result};

/// Longest accepted model name (MLflow / Unity Catalog limit).
pub const MAX_MODEL_NAME_LEN: usize = 256;
/// Longest accepted alias.
pub const MAX_ALIAS_LEN: usize = 255;
/// Longest accepted tag key.
pub const MAX_TAG_KEY_LEN: usize = 250;
/// Longest accepted tag value.
pub const MAX_TAG_VALUE_LEN: usize = 5000;

/// Checks a registered-model name: `[A-Za-z0-9_.-]{1,256}`, not starting with `.`,
/// without `..`. Three-level `catalog.schema.model` names pass.
pub fn model_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(RegistryError::InvalidParameter(format!("invalid model name {name:?}: {why}")));
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.chars().count() > MAX_MODEL_NAME_LEN {
        return bad(&format!("longer than {MAX_MODEL_NAME_LEN} characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return bad(&format!("character {c:?} is not allowed (use letters, digits, '_', '.', '-')"));
    }
    if name.starts_with('.') {
        return bad("must not start with '.'");
    }
    if name.contains("..") {
        return bad("must not contain '..'");
    }
    Ok(())
}

/// Checks an alias: `^[A-Za-z0-9_-]+$`, at most 255 characters, and not one of the
/// reserved forms `latest` or `v<digits>` (case-insensitive), which would shadow
/// `models:/name/latest` and version numbers.
pub fn alias(alias: &str) -> Result<()> {
    let bad = |why: &str| Err(RegistryError::InvalidParameter(format!("invalid alias {alias:?}: {why}")));
    if alias.is_empty() {
        return bad("must not be empty");
    }
    if alias.len() > MAX_ALIAS_LEN {
        return bad(&format!("longer than {MAX_ALIAS_LEN} characters"));
    }
    if let Some(c) = alias.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))) {
        return bad(&format!("character {c:?} is not allowed (use letters, digits, '_', '-')"));
    }
    if is_reserved_alias(alias) {
        return Err(RegistryError::InvalidParameter(format!(
            "alias {alias:?} is reserved ('latest' and 'v<number>' name versions, not aliases)"
        )));
    }
    Ok(())
}

/// `latest` and `v<digits>`, compared case-insensitively.
fn is_reserved_alias(alias: &str) -> bool {
    if alias.eq_ignore_ascii_case("latest") {
        return true;
    }
    match alias.strip_prefix(['v', 'V']) {
        Some(digits) => !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// Checks a tag key (non-empty, at most 250 characters) and value (at most 5000).
pub fn tag(key: &str, value: &str) -> Result<()> {
    tag_key(key)?;
    if value.chars().count() > MAX_TAG_VALUE_LEN {
        return Err(RegistryError::InvalidParameter(format!(
            "value of tag {key:?} is longer than {MAX_TAG_VALUE_LEN} characters"
        )));
    }
    Ok(())
}

/// Checks a tag key alone (for deletes).
pub fn tag_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(RegistryError::InvalidParameter("tag key must not be empty".into()));
    }
    if key.chars().count() > MAX_TAG_KEY_LEN {
        return Err(RegistryError::InvalidParameter(format!(
            "tag key {key:?} is longer than {MAX_TAG_KEY_LEN} characters"
        )));
    }
    Ok(())
}

/// Version numbers start at 1.
pub fn version(name: &str, version: u64) -> Result<i64> {
    match i64::try_from(version) {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(RegistryError::InvalidParameter(format!(
            "invalid version {version} of registered model {name:?}: versions are integers from 1"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(r: Result<()>) -> String {
        match r {
            Err(RegistryError::InvalidParameter(m)) => m,
            other => panic!("expected InvalidParameter, got {other:?}"),
        }
    }

    #[test]
    fn model_names_accepted() {
        for ok in ["m", "my-model_1", "main.default.llama", "A.b-C_9", "x.", &"a".repeat(256)] {
            model_name(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn model_names_rejected() {
        let long = "a".repeat(257);
        for bad in ["", ".", "..", ".hidden", "a..b", "a/b", "/abs", "a\\b", "a b", "a\nb", "a\0b", "é", "a@b", &long]
        {
            let msg = invalid(model_name(bad));
            assert!(msg.starts_with("invalid model name"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        assert!(invalid(model_name("a..b")).contains("'..'"));
        assert!(invalid(model_name(".x")).contains("start with '.'"));
        assert!(invalid(model_name("a/b")).contains("'/'"));
    }

    #[test]
    fn aliases_accepted() {
        for ok in ["champion", "prod-2", "A_b", "v", "vx1", "v1x", "latest2", "my_latest", &"a".repeat(255)] {
            alias(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn aliases_rejected() {
        let long = "a".repeat(256);
        for bad in ["", "a.b", "a b", "a/b", "é", "a@b", &long] {
            assert!(invalid(alias(bad)).starts_with("invalid alias"));
        }
    }

    #[test]
    fn reserved_aliases_rejected_case_insensitively() {
        for reserved in ["latest", "LATEST", "Latest", "v1", "V1", "v007", "v123456789012345678901234567890"] {
            let msg = invalid(alias(reserved));
            assert!(msg.contains("is reserved"), "{msg}");
        }
        assert_eq!(
            invalid(alias("latest")),
            "alias \"latest\" is reserved ('latest' and 'v<number>' name versions, not aliases)"
        );
    }

    #[test]
    fn tags_checked() {
        tag("k", "").unwrap();
        tag(&"k".repeat(250), &"v".repeat(5000)).unwrap();
        tag("key.with.dots and spaces", "v").unwrap();
        assert!(invalid(tag("", "v")).contains("must not be empty"));
        assert!(invalid(tag(&"k".repeat(251), "v")).contains("longer than 250"));
        assert!(invalid(tag("k", &"v".repeat(5001))).contains("longer than 5000"));
        assert!(invalid(tag_key("")).contains("must not be empty"));
    }

    #[test]
    fn versions_start_at_one() {
        assert_eq!(version("m", 1).unwrap(), 1);
        assert!(matches!(version("m", 0), Err(RegistryError::InvalidParameter(_))));
        assert!(matches!(version("m", u64::MAX), Err(RegistryError::InvalidParameter(_))));
    }
}
