//! Detection and false-positive rates of the secret scanner over a seeded
//! corpus.
//!
//! Positives are generated from each provider's published token format (at
//! least 50 per format), each placed in three contexts: a JSON string, a URL
//! query parameter (percent-encoded as a URL would carry it) and a log line.
//! Negatives are look-alikes (UUIDs, hex digests, git SHAs, short base64
//! blobs, base64 of prose, known prefixes with the wrong length) and ordinary
//! prose and code, in the same contexts.
//!
//! Required: at least 99% detection per format and overall, at most 1%
//! false positives. A negative counts as a false positive only if a finding
//! would act on it (redact or block); audit-only findings (the high-entropy
//! heuristic, by default) are counted and printed separately.
//!
//! Everything is generated from a fixed seed, so every run sees the same
//! corpus; run with `--nocapture` to see the figures.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use edgeward_core::redact::{REDACTION_MARKER, Redactor};
use edgeward_core::scan::{Action, Finding, Rule, Scanner, ScannerConfig};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

const SEED: u64 = 0x5ca1_ab1e_2026_0001;
const PER_FORMAT: usize = 60;
const PER_NEGATIVE_KIND: usize = 50;

/// splitmix64: tiny, deterministic, good enough to draw test strings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        lo + self.below(hi_inclusive - lo + 1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn string(&mut self, alphabet: &str, n: usize) -> String {
        let alphabet = alphabet.as_bytes();
        (0..n)
            .map(|_| char::from(alphabet[self.below(alphabet.len())]))
            .collect()
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const UPPER_DIGIT: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const DIGITS: &str = "0123456789";
const HEX: &str = "0123456789abcdef";

/// RFC 3986: everything but unreserved characters is percent-encoded, as
/// URL builders encode a query value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

// ---------------------------------------------------------------------------
// Positives: one generator per published format.

/// AWS: `AKIA` (long-term) or `ASIA` (temporary) + 16 upper-case alnum.
fn aws_access_key_id(rng: &mut Rng) -> String {
    format!(
        "{}{}",
        rng.pick(&["AKIA", "ASIA"]),
        rng.string(UPPER_DIGIT, 16)
    )
}

/// AWS secret access key: 40 base64 characters (found behind its label).
fn aws_secret_access_key(rng: &mut Rng) -> String {
    rng.string(BASE64, 40)
}

/// GitHub classic: type prefix + 36 base62.
fn github_token(rng: &mut Rng) -> String {
    let prefix = rng.pick(&["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]);
    format!("{prefix}{}", rng.string(ALNUM, 36))
}

/// GitHub fine-grained: `github_pat_` + 22 base62 + `_` + 59 base62.
fn github_fine_grained(rng: &mut Rng) -> String {
    format!(
        "github_pat_{}_{}",
        rng.string(ALNUM, 22),
        rng.string(ALNUM, 59)
    )
}

/// Slack: bot `xoxb-<team>-<bot>-<24 alnum>`, user
/// `xoxp-<team>-<user>-<id>-<32 hex>`, and the other prefixes in the same
/// digit/alnum dash-group shape.
fn slack_token(rng: &mut Rng) -> String {
    let team = rng.range(10, 13);
    let team = rng.string(DIGITS, team);
    let second = rng.range(10, 13);
    let second = rng.string(DIGITS, second);
    match rng.below(3) {
        0 => format!("xoxb-{team}-{second}-{}", rng.string(ALNUM, 24)),
        1 => format!(
            "xoxp-{team}-{second}-{}-{}",
            rng.string(DIGITS, 12),
            rng.string(HEX, 32)
        ),
        _ => format!(
            "{}-{team}-{second}-{}",
            rng.pick(&["xoxa", "xoxr", "xoxs"]),
            rng.string(ALNUM, 32)
        ),
    }
}

/// Slack incoming webhook: `https://hooks.slack.com/services/T…/B…/<24>`.
fn slack_webhook(rng: &mut Rng) -> String {
    let team = rng.range(8, 10);
    let team = rng.string(UPPER_DIGIT, team);
    let bot = rng.range(8, 10);
    let bot = rng.string(UPPER_DIGIT, bot);
    format!(
        "https://hooks.slack.com/services/T{team}/B{bot}/{}",
        rng.string(ALNUM, 24)
    )
}

/// Stripe: `sk_live_`, `rk_live_`, `sk_test_`, `pk_live_` + 24 or more
/// base62 (24 for legacy keys, 99 for current ones).
fn stripe_key(rng: &mut Rng) -> String {
    let prefix = rng.pick(&["sk_live_", "rk_live_", "sk_test_", "pk_live_"]);
    let len = rng.pick(&[24, 34, 99]);
    format!("{prefix}{}", rng.string(ALNUM, len))
}

/// Google API key: `AIza` + 35 base64url characters.
fn google_api_key(rng: &mut Rng) -> String {
    format!("AIza{}", rng.string(BASE64URL, 35))
}

/// PEM private key: random DER-sized body, base64 in 64-character lines.
fn pem_private_key(rng: &mut Rng) -> String {
    let label = rng.pick(&["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "]);
    let len = rng.range(100, 1200);
    let body = STANDARD.encode(rng.bytes(len));
    let mut pem = format!("-----BEGIN {label}PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}PRIVATE KEY-----"));
    pem
}

/// JWT: JSON header with `alg`, JSON claims, random signature.
fn jwt(rng: &mut Rng) -> String {
    let alg = rng.pick(&["HS256", "HS384", "RS256", "ES256", "EdDSA", "PS256"]);
    let header = match rng.below(3) {
        0 => format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#),
        1 => format!(
            r#"{{"typ":"at+jwt","alg":"{alg}","kid":"{}"}}"#,
            rng.string(ALNUM, 12)
        ),
        _ => format!(r#"{{"alg":"{alg}"}}"#),
    };
    let claims = format!(
        r#"{{"sub":"{}","iat":{},"exp":{},"scope":"read write"}}"#,
        rng.string(ALNUM, 16),
        1_700_000_000 + rng.below(10_000_000),
        1_800_000_000 + rng.below(10_000_000)
    );
    let sig_len = rng.pick(&[32, 64, 256]);
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(rng.bytes(sig_len))
    )
}

/// A live credential: printable ASCII with punctuation, as an upstream
/// password or API key might be. Built into the scanner's Redactor.
fn live_credential(rng: &mut Rng) -> String {
    const PRINTABLE: &str =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&*+-./:;=?@^_~";
    let len = rng.range(12, 48);
    rng.string(PRINTABLE, len)
}

struct Format {
    name: &'static str,
    rule: Rule,
    generate: fn(&mut Rng) -> String,
    /// Query parameter and JSON key the value sits under; the AWS secret key
    /// is only recognised behind its label, so it gets its real name.
    key: &'static str,
}

const FORMATS: [Format; 12] = [
    Format {
        name: "aws-access-key-id",
        rule: Rule::AwsAccessKeyId,
        generate: aws_access_key_id,
        key: "key",
    },
    Format {
        name: "aws-secret-access-key",
        rule: Rule::AwsSecretAccessKey,
        generate: aws_secret_access_key,
        key: "aws_secret_access_key",
    },
    Format {
        name: "github-classic",
        rule: Rule::GitHubToken,
        generate: github_token,
        key: "key",
    },
    Format {
        name: "github-fine-grained",
        rule: Rule::GitHubToken,
        generate: github_fine_grained,
        key: "key",
    },
    Format {
        name: "slack-token",
        rule: Rule::SlackToken,
        generate: slack_token,
        key: "key",
    },
    Format {
        name: "slack-webhook",
        rule: Rule::SlackWebhook,
        generate: slack_webhook,
        key: "key",
    },
    Format {
        name: "stripe-key",
        rule: Rule::StripeKey,
        generate: stripe_key,
        key: "key",
    },
    Format {
        name: "google-api-key",
        rule: Rule::GoogleApiKey,
        generate: google_api_key,
        key: "key",
    },
    Format {
        name: "pem-private-key",
        rule: Rule::PemPrivateKey,
        generate: pem_private_key,
        key: "key",
    },
    Format {
        name: "jwt",
        rule: Rule::Jwt,
        generate: jwt,
        key: "token",
    },
    Format {
        name: "live-credential",
        rule: Rule::LiveCredential,
        generate: live_credential,
        key: "key",
    },
    Format {
        name: "live-token",
        rule: Rule::LiveCredential,
        generate: github_token,
        key: "token",
    },
];

// ---------------------------------------------------------------------------
// Contexts.

#[derive(Clone, Copy)]
enum Context {
    Json,
    Url,
    Log,
}

const CONTEXTS: [Context; 3] = [Context::Json, Context::Url, Context::Log];

/// A document with `value` placed under `key`, and where the value's
/// (encoded) bytes are in it.
fn place(context: Context, key: &str, value: &str) -> (String, std::ops::Range<usize>) {
    let (before, encoded, after) = match context {
        Context::Json => {
            let quoted = serde_json::to_string(value).unwrap();
            let inner = quoted[1..quoted.len() - 1].to_owned();
            (format!(r#"{{"{key}":""#), inner, r#"","n":1}"#.to_owned())
        }
        Context::Url => (
            format!("https://x.example/cb?state=ok&{key}="),
            utf8_percent_encode(value, QUERY_VALUE).to_string(),
            "&page=2".to_owned(),
        ),
        Context::Log => (
            format!("2026-01-01T12:00:00Z INFO worker[7] using {key}="),
            value.to_owned(),
            " for request 42".to_owned(),
        ),
    };
    let span = before.len()..before.len() + encoded.len();
    (format!("{before}{encoded}{after}"), span)
}

// ---------------------------------------------------------------------------
// Negatives.

const WORDS: [&str; 24] = [
    "request", "handler", "config", "server", "client", "builder", "token", "cache", "index",
    "buffer", "stream", "policy", "grant", "agent", "record", "value", "session", "parser",
    "context", "manager", "factory", "header", "payload", "metric",
];

const PROSE: [&str; 12] = [
    "The quick brown fox jumps over the lazy dog while the cat watches from the window.",
    "Please review the attached quarterly report before Thursday's meeting at 10 am.",
    "Our service restarts automatically when the health check fails three times in a row.",
    "The committee decided to postpone the vote until every member had read the proposal.",
    "If the cache is cold, the first request takes about two seconds to complete.",
    "She walked along the river, counting the boats that drifted slowly toward the sea.",
    "Remember to rotate the logs weekly and to keep at least four weeks of history.",
    "The function returns an error when the input is empty or longer than the limit.",
    "We measured the latency at the 99th percentile over a full day of production traffic.",
    "A small team maintains the library, and contributions are reviewed within a week.",
    "Rain is expected in the afternoon, so the picnic has moved to the community hall.",
    "The migration adds a new column and backfills it in batches of ten thousand rows.",
];

const CODE: [&str; 12] = [
    "let response = client.get(url).header(\"Accept\", \"application/json\").send().await?;",
    "for (i, item) in items.iter().enumerate() { total += item.price * item.quantity; }",
    "def parse_config(path: str) -> dict: return yaml.safe_load(open(path, encoding='utf-8'))",
    "const handler = async (event) => { return { statusCode: 200, body: JSON.stringify(event) }; };",
    "SELECT user_id, created_at FROM sessions WHERE expires_at > NOW() ORDER BY created_at DESC;",
    "if err != nil { return fmt.Errorf(\"open %s: %w\", name, err) }",
    "impl Default for Settings { fn default() -> Self { Settings { retries: 3, timeout_ms: 5000 } } }",
    "docker run --rm -p 8080:8080 -v $(pwd)/data:/data ghcr.io/example/service:1.4.2",
    "import { createServer } from 'node:http'; createServer(app).listen(process.env.PORT ?? 3000);",
    "kubectl rollout status deployment/api-gateway --namespace production --timeout=120s",
    "pub fn verify(&self, token: &str) -> Result<Claims, TokenError> { self.inner.verify(token) }",
    "npm install --save-dev typescript@5.4.5 eslint@8.57.0 @types/node@20.12.7",
];

fn uuid(rng: &mut Rng) -> String {
    let h = rng.string(HEX, 32);
    let u = format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..]
    );
    if rng.below(2) == 0 {
        u
    } else {
        u.to_uppercase()
    }
}

fn identifier(rng: &mut Rng) -> String {
    let n = rng.range(3, 6);
    let words: Vec<&str> = (0..n).map(|_| rng.pick(&WORDS)).collect();
    let digits = rng.range(0, 99);
    match rng.below(3) {
        0 => format!(
            "{}{digits}",
            words.iter().map(|w| capitalise(w)).collect::<String>()
        ),
        1 => format!("{}_{digits}", words.join("_")),
        _ => format!(
            "{}{}",
            words[0],
            words[1..].iter().map(|w| capitalise(w)).collect::<String>()
        ),
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

struct Negative {
    name: &'static str,
    generate: fn(&mut Rng) -> String,
}

const NEGATIVES: [Negative; 18] = [
    Negative {
        name: "uuid",
        generate: uuid,
    },
    Negative {
        name: "sha1-hex",
        generate: |rng| rng.string(HEX, 40),
    },
    Negative {
        name: "sha256-hex",
        generate: |rng| rng.string(HEX, 64),
    },
    Negative {
        name: "git-sha",
        generate: |rng| {
            let len = rng.pick(&[7, 10, 12, 40]);
            format!("commit {}", rng.string(HEX, len))
        },
    },
    Negative {
        name: "base64-random-16-bytes-or-fewer",
        generate: |rng| {
            let n = rng.range(1, 16);
            let bytes = rng.bytes(n);
            match rng.below(4) {
                0 => STANDARD.encode(bytes),
                1 => STANDARD_NO_PAD.encode(bytes),
                2 => URL_SAFE.encode(bytes),
                _ => URL_SAFE_NO_PAD.encode(bytes),
            }
        },
    },
    Negative {
        name: "base64-of-prose",
        generate: |rng| {
            let text = rng.pick(&PROSE);
            let end = rng.range(20, text.len());
            if rng.below(2) == 0 {
                STANDARD.encode(&text[..end])
            } else {
                URL_SAFE_NO_PAD.encode(&text[..end])
            }
        },
    },
    Negative {
        name: "akia-wrong-length",
        generate: |rng| {
            let len = rng.pick(&[12, 14, 15, 17, 18, 20]);
            format!(
                "{}{}",
                rng.pick(&["AKIA", "ASIA"]),
                rng.string(UPPER_DIGIT, len)
            )
        },
    },
    Negative {
        name: "ghp-wrong-length",
        generate: |rng| {
            let len = rng.pick(&[30, 34, 35, 37, 38, 40]);
            format!(
                "{}{}",
                rng.pick(&["ghp_", "gho_", "ghs_"]),
                rng.string(ALNUM, len)
            )
        },
    },
    Negative {
        name: "prefixes-alone",
        generate: |rng| {
            let short = rng.range(4, 20);
            let short = rng.string(ALNUM, short);
            match rng.below(8) {
                0 => "sk_live".to_owned(),
                1 => format!("sk_live_{short}"),
                2 => format!("xoxb-{}", rng.string(DIGITS, 6)),
                3 => format!("AIza{short}"),
                4 => "github_pat_".to_owned(),
                5 => format!("pk_test_{}", rng.string(ALNUM, 24)),
                6 => "hooks.slack.com/services/".to_owned(),
                _ => format!("ghp_{short}"),
            }
        },
    },
    Negative {
        name: "public-key-or-certificate",
        generate: |rng| {
            let label = rng.pick(&[
                "PUBLIC KEY",
                "CERTIFICATE",
                "RSA PUBLIC KEY",
                "CERTIFICATE REQUEST",
            ]);
            let len = rng.range(60, 400);
            format!(
                "-----BEGIN {label}-----\n{}\n-----END {label}-----",
                STANDARD.encode(rng.bytes(len))
            )
        },
    },
    Negative {
        name: "jwt-shaped-not-jwt",
        generate: |rng| match rng.below(3) {
            0 => format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(format!(r#"{{"kind":"{}"}}"#, rng.pick(&WORDS))),
                URL_SAFE_NO_PAD.encode(r#"{"n":1}"#),
                URL_SAFE_NO_PAD.encode(rng.bytes(32))
            ),
            1 => format!("com.example.{}.{}", rng.pick(&WORDS), rng.pick(&WORDS)),
            _ => format!("eyeglasses.{}.example.org", rng.pick(&WORDS)),
        },
    },
    Negative {
        name: "prose",
        generate: |rng| rng.pick(&PROSE).to_owned(),
    },
    Negative {
        name: "code",
        generate: |rng| rng.pick(&CODE).to_owned(),
    },
    Negative {
        name: "identifier",
        generate: identifier,
    },
    Negative {
        name: "hex-request-id",
        generate: |rng| {
            let n = rng.pick(&[8, 16, 32]);
            hex::encode(rng.bytes(n))
        },
    },
    Negative {
        name: "timestamps-addresses-paths",
        generate: |rng| match rng.below(4) {
            0 => format!(
                "2026-0{}-1{}T0{}:3{}:00.123Z",
                rng.range(1, 9),
                rng.below(10),
                rng.below(10),
                rng.below(10)
            ),
            1 => format!(
                "10.{}.{}.{}:{}",
                rng.below(256),
                rng.below(256),
                rng.below(256),
                rng.range(1024, 65535)
            ),
            2 => format!(
                "/var/lib/{}/{}/{}.json",
                rng.pick(&WORDS),
                rng.pick(&WORDS),
                rng.pick(&WORDS)
            ),
            _ => format!("{}.{}@example.com", rng.pick(&WORDS), rng.pick(&WORDS)),
        },
    },
    Negative {
        name: "query-string",
        generate: |rng| {
            format!(
                "page={}&sort={}&q=hello+world&limit=50",
                rng.below(100),
                rng.pick(&WORDS)
            )
        },
    },
    Negative {
        name: "package-versions",
        generate: |rng| {
            format!(
                "{}-{}-{}.{}.{}",
                rng.pick(&WORDS),
                rng.pick(&WORDS),
                rng.below(3),
                rng.below(40),
                rng.below(20)
            )
        },
    },
];

// ---------------------------------------------------------------------------

fn covers(f: &Finding, span: &std::ops::Range<usize>) -> bool {
    f.start <= span.start && f.end >= span.end
}

fn pct(n: usize, d: usize) -> f64 {
    100.0 * n as f64 / d.max(1) as f64
}

#[test]
fn corpus_detection_and_false_positive_rates() {
    let mut rng = Rng(SEED);

    // Generate every positive first: the live ones go into the Redactor.
    let mut samples: Vec<(&Format, String)> = Vec::new();
    for format in &FORMATS {
        for _ in 0..PER_FORMAT {
            samples.push((format, (format.generate)(&mut rng)));
        }
    }
    let live = Redactor::new(
        samples
            .iter()
            .filter(|(f, _)| f.rule == Rule::LiveCredential)
            .map(|(_, v)| v.as_bytes()),
    )
    .unwrap();
    let scanner = Scanner::new(ScannerConfig::default(), live.clone()).unwrap();

    // Positives.
    let mut per_format: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    for (format, value) in &samples {
        for context in CONTEXTS {
            let (doc, span) = place(context, format.key, value);
            let scanned = scanner.apply(doc.as_bytes());
            let hit = scanned.findings.iter().any(|f| {
                f.rule == format.rule && f.action != Action::AuditOnly && covers(f, &span)
            });
            let entry = per_format.entry(format.name).or_default();
            entry.1 += 1;
            if hit {
                entry.0 += 1;
                // What goes out has the marker, not the secret.
                let out = String::from_utf8_lossy(&scanned.bytes);
                assert!(out.contains(REDACTION_MARKER), "{}", format.name);
                assert!(
                    !out.contains(&doc[span.clone()]),
                    "{} survived",
                    format.name
                );
                assert!(!live.contains_secret(&scanned.bytes), "{}", format.name);
            } else if misses.len() < 10 {
                misses.push(format!(
                    "{}: {doc:?} -> {:?}",
                    format.name, scanned.findings
                ));
            }
        }
    }

    // Negatives.
    let mut negatives = 0;
    let mut false_positives: Vec<String> = Vec::new();
    let mut audit_only_docs = 0;
    let mut audit_only_by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for kind in &NEGATIVES {
        for _ in 0..PER_NEGATIVE_KIND {
            let value = (kind.generate)(&mut rng);
            for context in CONTEXTS {
                let (doc, _) = place(context, "key", &value);
                let findings = scanner.scan(doc.as_bytes());
                negatives += 1;
                if findings.iter().any(|f| f.action != Action::AuditOnly) {
                    false_positives.push(format!("{}: {doc:?} -> {findings:?}", kind.name));
                } else if !findings.is_empty() {
                    audit_only_docs += 1;
                    *audit_only_by_kind.entry(kind.name).or_default() += 1;
                }
            }
        }
    }

    let detected: usize = per_format.values().map(|(d, _)| d).sum();
    let positives: usize = per_format.values().map(|(_, t)| t).sum();
    println!("secret scanning corpus (seed {SEED:#x}):");
    for (name, (d, t)) in &per_format {
        println!("  {name:<24} {:>6.2}% ({d}/{t})", pct(*d, *t));
    }
    println!(
        "detection {:.2}% ({detected}/{positives}), false positives {:.2}% ({}/{negatives})",
        pct(detected, positives),
        pct(false_positives.len(), negatives),
        false_positives.len(),
    );
    println!(
        "audit-only findings (high entropy, not counted): {:.2}% of negatives ({audit_only_docs}/{negatives}) {audit_only_by_kind:?}",
        pct(audit_only_docs, negatives),
    );
    for line in misses.iter().chain(false_positives.iter().take(10)) {
        println!("  {line}");
    }

    for (name, (d, t)) in &per_format {
        assert!(*t >= 150, "{name}: only {t} samples");
        assert!(pct(*d, *t) >= 99.0, "{name}: detection {:.2}%", pct(*d, *t));
    }
    assert!(pct(detected, positives) >= 99.0);
    assert!(pct(false_positives.len(), negatives) <= 1.0);
}

/// The high-entropy heuristic, were it set to redact: random secrets of an
/// unknown format are mostly caught, and ids and hashes are still left
/// alone.
#[test]
fn high_entropy_heuristic_rates_when_acting() {
    let mut rng = Rng(SEED ^ 0xe27);
    let scanner = Scanner::new(
        ScannerConfig::default().with_action(Rule::HighEntropy, Action::Redact),
        Redactor::empty(),
    )
    .unwrap();
    let mut caught = 0;
    let total = 300;
    for i in 0..total {
        // Unknown-format random keys: 32-64 base62 or base64.
        let len = rng.range(32, 64);
        let key = rng.string(if i % 2 == 0 { ALNUM } else { BASE64 }, len);
        let (doc, span) = place(CONTEXTS[i % 3], "key", &key);
        if scanner
            .scan(doc.as_bytes())
            .iter()
            .any(|f| f.rule == Rule::HighEntropy && covers(f, &span))
        {
            caught += 1;
        }
    }
    let mut flagged_ids = 0;
    let ids = 300;
    for i in 0..ids {
        let id = match i % 3 {
            0 => uuid(&mut rng),
            1 => rng.string(HEX, 40),
            _ => rng.string(HEX, 64),
        };
        let (doc, _) = place(CONTEXTS[i % 3], "key", &id);
        if !scanner.scan(doc.as_bytes()).is_empty() {
            flagged_ids += 1;
        }
    }
    println!(
        "high entropy, acting: caught {:.2}% ({caught}/{total}) of unknown-format random keys, flagged {flagged_ids}/{ids} UUIDs and hex digests",
        pct(caught, total)
    );
    assert!(pct(caught, total) >= 95.0);
    assert_eq!(flagged_ids, 0);
}
