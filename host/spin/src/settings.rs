//! What the component runs on, read from Spin variables on every request
//! (a Spin instance lives for one request; there is no start-up to cache in).
//!
//! | variable | secret | what |
//! |---|---|---|
//! | `edgeward_config` | no | the edgeward config TOML (`[backend]`, `[[device]]`, `[[agent]]`, `[[grant]]`), as for `edgeward serve` |
//! | `signing_seed` | yes | 64 hex chars: seed of the Ed25519 token signing key |
//! | `nonce_key` | yes | 64 hex chars: HMAC key of challenges; caveat chains are rooted in it |
//! | `admin_token_sha256` | yes | 64 hex chars: SHA-256 of the admin credential for `POST /v1/admin/revoke` (empty: the route is off) |
//! | one per grant secret | yes | a grant's `secret = { env = "WEATHER_API_KEY" }` is read from the variable `weather_api_key` |

use edgeward_core::config::Config;
use edgeward_core::grant::GrantName;
use edgeward_core::redact::Redactor;
use edgeward_core::scan::{Scanner, ScannerConfig};
use edgeward_core::secret::{Secret, SecretSource};
use std::collections::HashMap;
use zeroize::Zeroizing;

/// The variable holding the config.
pub const CONFIG_VAR: &str = "edgeward_config";
/// The variable holding the token signing seed.
pub const SIGNING_SEED_VAR: &str = "signing_seed";
/// The variable holding the nonce key.
pub const NONCE_KEY_VAR: &str = "nonce_key";
/// The variable holding the admin credential's SHA-256.
pub const ADMIN_HASH_VAR: &str = "admin_token_sha256";

/// The component cannot run: its variables are missing or wrong. The text
/// names the variable and the problem, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A variable is not set.
    #[error("Spin variable {0} is not set")]
    Missing(String),
    /// A variable's value is not acceptable.
    #[error("Spin variable {name}: {reason}")]
    Invalid {
        /// The variable.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The config refused.
    #[error("Spin variable {CONFIG_VAR}: {0}")]
    Config(#[from] edgeward_core::config::ConfigError),
}

/// A grant's secrets, loaded.
pub struct GrantSecrets {
    /// The grant's own credential.
    pub secret: Secret,
    /// Per-user credentials by principal.
    pub user_secrets: HashMap<String, Secret>,
}

/// Everything a request may need.
pub struct Settings {
    /// The verified config.
    pub config: Config,
    /// SHA-256 (hex) of the config text: the registry imports each text
    /// once.
    pub config_sha256: String,
    /// Token signing seed.
    pub signing_seed: Zeroizing<[u8; 32]>,
    /// Nonce HMAC key (and caveat chain root).
    pub nonce_key: Zeroizing<[u8; 32]>,
    /// SHA-256 of the admin credential, if the admin route is on.
    pub admin_hash: Option<[u8; 32]>,
    /// Secrets by grant.
    pub secrets: HashMap<GrantName, GrantSecrets>,
    /// Redaction and scanning, built on first use: compiling the scanner's
    /// patterns is most of a request's cost, and a challenge or the JWKS
    /// needs none of it.
    guards: std::cell::OnceCell<Guards>,
}

/// What keeps credentials and secrets out of responses and the audit log.
pub struct Guards {
    /// Every credential held, for redaction.
    pub redactor: Redactor,
    /// The same lower-cased, for header names.
    pub name_redactor: Redactor,
    /// Known formats plus every credential held.
    pub scanner: Scanner,
}

/// Read a variable (through `read`, Spin's variables in production).
fn required(read: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<String, SettingsError> {
    read(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| SettingsError::Missing(name.to_owned()))
}

fn key32(read: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<[u8; 32], SettingsError> {
    let text = Zeroizing::new(required(read, name)?);
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).map_err(|_| SettingsError::Invalid {
        name: name.to_owned(),
        reason: "must be exactly 64 hex characters (32 bytes)".into(),
    })?;
    Ok(out)
}

/// The Spin variable a config secret source names: `env = "WEATHER_KEY"`
/// is the variable `weather_key`. Files do not exist on Spin.
pub fn variable_for(source: &SecretSource) -> Result<String, String> {
    match source {
        SecretSource::Env(name) => {
            let var = name.to_ascii_lowercase();
            // Spin's rules: a letter first, lower-case letters, digits and
            // single underscores, no trailing underscore.
            let ok = var.starts_with(|c: char| c.is_ascii_lowercase())
                && var
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !var.contains("__")
                && !var.ends_with('_');
            if ok {
                Ok(var)
            } else {
                Err(format!(
                    "{name} cannot be a Spin variable name (letters, digits and single _; a letter first, no _ last)"
                ))
            }
        }
        SecretSource::File(_) => {
            Err("a file secret cannot be read on Spin: use secret = { env = NAME }, read from the Spin variable name".into())
        }
    }
}

impl Settings {
    /// Load from variables. Policies are refused, not ignored: their state
    /// and approvals live in the native backend only.
    pub fn load(read: &dyn Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let text = required(read, CONFIG_VAR)?;
        let config = Config::parse(&text)?;
        let config_sha256 = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        };
        if !config.policies.is_empty() {
            return Err(SettingsError::Invalid {
                name: CONFIG_VAR.into(),
                reason: "[[policy]] is not enforced by the Spin backend (policy state and approvals need the native backend); remove it or run `edgeward serve`".into(),
            });
        }
        let signing_seed = Zeroizing::new(key32(read, SIGNING_SEED_VAR)?);
        let nonce_key = Zeroizing::new(key32(read, NONCE_KEY_VAR)?);
        let admin_hash = match read(ADMIN_HASH_VAR).filter(|v| !v.is_empty()) {
            None => None,
            Some(_) => Some(key32(read, ADMIN_HASH_VAR)?),
        };
        let mut secrets = HashMap::new();
        for g in &config.grants {
            let load = |source: &SecretSource| -> Result<Secret, SettingsError> {
                let grant = g.rules.name.as_str();
                let var = variable_for(source).map_err(|reason| SettingsError::Invalid {
                    name: format!("grant {grant} secret"),
                    reason,
                })?;
                let value = Zeroizing::new(required(read, &var)?);
                let secret = Secret::new(value.trim_end_matches(['\r', '\n']).as_bytes().to_vec());
                if secret.len() < edgeward_core::redact::MIN_SECRET_LEN {
                    return Err(SettingsError::Invalid {
                        name: var,
                        reason: format!(
                            "shorter than {} bytes, too short to redact reliably",
                            edgeward_core::redact::MIN_SECRET_LEN
                        ),
                    });
                }
                Ok(secret)
            };
            let secret = load(&g.secret)?;
            let mut user_secrets = HashMap::new();
            for (user, source) in &g.user_secrets {
                user_secrets.insert(user.clone(), load(source)?);
            }
            secrets.insert(
                g.rules.name.clone(),
                GrantSecrets {
                    secret,
                    user_secrets,
                },
            );
        }
        Ok(Settings {
            config,
            config_sha256,
            signing_seed,
            nonce_key,
            admin_hash,
            secrets,
            guards: std::cell::OnceCell::new(),
        })
    }

    /// The redactors and the scanner over every credential held.
    pub fn guards(&self) -> Result<&Guards, SettingsError> {
        if let Some(g) = self.guards.get() {
            return Ok(g);
        }
        let all = || {
            self.secrets
                .values()
                .flat_map(|g| std::iter::once(&g.secret).chain(g.user_secrets.values()))
        };
        let invalid = |reason: String| SettingsError::Invalid {
            name: "grant secrets".into(),
            reason,
        };
        let redactor =
            Redactor::new(all().map(Secret::expose)).map_err(|e| invalid(e.to_string()))?;
        let lowered: Vec<Zeroizing<Vec<u8>>> = all()
            .map(|s| Zeroizing::new(s.expose().to_ascii_lowercase()))
            .collect();
        let name_redactor = Redactor::new(lowered.iter().map(|v| v.as_slice()))
            .map_err(|e| invalid(e.to_string()))?;
        let scanner = Scanner::new(ScannerConfig::default(), redactor.clone())
            .map_err(|e| invalid(format!("secret scanner: {e}")))?;
        Ok(self.guards.get_or_init(|| Guards {
            redactor,
            name_redactor,
            scanner,
        }))
    }
}
