//! Bearer-token authentication (SPEC §2 "Auth").
//!
//! Invariants:
//! - tokens are kept only as SHA-256 digests; no token (and no digest) is ever printed:
//!   `Debug` shows a count, [`AuthError`] messages never include the presented value;
//! - [`ApiKeys::check`] hashes the presented token and compares the fixed-length digest
//!   against *every* configured digest with [`subtle::ConstantTimeEq`], without early
//!   exit, so timing reveals neither which token matched nor any token's length;
//! - the user label returned for a valid token is `"key-"` + the first 8 hex digits of
//!   its SHA-256: stable across restarts, distinct per token (barring a 32-bit prefix
//!   collision), and not the secret; it keys per-user rate limits and logs;
//! - with no tokens configured the server is open: every check answers `"anonymous"`;
//! - tokens never contain whitespace or commas (RFC 6750 `b64token`s cannot), so a
//!   `Bearer` header carries exactly one.

use sha2::{Digest, Sha256};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use subtle::{Choice, ConstantTimeEq};

type TokenDigest = [u8; 32];

/// The label [`ApiKeys::check`] returns when authentication is disabled.
pub const ANONYMOUS: &str = "anonymous";

/// The configured API tokens (as SHA-256 digests, deduplicated).
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<TokenDigest>,
}

/// Why a request failed authentication; messages never contain the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing Authorization header; expected `Authorization: Bearer <token>`")]
    Missing,
    #[error("malformed Authorization header; expected `Bearer <token>`")]
    Malformed,
    #[error("invalid API token")]
    Invalid,
}

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

fn label(d: &TokenDigest) -> String {
    let hex: String = d[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("key-{hex}")
}

impl ApiKeys {
    /// No tokens: an open server.
    pub fn none() -> ApiKeys {
        ApiKeys::default()
    }

    fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> ApiKeys {
        let mut keys = ApiKeys::none();
        for token in tokens {
            keys.insert(digest(token));
        }
        keys
    }

    fn insert(&mut self, d: TokenDigest) {
        if !self.digests.contains(&d) {
            self.digests.push(d);
        }
    }

    /// Reads one token per line; lines are trimmed, blank lines and lines starting with
    /// `#` skipped. An unreadable file, a token holding whitespace or a comma, or a file
    /// with no tokens → `Err` naming the path (and line), never a token.
    pub fn from_file(path: &Path) -> Result<ApiKeys, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read API key file {}: {e}", path.display()))?;
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.contains(|c: char| c.is_whitespace() || c == ',') {
                return Err(format!(
                    "API key file {} line {}: a token must not contain whitespace or commas",
                    path.display(),
                    i + 1
                ));
            }
            tokens.push(line);
        }
        if tokens.is_empty() {
            return Err(format!("API key file {} holds no tokens", path.display()));
        }
        Ok(ApiKeys::from_tokens(tokens))
    }

    /// Tokens from an environment variable's value: separated by commas (whitespace
    /// separates too, since no token may contain it); empty pieces are skipped.
    pub fn from_env_value(v: &str) -> ApiKeys {
        ApiKeys::from_tokens(v.split(|c: char| c == ',' || c.is_whitespace()).filter(|t| !t.is_empty()))
    }

    /// Every token of both sets (duplicates counted once).
    pub fn merge(mut self, other: ApiKeys) -> ApiKeys {
        for d in other.digests {
            self.insert(d);
        }
        self
    }

    /// True when at least one token is configured (requests must then authenticate).
    pub fn is_enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// The number of distinct tokens.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// True when no token is configured.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks an `Authorization` header value. `Ok(user)` with the token's stable,
    /// non-secret label (see the module docs), or `"anonymous"` when disabled (whatever
    /// the header). Errors: no header → `Missing`; not `Bearer <token>` (scheme
    /// case-insensitive, one token) → `Malformed`; unknown token → `Invalid`.
    pub fn check(&self, authorization: Option<&str>) -> Result<String, AuthError> {
        if !self.is_enabled() {
            return Ok(ANONYMOUS.to_string());
        }
        let header = authorization.ok_or(AuthError::Missing)?.trim();
        let (scheme, token) = header.split_once(char::is_whitespace).ok_or(AuthError::Malformed)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(char::is_whitespace) {
            return Err(AuthError::Malformed);
        }
        let presented = digest(token);
        let mut found = Choice::from(0);
        for configured in &self.digests {
            found |= configured.ct_eq(&presented);
        }
        if bool::from(found) {
            Ok(label(&presented))
        } else {
            Err(AuthError::Invalid)
        }
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys").field("enabled", &self.is_enabled()).field("tokens", &self.len()).finish()
    }
}

/// True for a loopback host: `localhost` (any case, optional trailing dot), an IPv4
/// address in 127.0.0.0/8, `::1` (bracketed or not) or an IPv4-mapped 127.x address;
/// a trailing `:port` is allowed. Everything else, `0.0.0.0` and `::` included, is false.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let is_loopback_ip = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return is_loopback_ip(ip);
    }
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return is_loopback_ip(addr.ip());
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<IpAddr>().is_ok_and(is_loopback_ip);
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("keel-auth-test-{}-{name}", std::process::id()));
        let mut f = std::fs::File::create(&path).expect("create temp file");
        f.write_all(contents.as_bytes()).expect("write temp file");
        path
    }

    #[test]
    fn disabled_is_anonymous_whatever_the_header() {
        let keys = ApiKeys::none();
        assert!(!keys.is_enabled());
        assert_eq!(keys.len(), 0);
        for header in [None, Some(""), Some("Bearer x"), Some("garbage")] {
            assert_eq!(keys.check(header).as_deref(), Ok("anonymous"));
        }
        assert!(!ApiKeys::from_env_value(" , ,").is_enabled());
    }

    #[test]
    fn valid_token_gives_sha256_label() {
        let keys = ApiKeys::from_env_value("secret, other");
        assert!(keys.is_enabled());
        assert_eq!(keys.len(), 2);
        // sha256("secret") = 2bb80d537b1da3e3...
        assert_eq!(keys.check(Some("Bearer secret")).as_deref(), Ok("key-2bb80d53"));
        assert_eq!(keys.check(Some("bearer secret")).as_deref(), Ok("key-2bb80d53"));
        assert_eq!(keys.check(Some("  BEARER   secret  ")).as_deref(), Ok("key-2bb80d53"));
        assert_eq!(keys.check(Some("Bearer\tsecret")).as_deref(), Ok("key-2bb80d53"));
        let other = keys.check(Some("Bearer other")).expect("valid");
        assert!(other.starts_with("key-") && other.len() == 12, "{other}");
        assert_ne!(other, "key-2bb80d53");
        assert!(!other.contains("other"));
    }

    #[test]
    fn errors() {
        let keys = ApiKeys::from_env_value("secret");
        assert_eq!(keys.check(None), Err(AuthError::Missing));
        for bad in
            ["", "secret", "Bearer", "Bearer ", "Basic secret", "Token secret", "Bearer secret extra", "Bearersecret"]
        {
            assert_eq!(keys.check(Some(bad)), Err(AuthError::Malformed), "{bad:?}");
        }
        for wrong in ["Bearer secret2", "Bearer Secret", "Bearer secre", "Bearer x"] {
            assert_eq!(keys.check(Some(wrong)), Err(AuthError::Invalid), "{wrong:?}");
        }
    }

    #[test]
    fn error_messages_never_contain_the_token() {
        let keys = ApiKeys::from_env_value("secret");
        for header in ["Bearer hunter2", "Basic hunter2", "hunter2"] {
            let e = keys.check(Some(header)).expect_err("refused");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn debug_never_prints_tokens() {
        let keys = ApiKeys::from_env_value("supersecrettoken,anothersecret");
        let shown = format!("{keys:?} {keys:#?}");
        assert!(!shown.contains("supersecrettoken"), "{shown}");
        assert!(!shown.contains("anothersecret"), "{shown}");
        // Not the digests either: only the count is shown.
        assert_eq!(format!("{keys:?}"), "ApiKeys { enabled: true, tokens: 2 }");
        assert_eq!(format!("{:?}", ApiKeys::none()), "ApiKeys { enabled: false, tokens: 0 }");
    }

    #[test]
    fn env_value_parsing_and_dedup() {
        let keys = ApiKeys::from_env_value(" a ,b,,a, c\t");
        assert_eq!(keys.len(), 3);
        for t in ["a", "b", "c"] {
            assert!(keys.check(Some(&format!("Bearer {t}"))).is_ok(), "{t}");
        }
        assert_eq!(keys.check(Some("Bearer a,b")), Err(AuthError::Invalid));
        assert_eq!(keys.check(Some("Bearer ")), Err(AuthError::Malformed));
    }

    #[test]
    fn merge_unions() {
        let merged = ApiKeys::from_env_value("a,b").merge(ApiKeys::from_env_value("b,c"));
        assert_eq!(merged.len(), 3);
        assert!(merged.check(Some("Bearer c")).is_ok());
        assert!(merged.check(Some("Bearer a")).is_ok());
        let merged = ApiKeys::none().merge(ApiKeys::none());
        assert!(!merged.is_enabled());
        let merged = ApiKeys::none().merge(ApiKeys::from_env_value("x"));
        assert!(merged.is_enabled());
    }

    #[test]
    fn from_file_reads_tokens() {
        let path = temp_file("ok", "# keys for keel\n\n  tok-one  \n#tok-commented\ntok-two\r\n\n");
        let keys = ApiKeys::from_file(&path).expect("readable");
        let _ = std::fs::remove_file(&path);
        assert_eq!(keys.len(), 2);
        assert!(keys.check(Some("Bearer tok-one")).is_ok());
        assert!(keys.check(Some("Bearer tok-two")).is_ok());
        assert_eq!(keys.check(Some("Bearer #tok-commented")), Err(AuthError::Invalid));
    }

    #[test]
    fn from_file_errors_name_the_path_not_the_token() {
        let missing = std::env::temp_dir().join("keel-auth-test-does-not-exist/keys.txt");
        let e = ApiKeys::from_file(&missing).expect_err("unreadable");
        assert!(e.contains("keel-auth-test-does-not-exist"), "{e}");

        let path = temp_file("empty", "# only comments\n\n   \n");
        let e = ApiKeys::from_file(&path).expect_err("no tokens");
        let _ = std::fs::remove_file(&path);
        assert!(e.contains("no tokens") && e.contains("keel-auth-test"), "{e}");

        let path = temp_file("spaces", "good\nbad token\n");
        let e = ApiKeys::from_file(&path).expect_err("whitespace in token");
        let _ = std::fs::remove_file(&path);
        assert!(e.contains("line 2") && !e.contains("bad token"), "{e}");
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "localhost:8080",
            "127.0.0.1",
            "127.255.0.9",
            "127.0.0.1:80",
            "::1",
            "[::1]",
            "[::1]:8080",
            "::ffff:127.0.0.1",
            " 127.0.0.1 ",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "0.0.0.0",
            "::",
            "[::]:80",
            "10.0.0.1",
            "128.0.0.1",
            "::2",
            "example.com",
            "localhost.example.com",
            "notlocalhost",
            "localhost:notaport",
            "127.0.0.1.example.com",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn api_keys_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ApiKeys>();
    }
}
