//! The policy envelope: what an agent may do, decided before it runs and
//! checked by the backend on every proxied call (pure logic; the backend
//! keeps the state and the registry keeps the documents).
//!
//! A policy belongs to one agent, or to every agent (`agent = "*"`, the
//! global defaults, consulted after the agent's own):
//!
//! ```toml
//! [[policy]]
//! agent = "courier"
//!
//! [[policy.rule]]              # first match wins; nothing matched: deny
//! name = "read-forecast"
//! grant = "weather"            # optional: any grant
//! methods = ["GET"]            # optional: any method
//! path = "/v1/forecast/**"     # optional glob: `*` one segment, `**` any rest
//! user = "user:corp/*"         # optional: "any" (default), "none", exact, or a prefix ending in *
//! effect = "allow"             # allow | approve | deny
//!
//! [[policy.after]]             # sequences: after a call of one kind…
//! name = "no-paste-after-mail"
//! after = { grant = "mail" }
//! then = { grant = "paste", methods = ["POST", "PUT"] }
//! effect = "approve"           # approve | deny
//! within_s = 3600              # optional: how long the trigger counts (default 1 day)
//!
//! [[policy.limit]]             # at most `max` calls of a kind per window
//! name = "mail-reads"
//! match = { grant = "mail" }
//! max = 100
//! window_s = 3600
//!
//! [[policy.budget]]            # request bytes sent upstream per window
//! name = "upload"
//! match = { grant = "paste" }
//! bytes = 1048576
//! window_s = 86400
//!
//! [[policy.rate]]              # a token bucket
//! name = "calm"
//! per_second = 5
//! burst = 10
//! ```
//!
//! Sequence state ([`KeyState`]) is kept per agent × user × delegation root
//! by the caller, so a fresh instance does not start from a clean slate.
//! An agent with no policy of its own and no global policy is bound by its
//! grants alone; as soon as either exists, an unmatched call is denied.

use crate::config::ConfigError;
use crate::grant::{GrantName, validate_name};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// The agent name that makes a policy the global default.
pub const GLOBAL: &str = "*";
/// Default time a sequence trigger counts, seconds.
const DEFAULT_WITHIN: u64 = 86_400;
/// Most rules of each kind in one policy.
const MAX_RULES: usize = 256;
/// Most path segments a pattern is matched against.
pub const MAX_SEGMENTS: usize = 256;
/// Most entries kept per byte budget (older ones are merged).
const MAX_BUDGET_ENTRIES: usize = 1024;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// What a rule does with a call it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Forward it.
    Allow,
    /// Forward it only with a person's approval of this exact call.
    Approve,
    /// Refuse it.
    Deny,
}

/// Which calls a rule covers, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(flatten)]
    select: RawSelector,
    effect: Effect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAfter {
    name: String,
    after: RawSelector,
    then: RawSelector,
    effect: Effect,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    within_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    name: String,
    #[serde(default, rename = "match")]
    select: RawSelector,
    max: u32,
    window_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    name: String,
    #[serde(default, rename = "match")]
    select: RawSelector,
    bytes: u64,
    window_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    name: String,
    #[serde(default, rename = "match")]
    select: RawSelector,
    per_second: f64,
    burst: u32,
}

/// One `[[policy]]` table as written (TOML in a config, JSON in the
/// registry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    agent: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rule: Vec<RawRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    after: Vec<RawAfter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    limit: Vec<RawLimit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    budget: Vec<RawBudget>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rate: Vec<RawRate>,
}

/// A path glob over `/`-separated segments: `*` matches one segment, `**`
/// any number (including none), anything else itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern(Vec<String>);

impl PathPattern {
    fn parse(text: &str) -> Result<PathPattern, String> {
        if !text.starts_with('/') || text.len() > 512 {
            return Err("a path pattern starts with / (at most 512 bytes)".into());
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a path pattern is printable ASCII without spaces".into());
        }
        let segments: Vec<String> = text[1..].split('/').map(str::to_owned).collect();
        if segments.iter().filter(|s| s.as_str() == "**").count() > 2 {
            return Err("at most two ** in a path pattern".into());
        }
        if let Some(bad) = segments
            .iter()
            .find(|s| s.contains('*') && *s != "*" && *s != "**")
        {
            return Err(format!("{bad:?}: * stands for a whole segment"));
        }
        Ok(PathPattern(segments))
    }

    /// Whether `path` (no query) matches. A path of more than
    /// [`MAX_SEGMENTS`] segments matches no pattern: with two `**` the work
    /// grows with the square of the segments, and the path is guest text.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        // A trailing slash names the same resource.
        let rest = if rest.len() > 1 {
            rest.strip_suffix('/').unwrap_or(rest)
        } else {
            rest
        };
        let segments: Vec<&str> = rest.split('/').take(MAX_SEGMENTS + 1).collect();
        segments.len() <= MAX_SEGMENTS && glob(&self.0, &segments)
    }
}

fn glob(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|i| glob(rest, &path[i..])),
        Some((p, rest)) => match path.split_first() {
            Some((s, tail)) => (p == "*" || p == s) && glob(rest, tail),
            None => false,
        },
    }
}

/// Which users a selector covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UserMatch {
    Any,
    Nobody,
    Exact(String),
    Prefix(String),
}

impl UserMatch {
    fn parse(text: Option<&str>) -> Result<UserMatch, String> {
        Ok(match text {
            None | Some("any") => UserMatch::Any,
            Some("none") => UserMatch::Nobody,
            Some(t) if t.starts_with("user:") && t.len() <= 256 => match t.strip_suffix('*') {
                Some(prefix) if !prefix.contains('*') => UserMatch::Prefix(prefix.to_owned()),
                Some(_) => return Err("only a trailing * is allowed".into()),
                None => UserMatch::Exact(t.to_owned()),
            },
            Some(_) => {
                return Err("a user is \"any\", \"none\" or a principal user:<issuer>/<sub> (a trailing * for a prefix)".into());
            }
        })
    }

    fn matches(&self, user: Option<&str>) -> bool {
        match (self, user) {
            (UserMatch::Any, _) => true,
            (UserMatch::Nobody, u) => u.is_none(),
            (UserMatch::Exact(e), Some(u)) => e == u,
            (UserMatch::Prefix(p), Some(u)) => u.starts_with(p.as_str()),
            (_, None) => false,
        }
    }
}

/// Which calls a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    grant: Option<GrantName>,
    methods: Option<Vec<String>>,
    path: Option<PathPattern>,
    user: UserMatch,
}

impl Selector {
    fn parse(raw: &RawSelector, at: &str) -> Result<Selector, ConfigError> {
        let grant = match &raw.grant {
            None => None,
            Some(g) => {
                Some(GrantName::new(g).map_err(|e| invalid(format!("{at}.grant"), e.to_string()))?)
            }
        };
        let methods = match &raw.methods {
            None => None,
            Some(m) if m.is_empty() => {
                return Err(invalid(
                    format!("{at}.methods"),
                    "an empty list matches nothing; leave it out to match any method",
                ));
            }
            Some(m) => {
                if let Some(bad) = m.iter().find(|m| !crate::grant::is_method_name(m)) {
                    return Err(invalid(
                        format!("{at}.methods"),
                        format!("{bad:?} is not an upper-case method name"),
                    ));
                }
                Some(m.clone())
            }
        };
        let path = match &raw.path {
            None => None,
            Some(p) => Some(PathPattern::parse(p).map_err(|e| invalid(format!("{at}.path"), e))?),
        };
        let user =
            UserMatch::parse(raw.user.as_deref()).map_err(|e| invalid(format!("{at}.user"), e))?;
        Ok(Selector {
            grant,
            methods,
            path,
            user,
        })
    }

    fn matches(&self, call: &Call<'_>) -> bool {
        self.grant.as_ref().is_none_or(|g| g.as_str() == call.grant)
            && self
                .methods
                .as_ref()
                .is_none_or(|m| m.iter().any(|x| x == call.method))
            && self.path.as_ref().is_none_or(|p| p.matches(call.path))
            && self.user.matches(call.user)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    /// `policy "<agent>".<kind> "<name>"`: how decisions and state name it.
    id: String,
    select: Selector,
    effect: Effect,
}

#[derive(Debug, Clone, PartialEq)]
struct After {
    /// `policy "<agent>".<kind> "<name>"`: how decisions and state name it.
    id: String,
    after: Selector,
    then: Selector,
    effect: Effect,
    within: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum LimitKind {
    Count { max: u32 },
    Bytes { bytes: u64 },
    Rate { per_second: f64, burst: f64 },
}

#[derive(Debug, Clone, PartialEq)]
struct Limit {
    /// `policy "<agent>".<kind> "<name>"`: how decisions and state name it.
    id: String,
    select: Selector,
    kind: LimitKind,
    window: u64,
}

/// A verified policy of one agent (or the global defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    agent: String,
    rules: Vec<Rule>,
    after: Vec<After>,
    limits: Vec<Limit>,
    raw: RawPolicy,
}

impl Policy {
    /// Verify a `[[policy]]` table; `index` is its position in the file,
    /// for error messages before its agent is known.
    pub fn verify(raw: RawPolicy, index: usize) -> Result<Policy, ConfigError> {
        if raw.agent != GLOBAL {
            validate_name(&raw.agent, "agent")
                .map_err(|e| invalid(format!("policy[{index}].agent"), e.to_string()))?;
        }
        let at = format!("policy \"{}\"", raw.agent);
        let mut names = std::collections::BTreeSet::new();
        let mut name = |kind: &str, n: &str| -> Result<String, ConfigError> {
            validate_name(n, "rule")
                .map_err(|e| invalid(format!("{at}.{kind}.name"), e.to_string()))?;
            if !names.insert(n.to_owned()) {
                return Err(invalid(
                    format!("{at}.{kind} \"{n}\".name"),
                    "another rule of this policy has the same name",
                ));
            }
            Ok(format!("{at}.{kind} \"{n}\""))
        };
        let too_many = |kind: &str, n: usize| {
            (n > MAX_RULES).then(|| invalid(format!("{at}.{kind}"), format!("at most {MAX_RULES}")))
        };
        for (kind, n) in [
            ("rule", raw.rule.len()),
            ("after", raw.after.len()),
            ("limit", raw.limit.len()),
            ("budget", raw.budget.len()),
            ("rate", raw.rate.len()),
        ] {
            if let Some(e) = too_many(kind, n) {
                return Err(e);
            }
        }
        let mut rules = Vec::new();
        for r in &raw.rule {
            let here = name("rule", &r.name)?;
            rules.push(Rule {
                id: here.clone(),
                select: Selector::parse(&r.select, &here)?,
                effect: r.effect,
            });
        }
        let mut after = Vec::new();
        for a in &raw.after {
            let here = name("after", &a.name)?;
            if a.effect == Effect::Allow {
                return Err(invalid(
                    format!("{here}.effect"),
                    "a sequence rule can only require approval or deny (approve | deny)",
                ));
            }
            let within = a.within_s.unwrap_or(DEFAULT_WITHIN);
            if !(1..=31 * 86_400).contains(&within) {
                return Err(invalid(
                    format!("{here}.within_s"),
                    "must be 1..=2678400 (31 days)",
                ));
            }
            after.push(After {
                id: here.clone(),
                after: Selector::parse(&a.after, &format!("{here}.after"))?,
                then: Selector::parse(&a.then, &format!("{here}.then"))?,
                effect: a.effect,
                within,
            });
        }
        let window = |here: &str, w: u64| {
            if (1..=31 * 86_400).contains(&w) {
                Ok(w)
            } else {
                Err(invalid(
                    format!("{here}.window_s"),
                    "must be 1..=2678400 (31 days)",
                ))
            }
        };
        let mut limits = Vec::new();
        for l in &raw.limit {
            let here = name("limit", &l.name)?;
            if l.max == 0 {
                return Err(invalid(
                    format!("{here}.max"),
                    "0 allows nothing; use a deny rule",
                ));
            }
            limits.push(Limit {
                id: here.clone(),
                select: Selector::parse(&l.select, &here)?,
                kind: LimitKind::Count { max: l.max },
                window: window(&here, l.window_s)?,
            });
        }
        for b in &raw.budget {
            let here = name("budget", &b.name)?;
            limits.push(Limit {
                id: here.clone(),
                select: Selector::parse(&b.select, &here)?,
                kind: LimitKind::Bytes { bytes: b.bytes },
                window: window(&here, b.window_s)?,
            });
        }
        for r in &raw.rate {
            let here = name("rate", &r.name)?;
            if !(r.per_second.is_finite() && r.per_second > 0.0 && r.per_second <= 1e6) {
                return Err(invalid(
                    format!("{here}.per_second"),
                    "must be above 0 (at most 1000000)",
                ));
            }
            if r.burst == 0 {
                return Err(invalid(format!("{here}.burst"), "must be at least 1"));
            }
            limits.push(Limit {
                id: here.clone(),
                select: Selector::parse(&r.select, &here)?,
                kind: LimitKind::Rate {
                    per_second: r.per_second,
                    burst: f64::from(r.burst),
                },
                window: 0,
            });
        }
        Ok(Policy {
            agent: raw.agent.clone(),
            rules,
            after,
            limits,
            raw,
        })
    }

    /// Parse one policy document (TOML, a single `[[policy]]` table's
    /// contents: `agent = …` and its rules), as `edgeward policy set` takes.
    pub fn from_toml(text: &str) -> Result<Policy, ConfigError> {
        let raw: RawPolicy =
            toml::from_str(text).map_err(|e| crate::config::parse_error(text, &e))?;
        Policy::verify(raw, 0)
    }

    /// The registry's form (JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.raw).unwrap_or_default()
    }

    /// From the registry's form.
    pub fn from_json(text: &str) -> Result<Policy, ConfigError> {
        let raw: RawPolicy = serde_json::from_str(text)
            .map_err(|e| invalid("policy", format!("the stored policy is not valid: {e}")))?;
        Policy::verify(raw, 0)
    }

    /// Every grant its selectors name, with the field that names it.
    pub fn grants_named(&self) -> Vec<(String, &GrantName)> {
        let field = |id: &str, part: &str| format!("{id}{part}.grant");
        let mut out = Vec::new();
        for r in &self.rules {
            out.extend(r.select.grant.iter().map(|g| (field(&r.id, ""), g)));
        }
        for a in &self.after {
            out.extend(a.after.grant.iter().map(|g| (field(&a.id, ".after"), g)));
            out.extend(a.then.grant.iter().map(|g| (field(&a.id, ".then"), g)));
        }
        for l in &self.limits {
            out.extend(l.select.grant.iter().map(|g| (field(&l.id, ""), g)));
        }
        out
    }

    /// The agent it belongs to (`*` for the global defaults).
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Its document as TOML (for `policy show`).
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.raw).unwrap_or_default()
    }
}

/// One proxied call, as policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The acting agent (the sub-agent, for a delegated call): counts,
    /// budgets and rates are kept per acting agent.
    pub agent: &'a str,
    /// The grant.
    pub grant: &'a str,
    /// The method (upper case).
    pub method: &'a str,
    /// The path (no query).
    pub path: &'a str,
    /// The user it is made for, if any.
    pub user: Option<&'a str>,
    /// Bytes the call sends upstream: body, URL and headers (what a byte
    /// budget counts).
    pub bytes: u64,
}

/// What policy says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forward it.
    Allow,
    /// Forward it once a person approved this exact call.
    Approve,
    /// Refuse it.
    Deny,
    /// Refuse it: a count, budget or rate limit is used up.
    LimitExceeded,
}

/// A decision and the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub outcome: Outcome,
    /// Which rule decided, e.g. `policy "courier".rule "read-forecast"`, or
    /// `default deny` when nothing matched.
    pub rule: String,
    /// Why, in words.
    pub detail: String,
}

/// The sequence state of one user × delegation root: a whole delegation
/// tree. Sequence triggers are shared by the tree (a parent cannot launder
/// a sequence through a child); counts, budgets and rates are kept per
/// acting agent within it, i.e. per agent × user × delegation root.
#[derive(Debug, Default, Clone)]
pub struct KeyState {
    /// When the state was last used (for evicting idle states).
    last_seen: u64,
    /// Sequence rule → when its trigger last happened.
    triggered: HashMap<String, u64>,
    /// Count limit → times of the calls in its window.
    counts: HashMap<String, VecDeque<u64>>,
    /// Budget → (time, bytes) in its window.
    bytes: HashMap<String, VecDeque<(u64, u64)>>,
    /// Rate → (tokens, last refill).
    buckets: HashMap<String, (f64, u64)>,
}

/// The state key of a per-agent limit.
fn per_agent(rule: &str, call: &Call<'_>) -> String {
    format!("{rule} for {}", call.agent)
}

impl KeyState {
    /// When this state was last used.
    pub fn last_seen(&self) -> u64 {
        self.last_seen
    }
}

/// Why a path is refused before any rule is consulted: forms that
/// upstreams commonly read as another path (`//` merged, dot segments,
/// `;` parameters, percent-encoded letters or slashes) would otherwise slip
/// past a pattern that names the path they reach.
pub fn path_problem(path: &str) -> Option<String> {
    // The grant's own check first (dot segments, encoded slashes, needless
    // or malformed escapes): the policy adds only what a prefix allow-list
    // can live with and a deny pattern cannot.
    if let Err(refusal) = crate::grant::check_path_is_canonical(path) {
        return Some(refusal.detail);
    }
    if path.split('/').count() > MAX_SEGMENTS + 1 {
        return Some("it has more than 256 segments".into());
    }
    // Anywhere, trailing ones included: the matcher ignores one trailing
    // slash, and an upstream that merges slashes would read `/a/b//` as
    // `/a/b`, which a deny rule for `/a/b` must catch.
    if path.contains("//") {
        return Some("it has an empty segment (//)".into());
    }
    if path.contains(';') {
        return Some("it has a ';' parameter".into());
    }
    None
}

/// Decide a call under `policies` (the agent's own first, then the global
/// defaults), with this key's sequence state. An allowed call is recorded
/// at once (counts, budgets, rates and triggers), so concurrent callers
/// holding the same state lock cannot overrun a limit. An `Approve` is not
/// recorded: call [`record`] when the approved call is forwarded.
pub fn evaluate(policies: &[&Policy], state: &mut KeyState, call: &Call<'_>, now: u64) -> Decision {
    state.last_seen = state.last_seen.max(now);
    let mut decision = static_decision(policies, call);
    if decision.outcome == Outcome::Deny {
        return decision;
    }
    for p in policies {
        for a in &p.after {
            if !a.then.matches(call) {
                continue;
            }
            let Some(at) = state.triggered.get(&a.id) else {
                continue;
            };
            let key = a.id.clone();
            if now.saturating_sub(*at) >= a.within {
                continue;
            }
            match a.effect {
                Effect::Deny => {
                    return Decision {
                        outcome: Outcome::Deny,
                        detail: format!("denied after an earlier call ({key})"),
                        rule: key,
                    };
                }
                _ if decision.outcome == Outcome::Allow => {
                    decision = Decision {
                        outcome: Outcome::Approve,
                        detail: format!("needs approval after an earlier call ({key})"),
                        rule: key,
                    };
                }
                _ => {}
            }
        }
    }
    if let Some(limited) = check_limits(policies, state, call, now) {
        return limited;
    }
    if decision.outcome == Outcome::Allow {
        record(policies, state, call, now);
    }
    decision
}

/// The decision of the first matching rule alone (no sequences or limits):
/// what `policy check` explains.
pub fn static_decision(policies: &[&Policy], call: &Call<'_>) -> Decision {
    if !policies.is_empty()
        && let Some(problem) = path_problem(call.path)
    {
        return Decision {
            outcome: Outcome::Deny,
            rule: "path form".into(),
            detail: format!("the path is refused under a policy: {problem}"),
        };
    }
    for p in policies {
        for r in &p.rules {
            if r.select.matches(call) {
                let rule = r.id.clone();
                let (outcome, word) = match r.effect {
                    Effect::Allow => (Outcome::Allow, "allowed"),
                    Effect::Approve => (Outcome::Approve, "needs approval"),
                    Effect::Deny => (Outcome::Deny, "denied"),
                };
                return Decision {
                    outcome,
                    detail: format!("{word} by {rule}"),
                    rule,
                };
            }
        }
    }
    Decision {
        outcome: Outcome::Deny,
        rule: "default deny".into(),
        detail: "no policy rule matches this call".into(),
    }
}

/// Every sequence, count, budget and rate rule that covers `call`, by id
/// (for explaining a decision).
pub fn applicable(policies: &[&Policy], call: &Call<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for p in policies {
        for a in &p.after {
            if a.then.matches(call) {
                out.push(a.id.clone());
            }
        }
        for l in &p.limits {
            if l.select.matches(call) {
                out.push(l.id.clone());
            }
        }
    }
    out
}

fn check_limits(
    policies: &[&Policy],
    state: &mut KeyState,
    call: &Call<'_>,
    now: u64,
) -> Option<Decision> {
    for p in policies {
        for l in &p.limits {
            if !l.select.matches(call) {
                continue;
            }
            let key = &l.id;
            let slot = per_agent(key, call);
            let over = match l.kind {
                LimitKind::Count { max } => {
                    let q = state.counts.entry(slot).or_default();
                    prune(q, now, l.window, |t| *t);
                    (q.len() >= max as usize)
                        .then(|| format!("at most {max} calls per {} s", l.window))
                }
                LimitKind::Bytes { bytes } => {
                    let q = state.bytes.entry(slot).or_default();
                    prune(q, now, l.window, |(t, _)| *t);
                    let used: u64 = q.iter().map(|(_, b)| *b).sum();
                    (used.saturating_add(call.bytes) > bytes).then(|| {
                        format!(
                            "{used} of {bytes} bytes per {} s used; this call sends {}",
                            l.window, call.bytes
                        )
                    })
                }
                LimitKind::Rate { per_second, burst } => {
                    let tokens = refill(state, &slot, now, per_second, burst);
                    (tokens < 1.0).then(|| format!("at most {per_second}/s (burst {burst})"))
                }
            };
            if let Some(why) = over {
                return Some(Decision {
                    outcome: Outcome::LimitExceeded,
                    detail: format!("{key}: {why}"),
                    rule: key.clone(),
                });
            }
        }
    }
    None
}

fn refill(state: &mut KeyState, key: &str, now: u64, per_second: f64, burst: f64) -> f64 {
    let (tokens, last) = state.buckets.entry(key.to_owned()).or_insert((burst, now));
    let elapsed = now.saturating_sub(*last) as f64;
    *tokens = (*tokens + elapsed * per_second).min(burst);
    *last = now;
    *tokens
}

fn prune<T>(q: &mut VecDeque<T>, now: u64, window: u64, time: impl Fn(&T) -> u64) {
    while q
        .front()
        .is_some_and(|x| now.saturating_sub(time(x)) >= window)
    {
        q.pop_front();
    }
}

/// Record a forwarded call: triggers of sequence rules, counts, bytes and
/// rate tokens.
pub fn record(policies: &[&Policy], state: &mut KeyState, call: &Call<'_>, now: u64) {
    record_triggers(policies, state, call, now);
    for p in policies {
        for l in &p.limits {
            if !l.select.matches(call) {
                continue;
            }
            let key = per_agent(&l.id, call);
            match l.kind {
                LimitKind::Count { .. } => state.counts.entry(key).or_default().push_back(now),
                LimitKind::Bytes { .. } => {
                    let q = state.bytes.entry(key).or_default();
                    q.push_back((now, call.bytes));
                    // Bounded: merge the oldest two, keeping the later time
                    // (the bytes then count a little longer, never less).
                    if q.len() > MAX_BUDGET_ENTRIES
                        && let (Some((_, a)), Some((t, b))) = (q.pop_front(), q.pop_front())
                    {
                        q.push_front((t, a.saturating_add(b)));
                    }
                }
                LimitKind::Rate { per_second, burst } => {
                    refill(state, &key, now, per_second, burst);
                    if let Some((tokens, _)) = state.buckets.get_mut(&key) {
                        *tokens -= 1.0;
                    }
                }
            }
        }
    }
}

/// Record only what `policies`' sequence rules remember of a call that went
/// through: for the other agents of a delegation tree, whose `after`
/// triggers a sub-agent's call sets too (otherwise a parent could launder
/// a sequence through a child). Their counts and rates are not touched:
/// limits stay per acting agent under its own policy.
pub fn record_triggers(policies: &[&Policy], state: &mut KeyState, call: &Call<'_>, now: u64) {
    state.last_seen = state.last_seen.max(now);
    for p in policies {
        for a in &p.after {
            if a.after.matches(call) {
                state.triggered.insert(a.id.clone(), now);
            }
        }
    }
}

#[cfg(test)]
mod tests;
