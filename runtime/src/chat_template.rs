//! Chat templates: a model's Jinja template turning `messages` into its prompt text.
//!
//! The template is compiled once by [`ChatTemplate::new`] in a minijinja environment set
//! up like HF transformers' (`ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True, extensions=[loopcontrols])`): Python string/dict/list methods
//! (`.strip()`, `.startswith()`, `.items()` …) through `minijinja_contrib::pycompat`,
//! `raise_exception(msg)`, `strftime_now(fmt)` (UTC) and a `tojson` that writes what
//! Python's `json.dumps(ensure_ascii=False)` writes. Context: `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`, `tools` and `documents` (none).
//!
//! Invariants: rendering is a pure function of its inputs except `strftime_now`; a
//! template's `raise_exception("…")` becomes `Error::ChatTemplate("…")` with the message
//! verbatim; syntax errors surface at construction, not at the first request. The
//! rendered text still has to be tokenized with special tokens matched (it contains
//! `<|im_start|>` etc. literally) and without a second BOS when the template writes one.

use crate::error::{Error, Result};
use minijinja::value::{Enumerator, Kwargs, Object, ValueKind};
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One chat turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template plus the BOS/EOS strings it may print.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

const NAME: &str = "chat_template";

/// The message of a template's `raise_exception`, carried as the minijinja error's source
/// so that `render` can hand it back verbatim.
#[derive(Debug)]
struct Raised(String);

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is an `Error::ChatTemplate`.
    pub fn new(source: String, bos_token: Option<String>, eos_token: Option<String>) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.clone()).map_err(|e| Error::ChatTemplate(describe(&e)))?;
        Ok(ChatTemplate { env, source, bos_token, eos_token })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the prompt for `messages`; with `add_generation_prompt` it ends with the
    /// header of the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<Value> = messages.iter().map(|m| Value::from_object(MessageValue(m.clone()))).collect();
        let opt = |s: &Option<String>| s.as_deref().map(Value::from).unwrap_or(Value::from(""));
        let mut ctx = BTreeMap::new();
        ctx.insert("messages", Value::from(messages));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        ctx.insert("bos_token", opt(&self.bos_token));
        ctx.insert("eos_token", opt(&self.eos_token));
        ctx.insert("tools", Value::from(()));
        ctx.insert("documents", Value::from(()));
        let tmpl = self.env.get_template(NAME).map_err(|e| Error::ChatTemplate(describe(&e)))?;
        tmpl.render(Value::from(ctx)).map_err(|e| {
            // A template's own raise_exception: its message, verbatim.
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = src {
                if let Some(r) = s.downcast_ref::<Raised>() {
                    return Error::ChatTemplate(r.0.clone());
                }
                src = s.source();
            }
            Error::ChatTemplate(describe(&e))
        })
    }
}

/// A message as the template sees it: a map with keys in Python's order (`role`,
/// `content`), so `message | tojson` prints what transformers prints.
#[derive(Debug)]
struct MessageValue(ChatMessage);

impl Object for MessageValue {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "role" => Some(Value::from(self.0.role.as_str())),
            "content" => Some(Value::from(self.0.content.as_str())),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["role", "content"])
    }
}

/// A minijinja error in one line, with the template line when known.
fn describe(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("{} (line {line})", e),
        None => e.to_string(),
    }
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg.clone()).with_source(Raised(msg)))
}

/// `strftime_now(fmt)`: the current UTC time through a strftime subset (`%Y %y %m %d %e
/// %H %I %M %S %p %j %a %A %b %B %h %%`); other conversions are written literally.
fn strftime_now(fmt: String) -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    strftime(&fmt, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

fn strftime(fmt: &str, unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(m - 1) as usize] + d + u32::from(leap && m > 2);
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') => out.push_str(&format!("{:02}", if hh % 12 == 0 { 12 } else { hh % 12 })),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('b') | Some('h') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `tojson(indent=None, sort_keys=False, separators=None)` as Python's
/// `json.dumps(x, ensure_ascii=False, …)` writes it — unlike minijinja's built-in, no
/// HTML escaping, since the output is a prompt, not a web page.
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(usize::try_from(v)?),
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    // The next two are accepted for compatibility and have no effect here.
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: separators must be a pair")),
        // Python's default: ", " without indent, "," with it.
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let mut out = String::new();
    let w = JsonWriter { indent, sort_keys, item_sep: &item_sep, key_sep: &key_sep };
    w.write(&mut out, value, 0)?;
    Ok(Value::from_safe_string(out))
}

struct JsonWriter<'a> {
    indent: Option<usize>,
    sort_keys: bool,
    item_sep: &'a str,
    key_sep: &'a str,
}

impl JsonWriter<'_> {
    fn newline(&self, out: &mut String, depth: usize) {
        if let Some(n) = self.indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * depth));
        }
    }

    fn write(&self, out: &mut String, v: &Value, depth: usize) -> std::result::Result<(), minijinja::Error> {
        if depth > 128 {
            return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: value nested too deeply"));
        }
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => match (v.as_i64(), f64::try_from(v.clone())) {
                // Python writes non-finite floats as bare NaN / Infinity.
                (None, Ok(f)) if f.is_nan() => out.push_str("NaN"),
                (None, Ok(f)) if f.is_infinite() => out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" }),
                _ => out.push_str(&v.to_string()),
            },
            ValueKind::String | ValueKind::Bytes | ValueKind::Plain | ValueKind::Invalid => {
                write_json_str(out, &v.to_string())
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.item_sep);
                    }
                    self.newline(out, depth + 1);
                    self.write(out, item, depth + 1)?;
                }
                self.newline(out, depth);
                out.push(']');
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                if keys.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.item_sep);
                    }
                    self.newline(out, depth + 1);
                    write_json_str(out, &k.to_string());
                    out.push_str(self.key_sep);
                    self.write(out, &v.get_item(k)?, depth + 1)?;
                }
                self.newline(out, depth);
                out.push('}');
            }
            _ => write_json_str(out, &v.to_string()),
        }
        Ok(())
    }
}

fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are helpful<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn renders_chatml() {
        let t = ChatTemplate::new(CHATML.into(), None, None).expect("compiles");
        let out = t.render(&[ChatMessage::new("user", "Hi!")], true).expect("renders");
        assert_eq!(
            out,
            "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t.render(&[ChatMessage::new("system", "S"), ChatMessage::new("user", "U")], false).expect("renders");
        assert_eq!(out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n");
    }

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        // transformers renders this (trim_blocks + lstrip_blocks) as "A\nB\n".
        let src =
            "{% for m in messages %}\n    {% if m.role == 'user' %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src.into(), None, None).expect("compiles");
        let out = t.render(&[ChatMessage::new("user", "A"), ChatMessage::new("user", "B")], false).expect("renders");
        assert_eq!(out, "A\nB\n");
    }

    #[test]
    fn bos_eos_python_methods_loop_controls() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}{{ m.content.strip().upper() }}{% if m.content.startswith(' x') %}!{% endif %}{% endfor %}{{ eos_token }}{% if tools is none %}N{% endif %}";
        let t = ChatTemplate::new(src.into(), Some("<s>".into()), Some("</s>".into())).expect("compiles");
        let out = t
            .render(
                &[ChatMessage::new("user", " xy "), ChatMessage::new("skip", "no"), ChatMessage::new("user", "z")],
                false,
            )
            .expect("renders");
        assert_eq!(out, "<s>XY!Z</s>N");
    }

    #[test]
    fn raise_exception_message_is_kept() {
        let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}ok";
        let t = ChatTemplate::new(src.into(), None, None).expect("compiles");
        let err = t.render(&[ChatMessage::new("assistant", "x")], false).expect_err("raises");
        match err {
            Error::ChatTemplate(msg) => {
                assert_eq!(msg, "Conversation roles must alternate user/assistant/user/assistant/...")
            }
            other => panic!("wrong error {other:?}"),
        }
        assert_eq!(t.render(&[ChatMessage::new("user", "x")], false).expect("ok"), "ok");
    }

    #[test]
    fn syntax_errors_surface_at_construction() {
        let err = ChatTemplate::new("{% for m in messages %}".into(), None, None).expect_err("unclosed block");
        assert!(matches!(err, Error::ChatTemplate(_)), "{err}");
    }

    #[test]
    fn tojson_like_python() {
        let src = "{{ messages[0] | tojson }}|{{ messages | tojson(indent=2) }}|{{ {'b': 1, 'a': [true, none, 'x<y']} | tojson(sort_keys=true) }}";
        let t = ChatTemplate::new(src.into(), None, None).expect("compiles");
        let out = t.render(&[ChatMessage::new("user", "é \"q\"\n<b>")], false).expect("renders");
        assert_eq!(
            out,
            "{\"role\": \"user\", \"content\": \"é \\\"q\\\"\\n<b>\"}|[\n  {\n    \"role\": \"user\",\n    \"content\": \"é \\\"q\\\"\\n<b>\"\n  }\n]|{\"a\": [true, null, \"x<y\"], \"b\": 1}"
        );
    }

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-02-29T13:05:09Z, a Thursday; day 60 of a leap year.
        let t = 1_709_211_909;
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", t), "2024-02-29 13:05:09");
        assert_eq!(strftime("%d %b %Y", t), "29 Feb 2024");
        assert_eq!(strftime("%A %B %j %I%p %y %% %Q", t), "Thursday February 060 01PM 24 % %Q");
        assert_eq!(strftime("%a %e", 0), "Thu  1");
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}".into(), None, None).expect("ok");
        let year = t.render(&[], false).expect("renders");
        assert!(year.len() == 4 && year.starts_with('2'), "{year}");
    }
}
