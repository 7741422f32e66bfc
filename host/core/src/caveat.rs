//! Attenuation: macaroon-style caveats appended to a minted access token.
//!
//! A delegating runtime narrows a token offline, without a round trip: it
//! appends caveats (fewer grants, methods or paths, an earlier expiry, less
//! remaining delegation depth, a new holder key) and folds each into an
//! HMAC-SHA256 chain. Whoever holds a chain's tag can append to it; nobody
//! without the backend's root key can remove, reorder or alter a caveat,
//! because the backend recomputes the chain from the root:
//!
//! ```text
//! tag_0 = HMAC(root, "edgeward caveat chain v1" 0x00 sha256(token))   (the chain key)
//! tag_i = HMAC(tag_{i-1}, caveat_i)
//! wire  = token "~" b64url(caveat_1) "~" … "~" b64url(tag_n)
//! ```
//!
//! The effective rights are the token's, intersected with every caveat
//! ([`Rights::attenuate`]): a caveat can only take rights away, so a caveat
//! naming more than its chain already allows changes nothing. A `holder`
//! caveat moves proof of possession to a child's key and uses up one level
//! of delegation depth.
//!
//! Parsing untrusted bytes gives an [`UnverifiedChain`]; only
//! [`UnverifiedChain::verify`] with the root key gives a [`VerifiedChain`].
//! The JWT inside is verified separately, as any access token.
//!
//! Non-goals: storage of chains, revocation (a chain is refused whenever its
//! token is), and deciding what a child may ask for (the caller checks with
//! [`Rights::narrows`] before appending).

use crate::grant::{GrantName, path_matches_prefix};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use std::fmt;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Separates the token, the caveats and the tag on the wire (not in the
/// JWT or base64url alphabets).
pub const SEPARATOR: char = '~';
/// Most caveats one chain may carry: room for a fully narrowed hop (7
/// caveats) at every level of depth.
pub const MAX_CAVEATS: usize = 32;
/// Longest presented token or chain, bytes: an access token plus a full
/// chain. Checked before anything is parsed.
pub const MAX_PRESENTED_LEN: usize = 16 * 1024 + MAX_CAVEATS * (MAX_CAVEAT_BYTES * 4 / 3 + 8) + 64;
/// Longest encoded caveat, bytes.
pub const MAX_CAVEAT_BYTES: usize = 1024;
/// Delegation hops a token allows (`holder` caveats), until agents carry
/// their own limit in the registry.
pub const MAX_DELEGATION_DEPTH: u32 = 3;
/// Most entries in one caveat's list.
const MAX_LIST: usize = 32;
const DOMAIN: &[u8] = b"edgeward caveat chain v1\0";

/// Why a caveat or chain is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaveatError {
    /// The wire form is not `token~caveat…~tag`.
    #[error("the attenuated token is malformed: {0}")]
    Malformed(&'static str),
    /// A caveat is not in its one canonical form.
    #[error("caveat {index} is invalid: {reason}")]
    BadCaveat {
        /// Position in the chain (1-based).
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// More than [`MAX_CAVEATS`].
    #[error("the chain has more than {max} caveats")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// The tag does not match: a caveat was removed, reordered or altered,
    /// or the chain was not made from this backend's root key.
    #[error("the caveat chain does not verify")]
    BadTag,
    /// A `holder` caveat beyond the remaining delegation depth.
    #[error("delegation depth exhausted")]
    DepthExhausted,
    /// [`Rights::narrows`] refused to append a caveat that asks for more
    /// than the chain allows.
    #[error("the caveat asks for more than its parent holds: {0}")]
    NotNarrower(String),
}

/// One restriction. Lists are kept sorted and without duplicates: that is
/// the canonical form the tag covers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Caveat {
    /// Only these grants.
    Grants(Vec<GrantName>),
    /// Only these methods (upper-case tokens, e.g. `GET`).
    Methods(Vec<String>),
    /// Only paths under one of these prefixes (segment-aware, as grants).
    PathPrefixes(Vec<String>),
    /// Not valid at or after this time (unix seconds).
    ExpiresAt(u64),
    /// At most this many further delegations.
    MaxDepth(u32),
    /// From here on, proofs of possession must come from the key with this
    /// RFC 7638 thumbprint (the child instance's key).
    Holder(String),
    /// From here on the holder runs this registered agent (a sub-agent):
    /// the backend narrows the rights to the grants that agent holds in the
    /// registry, refuses the chain while that agent is revoked or unknown,
    /// and names it in the audit trail.
    Agent(String),
}

impl Caveat {
    /// A grants caveat (sorted, deduplicated).
    pub fn grants(names: impl IntoIterator<Item = GrantName>) -> Caveat {
        let mut v: Vec<GrantName> = names.into_iter().collect();
        v.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        v.dedup();
        Caveat::Grants(v)
    }

    /// A methods caveat; each must be an upper-case HTTP token.
    pub fn methods<S: AsRef<str>>(
        methods: impl IntoIterator<Item = S>,
    ) -> Result<Caveat, CaveatError> {
        let mut v: Vec<String> = methods.into_iter().map(|m| m.as_ref().to_owned()).collect();
        v.sort();
        v.dedup();
        let c = Caveat::Methods(v);
        c.check()
            .map_err(|reason| CaveatError::BadCaveat { index: 0, reason })?;
        Ok(c)
    }

    /// A path-prefix caveat; each must start with `/`.
    pub fn path_prefixes<S: AsRef<str>>(
        prefixes: impl IntoIterator<Item = S>,
    ) -> Result<Caveat, CaveatError> {
        let mut v: Vec<String> = prefixes
            .into_iter()
            .map(|p| p.as_ref().to_owned())
            .collect();
        v.sort();
        v.dedup();
        let c = Caveat::PathPrefixes(v);
        c.check()
            .map_err(|reason| CaveatError::BadCaveat { index: 0, reason })?;
        Ok(c)
    }

    /// The canonical bytes the chain's HMAC covers.
    pub fn encode(&self) -> String {
        match self {
            Caveat::Grants(g) => format!(
                "grants:{}",
                g.iter()
                    .map(GrantName::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Caveat::Methods(m) => format!("methods:{}", m.join(",")),
            Caveat::PathPrefixes(p) => format!("paths:{}", p.join(",")),
            Caveat::ExpiresAt(t) => format!("exp:{t}"),
            Caveat::MaxDepth(d) => format!("depth:{d}"),
            Caveat::Holder(jkt) => format!("holder:{jkt}"),
            Caveat::Agent(name) => format!("agent:{name}"),
        }
    }

    /// Parse a caveat; only its canonical form is accepted, so one
    /// restriction has exactly one encoding.
    pub fn parse(text: &str) -> Result<Caveat, String> {
        if text.len() > MAX_CAVEAT_BYTES {
            return Err(format!("longer than {MAX_CAVEAT_BYTES} bytes"));
        }
        let (kind, value) = text.split_once(':').ok_or("no kind")?;
        let list = |v: &str| -> Vec<String> {
            if v.is_empty() {
                Vec::new()
            } else {
                v.split(',').map(str::to_owned).collect()
            }
        };
        let number = |v: &str| -> Result<u64, String> {
            // Digits only, no sign or leading zero: one spelling per value.
            if v.is_empty()
                || !v.bytes().all(|b| b.is_ascii_digit())
                || (v.len() > 1 && v.starts_with('0'))
            {
                return Err("not a canonical number".to_owned());
            }
            v.parse().map_err(|_| "number out of range".to_owned())
        };
        let caveat = match kind {
            "grants" => Caveat::Grants(
                list(value)
                    .iter()
                    .map(|g| GrantName::new(g).map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?,
            ),
            "methods" => Caveat::Methods(list(value)),
            "paths" => Caveat::PathPrefixes(list(value)),
            "exp" => Caveat::ExpiresAt(number(value)?),
            "depth" => Caveat::MaxDepth(
                u32::try_from(number(value)?).map_err(|_| "depth out of range".to_owned())?,
            ),
            "holder" => Caveat::Holder(value.to_owned()),
            "agent" => Caveat::Agent(value.to_owned()),
            _ => return Err("unknown kind".to_owned()),
        };
        caveat.check()?;
        if caveat.encode() != text {
            return Err("not in canonical form (lists sorted, no duplicates)".to_owned());
        }
        Ok(caveat)
    }

    /// Structural rules every caveat obeys.
    fn check(&self) -> Result<(), String> {
        let sorted_unique = |v: &[&str]| v.windows(2).all(|w| w[0] < w[1]);
        match self {
            Caveat::Grants(g) => {
                let names: Vec<&str> = g.iter().map(GrantName::as_str).collect();
                if names.len() > MAX_LIST || !sorted_unique(&names) {
                    return Err("grants must be at most 32, sorted and distinct".into());
                }
            }
            Caveat::Methods(m) => {
                let names: Vec<&str> = m.iter().map(String::as_str).collect();
                if names.len() > MAX_LIST || !sorted_unique(&names) {
                    return Err("methods must be at most 32, sorted and distinct".into());
                }
                if let Some(bad) = m.iter().find(|m| !crate::grant::is_method_name(m)) {
                    return Err(format!("{bad:?} is not an upper-case method name"));
                }
            }
            Caveat::PathPrefixes(p) => {
                let names: Vec<&str> = p.iter().map(String::as_str).collect();
                if names.len() > MAX_LIST || !sorted_unique(&names) {
                    return Err("path prefixes must be at most 32, sorted and distinct".into());
                }
                if let Some(bad) = p.iter().find(|p| {
                    !p.starts_with('/')
                        || p.len() > 256
                        || !p
                            .bytes()
                            .all(|b| b.is_ascii_graphic() && b != b',' && b != b'~')
                }) {
                    return Err(format!("{bad:?} is not a path prefix"));
                }
            }
            Caveat::ExpiresAt(_) | Caveat::MaxDepth(_) => {}
            Caveat::Holder(jkt) => {
                // An RFC 7638 SHA-256 thumbprint: 43 base64url characters.
                if jkt.len() != 43
                    || !jkt
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err("holder must be a key thumbprint (43 base64url characters)".into());
                }
            }
            Caveat::Agent(name) => {
                crate::grant::validate_name(name, "agent")
                    .map_err(|_| format!("{name:?} is not an agent name"))?;
            }
        }
        Ok(())
    }
}

/// The secret that lets its holder append to a token's chain: the tag of
/// the chain so far. Never shown by `Debug`; wiped on drop.
#[derive(Clone)]
pub struct ChainKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    /// The chain key the backend derives for `token` from its root key, and
    /// hands to the runtime beside the token.
    pub fn derive(root: &[u8; 32], token: &str) -> ChainKey {
        let mut mac = mac(root);
        mac.update(DOMAIN);
        mac.update(&Sha256::digest(token.as_bytes()));
        ChainKey(Zeroizing::new(mac.finalize().into_bytes().into()))
    }

    /// From its 32 bytes (as received from the backend).
    pub fn from_bytes(bytes: [u8; 32]) -> ChainKey {
        ChainKey(Zeroizing::new(bytes))
    }

    /// Its 32 bytes, for sending to a runtime.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Its wire form (base64url): secret, for a TLS response only.
    pub fn to_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(*self.0)
    }

    /// From its wire form; `None` unless exactly 32 bytes of base64url.
    pub fn from_b64(text: &str) -> Option<ChainKey> {
        let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(text).ok()?);
        let key: [u8; 32] = bytes.as_slice().try_into().ok()?;
        Some(ChainKey::from_bytes(key))
    }

    fn then(&self, caveat: &str) -> ChainKey {
        let mut mac = mac(&self.0);
        mac.update(caveat.as_bytes());
        ChainKey(Zeroizing::new(mac.finalize().into_bytes().into()))
    }
}

/// A chain root key derived from another 32-byte secret of the backend
/// (HMAC as a KDF, under a label of its own).
pub fn derive_root(secret: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut mac = mac(secret);
    mac.update(b"edgeward caveat root v1");
    Zeroizing::new(mac.finalize().into_bytes().into())
}

fn mac(key: &[u8; 32]) -> HmacSha256 {
    // Invariant: HMAC accepts keys of any length; 32 bytes always works.
    <HmacSha256 as hmac::Mac>::new_from_slice(key).expect("HMAC takes a 32-byte key")
}

/// A token with its caveats and the chain's current tag, as a delegating
/// runtime holds it. Only appends: no method removes a caveat.
#[derive(Clone)]
pub struct Chain {
    token: String,
    caveats: Vec<Caveat>,
    tag: ChainKey,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("caveats", &self.caveats)
            .finish_non_exhaustive()
    }
}

impl Chain {
    /// A chain with no caveats yet, from the token and its chain key.
    pub fn new(token: impl Into<String>, key: ChainKey) -> Chain {
        Chain {
            token: token.into(),
            caveats: Vec::new(),
            tag: key,
        }
    }

    /// This chain with one more caveat. The caller decides whether the
    /// caveat narrows ([`Rights::narrows`]); the backend intersects anyway.
    pub fn append(&self, caveat: Caveat) -> Result<Chain, CaveatError> {
        if self.caveats.len() >= MAX_CAVEATS {
            return Err(CaveatError::TooMany { max: MAX_CAVEATS });
        }
        let index = self.caveats.len() + 1;
        caveat
            .check()
            .map_err(|reason| CaveatError::BadCaveat { index, reason })?;
        let tag = self.tag.then(&caveat.encode());
        let mut caveats = self.caveats.clone();
        caveats.push(caveat);
        Ok(Chain {
            token: self.token.clone(),
            caveats,
            tag,
        })
    }

    /// The caveats, in order.
    pub fn caveats(&self) -> &[Caveat] {
        &self.caveats
    }

    /// The access token underneath.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The wire form. It carries the tag, so whoever holds it can append
    /// (narrow) further, like a macaroon; using it still needs a proof from
    /// the holder key.
    pub fn encode(&self) -> String {
        let mut out = self.token.clone();
        for c in &self.caveats {
            out.push(SEPARATOR);
            out.push_str(&URL_SAFE_NO_PAD.encode(c.encode()));
        }
        out.push(SEPARATOR);
        out.push_str(&URL_SAFE_NO_PAD.encode(self.tag.expose()));
        out
    }
}

/// A chain parsed from untrusted bytes; nothing in it is trusted yet.
#[derive(Debug)]
pub struct UnverifiedChain {
    token: String,
    caveats: Vec<Caveat>,
    tag: [u8; 32],
}

impl UnverifiedChain {
    /// Parse `token~caveat…~tag`. Every caveat must be canonical.
    pub fn parse(wire: &str) -> Result<UnverifiedChain, CaveatError> {
        let mut parts: Vec<&str> = wire.split(SEPARATOR).collect();
        if parts.len() < 2 {
            return Err(CaveatError::Malformed("no tag"));
        }
        if parts.len() > MAX_CAVEATS + 2 {
            return Err(CaveatError::TooMany { max: MAX_CAVEATS });
        }
        let tag = parts.pop().ok_or(CaveatError::Malformed("no tag"))?;
        let tag: [u8; 32] = URL_SAFE_NO_PAD
            .decode(tag)
            .ok()
            .and_then(|t| t.try_into().ok())
            .ok_or(CaveatError::Malformed(
                "the tag is not 32 bytes of base64url",
            ))?;
        let token = parts.remove(0);
        if token.is_empty() {
            return Err(CaveatError::Malformed("no token"));
        }
        let caveats = parts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let bad = |reason: String| CaveatError::BadCaveat {
                    index: i + 1,
                    reason,
                };
                if c.len() > MAX_CAVEAT_BYTES * 4 / 3 + 4 {
                    return Err(bad("too long".into()));
                }
                let bytes = URL_SAFE_NO_PAD
                    .decode(c)
                    .map_err(|_| bad("not base64url".into()))?;
                let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
                Caveat::parse(&text).map_err(bad)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UnverifiedChain {
            token: token.to_owned(),
            caveats,
            tag,
        })
    }

    /// The token inside (unauthenticated: verify it as an access token).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Recompute the chain from the root key; the tag must match (compared
    /// in constant time).
    pub fn verify(self, root: &[u8; 32]) -> Result<VerifiedChain, CaveatError> {
        // The last step of the chain goes through `verify_slice`, which
        // compares in constant time; so does a chain of no caveats.
        let mut last = mac(root);
        last.update(DOMAIN);
        last.update(&Sha256::digest(self.token.as_bytes()));
        for c in &self.caveats {
            let key: [u8; 32] = last.finalize().into_bytes().into();
            last = mac(&key);
            last.update(c.encode().as_bytes());
        }
        last.verify_slice(&self.tag)
            .map_err(|_| CaveatError::BadTag)?;
        Ok(VerifiedChain {
            token: self.token,
            caveats: self.caveats,
        })
    }
}

/// A chain whose tag verified against the root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    token: String,
    caveats: Vec<Caveat>,
}

impl VerifiedChain {
    /// The access token (verify it as any other).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The caveats, in order.
    pub fn caveats(&self) -> &[Caveat] {
        &self.caveats
    }
}

/// What a (possibly attenuated) token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    /// Grants it may use.
    pub grants: Vec<GrantName>,
    /// Methods it may use (`None`: any the grant allows).
    pub methods: Option<Vec<String>>,
    /// Path prefix sets: a path must match a prefix of every set.
    pub path_prefixes: Vec<Vec<String>>,
    /// Unix time from which it is no longer valid.
    pub expires_at: u64,
    /// Further delegations allowed.
    pub depth: u32,
    /// Thumbprint of the key that must sign proofs of possession.
    pub holder: String,
    /// The sub-agents the rights were delegated to, outermost first (from
    /// `agent` caveats); the backend intersects with each one's grants.
    pub agents: Vec<String>,
}

/// Why [`Rights::allows`] refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Outside {
    /// The grant is not among the rights.
    #[error("grant {0} is not delegated")]
    Grant(String),
    /// The method is not among the rights.
    #[error("method {0} is not delegated")]
    Method(String),
    /// The path is outside the delegated prefixes.
    #[error("path {0} is outside the delegated prefixes")]
    Path(String),
    /// The delegation expired.
    #[error("the delegation expired")]
    Expired,
}

impl Rights {
    /// The rights of a bare token: its scope, expiry and bound key, with
    /// `max_depth` delegations allowed.
    pub fn of_token(scope: &[GrantName], expires_at: u64, jkt: &str, max_depth: u32) -> Rights {
        Rights {
            grants: scope.to_vec(),
            methods: None,
            path_prefixes: Vec::new(),
            expires_at,
            depth: max_depth,
            holder: jkt.to_owned(),
            agents: Vec::new(),
        }
    }

    /// Apply caveats in order: every one can only remove rights. A `holder`
    /// caveat needs a level of depth left and uses it up.
    pub fn attenuate(mut self, caveats: &[Caveat]) -> Result<Rights, CaveatError> {
        for c in caveats {
            match c {
                Caveat::Grants(g) => self.grants.retain(|x| g.contains(x)),
                Caveat::Methods(m) => {
                    self.methods = Some(match self.methods.take() {
                        Some(have) => have.into_iter().filter(|x| m.contains(x)).collect(),
                        None => m.clone(),
                    })
                }
                Caveat::PathPrefixes(p) => self.path_prefixes.push(p.clone()),
                Caveat::ExpiresAt(t) => self.expires_at = self.expires_at.min(*t),
                Caveat::MaxDepth(d) => self.depth = self.depth.min(*d),
                Caveat::Holder(jkt) => {
                    self.depth = self
                        .depth
                        .checked_sub(1)
                        .ok_or(CaveatError::DepthExhausted)?;
                    self.holder = jkt.clone();
                }
                Caveat::Agent(name) => self.agents.push(name.clone()),
            }
        }
        Ok(self)
    }

    /// Whether appending `caveat` asks for no more than these rights: what
    /// a runtime checks before it starts a child (the backend's
    /// intersection makes a wider caveat useless anyway).
    pub fn narrows(&self, caveat: &Caveat) -> Result<(), CaveatError> {
        let refuse = |what: String| Err(CaveatError::NotNarrower(what));
        match caveat {
            Caveat::Grants(g) => {
                if let Some(extra) = g.iter().find(|x| !self.grants.contains(x)) {
                    return refuse(format!("grant {extra}"));
                }
            }
            Caveat::Methods(m) => {
                if let Some(have) = &self.methods
                    && let Some(extra) = m.iter().find(|x| !have.contains(x))
                {
                    return refuse(format!("method {extra}"));
                }
            }
            Caveat::PathPrefixes(p) => {
                for prefix in p {
                    let inside = self
                        .path_prefixes
                        .iter()
                        .all(|set| set.iter().any(|q| path_matches_prefix(prefix, q)));
                    if !inside {
                        return refuse(format!("path prefix {prefix}"));
                    }
                }
            }
            Caveat::ExpiresAt(t) => {
                if *t > self.expires_at {
                    return refuse(format!("expiry {t} after {}", self.expires_at));
                }
            }
            Caveat::MaxDepth(d) => {
                if *d > self.depth {
                    return refuse(format!("depth {d} above {}", self.depth));
                }
            }
            Caveat::Holder(_) => {
                if self.depth == 0 {
                    return Err(CaveatError::DepthExhausted);
                }
            }
            // Naming the sub-agent takes rights away (its own grants), never
            // adds any.
            Caveat::Agent(_) => {}
        }
        Ok(())
    }

    /// Whether a call (grant, method, path, at `now`) is within these rights.
    pub fn allows(
        &self,
        grant: &GrantName,
        method: &str,
        path: &str,
        now: u64,
    ) -> Result<(), Outside> {
        if now >= self.expires_at {
            return Err(Outside::Expired);
        }
        if !self.grants.contains(grant) {
            return Err(Outside::Grant(grant.to_string()));
        }
        if let Some(m) = &self.methods
            && !m.iter().any(|x| x == method)
        {
            return Err(Outside::Method(method.to_owned()));
        }
        if !self
            .path_prefixes
            .iter()
            .all(|set| set.iter().any(|p| path_matches_prefix(path, p)))
        {
            return Err(Outside::Path(path.to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: [u8; 32] = [42; 32];
    const TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiJ4In0.c2ln";
    const JKT_PARENT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
    const JKT_CHILD: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    fn g(names: &[&str]) -> Vec<GrantName> {
        names.iter().map(|n| GrantName::new(n).unwrap()).collect()
    }

    fn chain() -> Chain {
        Chain::new(TOKEN, ChainKey::derive(&ROOT, TOKEN))
            .append(Caveat::grants(g(&["weather"])))
            .unwrap()
            .append(Caveat::methods(["GET"]).unwrap())
            .unwrap()
            .append(Caveat::Holder(JKT_CHILD.into()))
            .unwrap()
    }

    fn rights() -> Rights {
        Rights::of_token(&g(&["mail", "weather"]), 2_000, JKT_PARENT, 2)
    }

    #[test]
    fn a_chain_round_trips_and_verifies() {
        let c = chain();
        let wire = c.encode();
        let v = UnverifiedChain::parse(&wire)
            .unwrap()
            .verify(&ROOT)
            .unwrap();
        assert_eq!(v.token(), TOKEN);
        assert_eq!(v.caveats(), c.caveats());
        let r = rights().attenuate(v.caveats()).unwrap();
        assert_eq!(r.grants, g(&["weather"]));
        assert_eq!(r.methods, Some(vec!["GET".to_owned()]));
        assert_eq!(r.holder, JKT_CHILD);
        assert_eq!(r.depth, 1);
        // No caveats at all is a chain too.
        let bare = Chain::new(TOKEN, ChainKey::derive(&ROOT, TOKEN)).encode();
        assert!(UnverifiedChain::parse(&bare).unwrap().verify(&ROOT).is_ok());
    }

    #[test]
    fn removing_reordering_or_altering_a_caveat_breaks_the_tag() {
        let wire = chain().encode();
        let parts: Vec<&str> = wire.split('~').collect();
        let join = |p: &[&str]| p.join("~");
        let dropped = join(&[parts[0], parts[1], parts[3], parts[4]]);
        let reordered = join(&[parts[0], parts[2], parts[1], parts[3], parts[4]]);
        let stripped = join(&[parts[0], parts[4]]);
        let other_root = [7u8; 32];
        for bad in [dropped, reordered, stripped] {
            assert_eq!(
                UnverifiedChain::parse(&bad).unwrap().verify(&ROOT),
                Err(CaveatError::BadTag)
            );
        }
        assert_eq!(
            UnverifiedChain::parse(&wire).unwrap().verify(&other_root),
            Err(CaveatError::BadTag)
        );
        // Another token under the same caveats and tag.
        let swapped = wire.replacen(TOKEN, "eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiJ5In0.c2ln", 1);
        assert_eq!(
            UnverifiedChain::parse(&swapped).unwrap().verify(&ROOT),
            Err(CaveatError::BadTag)
        );
    }

    #[test]
    fn only_canonical_caveats_parse() {
        for bad in [
            "grants:weather,mail",
            "grants:mail,mail",
            "methods:get",
            "paths:v1",
            "exp:01",
            "exp:+1",
            "depth:4294967296",
            "holder:short",
            "bogus:1",
            "nokind",
        ] {
            assert!(Caveat::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "grants:mail,weather",
            "grants:",
            "methods:GET,POST",
            "paths:/v1,/v2/",
            "exp:0",
            "depth:3",
        ] {
            assert_eq!(Caveat::parse(good).unwrap().encode(), good);
        }
    }

    #[test]
    fn caveats_only_narrow() {
        let r = rights()
            .attenuate(&[
                Caveat::grants(g(&["admin", "weather"])),
                Caveat::ExpiresAt(5_000),
                Caveat::MaxDepth(9),
                Caveat::path_prefixes(["/v1/"]).unwrap(),
                Caveat::path_prefixes(["/v1/a", "/v2"]).unwrap(),
            ])
            .unwrap();
        // Naming a grant it does not hold adds nothing; a later expiry or a
        // larger depth changes nothing.
        assert_eq!(r.grants, g(&["weather"]));
        assert_eq!(r.expires_at, 2_000);
        assert_eq!(r.depth, 2);
        let w = GrantName::new("weather").unwrap();
        assert_eq!(r.allows(&w, "GET", "/v1/a/b", 1_000), Ok(()));
        assert!(matches!(
            r.allows(&w, "GET", "/v1/b", 1_000),
            Err(Outside::Path(_))
        ));
        assert!(matches!(
            r.allows(&GrantName::new("admin").unwrap(), "GET", "/v1/a", 1_000),
            Err(Outside::Grant(_))
        ));
        assert_eq!(r.allows(&w, "GET", "/v1/a", 2_000), Err(Outside::Expired));
        // The runtime's own check before it starts a child.
        assert!(matches!(
            rights().narrows(&Caveat::grants(g(&["admin"]))),
            Err(CaveatError::NotNarrower(_))
        ));
        assert!(rights().narrows(&Caveat::grants(g(&["mail"]))).is_ok());
        assert!(matches!(
            r.narrows(&Caveat::path_prefixes(["/v2/x", "/v3"]).unwrap()),
            Err(CaveatError::NotNarrower(_))
        ));
    }

    #[test]
    fn holders_use_up_depth() {
        let hop = |jkt: &str| Caveat::Holder(jkt.to_owned());
        let r = rights()
            .attenuate(&[hop(JKT_CHILD), hop(JKT_PARENT)])
            .unwrap();
        assert_eq!(r.depth, 0);
        assert_eq!(r.holder, JKT_PARENT);
        assert_eq!(
            rights().attenuate(&[hop(JKT_CHILD), hop(JKT_PARENT), hop(JKT_CHILD)]),
            Err(CaveatError::DepthExhausted)
        );
        assert_eq!(
            rights().attenuate(&[Caveat::MaxDepth(0), hop(JKT_CHILD)]),
            Err(CaveatError::DepthExhausted)
        );
        assert_eq!(r.narrows(&hop(JKT_CHILD)), Err(CaveatError::DepthExhausted));
    }

    #[test]
    fn an_agent_caveat_names_the_sub_agent_and_never_widens() {
        let c = Caveat::Agent("summarizer".into());
        assert_eq!(c.encode(), "agent:summarizer");
        assert_eq!(Caveat::parse("agent:summarizer"), Ok(c.clone()));
        // Agent names follow the registry's rule.
        assert!(Caveat::parse("agent:Bad Name").is_err());
        assert!(Caveat::parse("agent:").is_err());
        assert_eq!(rights().narrows(&c), Ok(()));
        let r = rights()
            .attenuate(&[
                c,
                Caveat::Holder(JKT_CHILD.into()),
                Caveat::Agent("leaf".into()),
            ])
            .unwrap();
        assert_eq!(r.agents, ["summarizer", "leaf"]);
        assert_eq!(r.grants, rights().grants);
    }

    #[test]
    fn bounds_and_debug() {
        let mut c = Chain::new(TOKEN, ChainKey::derive(&ROOT, TOKEN));
        for i in 0..MAX_CAVEATS {
            c = c.append(Caveat::ExpiresAt(10_000 - i as u64)).unwrap();
        }
        assert_eq!(
            c.append(Caveat::MaxDepth(1)).unwrap_err(),
            CaveatError::TooMany { max: MAX_CAVEATS }
        );
        let long = format!("{TOKEN}{}", "~ZXhwOjE".repeat(MAX_CAVEATS + 1)) + "~AAAA";
        assert!(matches!(
            UnverifiedChain::parse(&long),
            Err(CaveatError::TooMany { .. })
        ));
        assert!(UnverifiedChain::parse(TOKEN).is_err());
        assert!(UnverifiedChain::parse("~AAAA").is_err());
        let key = ChainKey::derive(&ROOT, TOKEN);
        let tag_b64 = URL_SAFE_NO_PAD.encode(key.expose());
        assert!(!format!("{key:?}{c:?}").contains(&tag_b64));
    }
}
