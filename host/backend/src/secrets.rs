//! Reading grant secrets from their sources.

use edgeward_core::secret::{Secret, SecretSource};

/// A secret could not be read. Says where it looked, never what it found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The environment variable is not set or not UTF-8-free bytes.
    #[error("{source_name} is not set")]
    Missing {
        /// Where we looked.
        source_name: String,
    },
    /// The file could not be read.
    #[error("cannot read {source_name}: {reason}")]
    Unreadable {
        /// Where we looked.
        source_name: String,
        /// The I/O error kind.
        reason: String,
    },
    /// The secret is empty.
    #[error("{source_name} is empty")]
    Empty {
        /// Where we looked.
        source_name: String,
    },
}

/// Read a secret. A trailing newline (from `echo key > file`) is trimmed.
pub fn resolve_secret(source: &SecretSource) -> Result<Secret, SecretError> {
    let source_name = source.to_string();
    let mut bytes = match source {
        SecretSource::Env(var) => {
            let value = std::env::var_os(var).ok_or_else(|| SecretError::Missing {
                source_name: source_name.clone(),
            })?;
            value.into_encoded_bytes()
        }
        SecretSource::File(path) => std::fs::read(path).map_err(|e| SecretError::Unreadable {
            source_name: source_name.clone(),
            // Only the kind: an OS error message never contains file contents,
            // but keep it short and predictable.
            reason: e.kind().to_string(),
        })?,
    };
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(SecretError::Empty { source_name });
    }
    Ok(Secret::new(bytes))
}
