//! Secret values: held in zeroizing memory, never printed.
//!
//! A [`Secret`] has no `Display`, and its `Debug` prints only a length, so a
//! stray `{:?}` in a log line cannot leak it. The bytes are wiped when the
//! value is dropped.

use std::fmt;
use zeroize::Zeroizing;

/// Where a grant's secret comes from. The secret itself is never written in
/// the config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretSource {
    /// Read from this environment variable of the backend process.
    Env(String),
    /// Read from this file (trailing newline trimmed).
    File(std::path::PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "environment variable {name}"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// A secret byte string. Wiped on drop; `Debug` shows only its length.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wrap bytes as a secret.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    /// Borrow the secret bytes. Callers must not log or copy them into
    /// anything that outlives the request they are injected into.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new(b"sk_test_do_not_print".to_vec());
        let shown = format!("{s:?}");
        assert!(!shown.contains("do_not_print"));
        assert!(shown.contains("20 bytes"));
    }
}
