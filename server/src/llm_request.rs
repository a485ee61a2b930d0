//! The LLM request body shared by `/v1/completions`, `/v1/chat/completions` and the
//! unified format of `/serving-endpoints/{name}/invocations` (`messages`, `prompt` or
//! `input`): parsing with the failing field named, and conversion to engine requests.
//!
//! Defaults follow OpenAI: completions `max_tokens` 16, chat up to the context window
//! (as vLLM), temperature 1, `n` 1. Fields keel cannot honour (non-zero presence /
//! frequency penalties, `best_of`, `echo`, `suffix`, top-logprobs lists) are refused
//! with a 400 naming them rather than silently ignored.

use crate::error::ApiError;
use keel_runtime::chat_template::ChatMessage;
use keel_runtime::config::ModelConfig;
use keel_runtime::engine::GenerationRequest;
use keel_runtime::sampling::SamplingParams;
use keel_runtime::tokenizer::Tokenizer;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Most choices per request (`n`) and prompts per completions call.
pub const MAX_N: usize = 16;
pub const MAX_PROMPTS: usize = 256;

#[derive(Debug, Default, Deserialize)]
pub struct LlmRequest {
    pub model: Option<String>,
    pub prompt: Option<Value>,
    pub messages: Option<Vec<Message>>,
    /// Databricks' unified format accepts `input` as a synonym of `prompt`.
    pub input: Option<Value>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub stop: Option<Value>,
    pub seed: Option<u64>,
    pub n: Option<u32>,
    pub best_of: Option<u32>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub ignore_eos: Option<bool>,
    /// Completions: an integer (how many top tokens); chat: a boolean.
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<u32>,
    pub user: Option<String>,
    /// `max_tokens` when a completion omits it (OpenAI: 16; the scoring protocol: more).
    #[serde(skip)]
    pub default_max_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
}

/// Which OpenAI operation a body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Completion,
    Chat,
}

/// A request ready for the engine: one token sequence per prompt, `n` choices each.
#[derive(Debug)]
pub struct Prepared {
    pub kind: Kind,
    pub prompts: Vec<Vec<u32>>,
    pub params: SamplingParams,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: bool,
}

impl Prepared {
    /// The engine requests, in choice order (prompt-major, then `n`).
    pub fn requests(&self) -> Vec<GenerationRequest> {
        let mut out = Vec::with_capacity(self.prompts.len() * self.n);
        for p in &self.prompts {
            for j in 0..self.n {
                let mut params = self.params.clone();
                // n samples of one prompt with one seed would be identical: derive one per choice.
                if let Some(s) = params.seed {
                    params.seed = Some(s.wrapping_add(j as u64));
                }
                out.push(GenerationRequest { prompt_ids: p.clone(), params, priority: 0 });
            }
        }
        out
    }
}

/// Parses a JSON body into `T`, naming the field at fault on error.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty; send a JSON object"));
    }
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::bad_request("the request body is not valid UTF-8"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if let Some(field) = non_finite_field(body) {
            return ApiError::invalid(field, "must be a finite number (NaN and Infinity are not JSON)");
        }
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("the request body is not valid JSON for this route: {inner}"))
        } else {
            ApiError::invalid(path, inner)
        }
    })
}

/// The key whose value is a bare `NaN` / `Infinity` (Python's json.dumps writes them).
fn non_finite_field(body: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    for bad in ["NaN", "-Infinity", "Infinity"] {
        let mut from = 0;
        while let Some(i) = s[from..].find(bad).map(|i| i + from) {
            from = i + bad.len();
            let before = s[..i].trim_end();
            if let Some(b) = before.strip_suffix(':') {
                let b = b.trim_end().strip_suffix('"')?;
                let start = b.rfind('"')?;
                return Some(b[start + 1..].to_string());
            }
        }
    }
    None
}

fn text_of_content(i: usize, content: &Option<Value>) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        // OpenAI content parts: [{"type": "text", "text": "..."}]
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => s.push_str(t),
                    _ => {
                        return Err(ApiError::invalid(
                            format!("messages[{i}].content[{j}]"),
                            "only {\"type\": \"text\", \"text\": ...} parts are supported",
                        ))
                    }
                }
            }
            Ok(s)
        }
        Some(_) => Err(ApiError::invalid(format!("messages[{i}].content"), "must be a string or a list of text parts")),
    }
}

/// The prompts of a completions body: a string, a list of strings, a list of token
/// ids, or a list of lists of token ids.
fn prompts_of(v: &Value, field: &str, tok: &Tokenizer) -> Result<Vec<Vec<u32>>, ApiError> {
    let ids = |arr: &[Value], f: String| -> Result<Vec<u32>, ApiError> {
        arr.iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(|| ApiError::invalid(f.clone(), "token ids must be non-negative integers"))
            })
            .collect()
    };
    let encode = |s: &str| tok.encode(s, true).map_err(|e| ApiError::invalid(field, e));
    let out = match v {
        Value::String(s) => vec![encode(s)?],
        Value::Array(a) if a.is_empty() => return Err(ApiError::invalid(field, "must not be empty")),
        Value::Array(a) if a.iter().all(Value::is_string) => {
            a.iter().map(|s| encode(s.as_str().unwrap_or_default())).collect::<Result<_, _>>()?
        }
        Value::Array(a) if a.iter().all(Value::is_number) => vec![ids(a, field.to_string())?],
        Value::Array(a) if a.iter().all(Value::is_array) => a
            .iter()
            .enumerate()
            .map(|(i, x)| ids(x.as_array().map(Vec::as_slice).unwrap_or_default(), format!("{field}[{i}]")))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::invalid(
                field,
                "must be a string, a list of strings, a list of token ids or a list of lists of token ids",
            ))
        }
    };
    if out.len() > MAX_PROMPTS {
        return Err(ApiError::invalid(field, format!("at most {MAX_PROMPTS} prompts per request, got {}", out.len())));
    }
    for (i, p) in out.iter().enumerate() {
        tok.check_ids(p).map_err(|e| ApiError::invalid(field, e))?;
        if p.is_empty() {
            return Err(ApiError::invalid(field, format!("prompt {i} is empty")));
        }
    }
    Ok(out)
}

impl LlmRequest {
    /// The operation this body asks for: `messages` → chat; `prompt` / `input` →
    /// completion; both or neither → 400.
    pub fn kind(&self) -> Result<Kind, ApiError> {
        match (self.messages.is_some(), self.prompt.is_some() || self.input.is_some()) {
            (true, false) => Ok(Kind::Chat),
            (false, true) => Ok(Kind::Completion),
            (true, true) => Err(ApiError::bad_request("send either messages (chat) or prompt (completion), not both")),
            (false, false) => Err(ApiError::invalid("messages", "a body needs messages (chat) or prompt (completion)")),
        }
    }

    /// Validates every field and tokenizes; `kind` is what the route serves.
    pub fn prepare(&self, kind: Kind, tok: &Tokenizer, cfg: &ModelConfig) -> Result<Prepared, ApiError> {
        let unsupported =
            |field: &str, what: &str| Err(ApiError::invalid(field, format!("{what} is not supported by keel")));
        if self.presence_penalty.is_some_and(|p| p != 0.0) {
            return unsupported("presence_penalty", "a non-zero presence_penalty (use repetition_penalty)");
        }
        if self.frequency_penalty.is_some_and(|p| p != 0.0) {
            return unsupported("frequency_penalty", "a non-zero frequency_penalty (use repetition_penalty)");
        }
        if self.best_of.is_some_and(|b| b > 1) {
            return unsupported("best_of", "best_of > 1");
        }
        if self.echo == Some(true) {
            return unsupported("echo", "echo");
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return unsupported("suffix", "suffix (insertion)");
        }
        let prompts = match kind {
            Kind::Chat => {
                let msgs = self.messages.as_ref().ok_or_else(|| ApiError::invalid("messages", "is required"))?;
                if msgs.is_empty() {
                    return Err(ApiError::invalid("messages", "must hold at least one message"));
                }
                let mut chat = Vec::with_capacity(msgs.len());
                for (i, m) in msgs.iter().enumerate() {
                    if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool" | "developer") {
                        return Err(ApiError::invalid(
                            format!("messages[{i}].role"),
                            format!("{:?} is not one of system, user, assistant, tool, developer", m.role),
                        ));
                    }
                    chat.push(ChatMessage::new(m.role.clone(), text_of_content(i, &m.content)?));
                }
                let template = tok.chat_template().ok_or_else(|| {
                    ApiError::invalid("messages", "this model has no chat template; use /v1/completions")
                })?;
                let text = template.render(&chat, true).map_err(|e| ApiError::invalid("messages", e))?;
                let ids = tok.encode(&text, false).map_err(|e| ApiError::invalid("messages", e))?;
                vec![ids]
            }
            Kind::Completion => {
                let (field, v) = match (&self.prompt, &self.input) {
                    (Some(p), _) => ("prompt", p),
                    (None, Some(i)) => ("input", i),
                    (None, None) => return Err(ApiError::invalid("prompt", "is required")),
                };
                prompts_of(v, field, tok)?
            }
        };
        let ctx = cfg.max_position_embeddings;
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let field = if kind == Kind::Chat { "messages" } else { "prompt" };
        if longest >= ctx {
            return Err(ApiError::invalid(
                field,
                format!("the prompt has {longest} tokens; the context window is {ctx}"),
            ));
        }
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) => ("max_completion_tokens", Some(m)),
            (None, m) => ("max_tokens", m),
        };
        let limit = (ctx - longest) as u64;
        let max = match max_tokens.1 {
            Some(0) => return Err(ApiError::invalid(max_tokens.0, "must be at least 1")),
            Some(m) if m > limit => {
                return Err(ApiError::invalid(
                    max_tokens.0,
                    format!("{m} exceeds the context window: {longest} prompt tokens leave room for {limit} of {ctx}"),
                ))
            }
            Some(m) => m,
            None if kind == Kind::Completion => self.default_max_tokens.unwrap_or(16).min(limit),
            None => limit,
        };
        let stop = match &self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ApiError::invalid("stop", "must be a string or a list of strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ApiError::invalid("stop", "must be a string or a list of strings")),
        };
        let d = SamplingParams::default();
        let params = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
            seed: self.seed,
            max_tokens: max as usize,
            stop,
            ignore_eos: self.ignore_eos.unwrap_or(false),
        };
        params.validate()?;
        let n = self.n.unwrap_or(1) as usize;
        if n == 0 || n > MAX_N {
            return Err(ApiError::invalid("n", format!("must be between 1 and {MAX_N}, got {n}")));
        }
        let logprobs = match (kind, &self.logprobs) {
            (_, None | Some(Value::Null)) => false,
            (Kind::Chat, Some(Value::Bool(b))) => {
                if self.top_logprobs.is_some_and(|t| t > 0) {
                    return unsupported("top_logprobs", "top_logprobs > 0 (keel returns the sampled token's logprob)");
                }
                *b
            }
            (Kind::Completion, Some(Value::Number(k))) => match k.as_u64() {
                Some(0 | 1) => true,
                _ => return unsupported("logprobs", "logprobs above 1 (keel returns the sampled token's logprob)"),
            },
            _ => {
                let want = if kind == Kind::Chat { "a boolean" } else { "an integer" };
                return Err(ApiError::invalid("logprobs", format!("must be {want}")));
            }
        };
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::invalid("stream_options", "is only allowed when stream is true"));
        }
        Ok(Prepared {
            kind,
            prompts,
            params,
            n,
            stream,
            include_usage: self.stream_options.as_ref().is_some_and(|o| o.include_usage),
            logprobs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_bad_types_name_the_field() {
        let e = parse_body::<LlmRequest>(br#"{"prompt": "x", "temperature": NaN}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"), "{e}");
        let e = parse_body::<LlmRequest>(br#"{"prompt": "x", "top_k": "many"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_k"), "{e}");
        let e = parse_body::<LlmRequest>(br#"{"messages": [{"role": 3}]}"#).unwrap_err();
        assert!(e.param.as_deref().unwrap().starts_with("messages[0].role"), "{e}");
        let e = parse_body::<LlmRequest>(b"{\"prompt\": \"\xff\"}").unwrap_err();
        assert!(e.message.contains("UTF-8"), "{e}");
        assert!(parse_body::<LlmRequest>(b"").is_err());
    }

    #[test]
    fn kind_needs_exactly_one_of_messages_and_prompt() {
        let r: LlmRequest = parse_body(br#"{"prompt": "a"}"#).unwrap();
        assert_eq!(r.kind().unwrap(), Kind::Completion);
        let r: LlmRequest = parse_body(br#"{"input": "a"}"#).unwrap();
        assert_eq!(r.kind().unwrap(), Kind::Completion);
        let r: LlmRequest = parse_body(br#"{"messages": []}"#).unwrap();
        assert_eq!(r.kind().unwrap(), Kind::Chat);
        let r: LlmRequest = parse_body(br#"{"messages": [], "prompt": "a"}"#).unwrap();
        assert!(r.kind().is_err());
        let r: LlmRequest = parse_body(br#"{}"#).unwrap();
        assert!(r.kind().is_err());
    }
}
