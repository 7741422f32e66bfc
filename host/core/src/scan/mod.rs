//! Secret scanning: known credential formats, live credentials, and a
//! high-entropy heuristic, over bytes that are about to cross a trust boundary.
//!
//! The runtime scans what a guest writes (logs, stdout/stderr, results); the
//! backend scans outbound requests, upstream responses and every audit record
//! (DESIGN.md, flow 8). Both use one [`Scanner`]:
//!
//! 1. Choose an [`Action`] per [`Rule`] in a [`ScannerConfig`] (the default
//!    redacts every known format and every live credential, and only audits
//!    the high-entropy heuristic, so it can never corrupt ids and hashes).
//! 2. Build one [`Scanner`] with the live credentials as a
//!    [`Redactor`](crate::redact::Redactor). Building compiles the patterns;
//!    do it once and share the scanner (it is `Send + Sync`) behind an `Arc`.
//! 3. Call [`Scanner::apply`] on each whole buffer (never on stream chunks: a
//!    secret split across two chunks is not found). Forward
//!    [`Scanned::bytes`] only if [`Scanned::blocked`] is false; write
//!    [`Scanned::findings`] (rule and byte range, never the matched text) to
//!    the audit log. The other side only ever sees the generic
//!    [`REDACTION_MARKER`], never which rule matched.
//!
//! ```
//! use edgeward_core::redact::{Redactor, REDACTION_MARKER};
//! use edgeward_core::scan::{Action, Rule, Scanner, ScannerConfig};
//!
//! let live = Redactor::new([b"upstream-secret-42".as_slice()])?;
//! let config = ScannerConfig::default().with_action(Rule::PemPrivateKey, Action::Block);
//! let scanner = Scanner::new(config, live)?;
//!
//! // A GitHub token (format rule) and the live credential, URL-encoded.
//! let token = format!("ghp_{}", "aB3dE6gH9jK2mN5pQ8rS1tU4vW7xY0zA1bC2");
//! let log = format!("using {token} and upstream%2Dsecret%2D42\n");
//! let scanned = scanner.apply(log.as_bytes());
//! assert!(!scanned.blocked);
//! assert_eq!(
//!     scanned.bytes.as_ref(),
//!     format!("using {REDACTION_MARKER} and {REDACTION_MARKER}\n").as_bytes()
//! );
//! let rules: Vec<Rule> = scanned.findings.iter().map(|f| f.rule).collect();
//! assert_eq!(rules, [Rule::GitHubToken, Rule::LiveCredential]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Rules
//!
//! Known formats follow each provider's published token format, with guards
//! so that a look-alike embedded in a longer word does not match (a token
//! must not be preceded or followed by a character that would continue it;
//! JSON escapes such as `\n` and URL escapes such as `%3D` right before a
//! token do not count as continuing it). See [`Rule`] for each format.
//! Live credentials are matched exactly, in every encoding the
//! [`Redactor`](crate::redact::Redactor) knows.
//!
//! # Non-goals and limits
//!
//! - Secrets of unknown formats are only caught by the high-entropy
//!   heuristic, which is audit-only by default, and which skips hex strings
//!   entirely (they are indistinguishable from digests and git SHAs).
//! - Known formats are recognised raw, inside JSON strings and
//!   percent-encoded in URLs; other transformations (base64 of a whole
//!   request, double encoding, compression) hide them. Live credentials are
//!   caught in more encodings, listed in [`crate::redact`].
//! - Like redaction, scanning is defence in depth: an upstream cooperating
//!   with an attacker can always transform a secret beyond recognition.

mod formats;
mod heuristic;
mod live;

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

pub use crate::redact::REDACTION_MARKER;
use crate::redact::Redactor;

/// What a finding is: a known credential format, a live credential, or the
/// high-entropy heuristic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rule {
    /// AWS access key id: `AKIA` (long-term) or `ASIA` (temporary) and
    /// exactly 16 upper-case letters or digits.
    AwsAccessKeyId,
    /// AWS secret access key: 40 base64 characters, recognised only right
    /// after a label such as `aws_secret_access_key=` or
    /// `"SecretAccessKey": ` (the key itself has no prefix, and a bare
    /// 40-character base64 string is far too common to match alone). Only
    /// the key is reported, not the label.
    AwsSecretAccessKey,
    /// GitHub token: `ghp_`, `gho_`, `ghu_`, `ghs_` or `ghr_` and exactly 36
    /// letters or digits, or `github_pat_` and exactly 82 `[A-Za-z0-9_]`.
    GitHubToken,
    /// Slack token: `xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-` or `xoxe-`,
    /// a group of digits, and one to eight more dash-separated groups of
    /// letters and digits; at least 30 characters in all.
    SlackToken,
    /// Slack incoming-webhook URL (the URL is the credential):
    /// `https://hooks.slack.com/services/T…/B…/…`, also `workflows/` and
    /// `triggers/`, the slashes possibly JSON- or percent-escaped.
    SlackWebhook,
    /// Stripe key: `sk_live_`, `sk_test_`, `rk_live_`, `rk_test_` or
    /// `pk_live_` and at least 24 letters or digits.
    StripeKey,
    /// Google API key: `AIza` and exactly 35 `[0-9A-Za-z_-]`.
    GoogleApiKey,
    /// PEM private key (`-----BEGIN … PRIVATE KEY-----`, any key type), the
    /// whole block up to its `-----END … PRIVATE KEY-----` line; a block cut
    /// off before its end line is matched up to where its base64 stops.
    PemPrivateKey,
    /// JSON Web Token (signed, three parts, or encrypted, five parts): the
    /// header must decode to a JSON object with an `"alg"` string, so dotted
    /// base64-looking text that is not a token does not match.
    Jwt,
    /// An exact match of a credential or token the caller holds, in any
    /// encoding the [`Redactor`](crate::redact::Redactor) knows.
    LiveCredential,
    /// A run of at least 20 base64-alphabet characters with letters of both
    /// cases and digits, whose Shannon entropy is typical of random tokens.
    /// Hex-only strings (UUIDs, digests, git SHAs) and base64 that decodes
    /// to prose are skipped. Audit-only by default.
    HighEntropy,
}

impl Rule {
    /// Every rule, in declaration order.
    pub const ALL: [Rule; 11] = [
        Rule::AwsAccessKeyId,
        Rule::AwsSecretAccessKey,
        Rule::GitHubToken,
        Rule::SlackToken,
        Rule::SlackWebhook,
        Rule::StripeKey,
        Rule::GoogleApiKey,
        Rule::PemPrivateKey,
        Rule::Jwt,
        Rule::LiveCredential,
        Rule::HighEntropy,
    ];

    /// A stable kebab-case name, for the audit log and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Rule::AwsAccessKeyId => "aws-access-key-id",
            Rule::AwsSecretAccessKey => "aws-secret-access-key",
            Rule::GitHubToken => "github-token",
            Rule::SlackToken => "slack-token",
            Rule::SlackWebhook => "slack-webhook",
            Rule::StripeKey => "stripe-key",
            Rule::GoogleApiKey => "google-api-key",
            Rule::PemPrivateKey => "pem-private-key",
            Rule::Jwt => "jwt",
            Rule::LiveCredential => "live-credential",
            Rule::HighEntropy => "high-entropy",
        }
    }

    /// The rule with this [`name`](Self::name), if any.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|rule| rule.name() == name)
    }

    /// Position in [`Rule::ALL`], for per-rule tables.
    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What [`Scanner::apply`] does with a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Replace the matched bytes by [`REDACTION_MARKER`].
    Redact,
    /// Redact, and mark the whole buffer as blocked: the caller must not
    /// forward it at all (for outbound requests whose grant says so).
    Block,
    /// Leave the bytes alone; only report the finding.
    AuditOnly,
}

impl Action {
    /// A stable kebab-case name, for the audit log and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Action::Redact => "redact",
            Action::Block => "block",
            Action::AuditOnly => "audit-only",
        }
    }

    /// Whether the matched bytes are replaced.
    pub fn redacts(self) -> bool {
        matches!(self, Action::Redact | Action::Block)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The [`Action`] for each [`Rule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannerConfig {
    actions: [Action; Rule::ALL.len()],
}

impl Default for ScannerConfig {
    /// Redact every known format and live credential; audit high entropy
    /// only, because random ids and base64 hashes look exactly like secrets.
    fn default() -> Self {
        let mut actions = [Action::Redact; Rule::ALL.len()];
        actions[Rule::HighEntropy.index()] = Action::AuditOnly;
        ScannerConfig { actions }
    }
}

impl ScannerConfig {
    /// This configuration with `rule` set to `action`.
    #[must_use]
    pub fn with_action(mut self, rule: Rule, action: Action) -> Self {
        self.actions[rule.index()] = action;
        self
    }

    /// The action for `rule`.
    pub fn action(&self, rule: Rule) -> Action {
        self.actions[rule.index()]
    }
}

/// One match. It holds only the rule and where the match is, never the
/// matched bytes, so printing or logging it cannot leak the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Finding {
    /// What matched.
    pub rule: Rule,
    /// What the configuration says to do with it.
    pub action: Action,
    /// Byte offset of the first matched byte in the scanned input.
    pub start: usize,
    /// Byte offset just past the last matched byte.
    pub end: usize,
}

impl Finding {
    /// `start..end`.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at bytes {}..{} ({})",
            self.rule, self.start, self.end, self.action
        )
    }
}

/// The result of [`Scanner::apply`].
#[derive(Clone, PartialEq, Eq)]
pub struct Scanned<'a> {
    /// The input with every [`Redact`](Action::Redact) and
    /// [`Block`](Action::Block) finding replaced by [`REDACTION_MARKER`];
    /// borrowed when nothing was replaced. Bytes of
    /// [`AuditOnly`](Action::AuditOnly) findings are still in here.
    pub bytes: Cow<'a, [u8]>,
    /// Every finding, ordered by position.
    pub findings: Vec<Finding>,
    /// Whether any finding's action is [`Block`](Action::Block): the bytes
    /// must then not be forwarded, redacted or not.
    pub blocked: bool,
}

impl Scanned<'_> {
    /// The (redacted) bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes.into_owned()
    }
}

impl fmt::Debug for Scanned<'_> {
    // Not the bytes: audit-only findings are still in them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanned")
            .field("len", &self.bytes.len())
            .field("findings", &self.findings)
            .field("blocked", &self.blocked)
            .finish()
    }
}

/// Why a [`Scanner`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// A built-in pattern did not compile. The patterns are constants, so
    /// this is a bug in edgeward, caught by its unit tests; it is an error
    /// rather than a panic so that a bad build fails where it is configured.
    #[error("the built-in pattern for {rule} does not compile")]
    Pattern {
        /// The rule whose pattern failed.
        rule: Rule,
    },
}

/// Finds secrets in bytes and redacts or blocks them. See the
/// [module documentation](self).
#[derive(Clone)]
pub struct Scanner {
    config: ScannerConfig,
    formats: formats::Formats,
    entropy: heuristic::HighEntropy,
    live: Redactor,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("config", &self.config)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl Scanner {
    /// Compiles the patterns. `live` holds the credentials and tokens the
    /// caller must never let through ([`Redactor::empty`] for none).
    ///
    /// # Errors
    ///
    /// [`ScanError::Pattern`] if a built-in pattern does not compile (a bug).
    pub fn new(config: ScannerConfig, live: Redactor) -> Result<Scanner, ScanError> {
        // The patterns are constants: compile them once per process (a few
        // milliseconds) and clone the compiled form, so a scanner per
        // instance or per task costs microseconds.
        static COMPILED: std::sync::OnceLock<
            Result<(formats::Formats, heuristic::HighEntropy), ScanError>,
        > = std::sync::OnceLock::new();
        let (formats, entropy) = COMPILED
            .get_or_init(|| Ok((formats::Formats::new()?, heuristic::HighEntropy::new()?)))
            .clone()?;
        Ok(Scanner {
            config,
            formats,
            entropy,
            live,
        })
    }

    /// The configuration this scanner applies.
    pub fn config(&self) -> &ScannerConfig {
        &self.config
    }

    /// Every finding in `input`, ordered by position (then end, then rule).
    ///
    /// Findings of different rules may overlap (a live credential is often a
    /// known format too); the high-entropy heuristic only reports runs that
    /// no other rule matched.
    pub fn scan(&self, input: &[u8]) -> Vec<Finding> {
        let mut hits: Vec<(Rule, Range<usize>)> = Vec::new();
        self.formats.find(input, &mut hits);
        if !self.live.is_empty() {
            hits.extend(
                live::spans(&self.live, input)
                    .into_iter()
                    .map(|span| (Rule::LiveCredential, span)),
            );
        }
        let heuristic = self.entropy.find(input, &hits);
        hits.extend(heuristic.into_iter().map(|span| (Rule::HighEntropy, span)));
        let mut findings: Vec<Finding> = hits
            .into_iter()
            .map(|(rule, span)| Finding {
                rule,
                action: self.config.action(rule),
                start: span.start,
                end: span.end,
            })
            .collect();
        findings.sort_unstable_by_key(|f| (f.start, f.end, f.rule));
        findings.dedup();
        findings
    }

    /// Scans `input` and replaces every finding whose action redacts by
    /// [`REDACTION_MARKER`] (overlapping findings become one marker).
    pub fn apply<'a>(&self, input: &'a [u8]) -> Scanned<'a> {
        let findings = self.scan(input);
        let blocked = findings.iter().any(|f| f.action == Action::Block);
        let spans = merge(
            findings
                .iter()
                .filter(|f| f.action.redacts())
                .map(Finding::range),
        );
        Scanned {
            bytes: replace(input, &spans),
            findings,
            blocked,
        }
    }
}

/// Sorted, non-overlapping spans covering every span given. Spans that only
/// touch stay separate, so two adjacent secrets give two markers, as the
/// [`Redactor`] does.
fn merge(spans: impl Iterator<Item = Range<usize>>) -> Vec<Range<usize>> {
    let mut spans: Vec<Range<usize>> = spans.filter(|s| s.start < s.end).collect();
    spans.sort_unstable_by_key(|s| (s.start, s.end));
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start < last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    merged
}

/// `input` with each of `spans` (sorted, non-overlapping, in bounds) replaced
/// by [`REDACTION_MARKER`].
fn replace<'a>(input: &'a [u8], spans: &[Range<usize>]) -> Cow<'a, [u8]> {
    if spans.is_empty() {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len() + spans.len() * REDACTION_MARKER.len());
    let mut copied_up_to = 0;
    for span in spans {
        // Spans come from matches on `input`, so they are in bounds and, once
        // merged, ordered: `copied_up_to <= span.start <= span.end <= len`.
        out.extend_from_slice(input.get(copied_up_to..span.start).unwrap_or_default());
        out.extend_from_slice(REDACTION_MARKER.as_bytes());
        copied_up_to = span.end;
    }
    out.extend_from_slice(input.get(copied_up_to..).unwrap_or_default());
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test tokens are assembled at run time so that no complete fake
    /// credential sits in the source for other scanners to trip over.
    fn github() -> String {
        format!("ghp_{}", "aB3dE6gH9jK2mN5pQ8rS1tU4vW7xY0zA1bC2")
    }

    fn aws_id() -> String {
        format!("AKIA{}", "Q3EXAMPLE7ZK2M4N")
    }

    fn scanner(config: ScannerConfig) -> Scanner {
        Scanner::new(config, Redactor::empty()).unwrap()
    }

    fn rules(findings: &[Finding]) -> Vec<Rule> {
        findings.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn names_round_trip_and_are_unique() {
        for (i, rule) in Rule::ALL.into_iter().enumerate() {
            assert_eq!(rule.index(), i);
            assert_eq!(Rule::from_name(rule.name()), Some(rule));
            assert_eq!(rule.to_string(), rule.name());
        }
        assert_eq!(Rule::from_name("nope"), None);
    }

    #[test]
    fn default_config_audits_only_high_entropy() {
        let config = ScannerConfig::default();
        for rule in Rule::ALL {
            let expected = if rule == Rule::HighEntropy {
                Action::AuditOnly
            } else {
                Action::Redact
            };
            assert_eq!(config.action(rule), expected, "{rule}");
        }
        let config = config.with_action(Rule::Jwt, Action::Block);
        assert_eq!(config.action(Rule::Jwt), Action::Block);
    }

    #[test]
    fn apply_redacts_with_the_marker() {
        let s = scanner(ScannerConfig::default());
        let input = format!(r#"{{"a":"{}","b":"{}"}}"#, github(), aws_id());
        let out = s.apply(input.as_bytes());
        assert!(!out.blocked);
        assert_eq!(
            out.bytes.as_ref(),
            br#"{"a":"[REDACTED]","b":"[REDACTED]"}"#
        );
        assert_eq!(
            rules(&out.findings),
            [Rule::GitHubToken, Rule::AwsAccessKeyId]
        );
        assert_eq!(&input[out.findings[0].range()], github());
    }

    #[test]
    fn apply_blocks_for_block_rules_and_still_redacts() {
        let s = scanner(ScannerConfig::default().with_action(Rule::GitHubToken, Action::Block));
        let input = format!("token={}", github());
        let out = s.apply(input.as_bytes());
        assert!(out.blocked);
        assert_eq!(out.bytes.as_ref(), b"token=[REDACTED]");
        assert_eq!(out.findings[0].action, Action::Block);
        // Another rule's finding alone does not block.
        let other = format!("id {}", aws_id());
        let out = s.apply(other.as_bytes());
        assert!(!out.blocked);
    }

    #[test]
    fn audit_only_reports_without_touching_bytes() {
        let s = scanner(ScannerConfig::default().with_action(Rule::GitHubToken, Action::AuditOnly));
        let input = format!("token={}", github());
        let out = s.apply(input.as_bytes());
        assert!(matches!(out.bytes, Cow::Borrowed(_)));
        assert_eq!(rules(&out.findings), [Rule::GitHubToken]);
        assert!(!out.blocked);
    }

    #[test]
    fn clean_input_is_borrowed() {
        let s = scanner(ScannerConfig::default());
        let out = s.apply(b"nothing to see here, id 0f8fad5b-d9cb-469f-a165-70867728950e");
        assert!(matches!(out.bytes, Cow::Borrowed(_)));
        assert!(out.findings.is_empty());
    }

    #[test]
    fn live_credential_via_redactor_in_several_encodings() {
        let secret = "pa ss/w0rd+live!";
        let live = Redactor::new([secret.as_bytes()]).unwrap();
        let s = Scanner::new(ScannerConfig::default(), live.clone()).unwrap();
        let input = format!(
            "raw {secret} url pa+ss%2Fw0rd%2Blive%21 json {} hex {}",
            serde_json::to_string(secret).unwrap(),
            hex::encode(secret),
        );
        let out = s.apply(input.as_bytes());
        assert_eq!(
            rules(&out.findings),
            [Rule::LiveCredential; 4],
            "{:?}",
            out.findings
        );
        assert_eq!(
            out.bytes.as_ref(),
            b"raw [REDACTED] url [REDACTED] json \"[REDACTED]\" hex [REDACTED]"
        );
        assert!(!live.contains_secret(&out.bytes));
        // The spans are the exact matches.
        assert_eq!(&input[out.findings[0].range()], secret);
        assert_eq!(&input[out.findings[3].range()], hex::encode(secret));
    }

    #[test]
    fn live_credential_that_is_also_a_known_format_gives_one_marker() {
        let token = github();
        let live = Redactor::new([token.as_bytes()]).unwrap();
        let s = Scanner::new(ScannerConfig::default(), live).unwrap();
        let input = format!("x {token} y");
        let out = s.apply(input.as_bytes());
        assert_eq!(out.bytes.as_ref(), b"x [REDACTED] y");
        assert_eq!(
            rules(&out.findings),
            [Rule::GitHubToken, Rule::LiveCredential]
        );
    }

    #[test]
    fn overlapping_findings_merge_and_adjacent_ones_do_not() {
        assert_eq!(
            merge([0..5, 3..8, 8..10, 12..12].into_iter()),
            [0..8, 8..10]
        );
        assert_eq!(
            replace(b"abcdefghij", &[0..8, 8..10]).as_ref(),
            b"[REDACTED][REDACTED]"
        );
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let token = github();
        let live = Redactor::new([token.as_bytes()]).unwrap();
        let s = Scanner::new(
            ScannerConfig::default().with_action(Rule::HighEntropy, Action::AuditOnly),
            live,
        )
        .unwrap();
        let entropy = "Zq8xR2mT9vW4yB7nK3pL6sD1fG5hJ0cA";
        let input = format!("{token} {entropy}");
        let out = s.apply(input.as_bytes());
        assert_eq!(
            rules(&out.findings),
            [Rule::GitHubToken, Rule::LiveCredential, Rule::HighEntropy]
        );
        let shown = format!(
            "{out:?} {:?} {} {s:?} {:#?}",
            out.findings[0], out.findings[0], out.findings
        );
        for needle in [&token[4..], &token[..12], &entropy[..12]] {
            assert!(!shown.contains(needle), "{shown}");
        }
        assert!(
            shown.contains("github-token at bytes 0..40 (redact)"),
            "{shown}"
        );
    }

    #[test]
    fn scanner_is_send_sync_and_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Scanner>();
        assert_send_sync::<Finding>();
    }
}
