//! The search filter language of MLflow's `search_registered_models` /
//! `search_model_versions`, as a small hand-written parser and evaluator.
//!
//! Grammar: `clause (AND clause)*` (AND case-insensitive; the empty filter matches all),
//! `clause := key op value`.
//! - keys: `name`, `tags.<key>`, ``tags.`key with.dots` `` (or `tags."key"`); for versions
//!   also `version_number` (alias `version`), `run_id`, `source_path`.
//! - string keys take `=`, `!=`, `LIKE` (case-sensitive), `ILIKE` (case-insensitive) with a
//!   single- or double-quoted value; `%` matches any run of characters, `_` exactly one.
//! - `version_number` takes `=`, `!=`, `<`, `>`, `<=`, `>=` with a bare or quoted integer.
//!
//! A clause on a tag (or `run_id`) that the entity does not have is false for every
//! operator except `!=`, which holds: MLflow's own client sends
//! ``AND tag.`mlflow.prompt.is_prompt` != 'true'`` with every registered-model search and
//! expects models without that tag back, as MLflow's server returns them. Evaluation is O(clauses × value length) per
//! entity; anything outside the grammar is `InvalidParameter` naming what was wrong.

use crate::error::{RegistryError, Result};
use crate::types::{ModelVersion, RegisteredModel};

/// Which search the filter is for: versions accept more keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Models,
    Versions,
}

/// A parsed filter: every clause must hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    clauses: Vec<Clause>,
}

#[derive(Clone, Debug, PartialEq)]
enum Key {
    Name,
    Tag(String),
    Version,
    RunId,
    SourcePath,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Like,
    ILike,
}

#[derive(Clone, Debug, PartialEq)]
enum Clause {
    Text { key: Key, op: Op, value: String },
    Number { op: Op, value: u64 },
}

/// What a filter can look at in an entity.
pub trait Searchable {
    fn name(&self) -> &str;
    fn tag(&self, key: &str) -> Option<&str>;
    fn version(&self) -> Option<u64> {
        None
    }
    fn run_id(&self) -> Option<&str> {
        None
    }
    fn source_path(&self) -> Option<&str> {
        None
    }
}

impl Searchable for RegisteredModel {
    fn name(&self) -> &str {
        &self.name
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

impl Searchable for ModelVersion {
    fn name(&self) -> &str {
        &self.name
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
    fn version(&self) -> Option<u64> {
        Some(self.version)
    }
    fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }
    fn source_path(&self) -> Option<&str> {
        Some(&self.source)
    }
}

impl Filter {
    /// Parses `filter` for `target`.
    pub fn parse(filter: &str, target: Target) -> Result<Filter> {
        let mut p = Parser { s: filter, pos: 0, target };
        let mut clauses = Vec::new();
        p.skip_ws();
        if p.at_end() {
            return Ok(Filter { clauses });
        }
        loop {
            clauses.push(p.clause()?);
            p.skip_ws();
            if p.at_end() {
                return Ok(Filter { clauses });
            }
            let word = p.word();
            if !word.eq_ignore_ascii_case("and") {
                return Err(p.error(&format!("expected AND between clauses, found {:?}", p.rest_or(word))));
            }
        }
    }

    /// The name an `name = '...'` clause pins, if any (lets the store narrow its query).
    pub fn exact_name(&self) -> Option<&str> {
        self.clauses.iter().find_map(|c| match c {
            Clause::Text { key: Key::Name, op: Op::Eq, value } => Some(value.as_str()),
            _ => None,
        })
    }

    /// True when every clause holds for `entity`.
    pub fn matches(&self, entity: &impl Searchable) -> bool {
        self.clauses.iter().all(|clause| match clause {
            Clause::Number { op, value } => entity.version().is_some_and(|v| compare_numbers(v, *op, *value)),
            Clause::Text { key, op, value } => {
                let actual = match key {
                    Key::Name => Some(entity.name()),
                    Key::Tag(k) => entity.tag(k),
                    Key::RunId => entity.run_id(),
                    Key::SourcePath => entity.source_path(),
                    Key::Version => None,
                };
                match actual {
                    Some(a) => compare_text(a, *op, value),
                    None => *op == Op::Ne,
                }
            }
        })
    }
}

fn compare_numbers(actual: u64, op: Op, value: u64) -> bool {
    match op {
        Op::Eq => actual == value,
        Op::Ne => actual != value,
        Op::Lt => actual < value,
        Op::Gt => actual > value,
        Op::Le => actual <= value,
        Op::Ge => actual >= value,
        Op::Like | Op::ILike => false,
    }
}

fn compare_text(actual: &str, op: Op, value: &str) -> bool {
    match op {
        Op::Eq => actual == value,
        Op::Ne => actual != value,
        Op::Like => like(actual, value),
        Op::ILike => like(&actual.to_lowercase(), &value.to_lowercase()),
        Op::Lt | Op::Gt | Op::Le | Op::Ge => false,
    }
}

/// SQL `LIKE`: `%` matches any run of characters, `_` exactly one; no escape character.
/// Greedy with backtracking to the last `%`: O(len(text) × len(pattern)) worst case.
pub fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut ti, mut pi) = (0, 0);
    let mut resume: Option<(usize, usize)> = None; // (pattern index after '%', text index it matched up to)
    while ti < t.len() {
        if pi < p.len() && p[pi] == '%' {
            resume = Some((pi + 1, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((after, matched)) = resume {
            pi = after;
            ti = matched + 1;
            resume = Some((after, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '%')
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    target: Target,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

impl<'a> Parser<'a> {
    fn error(&self, why: &str) -> RegistryError {
        RegistryError::InvalidParameter(format!("invalid search filter {:?}: {why}", self.s))
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn rest_or(&self, word: &'a str) -> &'a str {
        if word.is_empty() {
            self.rest()
        } else {
            word
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.s.len() - trimmed.len();
    }

    /// The run of `[A-Za-z0-9_.]` at the cursor (possibly empty).
    fn word(&mut self) -> &'a str {
        let rest = self.rest();
        let len = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    /// A string quoted with `quote` at the cursor (no escapes inside).
    fn quoted(&mut self, what: &str) -> Result<String> {
        let Some(quote) = self.peek() else {
            return Err(self.error(&format!("expected {what}")));
        };
        let body = &self.rest()[1..];
        let Some(end) = body.find(quote) else {
            return Err(self.error(&format!("unterminated {quote} in {what}")));
        };
        self.pos += 1 + end + 1;
        Ok(body[..end].to_string())
    }

    fn clause(&mut self) -> Result<Clause> {
        self.skip_ws();
        let key = self.key()?;
        self.skip_ws();
        let op = self.op()?;
        self.skip_ws();
        match key {
            Key::Version => {
                if !matches!(op, Op::Eq | Op::Ne | Op::Lt | Op::Gt | Op::Le | Op::Ge) {
                    return Err(self.error("version_number takes =, !=, <, >, <= or >="));
                }
                let raw = match self.peek() {
                    Some('\'' | '"') => self.quoted("a version number")?,
                    _ => self.word().to_string(),
                };
                let value = raw
                    .parse::<u64>()
                    .map_err(|_| self.error(&format!("version_number must be compared to an integer, not {raw:?}")))?;
                Ok(Clause::Number { op, value })
            }
            key => {
                if !matches!(op, Op::Eq | Op::Ne | Op::Like | Op::ILike) {
                    return Err(self.error("string keys take =, !=, LIKE or ILIKE"));
                }
                match self.peek() {
                    Some('\'' | '"') => Ok(Clause::Text { key, op, value: self.quoted("a string value")? }),
                    _ => {
                        let word = self.word();
                        Err(self.error(&format!("expected a quoted string value, found {:?}", self.rest_or(word))))
                    }
                }
            }
        }
    }

    fn key(&mut self) -> Result<Key> {
        let word = self.word();
        let lower = word.to_ascii_lowercase();
        if let Some(prefix) = ["tags.", "tag."].into_iter().find(|p| lower.starts_with(p)) {
            let tag_key = &word[prefix.len()..];
            let tag_key = if tag_key.is_empty() {
                match self.peek() {
                    Some('`' | '"') => self.quoted("a tag key")?,
                    _ => return Err(self.error("tag keys with characters other than letters, digits, '_' and '.' need backticks: tags.`my key`")),
                }
            } else {
                tag_key.to_string()
            };
            if tag_key.is_empty() {
                return Err(self.error("empty tag key"));
            }
            return Ok(Key::Tag(tag_key));
        }
        let versions = self.target == Target::Versions;
        match lower.as_str() {
            "name" => Ok(Key::Name),
            "version_number" | "version" if versions => Ok(Key::Version),
            "run_id" if versions => Ok(Key::RunId),
            "source_path" if versions => Ok(Key::SourcePath),
            _ => {
                let valid =
                    if versions { "name, version_number, run_id, source_path, tags.<key>" } else { "name, tags.<key>" };
                Err(self.error(&format!("unknown key {:?}; valid keys: {valid}", self.rest_or(word))))
            }
        }
    }

    fn op(&mut self) -> Result<Op> {
        for (symbol, op) in
            [("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge), ("=", Op::Eq), ("<", Op::Lt), (">", Op::Gt)]
        {
            if self.rest().starts_with(symbol) {
                self.pos += symbol.len();
                return Ok(op);
            }
        }
        let word = self.word();
        if word.eq_ignore_ascii_case("like") {
            Ok(Op::Like)
        } else if word.eq_ignore_ascii_case("ilike") {
            Ok(Op::ILike)
        } else {
            Err(self.error(&format!(
                "expected an operator (=, !=, <, >, <=, >=, LIKE, ILIKE), found {:?}",
                self.rest_or(word)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Item {
        name: &'static str,
        version: u64,
        tags: BTreeMap<String, String>,
        run_id: Option<&'static str>,
    }

    impl Searchable for Item {
        fn name(&self) -> &str {
            self.name
        }
        fn tag(&self, key: &str) -> Option<&str> {
            self.tags.get(key).map(String::as_str)
        }
        fn version(&self) -> Option<u64> {
            Some(self.version)
        }
        fn run_id(&self) -> Option<&str> {
            self.run_id
        }
    }

    fn item(name: &'static str, version: u64, tags: &[(&str, &str)]) -> Item {
        let tags = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Item { name, version, tags, run_id: None }
    }

    fn matches(filter: &str, it: &Item) -> bool {
        Filter::parse(filter, Target::Versions).unwrap_or_else(|e| panic!("{filter}: {e}")).matches(it)
    }

    fn invalid(filter: &str, target: Target) -> String {
        match Filter::parse(filter, target) {
            Err(RegistryError::InvalidParameter(m)) => m,
            other => panic!("{filter:?}: expected InvalidParameter, got {other:?}"),
        }
    }

    #[test]
    fn like_wildcards() {
        assert!(like("llama-3", "llama%"));
        assert!(like("llama-3", "%3"));
        assert!(like("llama-3", "%ma-%"));
        assert!(like("llama-3", "llama-_"));
        assert!(!like("llama-33", "llama-_"));
        assert!(like("", "%"));
        assert!(!like("", "_"));
        assert!(like("abcabd", "%abd"));
        assert!(like("aaa", "a%a%a"));
        assert!(!like("aa", "a%a%a"));
        assert!(!like("Llama", "llama%"));
        assert!(like("a%b", "a%b"));
        assert!(like("mississippi", "m%iss%ppi"));
        assert!(like("ünï", "_n_"));
    }

    #[test]
    fn empty_filter_matches_everything() {
        for f in ["", "   "] {
            assert!(matches(f, &item("x", 1, &[])));
        }
    }

    #[test]
    fn name_clauses() {
        let it = item("Llama-7b", 3, &[]);
        assert!(matches("name = 'Llama-7b'", &it));
        assert!(matches("name=\"Llama-7b\"", &it));
        assert!(!matches("name = 'llama-7b'", &it));
        assert!(matches("name != 'other'", &it));
        assert!(matches("name LIKE 'Llama%'", &it));
        assert!(!matches("name LIKE 'llama%'", &it));
        assert!(matches("name ILIKE 'llama%'", &it));
        assert!(matches("name like 'L_ama%'", &it));
        assert!(matches("NAME ilike '%7B'", &it));
    }

    #[test]
    fn tag_clauses_with_plain_dotted_and_backticked_keys() {
        let it = item("m", 1, &[("task", "chat"), ("a.b", "x"), ("my key", "y y")]);
        assert!(matches("tags.task = 'chat'", &it));
        assert!(matches("tag.task = 'chat'", &it));
        assert!(matches("tags.a.b = 'x'", &it));
        assert!(matches("tags.`a.b` = 'x'", &it));
        assert!(matches("tags.`my key` = 'y y'", &it));
        assert!(matches("tags.\"my key\" LIKE 'y%'", &it));
        assert!(matches("tags.task ILIKE 'CH%'", &it));
        assert!(!matches("tags.task != 'chat'", &it));
        // A missing tag fails every operator but `!=` (MLflow's client relies on it).
        assert!(!matches("tags.missing = 'x'", &it));
        assert!(matches("tags.missing != 'x'", &it));
        assert!(matches("name = 'm' AND tag.`mlflow.prompt.is_prompt` != 'true'", &it));
        assert!(!matches("tags.missing LIKE '%'", &it));
    }

    #[test]
    fn version_clauses() {
        let it = item("m", 5, &[]);
        for (f, want) in [
            ("version_number = 5", true),
            ("version_number = '5'", true),
            ("version = 5", true),
            ("version_number != 5", false),
            ("version_number < 5", false),
            ("version_number <= 5", true),
            ("version_number > 4", true),
            ("version_number >= 6", false),
            ("version_number>4", true),
        ] {
            assert_eq!(matches(f, &it), want, "{f}");
        }
    }

    #[test]
    fn and_joins_clauses() {
        let mut it = item("m", 2, &[("task", "chat")]);
        it.run_id = Some("r1");
        assert!(matches("name = 'm' AND tags.task = 'chat' and version_number >= 2 AnD run_id = 'r1'", &it));
        assert!(!matches("name = 'm' AND tags.task = 'code'", &it));
        assert!(!matches("run_id = 'r2'", &it));
        assert!(!matches("run_id = 'r1'", &item("m", 2, &[])));
        assert_eq!(Filter::parse("tags.x = 'y' AND name = 'm'", Target::Models).unwrap().exact_name(), Some("m"));
        assert_eq!(Filter::parse("name LIKE 'm'", Target::Models).unwrap().exact_name(), None);
    }

    #[test]
    fn rejects_what_is_outside_the_grammar() {
        let cases = [
            ("name", "expected an operator"),
            ("name = ", "expected a quoted string"),
            ("name = m", "expected a quoted string"),
            ("name = 'm", "unterminated"),
            ("name ~ 'm'", "expected an operator"),
            ("name > 'm'", "string keys take"),
            ("version_number LIKE '1%'", "version_number takes"),
            ("version_number = 'x'", "must be compared to an integer"),
            ("version_number = -1", "must be compared to an integer"),
            ("name = 'm' OR name = 'n'", "expected AND"),
            ("name = 'm' AND", "unknown key"),
            ("name = 'm' name = 'n'", "expected AND"),
            ("owner = 'x'", "unknown key"),
            ("tags. = 'x'", "need backticks"),
            ("tags.`` = 'x'", "empty tag key"),
            ("tags.`x = 'y'", "unterminated"),
            ("tags.my-key = 'x'", "expected an operator"),
        ];
        for (f, want) in cases {
            let msg = invalid(f, Target::Versions);
            assert!(msg.contains(want), "{f:?}: {msg}");
            assert!(msg.starts_with("invalid search filter"), "{msg}");
        }
        // Version-only keys are unknown to model search.
        for f in ["version_number = 1", "run_id = 'r'", "source_path = 'p'"] {
            assert!(invalid(f, Target::Models).contains("valid keys: name, tags.<key>"), "{f}");
        }
    }
}
