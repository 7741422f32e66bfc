//! The TOML configuration: agents and grants.
//!
//! Parsing goes from untrusted text to a verified [`Config`] in one step;
//! every error names the field and what is wrong, and never echoes a value
//! (a misplaced secret must not end up in a terminal or a log). Secrets are
//! never inline: a grant names where its secret lives
//! ([`SecretSource`]), and only the backend reads it.
//!
//! ```toml
//! [[grant]]
//! name = "weather"
//! origin = "https://api.weather.example"
//! methods = ["GET"]
//! path_prefixes = ["/v1/"]
//! credential = { kind = "header", name = "x-api-key" }
//! secret = { env = "WEATHER_API_KEY" }
//!
//! [[agent]]
//! name = "weather-bot"
//! owner = "alice@example.com"
//! digests = ["sha256:…"]
//! grants = ["weather"]
//! limits = { memory_mib = 64, task_timeout_ms = 10000 }
//! ```

use crate::digest::ComponentDigest;
use crate::grant::{CredentialKind, GrantName, GrantRules, Origin, validate_name};
use crate::secret::SecretSource;
use http::{HeaderName, Method};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;

/// Why a config file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// TOML syntax or shape error.
    #[error("config line {line}, column {column}: {message}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong (never the offending value).
        message: String,
    },
    /// A field has a value that parses but is not acceptable.
    #[error("config field {field}: {reason}")]
    Invalid {
        /// Path of the field, e.g. `grant "weather".origin`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A verified configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Agents, in file order.
    pub agents: Vec<AgentConfig>,
    /// Grants, in file order.
    pub grants: Vec<GrantConfig>,
    /// Runtime settings.
    pub runtime: RuntimeSettings,
    /// Enrolled devices, in file order.
    pub devices: Vec<DeviceConfig>,
    /// Token service settings.
    pub backend: BackendSettings,
    /// Policies (`[[policy]]`): per agent, and the global defaults
    /// (`agent = "*"`).
    pub policies: Vec<crate::policy::Policy>,
}

/// A verified device entry.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Device id (a name: `[a-z0-9_-]`).
    pub id: String,
    /// The human or team that answers for it.
    pub owner: String,
    /// The device's public key; the private half never leaves the device.
    pub public_key: crate::keys::PublicKey,
}

/// Token service settings (`[backend]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    /// `iss` of minted tokens.
    pub issuer: String,
    /// `aud` of minted tokens.
    pub audience: String,
    /// SPIFFE trust domain of instance and device ids.
    pub trust_domain: String,
    /// Token lifetime when the agent asks for none, seconds.
    pub default_token_lifetime: u64,
    /// Address `edgeward serve` listens on.
    pub listen: std::net::SocketAddr,
    /// The URL devices reach the backend at (for RFC 8414 metadata);
    /// defaults to the issuer.
    pub public_url: String,
    /// How long one long poll of the stop channel waits, seconds.
    pub stop_poll_secs: u64,
    /// How long a runtime may be cut off from the backend before it stops
    /// its instances, seconds.
    pub stop_lease_secs: u64,
    /// Issuers whose user assertions let an instance act for a user
    /// (`[[user_issuer]]`); none: no on-behalf-of at all.
    pub user_issuers: Vec<crate::user::UserIssuer>,
    /// How approvals work (`[backend.approvals]`).
    pub approvals: ApprovalSettings,
}

/// `[backend.approvals]`: tickets for calls a policy sends for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSettings {
    /// How long a ticket waits for a decision, seconds.
    pub pending_secs: u64,
    /// How long an approval may be used (once), seconds after the decision.
    pub use_within_secs: u64,
    /// Most tickets one agent may open per hour: a guest cannot flood the
    /// approvers.
    pub per_agent_per_hour: u64,
    /// Called (POST, JSON, no secrets) when a ticket opens.
    pub webhook: Option<String>,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            pending_secs: 3600,
            use_within_secs: 300,
            per_agent_per_hour: 30,
            webhook: None,
        }
    }
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            issuer: "https://edgeward.local".into(),
            audience: "edgeward".into(),
            trust_domain: "edgeward.local".into(),
            default_token_lifetime: 300,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_url: "https://edgeward.local".into(),
            stop_poll_secs: 25,
            stop_lease_secs: 60,
            user_issuers: Vec::new(),
            approvals: ApprovalSettings::default(),
        }
    }
}

/// A verified agent entry.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Unique agent name.
    pub name: String,
    /// The human who answers for it.
    pub owner: String,
    /// Component digests allowed to run as this agent.
    pub digests: Vec<ComponentDigest>,
    /// Grants it may use.
    pub grants: Vec<GrantName>,
    /// Sandbox and egress limits.
    pub limits: Limits,
    /// Devices allowed to run this agent.
    pub devices: Vec<String>,
    /// Most live instances of this agent per device.
    pub max_instances_per_device: u32,
    /// Longest token lifetime an instance may get, seconds (requests above it are capped).
    pub max_token_lifetime: u64,
    /// Generation of the agent's identity: grows on every re-registration,
    /// never reused (the durable registry will own it; the config says 1).
    pub generation: u64,
}

/// A verified grant entry.
#[derive(Debug, Clone)]
pub struct GrantConfig {
    /// The public rules (origin, methods, paths).
    pub rules: GrantRules,
    /// How the credential is attached.
    pub credential: CredentialKind,
    /// Where the backend reads the secret.
    pub secret: SecretSource,
    /// Per-user credentials, by user principal (`user:<issuer>/<sub>`): a
    /// call made on a user's behalf carries that user's credential, never
    /// the grant's own and never another user's; a user without an entry is
    /// refused. Empty: the grant has one credential for every caller.
    pub user_secrets: std::collections::BTreeMap<String, SecretSource>,
    /// What to do with secret-like data in a request the guest sends.
    pub outbound_secrets: OutboundSecrets,
    /// Time allowed to connect to the upstream.
    pub connect_timeout: Duration,
    /// Time allowed for the whole upstream exchange.
    pub timeout: Duration,
}

/// What the backend does when a guest's request carries data that looks
/// like a secret in a known format (an AWS key, a private key...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundSecrets {
    /// Refuse the request (the default: exfiltration is the usual reason).
    #[default]
    Block,
    /// Replace the secret with a marker and forward.
    Redact,
    /// Forward unchanged; record the finding.
    Audit,
}

/// Per-agent limits. Defaults are safe for a small device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory per task, bytes.
    pub memory_bytes: u64,
    /// Wall-clock time per task (CPU included; host calls included).
    pub task_timeout: Duration,
    /// Largest request body a guest may send.
    pub max_request_bytes: usize,
    /// Largest (decoded) response body a guest may receive.
    pub max_response_bytes: usize,
    /// Largest stdout (and, separately, stderr) a task may write.
    pub max_output_bytes: usize,
    /// Most log records per task.
    pub max_log_records: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            task_timeout: Duration::from_secs(30),
            max_request_bytes: 1 << 20,
            max_response_bytes: 8 << 20,
            max_output_bytes: 64 << 10,
            max_log_records: 1000,
        }
    }
}

/// Engine-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// Use wasmtime's pooling allocator (fast instantiation; reserves
    /// virtual memory up front). Turn off on small devices.
    pub pooling: bool,
    /// Most tasks running at once (sizes the pool).
    pub max_concurrent_tasks: u32,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            pooling: true,
            max_concurrent_tasks: 16,
        }
    }
}

impl Config {
    /// Parse and verify a config file's text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| parse_error(text, &e))?;
        raw.verify()
    }

    /// The agent with this name.
    pub fn agent(&self, name: &str) -> Option<&AgentConfig> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// The grant with this name.
    pub fn grant(&self, name: &GrantName) -> Option<&GrantConfig> {
        self.grants.iter().find(|g| &g.rules.name == name)
    }

    /// The public grant rules an agent holds.
    pub fn rules_for(&self, agent: &AgentConfig) -> Vec<GrantRules> {
        agent
            .grants
            .iter()
            .filter_map(|n| self.grant(n).map(|g| g.rules.clone()))
            .collect()
    }
}

pub(crate) fn parse_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        }
        None => (0, 0),
    };
    // `message()` is the bare reason without the source excerpt that the
    // `Display` impl adds: the excerpt could contain a secret someone pasted.
    ConfigError::Parse {
        line,
        column,
        message: scrub_values(e.message()),
    }
}

/// serde's type errors quote the offending value (`invalid type: string
/// "..."`). Drop quoted parts so a misplaced secret is never echoed.
fn scrub_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_quotes = false;
    for ch in message.chars() {
        if ch == '"' {
            if !in_quotes {
                out.push_str("<value>");
            }
            in_quotes = !in_quotes;
            continue;
        }
        if !in_quotes {
            out.push(ch);
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, rename = "agent")]
    agents: Vec<RawAgent>,
    #[serde(default, rename = "grant")]
    grants: Vec<RawGrant>,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default, rename = "device")]
    devices: Vec<RawDevice>,
    #[serde(default)]
    backend: RawBackend,
    #[serde(default, rename = "user_issuer")]
    user_issuers: Vec<RawUserIssuer>,
    #[serde(default, rename = "policy")]
    policies: Vec<crate::policy::RawPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUserIssuer {
    name: String,
    issuer: String,
    audience: String,
    /// The issuer's JWKS document, inline (`{"keys": [...]}`).
    jwks: String,
    /// Longest assertion lifetime accepted (`exp - iat`), seconds.
    max_lifetime_s: Option<u64>,
    /// Agents that may act for this issuer's users.
    agents: Vec<String>,
}

impl RawUserIssuer {
    fn verify(self, i: usize) -> Result<crate::user::UserIssuer, ConfigError> {
        validate_name(&self.name, "user issuer")
            .map_err(|e| invalid(format!("user_issuer[{i}].name"), e.to_string()))?;
        let at = |field: &str| format!("user_issuer \"{}\".{field}", self.name);
        if !self.issuer.starts_with("https://") || self.issuer.len() > 512 {
            return Err(invalid(at("issuer"), "must be an https URL"));
        }
        if self.audience.trim().is_empty() || self.audience.len() > 512 {
            return Err(invalid(at("audience"), "must not be empty"));
        }
        let keys = crate::user::UserIssuer::keys_from_jwks(&self.jwks)
            .map_err(|e| invalid(at("jwks"), e))?;
        let max_lifetime = in_range(&at("max_lifetime_s"), self.max_lifetime_s, 3600, 60, 86_400)?;
        // Required, and never empty: which agents may act for these users
        // is a decision to write down, not a default.
        if self.agents.is_empty() {
            return Err(invalid(
                at("agents"),
                "list the agents that may act for this issuer's users",
            ));
        }
        for a in &self.agents {
            validate_name(a, "agent").map_err(|e| invalid(at("agents"), e.to_string()))?;
        }
        Ok(crate::user::UserIssuer {
            name: self.name,
            issuer: self.issuer,
            audience: self.audience,
            keys,
            max_lifetime,
            agents: self.agents,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    id: String,
    owner: String,
    public_key: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    issuer: Option<String>,
    audience: Option<String>,
    trust_domain: Option<String>,
    default_token_lifetime_s: Option<u64>,
    listen: Option<String>,
    stop_poll_s: Option<u64>,
    stop_lease_s: Option<u64>,
    public_url: Option<String>,
    #[serde(default)]
    approvals: RawApprovals,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApprovals {
    pending_s: Option<u64>,
    use_within_s: Option<u64>,
    per_agent_per_hour: Option<u64>,
    webhook: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    pooling: Option<bool>,
    max_concurrent_tasks: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    owner: String,
    digests: Vec<String>,
    #[serde(default)]
    grants: Vec<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    devices: Vec<String>,
    max_instances_per_device: Option<u32>,
    max_token_lifetime_s: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mib: Option<u64>,
    task_timeout_ms: Option<u64>,
    max_request_bytes: Option<usize>,
    max_response_bytes: Option<usize>,
    max_output_bytes: Option<usize>,
    max_log_records: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    name: String,
    origin: String,
    methods: Vec<String>,
    path_prefixes: Vec<String>,
    credential: RawCredential,
    secret: RawSecret,
    #[serde(default)]
    user_secrets: std::collections::BTreeMap<String, RawSecret>,
    connect_timeout_ms: Option<u64>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    outbound_secrets: OutboundSecrets,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
enum RawCredential {
    Header {
        name: String,
        #[serde(default)]
        prefix: String,
    },
    Bearer,
    Query {
        param: String,
    },
    Basic {
        username: String,
    },
}

/// `{ env = "VAR" }` or `{ file = "path" }`. A plain string is refused with a
/// message that does not repeat it: that is where someone would paste a key.
struct RawSecret(SecretSource);

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawSecret;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("{ env = VAR } or { file = PATH }")
            }
            fn visit_str<E: serde::de::Error>(self, _v: &str) -> Result<RawSecret, E> {
                Err(E::custom(
                    "secrets are never written in the config: use secret = { env = VAR } or { file = PATH }",
                ))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawSecret, A::Error> {
                let mut found: Option<SecretSource> = None;
                while let Some(key) = map.next_key::<String>()? {
                    let source = match key.as_str() {
                        "env" => SecretSource::Env(map.next_value()?),
                        "file" => SecretSource::File(map.next_value::<String>()?.into()),
                        _ => {
                            return Err(serde::de::Error::custom(
                                "secret takes exactly one of `env` or `file`",
                            ));
                        }
                    };
                    if found.replace(source).is_some() {
                        return Err(serde::de::Error::custom(
                            "secret takes exactly one of `env` or `file`, not both",
                        ));
                    }
                }
                found
                    .map(RawSecret)
                    .ok_or_else(|| serde::de::Error::custom("secret needs `env` or `file`"))
            }
        }
        d.deserialize_any(V)
    }
}

impl RawConfig {
    fn verify(self) -> Result<Config, ConfigError> {
        let mut grants: Vec<GrantConfig> = Vec::new();
        for (i, g) in self.grants.into_iter().enumerate() {
            let grant = g.verify(i)?;
            if grants.iter().any(|x| x.rules.name == grant.rules.name) {
                return Err(invalid(
                    format!("grant[{i}].name"),
                    format!("grant {} is defined twice", grant.rules.name),
                ));
            }
            grants.push(grant);
        }
        let mut devices: Vec<DeviceConfig> = Vec::new();
        for (i, d) in self.devices.into_iter().enumerate() {
            validate_name(&d.id, "device")
                .map_err(|e| invalid(format!("device[{i}].id"), e.to_string()))?;
            let at = |field: &str| format!("device \"{}\".{field}", d.id);
            if d.owner.trim().is_empty() {
                return Err(invalid(at("owner"), "every device needs a named owner"));
            }
            if d.id == EMBEDDED_DEVICE {
                return Err(invalid(
                    at("id"),
                    "\"embedded\" is reserved for the in-process device of embedded mode",
                ));
            }
            let public_key = d
                .public_key
                .parse::<crate::keys::PublicKey>()
                .map_err(|e| invalid(at("public_key"), e.to_string()))?;
            if devices.iter().any(|x| x.id == d.id) {
                return Err(invalid(
                    at("id"),
                    format!("device {} is defined twice", d.id),
                ));
            }
            devices.push(DeviceConfig {
                id: d.id,
                owner: d.owner,
                public_key,
            });
        }
        let mut backend = self.backend.verify()?;
        for (i, raw) in self.user_issuers.into_iter().enumerate() {
            let issuer = raw.verify(i)?;
            if backend
                .user_issuers
                .iter()
                .any(|u| u.name == issuer.name || u.issuer == issuer.issuer)
            {
                return Err(invalid(
                    format!("user_issuer[{i}]"),
                    format!("user issuer {} is defined twice", issuer.name),
                ));
            }
            backend.user_issuers.push(issuer);
        }
        let mut agents: Vec<AgentConfig> = Vec::new();
        for (i, a) in self.agents.into_iter().enumerate() {
            let agent = a.verify(i, &grants, &devices, &backend)?;
            if agents.iter().any(|x| x.name == agent.name) {
                return Err(invalid(
                    format!("agent[{i}].name"),
                    format!("agent {} is defined twice", agent.name),
                ));
            }
            agents.push(agent);
        }
        let mut policies: Vec<crate::policy::Policy> = Vec::new();
        for (i, raw) in self.policies.into_iter().enumerate() {
            let policy = crate::policy::Policy::verify(raw, i)?;
            if policies.iter().any(|p| p.agent() == policy.agent()) {
                return Err(invalid(
                    format!("policy[{i}].agent"),
                    format!("agent {} has a second policy", policy.agent()),
                ));
            }
            if let Some((at, grant)) = policy
                .grants_named()
                .into_iter()
                .find(|(_, g)| !grants.iter().any(|x| &x.rules.name == *g))
            {
                return Err(invalid(at, format!("no grant named {grant} is defined")));
            }
            policies.push(policy);
        }
        let defaults = RuntimeSettings::default();
        let runtime = RuntimeSettings {
            pooling: self.runtime.pooling.unwrap_or(defaults.pooling),
            max_concurrent_tasks: in_range(
                "runtime.max_concurrent_tasks",
                self.runtime.max_concurrent_tasks,
                defaults.max_concurrent_tasks,
                1,
                10_000,
            )?,
        };
        Ok(Config {
            agents,
            grants,
            runtime,
            devices,
            backend,
            policies,
        })
    }
}

fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
    field: &str,
    value: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(invalid(field, format!("must be between {min} and {max}")));
    }
    Ok(v)
}

impl RawGrant {
    fn verify(self, i: usize) -> Result<GrantConfig, ConfigError> {
        let name = GrantName::new(&self.name)
            .map_err(|e| invalid(format!("grant[{i}].name"), e.to_string()))?;
        let at = |field: &str| format!("grant \"{name}\".{field}");
        let origin =
            Origin::parse(&self.origin).map_err(|e| invalid(at("origin"), e.to_string()))?;
        if self.methods.is_empty() {
            return Err(invalid(
                at("methods"),
                "list at least one method, e.g. [\"GET\"]",
            ));
        }
        let mut methods = Vec::new();
        for m in &self.methods {
            // The same rule caveats and policies name methods by.
            let ok = crate::grant::is_method_name(m);
            let method = Method::from_bytes(m.as_bytes())
                .ok()
                .filter(|_| ok)
                .ok_or_else(|| {
                    invalid(
                        at("methods"),
                        "methods are upper-case tokens such as GET or POST",
                    )
                })?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        if self.path_prefixes.is_empty() {
            return Err(invalid(
                at("path_prefixes"),
                "list at least one prefix; \"/\" allows every path",
            ));
        }
        for p in &self.path_prefixes {
            if !p.starts_with('/')
                || crate::grant::check_path_is_canonical(p).is_err()
                || p.contains('?')
            {
                return Err(invalid(
                    at("path_prefixes"),
                    "each prefix must start with '/' and hold no query, dot segment, backslash or encoded slash",
                ));
            }
        }
        let credential = match self.credential {
            RawCredential::Header { name: h, prefix } => {
                let header = HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| invalid(at("credential.name"), "not a valid header name"))?;
                if header == http::header::HOST
                    || crate::headers::is_hop_by_hop(&header)
                    || header == http::header::COOKIE
                {
                    return Err(invalid(
                        at("credential.name"),
                        "this header cannot carry a credential",
                    ));
                }
                if http::HeaderValue::from_str(&prefix).is_err() {
                    return Err(invalid(
                        at("credential.prefix"),
                        "not valid in a header value",
                    ));
                }
                CredentialKind::Header {
                    name: header,
                    prefix,
                }
            }
            RawCredential::Bearer => CredentialKind::Header {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".into(),
            },
            RawCredential::Query { param } => {
                if param.is_empty()
                    || param.len() > 64
                    || param
                        .chars()
                        .any(|c| c.is_control() || c == '&' || c == '=')
                {
                    return Err(invalid(
                        at("credential.param"),
                        "1 to 64 characters without '&', '=' or control characters",
                    ));
                }
                CredentialKind::Query { param }
            }
            RawCredential::Basic { username } => {
                if username.contains(':') || username.chars().any(char::is_control) {
                    return Err(invalid(
                        at("credential.username"),
                        "a basic-auth user name cannot contain ':' or control characters",
                    ));
                }
                CredentialKind::Basic { username }
            }
        };
        match &self.secret.0 {
            SecretSource::Env(var) if var.is_empty() || var.contains('=') || var.contains('\0') => {
                return Err(invalid(
                    at("secret.env"),
                    "not a valid environment variable name",
                ));
            }
            SecretSource::File(p) if p.as_os_str().is_empty() => {
                return Err(invalid(at("secret.file"), "the path is empty"));
            }
            _ => {}
        }
        let connect_timeout = Duration::from_millis(in_range(
            &at("connect_timeout_ms"),
            self.connect_timeout_ms,
            5_000,
            1,
            120_000,
        )?);
        let timeout = Duration::from_millis(in_range(
            &at("timeout_ms"),
            self.timeout_ms,
            30_000,
            1,
            600_000,
        )?);
        let mut user_secrets = std::collections::BTreeMap::new();
        for (user, source) in self.user_secrets {
            crate::user::check_principal(&user).map_err(|e| {
                invalid(
                    at("user_secrets"),
                    format!("{user:?} is not a user principal: {e}"),
                )
            })?;
            user_secrets.insert(user, source.0);
        }
        Ok(GrantConfig {
            rules: GrantRules {
                name,
                origin,
                methods,
                path_prefixes: self.path_prefixes,
            },
            credential,
            secret: self.secret.0,
            user_secrets,
            outbound_secrets: self.outbound_secrets,
            connect_timeout,
            timeout,
        })
    }
}

impl RawBackend {
    fn verify(self) -> Result<BackendSettings, ConfigError> {
        let d = BackendSettings::default();
        let text =
            |field: &str, v: Option<String>, default: String| -> Result<String, ConfigError> {
                let v = v.unwrap_or(default);
                if v.is_empty()
                    || v.len() > 200
                    || v.chars().any(|c| c.is_control() || c.is_whitespace())
                {
                    return Err(invalid(
                        format!("backend.{field}"),
                        "1 to 200 characters, no spaces or control characters",
                    ));
                }
                Ok(v)
            };
        let trust_domain = text("trust_domain", self.trust_domain, d.trust_domain)?;
        if !trust_domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return Err(invalid(
                "backend.trust_domain",
                "a SPIFFE trust domain: lower-case letters, digits, '.' and '-'",
            ));
        }
        let listen = match self.listen {
            Some(l) => l.parse().map_err(|_| {
                invalid(
                    "backend.listen",
                    "an address with a port, e.g. 127.0.0.1:8443",
                )
            })?,
            None => d.listen,
        };
        let issuer = text("issuer", self.issuer, d.issuer)?;
        let public_url = text("public_url", self.public_url, issuer.clone())?;
        if !public_url.starts_with("https://") && !public_url.starts_with("http://") {
            return Err(invalid(
                "backend.public_url",
                "an http(s) URL, e.g. https://edgeward.example:8443",
            ));
        }
        let a = ApprovalSettings::default();
        let approvals = ApprovalSettings {
            pending_secs: in_range(
                "backend.approvals.pending_s",
                self.approvals.pending_s,
                a.pending_secs,
                10,
                7 * 86_400,
            )?,
            use_within_secs: in_range(
                "backend.approvals.use_within_s",
                self.approvals.use_within_s,
                a.use_within_secs,
                5,
                86_400,
            )?,
            per_agent_per_hour: in_range(
                "backend.approvals.per_agent_per_hour",
                self.approvals.per_agent_per_hour,
                a.per_agent_per_hour,
                1,
                10_000,
            )?,
            webhook: match self.approvals.webhook {
                None => None,
                Some(w) if webhook_ok(&w) => Some(w),
                Some(_) => {
                    return Err(invalid(
                        "backend.approvals.webhook",
                        "an https URL without user info (plain http only to 127.0.0.1)",
                    ));
                }
            },
        };
        Ok(BackendSettings {
            approvals,
            // Filled from the top-level `[[user_issuer]]` tables.
            user_issuers: Vec::new(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            issuer,
            audience: text("audience", self.audience, d.audience)?,
            trust_domain,
            default_token_lifetime: in_range(
                "backend.default_token_lifetime_s",
                self.default_token_lifetime_s,
                d.default_token_lifetime,
                10,
                86_400,
            )?,
            listen,
            stop_poll_secs: in_range(
                "backend.stop_poll_s",
                self.stop_poll_s,
                d.stop_poll_secs,
                1,
                300,
            )?,
            stop_lease_secs: in_range(
                "backend.stop_lease_s",
                self.stop_lease_s,
                d.stop_lease_secs,
                2,
                3600,
            )?,
        })
    }
}

/// A webhook URL: https, or plain http to exactly 127.0.0.1 (tests, a
/// local relay); never with user info (`http://127.0.0.1@elsewhere/`).
fn webhook_ok(url: &str) -> bool {
    if url.len() > 2048 {
        return false;
    }
    // The grant's origin rules (scheme, no user info, a host), then the
    // webhook's own: plain http only to exactly 127.0.0.1.
    let origin = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| crate::grant::Origin::of_uri(&u));
    origin.is_some_and(|o| o.scheme() == crate::grant::Scheme::Https || o.host() == "127.0.0.1")
}

/// The id of the in-process device of embedded mode: the runtime and the
/// backend share a process there, so a fresh key made at start-up attests to
/// the backend beside it. It is reserved and cannot be enrolled.
pub const EMBEDDED_DEVICE: &str = "embedded";

impl RawAgent {
    fn verify(
        self,
        i: usize,
        grants: &[GrantConfig],
        devices: &[DeviceConfig],
        backend: &BackendSettings,
    ) -> Result<AgentConfig, ConfigError> {
        validate_name(&self.name, "agent")
            .map_err(|e| invalid(format!("agent[{i}].name"), e.to_string()))?;
        let at = |field: &str| format!("agent \"{}\".{field}", self.name);
        if self.owner.trim().is_empty() {
            return Err(invalid(
                at("owner"),
                "every agent needs a named human owner",
            ));
        }
        if self.digests.is_empty() {
            return Err(invalid(
                at("digests"),
                "list the component digests allowed to run as this agent (see `edgeward digest`)",
            ));
        }
        let mut digests = Vec::new();
        for d in &self.digests {
            digests.push(
                d.parse::<ComponentDigest>()
                    .map_err(|e| invalid(at("digests"), e.to_string()))?,
            );
        }
        let mut names = BTreeSet::new();
        let mut agent_grants = Vec::new();
        for g in &self.grants {
            let name = GrantName::new(g).map_err(|e| invalid(at("grants"), e.to_string()))?;
            if !grants.iter().any(|x| x.rules.name == name) {
                return Err(invalid(
                    at("grants"),
                    format!("no grant named {name} is defined"),
                ));
            }
            if names.insert(name.clone()) {
                agent_grants.push(name);
            }
        }
        let d = Limits::default();
        let l = self.limits;
        let limits = Limits {
            memory_bytes: in_range(
                &at("limits.memory_mib"),
                l.memory_mib,
                d.memory_bytes >> 20,
                1,
                4096,
            )? << 20,
            task_timeout: Duration::from_millis(in_range(
                &at("limits.task_timeout_ms"),
                l.task_timeout_ms,
                d.task_timeout.as_millis() as u64,
                10,
                3_600_000,
            )?),
            max_request_bytes: in_range(
                &at("limits.max_request_bytes"),
                l.max_request_bytes,
                d.max_request_bytes,
                0,
                256 << 20,
            )?,
            max_response_bytes: in_range(
                &at("limits.max_response_bytes"),
                l.max_response_bytes,
                d.max_response_bytes,
                0,
                256 << 20,
            )?,
            max_output_bytes: in_range(
                &at("limits.max_output_bytes"),
                l.max_output_bytes,
                d.max_output_bytes,
                0,
                64 << 20,
            )?,
            max_log_records: in_range(
                &at("limits.max_log_records"),
                l.max_log_records,
                d.max_log_records,
                0,
                1_000_000,
            )?,
        };
        for dev in &self.devices {
            if !devices.iter().any(|d| &d.id == dev) {
                return Err(invalid(
                    at("devices"),
                    format!("no device named {dev} is defined"),
                ));
            }
        }
        let max_instances_per_device = in_range(
            &at("max_instances_per_device"),
            self.max_instances_per_device,
            4,
            1,
            10_000,
        )?;
        let max_token_lifetime = in_range(
            &at("max_token_lifetime_s"),
            self.max_token_lifetime_s,
            backend.default_token_lifetime,
            1,
            86_400,
        )?;
        Ok(AgentConfig {
            name: self.name,
            owner: self.owner,
            digests,
            grants: agent_grants,
            limits,
            devices: self.devices,
            max_instances_per_device,
            max_token_lifetime,
            generation: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn sample(extra_grant: &str, extra_agent: &str) -> String {
        format!(
            r#"
[[grant]]
name = "weather"
origin = "https://api.weather.example"
methods = ["GET"]
path_prefixes = ["/v1/"]
credential = {{ kind = "header", name = "x-api-key" }}
secret = {{ env = "WEATHER_KEY" }}
{extra_grant}

[[agent]]
name = "weather-bot"
owner = "alice@example.com"
digests = ["{DIGEST}"]
grants = ["weather"]
{extra_agent}
"#
        )
    }

    #[test]
    fn parses_a_good_file_with_defaults() {
        let c = Config::parse(&sample("", "")).unwrap();
        assert_eq!(c.agents[0].limits, Limits::default());
        assert_eq!(c.grants[0].rules.methods, vec![Method::GET]);
        assert_eq!(c.grants[0].secret, SecretSource::Env("WEATHER_KEY".into()));
        assert!(c.runtime.pooling);
        assert_eq!(c.rules_for(&c.agents[0]).len(), 1);
    }

    #[test]
    fn approval_webhooks_are_https_or_loopback_http_without_user_info() {
        for ok in ["https://hooks.example/x", "http://127.0.0.1:9000/hook"] {
            assert!(webhook_ok(ok), "{ok}");
        }
        for bad in [
            "http://hooks.example/x",
            "http://127.0.0.1@evil.example/",
            "http://127.0.0.1.evil.example/",
            "https://user:pw@hooks.example/",
            "ftp://127.0.0.1/",
            "not a url",
        ] {
            assert!(!webhook_ok(bad), "{bad}");
        }
        let text = sample("", "") + "\n[backend.approvals]\nwebhook = \"http://evil.example/\"\n";
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("backend.approvals.webhook"), "{err}");
    }

    #[test]
    fn policies_in_a_config_are_checked_against_its_grants() {
        let policy = |body: &str| format!("\n[[policy]]\nagent = \"weather-bot\"\n{body}\n");
        let ok = sample("", "")
            + &policy("[[policy.rule]]\nname = \"r\"\ngrant = \"weather\"\neffect = \"allow\"");
        let c = Config::parse(&ok).unwrap();
        assert_eq!(c.policies.len(), 1);
        assert_eq!(c.policies[0].agent(), "weather-bot");
        for (body, field) in [
            (
                "[[policy.rule]]\nname = \"r\"\ngrant = \"mail\"\neffect = \"allow\"",
                "policy \"weather-bot\".rule \"r\".grant",
            ),
            (
                "[[policy.limit]]\nname = \"l\"\nmatch = { grant = \"nope\" }\nmax = 1\nwindow_s = 1",
                "policy \"weather-bot\".limit \"l\".grant",
            ),
            (
                "[[policy.rule]]\nname = \"r\"\neffect = \"maybe\"",
                "expected one of `allow`, `approve`, `deny`",
            ),
        ] {
            let err = Config::parse(&(sample("", "") + &policy(body)))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{body}: {err}");
        }
        let twice = ok.clone() + &policy("");
        assert!(
            Config::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("second policy")
        );
    }

    #[test]
    fn user_issuers_and_per_user_secrets() {
        let jwk = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        let issuer = |name: &str, url: &str, jwks: &str| {
            format!(
                "\n[[user_issuer]]\nname = \"{name}\"\nissuer = \"{url}\"\naudience = \"edgeward\"\njwks = '{jwks}'\nagents = [\"weather\"]\n"
            )
        };
        let users = r#"user_secrets = { "user:corp/alice@example.com" = { env = "A" } }"#;
        let c =
            Config::parse(&(sample(users, "") + &issuer("corp", "https://idp.test", jwk))).unwrap();
        assert_eq!(c.backend.user_issuers[0].keys.len(), 1);
        assert_eq!(
            c.grants[0].user_secrets["user:corp/alice@example.com"],
            SecretSource::Env("A".into())
        );
        let cases = [
            (
                sample(r#"user_secrets = { "alice" = { env = "A" } }"#, ""),
                "user_secrets",
            ),
            (
                sample(
                    r#"user_secrets = { "user:corp/alice" = "sk_pasted_123456" }"#,
                    "",
                ),
                "never written",
            ),
            (
                sample("", "") + &issuer("corp", "http://idp.test", jwk),
                "issuer",
            ),
            (
                sample("", "") + &issuer("corp", "https://idp.test", "{}"),
                "jwks",
            ),
            (
                sample("", "")
                    + &issuer("corp", "https://idp.test", jwk)
                    + &issuer("corp", "https://other.test", jwk),
                "twice",
            ),
            (
                sample("", "")
                    + &issuer("corp", "https://idp.test", jwk)
                        .replace("agents = [\"weather\"]", "agents = []"),
                "agents",
            ),
            (
                sample("", "")
                    + &issuer("corp", "https://idp.test", jwk)
                        .replace("\nagents = [\"weather\"]", ""),
                "agents",
            ),
        ];
        for (text, needle) in cases {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
            assert!(!err.contains("sk_pasted"), "{err}");
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = Config::parse(&sample("colour = \"blue\"", "")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("colour"), "{text}");
        assert!(matches!(err, ConfigError::Parse { line: 9, .. }), "{err:?}");
    }

    #[test]
    fn inline_secret_is_refused_without_echoing_it() {
        let text = sample("", "").replace(
            "secret = { env = \"WEATHER_KEY\" }",
            "secret = \"sk_live_pasted_by_mistake_123\"",
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("never written in the config"), "{err}");
        assert!(!err.contains("sk_live"), "{err}");
    }

    #[test]
    fn type_errors_do_not_echo_values() {
        let text = sample("", "").replace("owner = \"alice@example.com\"", "owner = 12");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("line 13"), "{err}");
        let text = sample("", "").replace("\"GET\"", "\"sk_live_oops_value\", 3");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(!err.contains("sk_live"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let cases = [
            (
                sample("", "").replace("https://api.weather.example", "http://api.weather.example"),
                "grant \"weather\".origin",
            ),
            (
                sample("", "").replace("[\"/v1/\"]", "[\"v1\"]"),
                "grant \"weather\".path_prefixes",
            ),
            (
                sample("", "").replace("grants = [\"weather\"]", "grants = [\"nope\"]"),
                "agent \"weather-bot\".grants",
            ),
            (
                sample("", "").replace(DIGEST, "sha256:00"),
                "agent \"weather-bot\".digests",
            ),
            (
                sample("", "limits = { memory_mib = 0 }"),
                "agent \"weather-bot\".limits.memory_mib",
            ),
            (
                sample("", "").replace("alice@example.com", " "),
                "agent \"weather-bot\".owner",
            ),
            (
                sample("", "").replace("x-api-key", "connection"),
                "grant \"weather\".credential.name",
            ),
        ];
        for (text, field) in cases {
            match Config::parse(&text) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn credential_kinds() {
        let c = Config::parse(&sample("", "").replace(
            "{ kind = \"header\", name = \"x-api-key\" }",
            "{ kind = \"bearer\" }",
        ))
        .unwrap();
        assert!(
            matches!(&c.grants[0].credential, CredentialKind::Header { prefix, .. } if prefix == "Bearer ")
        );
        let c = Config::parse(&sample("", "").replace(
            "{ kind = \"header\", name = \"x-api-key\" }",
            "{ kind = \"query\", param = \"key\" }",
        ))
        .unwrap();
        assert!(matches!(
            &c.grants[0].credential,
            CredentialKind::Query { .. }
        ));
    }

    const ED_KEY: &str = "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn devices_and_backend_settings() {
        let text = sample(
            "",
            "devices = [\"dev-1\"]\nmax_instances_per_device = 2\nmax_token_lifetime_s = 60",
        ) + &format!(
            "\n[[device]]\nid = \"dev-1\"\nowner = \"ops\"\npublic_key = \"{ED_KEY}\"\n\n[backend]\ntrust_domain = \"example.org\"\nlisten = \"127.0.0.1:9443\"\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.devices[0].id, "dev-1");
        assert_eq!(c.agents[0].devices, vec!["dev-1".to_owned()]);
        assert_eq!(c.agents[0].max_instances_per_device, 2);
        assert_eq!(c.agents[0].max_token_lifetime, 60);
        assert_eq!(c.backend.trust_domain, "example.org");
        assert_eq!(c.backend.listen.port(), 9443);

        let unknown = sample("", "devices = [\"dev-9\"]");
        assert!(matches!(
            Config::parse(&unknown),
            Err(ConfigError::Invalid { field, .. }) if field == "agent \"weather-bot\".devices"
        ));
        let reserved =
            format!("[[device]]\nid = \"embedded\"\nowner = \"o\"\npublic_key = \"{ED_KEY}\"\n");
        assert!(matches!(
            Config::parse(&reserved),
            Err(ConfigError::Invalid { field, .. }) if field == "device \"embedded\".id"
        ));
        let bad_key = "[[device]]\nid = \"d\"\nowner = \"o\"\npublic_key = \"rsa:abc\"\n";
        assert!(matches!(
            Config::parse(bad_key),
            Err(ConfigError::Invalid { field, .. }) if field == "device \"d\".public_key"
        ));
        let bad_domain = "[backend]\ntrust_domain = \"Not Valid\"\n";
        assert!(Config::parse(bad_domain).is_err());
    }
}
