//! The registry's one error type. Every variant renders as a single line that names the
//! thing concerned; `error_code` / `http_status` give the MLflow REST mapping, which the
//! server applies in exactly one place (its `ApiError`). User errors (bad input, missing or
//! duplicate entities) are separate from store failures (I/O, SQLite, corruption).

use std::path::PathBuf;

/// `Result` with [`RegistryError`].
pub type Result<T> = std::result::Result<T, RegistryError>;

/// What can go wrong in a registry call.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A malformed name, alias, tag, URI, filter, page token or source.
    #[error("{0}")]
    InvalidParameter(String),
    /// The model, version, alias or tag does not exist (or was deleted).
    #[error("{0}")]
    NotFound(String),
    /// A live entity with that name already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// An artifact file no longer matches the manifest recorded at registration.
    /// `expected` / `actual` are hex digests, or `no file` when the file is missing or extra.
    #[error(
        "registry store is corrupted: \"{}\" does not match the checksum recorded at registration \
         (expected {expected}, found {actual}); delete this version and register the model again",
        path.display()
    )]
    ChecksumMismatch { path: PathBuf, expected: String, actual: String },
    /// A file-system operation on `path` failed.
    #[error("I/O error on \"{}\": {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The SQLite store failed (busy past the timeout, disk full, corrupt file, ...).
    #[error("registry database error: {0}")]
    Db(String),
}

impl RegistryError {
    /// The MLflow REST `error_code` for this error.
    pub fn error_code(&self) -> &'static str {
        match self {
            RegistryError::InvalidParameter(_) => "INVALID_PARAMETER_VALUE",
            RegistryError::NotFound(_) => "RESOURCE_DOES_NOT_EXIST",
            RegistryError::AlreadyExists(_) => "RESOURCE_ALREADY_EXISTS",
            RegistryError::ChecksumMismatch { .. } | RegistryError::Io { .. } | RegistryError::Db(_) => {
                "INTERNAL_ERROR"
            }
        }
    }

    /// The HTTP status MLflow answers with for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            RegistryError::InvalidParameter(_) => 400,
            RegistryError::NotFound(_) => 404,
            RegistryError::AlreadyExists(_) => 409,
            RegistryError::ChecksumMismatch { .. } | RegistryError::Io { .. } | RegistryError::Db(_) => 500,
        }
    }

    /// True for errors the caller caused (bad input, missing or duplicate entity); false for
    /// failures of the store itself.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            RegistryError::InvalidParameter(_) | RegistryError::NotFound(_) | RegistryError::AlreadyExists(_)
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> RegistryError {
        RegistryError::Io { path: path.into(), source }
    }
}

impl From<rusqlite::Error> for RegistryError {
    fn from(e: rusqlite::Error) -> Self {
        RegistryError::Db(e.to_string())
    }
}

impl From<serde_json::Error> for RegistryError {
    fn from(e: serde_json::Error) -> Self {
        RegistryError::Db(format!("stored JSON is unreadable: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_follow_mlflow() {
        let cases = [
            (RegistryError::InvalidParameter("x".into()), "INVALID_PARAMETER_VALUE", 400, true),
            (RegistryError::NotFound("x".into()), "RESOURCE_DOES_NOT_EXIST", 404, true),
            (RegistryError::AlreadyExists("x".into()), "RESOURCE_ALREADY_EXISTS", 409, true),
            (RegistryError::Db("x".into()), "INTERNAL_ERROR", 500, false),
            (RegistryError::io("/a", std::io::Error::other("boom")), "INTERNAL_ERROR", 500, false),
        ];
        for (e, code, status, user) in cases {
            assert_eq!(e.error_code(), code, "{e}");
            assert_eq!(e.http_status(), status, "{e}");
            assert_eq!(e.is_user_error(), user, "{e}");
        }
    }

    #[test]
    fn checksum_message_is_one_line_and_says_how_to_fix() {
        let e = RegistryError::ChecksumMismatch {
            path: "/h/a/m/1/x.gguf".into(),
            expected: "ab".into(),
            actual: "cd".into(),
        };
        let msg = e.to_string();
        assert!(!msg.contains('\n'));
        assert!(
            msg.contains("corrupted") && msg.contains("/h/a/m/1/x.gguf") && msg.contains("register the model again")
        );
        assert!(msg.contains("expected ab") && msg.contains("found cd"));
        assert_eq!(e.http_status(), 500);
        assert!(!e.is_user_error());
    }
}
