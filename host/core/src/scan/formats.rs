//! Known credential formats: one regex per provider format, plus the checks a
//! regex cannot express (the `regex` crate has no look-around, and a JWT is
//! only a JWT if its header decodes to JSON).
//!
//! Every pattern is compiled without Unicode and runs over raw bytes: the
//! formats are ASCII, and the input need not be UTF-8.

use std::ops::Range;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use regex::bytes::{Regex, RegexBuilder};

use super::{Rule, ScanError};

/// AWS documents access key ids as 20 characters, `AKIA` for long-term and
/// `ASIA` for temporary credentials.
const AWS_ACCESS_KEY_ID: &str = r"(?:AKIA|ASIA)[A-Z0-9]{16}";

/// GitHub's token formats (2021): a type prefix and 36 base62 characters, or
/// a fine-grained `github_pat_` token of 82 more characters.
const GITHUB_TOKEN: &str = r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82}";

/// Slack tokens: type prefix, then dash-separated groups, the first numeric
/// (`xoxb-<team>-<bot>-<secret>`, `xoxp-<team>-<user>-<id>-<secret>`, ...).
const SLACK_TOKEN: &str = r"xox[abeprs]-[0-9]{1,16}(?:-[0-9A-Za-z]{1,64}){1,8}";

/// Shorter matches of [`SLACK_TOKEN`] are version strings and the like; real
/// tokens are 50 characters and more.
const SLACK_TOKEN_MIN_LEN: usize = 30;

/// Stripe secret, restricted and live publishable keys.
const STRIPE_KEY: &str = r"(?:(?:sk|rk)_(?:live|test)|pk_live)_[A-Za-z0-9]{24,}";

/// Google API keys: `AIza` and 35 base64url characters.
const GOOGLE_API_KEY: &str = r"AIza[0-9A-Za-z_\-]{35}";

/// The label an AWS secret access key is found behind (the key has no
/// prefix of its own), any case and separator style: the CLI's
/// `aws_secret_access_key`, the variable `AWS_SECRET_ACCESS_KEY`, the STS and
/// IAM APIs' `SecretAccessKey`; then `=`, `:`, `=>` or `:=`, optionally
/// quoted (quotes possibly JSON-escaped) or URL-encoded; then the key: 40
/// base64 characters, `/` possibly written `\/` or `%2F` and `+` as `%2B`.
const AWS_SECRET_ACCESS_KEY: &str = concat!(
    r"(?i:aws[_.\-]?secret(?:[_.\-]?access)?[_.\-]?key|secret[_.\-]?access[_.\-]?key)",
    r#"(?:\\?["'])?\s*(?:=>|:=|[:=]|%3[Dd]|%3[Aa])\s*(?:\\?["'])?"#,
    r"((?:[A-Za-z0-9+/]|\\/|%2[BbFf]){40})",
);

/// Compact JWS (three parts) or JWE (five parts). A JSON header starts with
/// `{"` or `{ ` or `{` and a line break, which base64url-encode to `eyJ`,
/// `eyA`, `ewo` and `ew0`.
const JWT: &str = r"e[wy][A-Za-z0-9_\-]{10,}(?:\.[A-Za-z0-9_\-]*){2}(?:(?:\.[A-Za-z0-9_\-]*){2})?";

/// Where a JWT may start: a header-shaped run followed by its dot.
const JWT_START: &str = r"e[wy][A-Za-z0-9_\-]{10,}\.";

/// A JOSE header longer than this is not one (real ones are under 1 KiB);
/// the bound keeps a hostile input from making us decode megabytes.
const JWT_MAX_HEADER_LEN: usize = 8 * 1024;

/// base64url as JWTs use it, lenient about padding and trailing bits: we only
/// look at the header, we do not verify anything.
const JWT_HEADER_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A space in a PEM label, raw, percent-encoded or form-encoded.
const PEM_SPACE: &str = r"(?: |%20|\+)";

/// `(?:https?://)?hooks.slack.com/services/T…/B…/secret` (or `workflows/`,
/// `triggers/`), slashes raw, JSON-escaped or percent-encoded.
fn slack_webhook_pattern() -> String {
    let slash = r"(?:/|\\/|%2[Ff])";
    format!(
        r"(?:https?(?::|%3[Aa]){slash}{slash})?hooks\.slack\.com{slash}(?:services|workflows|triggers){slash}T[A-Z0-9]{{6,12}}(?:{slash}[A-Za-z0-9]{{6,64}}){{2,3}}"
    )
}

/// `(begin … end, begin … as far as the base64 goes)`.
///
/// The label is any upper-case words before `PRIVATE KEY` (RSA, EC, DSA,
/// OPENSSH, ENCRYPTED, PGP … BLOCK, none). The complete form takes anything
/// PEM-like up to the first end line, lazily; it allows raw, JSON-escaped
/// (`\n`) and percent-encoded line breaks and the `Proc-Type:`/`DEK-Info:`
/// headers of encrypted keys. The open form, for a block cut off before its
/// end line (a truncated log line), stops at the first character that cannot
/// be in a PEM body, so it does not eat the prose after it.
fn pem_patterns() -> (String, String) {
    let sp = PEM_SPACE;
    let label = format!(r"(?:[A-Z0-9]+{sp})*PRIVATE{sp}KEY(?:{sp}BLOCK)?");
    let begin = format!("-----BEGIN{sp}{label}-----");
    let end = format!("-----END{sp}{label}-----");
    let body = r#"(?:[A-Za-z0-9+/=:,.\-\s]|%[0-9A-Fa-f]{2}|\\[nrt/])"#;
    let open_body = concat!(
        r"(?:[A-Za-z0-9+/=]|%2[BbFf]|%3[Dd]|\r|\n|\\[nr/]|%0[AaDd]",
        r"|[:,\-](?: |%20)?|%3[Aa](?:%20)?|%2[Cc])",
    );
    (
        format!("{begin}{body}*?{end}"),
        format!("{begin}{open_body}*"),
    )
}

/// A prefixed token format: regex, what may not follow it, minimum length.
#[derive(Clone)]
struct TokenFormat {
    rule: Rule,
    regex: Regex,
    continues: fn(u8) -> bool,
    min_len: usize,
}

/// The compiled known-format patterns.
#[derive(Clone)]
pub(super) struct Formats {
    tokens: Vec<TokenFormat>,
    aws_secret: Regex,
    pem_block: Regex,
    pem_open: Regex,
    jwt: Regex,
    /// The start of a JWT: a header-shaped run and its dot.
    jwt_start: Regex,
}

fn compile(rule: Rule, pattern: &str) -> Result<Regex, ScanError> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .build()
        .map_err(|_| ScanError::Pattern { rule })
}

impl Formats {
    pub(super) fn new() -> Result<Formats, ScanError> {
        let token = |rule, pattern: &str, continues: fn(u8) -> bool, min_len| {
            Ok::<_, ScanError>(TokenFormat {
                rule,
                regex: compile(rule, pattern)?,
                continues,
                min_len,
            })
        };
        let (pem_block, pem_open) = pem_patterns();
        Ok(Formats {
            tokens: vec![
                token(Rule::AwsAccessKeyId, AWS_ACCESS_KEY_ID, is_word, 0)?,
                token(Rule::GitHubToken, GITHUB_TOKEN, is_word, 0)?,
                token(
                    Rule::SlackToken,
                    SLACK_TOKEN,
                    is_word_or_dash,
                    SLACK_TOKEN_MIN_LEN,
                )?,
                token(Rule::SlackWebhook, &slack_webhook_pattern(), is_word, 0)?,
                token(Rule::StripeKey, STRIPE_KEY, is_word, 0)?,
                token(Rule::GoogleApiKey, GOOGLE_API_KEY, is_word_or_dash, 0)?,
            ],
            aws_secret: compile(Rule::AwsSecretAccessKey, AWS_SECRET_ACCESS_KEY)?,
            pem_block: compile(Rule::PemPrivateKey, &pem_block)?,
            pem_open: compile(Rule::PemPrivateKey, &pem_open)?,
            jwt: compile(Rule::Jwt, JWT)?,
            jwt_start: compile(Rule::Jwt, JWT_START)?,
        })
    }

    /// Appends every known-format match in `input` to `out`.
    pub(super) fn find(&self, input: &[u8], out: &mut Vec<(Rule, Range<usize>)>) {
        for format in &self.tokens {
            find_accepted(&format.regex, input, out, format.rule, |span| {
                span.len() >= format.min_len
                    && starts_token(input, span.start)
                    && ends_token(input, span.end, format.continues)
            });
        }
        self.find_aws_secrets(input, out);
        self.find_pem(input, out);
        self.find_jwts(input, out);
    }

    /// JWTs, in linear-ish time on hostile input. A refused look-alike is
    /// resumed one byte later (a real token may overlap it), so the full
    /// pattern — whose payload part is unbounded — only runs where the
    /// header before the first dot already decodes to a JOSE header, and
    /// starts whose header would be longer than [`JWT_MAX_HEADER_LEN`] are
    /// skipped outright. Without that, `eyeyey….` took quadratic time
    /// (found by reading the fuzz target; 100 KB took 8 s).
    fn find_jwts(&self, input: &[u8], out: &mut Vec<(Rule, Range<usize>)>) {
        let mut at = 0;
        while at < input.len() {
            let Some(start) = self.jwt_start.find_at(input, at).map(|m| m.start()) else {
                break;
            };
            // The header is the base64url run from `start` (the start
            // pattern only matches such a run followed by a dot).
            let dot = input[start..]
                .iter()
                .position(|&b| b == b'.')
                .map_or(input.len(), |i| start + i);
            if dot - start > JWT_MAX_HEADER_LEN {
                // Every start before `dot - MAX` has a header too long.
                at = (dot - JWT_MAX_HEADER_LEN).max(start + 1);
                continue;
            }
            let header_ok =
                starts_token(input, start) && input.get(start..dot).is_some_and(is_jwt_header);
            if header_ok
                && let Some(m) = self
                    .jwt
                    .find_at(input, start)
                    .filter(|m| m.start() == start)
                && input.get(m.range()).is_some_and(is_jwt)
            {
                out.push((Rule::Jwt, m.range()));
                at = m.end().max(start + 1);
            } else {
                at = start + 1;
            }
        }
    }

    fn find_aws_secrets(&self, input: &[u8], out: &mut Vec<(Rule, Range<usize>)>) {
        for caps in self.aws_secret.captures_iter(input) {
            // Group 1 always takes part in a match: it is not optional.
            let Some(key) = caps.get(1) else { continue };
            if !continues_base64(input, key.end()) {
                out.push((Rule::AwsSecretAccessKey, key.range()));
            }
        }
    }

    fn find_pem(&self, input: &[u8], out: &mut Vec<(Rule, Range<usize>)>) {
        let first = out.len();
        for m in self.pem_block.find_iter(input) {
            out.push((Rule::PemPrivateKey, m.range()));
        }
        // Only blocks without an end line are left to the open pattern; an
        // open match starts at a begin line, so it is new if it starts
        // outside every complete block.
        let complete: Vec<Range<usize>> = out[first..].iter().map(|(_, s)| s.clone()).collect();
        for m in self.pem_open.find_iter(input) {
            if !complete.iter().any(|block| block.contains(&m.start())) {
                out.push((Rule::PemPrivateKey, m.range()));
            }
        }
    }
}

/// Appends to `out` every match of `regex` in `input` that `accept` takes.
/// After a refused match the search resumes one byte after its start, not at
/// its end, so a real token overlapping a refused look-alike is still found.
fn find_accepted(
    regex: &Regex,
    input: &[u8],
    out: &mut Vec<(Rule, Range<usize>)>,
    rule: Rule,
    accept: impl Fn(Range<usize>) -> bool,
) {
    let mut at = 0;
    while at < input.len() {
        let Some(m) = regex.find_at(input, at) else {
            break;
        };
        if accept(m.range()) {
            out.push((rule, m.range()));
            at = m.end().max(m.start() + 1);
        } else {
            at = m.start() + 1;
        }
    }
}

/// `[A-Za-z0-9_]`: a byte that would make a token part of a longer word.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `[A-Za-z0-9_-]`, for formats whose alphabet includes `-`.
fn is_word_or_dash(b: u8) -> bool {
    is_word(b) || b == b'-'
}

/// Whether a token may begin at `start`: at the start of the input, after a
/// byte that is not a word byte, or right after an escape sequence whose last
/// character happens to be a word byte (`\n`, `\t`, `\r` in JSON, `%3D` in a
/// URL, `\u0022` in JSON), so `"line\nghp_…"` and `?q%3Dghp_…` still match.
fn starts_token(input: &[u8], start: usize) -> bool {
    let Some(before) = input.get(..start) else {
        return false;
    };
    match before {
        [] => true,
        [.., last] if !is_word(*last) => true,
        [.., b'\\', b'n' | b'r' | b't'] => true,
        [.., b'%', hi, lo] => hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit(),
        [.., b'\\', b'u', a, b, c, d] => [a, b, c, d].iter().all(|x| x.is_ascii_hexdigit()),
        _ => false,
    }
}

/// Whether a token may end at `end`: the next byte does not continue it.
fn ends_token(input: &[u8], end: usize, continues: fn(u8) -> bool) -> bool {
    input.get(end).is_none_or(|&b| !continues(b))
}

/// Whether base64 text goes on at `end` (raw, `\/`, or `%2B`/`%2F`/`%3D`),
/// which means a 40-character match is part of a longer blob.
fn continues_base64(input: &[u8], end: usize) -> bool {
    match input.get(end..).unwrap_or_default() {
        [b, ..] if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') => true,
        [b'\\', b'/', ..] => true,
        [b'%', hi, lo, ..] => matches!(
            (hi, lo.to_ascii_uppercase()),
            (b'2', b'B' | b'F') | (b'3', b'D')
        ),
        _ => false,
    }
}

/// Whether `candidate` (a match of [`JWT`]) is a JWT: its first part decodes
/// to a JSON object with a string `"alg"`, and some other part is non-empty.
/// Whether the bytes before a JWT's first dot decode to a JOSE header.
fn is_jwt_header(header: &[u8]) -> bool {
    if header.len() > JWT_MAX_HEADER_LEN {
        return false;
    }
    let Ok(json) = JWT_HEADER_ENGINE.decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json)
        .is_ok_and(|header| header.get("alg").is_some_and(serde_json::Value::is_string))
}

fn is_jwt(candidate: &[u8]) -> bool {
    let mut parts = candidate.split(|&b| b == b'.');
    let Some(header) = parts.next() else {
        return false;
    };
    if header.len() > JWT_MAX_HEADER_LEN || parts.all(<[u8]>::is_empty) {
        return false;
    }
    let Ok(json) = JWT_HEADER_ENGINE.decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json)
        .is_ok_and(|header| header.get("alg").is_some_and(serde_json::Value::is_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn found(input: &str) -> Vec<(Rule, String)> {
        let mut out = Vec::new();
        Formats::new().unwrap().find(input.as_bytes(), &mut out);
        out.sort_by_key(|(_, span)| (span.start, span.end));
        out.into_iter()
            .map(|(rule, span)| (rule, input[span].to_owned()))
            .collect()
    }

    fn only(input: &str, rule: Rule, secret: &str) {
        assert_eq!(found(input), [(rule, secret.to_owned())], "in {input:?}");
    }

    fn none(input: &str) {
        assert_eq!(found(input), [], "in {input:?}");
    }

    fn rep(unit: &str, n: usize) -> String {
        unit.repeat(n)
    }

    #[test]
    fn hostile_jwt_look_alikes_take_linear_time() {
        // `ey` repeated: every position starts a header-shaped run.
        let input = "ey".repeat(200_000) + "..";
        // 400 KB: the quadratic version needed minutes here, this one a
        // blink; the test only has to finish.
        let mut out = Vec::new();
        Formats::new().unwrap().find(input.as_bytes(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn every_pattern_compiles() {
        Formats::new().unwrap();
    }

    #[test]
    fn aws_access_key_id() {
        for prefix in ["AKIA", "ASIA"] {
            let key = format!("{prefix}{}", "IOSFODNN7EXAMPL2");
            only(&format!("id={key}&x=1"), Rule::AwsAccessKeyId, &key);
            only(&format!("\"{key}\""), Rule::AwsAccessKeyId, &key);
            // Wrong length, either way; embedded in a word; lower case.
            none(&format!("id={key}X"));
            none(&format!("id={}", &key[..19]));
            none(&format!("xx{key}"));
            none(&format!("id={}", key.to_lowercase()));
        }
        // Refusing the 21-character look-alike does not hide a real key right
        // after it.
        let key = format!("AKIA{}", rep("Q", 16));
        only(
            &format!("AKIA{} {key}", rep("Z", 17)),
            Rule::AwsAccessKeyId,
            &key,
        );
    }

    #[test]
    fn aws_secret_access_key_after_its_label() {
        let key = format!("wJalrXUtnFEMI/K7MDENG/bPxRfiCY{}", "EXAMPLEKE+");
        assert_eq!(key.len(), 40);
        for input in [
            format!("aws_secret_access_key = {key}\n"),
            format!("AWS_SECRET_ACCESS_KEY={key}"),
            format!(r#"{{"SecretAccessKey": "{key}"}}"#),
            format!(r#"{{\"aws_secret_access_key\":\"{key}\"}}"#),
        ] {
            only(&input, Rule::AwsSecretAccessKey, &key);
        }
        let json_escaped = key.replace('/', "\\/");
        only(
            &format!(r#"{{"secretAccessKey":"{json_escaped}"}}"#),
            Rule::AwsSecretAccessKey,
            &json_escaped,
        );
        let url = key.replace('/', "%2F").replace('+', "%2B");
        only(
            &format!("https://x.example/?aws_secret_access_key={url}&a=1"),
            Rule::AwsSecretAccessKey,
            &url,
        );
        // Without a label, or longer than 40: not this rule.
        none(&format!("value = {key}"));
        none(&format!("aws_secret_access_key={key}A"));
        none(&format!("aws_secret_access_key={key}%2F"));
    }

    #[test]
    fn github_tokens() {
        for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
            let token = format!("{prefix}{}", rep("a1B2c3", 6));
            only(&format!("token {token}\n"), Rule::GitHubToken, &token);
            only(&format!("\"line\\n{token}\""), Rule::GitHubToken, &token);
            only(&format!("?q%3D{token}"), Rule::GitHubToken, &token);
            none(&format!("token {token}x"));
            none(&format!("token {token}_"));
            none(&format!("token {}", &token[..39]));
            none(&format!("xx{token}"));
        }
        let pat = format!(
            "github_pat_{}_{}",
            rep("A1b2", 5) + "Cd",
            rep("e3F", 19) + "gh"
        );
        assert_eq!(pat.len(), 93);
        only(&format!("Bearer {pat}"), Rule::GitHubToken, &pat);
        none(&format!("Bearer {pat}Z"));
        none("gh_pat ghx_ ghp_ github_pat_");
    }

    #[test]
    fn slack_tokens_and_webhooks() {
        // Built from pieces: the fixtures are shaped like Slack tokens (that
        // is what is tested) without any literal reading as one.
        let slack = |kind: &str, ids: &[usize], secret: String| {
            let ids: Vec<String> = ids.iter().map(|n| "1".repeat(*n)).collect();
            format!("xox{kind}-{}-{secret}", ids.join("-"))
        };
        let bot = slack("b", &[10, 13], rep("AbCd", 6));
        only(&format!("SLACK={bot}\n"), Rule::SlackToken, &bot);
        let user = slack("p", &[11, 11, 12], rep("0f", 16));
        only(&format!("\"{user}\""), Rule::SlackToken, &user);
        let legacy = format!("xoxa-2-{}", rep("Ab1", 12));
        only(&format!(" {legacy} "), Rule::SlackToken, &legacy);
        none("xoxb- xoxb-123-abc xoxp-1-2");

        let secret = rep("Xy9", 8);
        let hook = format!("https://hooks.slack.com/services/T0ABC1234/B0DEF5678/{secret}");
        only(&format!("post {hook} now"), Rule::SlackWebhook, &hook);
        let escaped = hook.replace('/', "\\/");
        only(
            &format!(r#"{{"url":"{escaped}"}}"#),
            Rule::SlackWebhook,
            &escaped,
        );
        let encoded = hook.replace(':', "%3A").replace('/', "%2F");
        only(&format!("/cb?u={encoded}&x"), Rule::SlackWebhook, &encoded);
        none("https://hooks.slack.com/services/ and hooks.slack.com/apps");
    }

    #[test]
    fn stripe_keys() {
        for prefix in ["sk_live_", "rk_live_", "sk_test_", "pk_live_"] {
            let key = format!("{prefix}{}", rep("4eC39HqLyjWDarjtT1zdp7dc", 1));
            only(&format!("key={key}"), Rule::StripeKey, &key);
            let long = format!("{prefix}{}", rep("51Hx", 25));
            only(&format!("key={long};"), Rule::StripeKey, &long);
        }
        none("sk_live sk_live_ sk_live_short pk_test_4eC39HqLyjWDarjtT1zdp7dc");
        none(&format!("xsk_live_{}", rep("a", 24)));
    }

    #[test]
    fn google_api_keys() {
        let key = format!("AIza{}", "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY");
        assert_eq!(key.len(), 39);
        only(&format!("key={key}&"), Rule::GoogleApiKey, &key);
        none(&format!("key={key}-"));
        none(&format!("key={}", &key[..38]));
        none("AIza is a prefix");
    }

    fn pem(label: &str, lines: usize) -> String {
        let mut block = format!("-----BEGIN {label}PRIVATE KEY-----\n");
        for i in 0..lines {
            block.push_str(&format!(
                "MIIEv{i}QIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7+/=\n"
            ));
        }
        block.push_str(&format!("-----END {label}PRIVATE KEY-----"));
        block
    }

    #[test]
    fn pem_private_keys_whole_block() {
        for label in ["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED ", "DSA "] {
            let block = pem(label, 3);
            only(&format!("key:\n{block}\nend"), Rule::PemPrivateKey, &block);
            let json = serde_json::to_string(&block).unwrap();
            let body = &json[1..json.len() - 1];
            only(&format!(r#"{{"k":{json}}}"#), Rule::PemPrivateKey, body);
            let url =
                percent_encoding::utf8_percent_encode(&block, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
                    .replace("%2D", "-");
            only(&format!("/cb?token={url}&x=1"), Rule::PemPrivateKey, &url);
        }
        // Encrypted legacy form with headers.
        let legacy = pem("RSA ", 1).replacen(
            "KEY-----\n",
            "KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0A1B\n\n",
            1,
        );
        only(&legacy, Rule::PemPrivateKey, &legacy);
        // Two blocks are two findings.
        let two = format!("{}\n{}", pem("", 1), pem("EC ", 1));
        assert_eq!(found(&two).len(), 2);
    }

    #[test]
    fn pem_cut_off_before_its_end_line() {
        let block = pem("RSA ", 4);
        let cut = &block[..100];
        let input = format!("{{\"log\":\"{}\"}} and prose", cut.replace('\n', "\\n"));
        let expected = cut.replace('\n', "\\n");
        only(&input, Rule::PemPrivateKey, &expected);
    }

    #[test]
    fn public_keys_and_certificates_are_not_private_keys() {
        none(
            "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
        );
        none("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----");
    }

    fn jwt(header: &str, payload: &str, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    #[test]
    fn jwts_are_recognised_by_their_header() {
        let token = jwt(r#"{"alg":"HS256","typ":"JWT"}"#, r#"{"sub":"1"}"#, &[7; 32]);
        only(
            &format!("Authorization: Bearer {token}\r\n"),
            Rule::Jwt,
            &token,
        );
        only(&format!("/cb?token={token}&x"), Rule::Jwt, &token);
        let spaced = jwt("{ \"alg\": \"ES256\" }", "{}", &[1; 64]);
        only(&format!("{spaced}."), Rule::Jwt, &spaced);
        let unsigned = format!("{}.", &jwt(r#"{"alg":"none"}"#, r#"{"a":1}"#, &[])[..]);
        let unsigned = &unsigned[..unsigned.len() - 1];
        only(unsigned, Rule::Jwt, unsigned);
        // JWE: five parts.
        let jwe = format!(
            "{}.{}.{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"dir","enc":"A256GCM"}"#),
            "",
            "aXY",
            "Y2lwaGVydGV4dA",
            "dGFn"
        );
        only(&jwe, Rule::Jwt, &jwe);
    }

    #[test]
    fn jwt_look_alikes() {
        // Right shape, header without "alg" or not JSON.
        none(&jwt(r#"{"foo":"bar"}"#, r#"{"sub":"1"}"#, &[7; 32]));
        none(&jwt(r#"{"alg":5}"#, r#"{"sub":"1"}"#, &[7; 32]));
        none(&jwt("not json at all", "x", &[7; 32]));
        none("eyeglasses.example.com and eyJhbGciOiJIUzI1NiJ9..");
        // Embedded in a longer word.
        let token = jwt(r#"{"alg":"HS256"}"#, r#"{"sub":"1"}"#, &[7; 32]);
        none(&format!("x{token}"));
    }

    #[test]
    fn start_guard_escapes() {
        assert!(starts_token(b"", 0));
        assert!(starts_token(b"a b", 2));
        assert!(!starts_token(b"ab", 1));
        assert!(starts_token(b"\\nX", 2));
        assert!(starts_token(b"%3DX", 3));
        assert!(!starts_token(b"%3GX", 3));
        assert!(starts_token(b"\\u0022X", 6));
        assert!(!starts_token(b"ab", 5));
    }
}
