//! The high-entropy heuristic, for secrets of formats we do not know.
//!
//! A candidate is a run of at least [`MIN_LEN`] base64-alphabet characters
//! (`[A-Za-z0-9+/_-]`, then up to two `=`). It is reported when all hold:
//!
//! - it is not hex-only (`[0-9A-Fa-f-]`): UUIDs, sha1/sha256 digests and
//!   git SHAs are hex, and a hex secret cannot be told from them, so hex is
//!   skipped entirely rather than given a higher threshold;
//! - it has upper-case letters, lower-case letters and digits, as random
//!   base62/base64 tokens of this length almost always do and identifiers
//!   (`snake_case`, `CamelCase`, paths) mostly do not;
//! - it is not base64 of prose (text with spaces, as APIs return file
//!   contents or messages);
//! - its Shannon entropy, in bits per character, reaches [`threshold`] for
//!   its length.
//!
//! The heuristic cannot tell a random id or a base64 hash from a secret, so
//! its default action is audit-only.

use std::ops::Range;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use regex::bytes::{Regex, RegexBuilder};

use super::{Rule, ScanError};

/// Shortest run considered: shorter random strings cannot reach a useful
/// entropy (at most log2(n) bits per character for n characters).
pub(super) const MIN_LEN: usize = 20;

/// Candidate runs: base64 characters, `+` and `/` also percent-encoded (a
/// base64 key in a URL query is cut into short pieces otherwise), then
/// padding. A leftmost-first search from a non-alphabet byte always starts
/// at the beginning of a run, so each match is a whole run.
const CANDIDATE: &str = r"(?:[A-Za-z0-9+/_\-]|%2[BbFf]){20,}(?:=|%3[Dd]){0,2}";

/// `(length, bits per character)`: about the 1st percentile of the Shannon
/// entropy of uniformly random base62 strings of that length (measured over
/// 5,000 strings per length), so 99% of random tokens reach it. Entropy of a
/// finite random string grows with its length (repeats are likelier in a
/// short one), so one fixed threshold would either miss short tokens or flag
/// long identifiers.
const THRESHOLDS: [(usize, f64); 9] = [
    (20, 3.60),
    (24, 3.85),
    (32, 4.15),
    (40, 4.40),
    (48, 4.60),
    (64, 4.85),
    (96, 5.15),
    (128, 5.35),
    (256, 5.65),
];

/// The entropy a run of `len` characters must reach: [`THRESHOLDS`],
/// linearly interpolated, constant beyond its ends.
pub(super) fn threshold(len: usize) -> f64 {
    let mut previous = THRESHOLDS[0];
    if len <= previous.0 {
        return previous.1;
    }
    for point in THRESHOLDS {
        if len <= point.0 {
            // `previous.0 < len <= point.0`, so the span is not empty.
            let t = (len - previous.0) as f64 / (point.0 - previous.0) as f64;
            return previous.1 + t * (point.1 - previous.1);
        }
        previous = point;
    }
    previous.1
}

/// Shannon entropy of `bytes`, in bits per byte.
pub(super) fn shannon(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// The compiled candidate pattern.
#[derive(Clone)]
pub(super) struct HighEntropy {
    candidates: Regex,
}

impl HighEntropy {
    pub(super) fn new() -> Result<HighEntropy, ScanError> {
        let candidates = RegexBuilder::new(CANDIDATE)
            .unicode(false)
            .build()
            .map_err(|_| ScanError::Pattern {
                rule: Rule::HighEntropy,
            })?;
        Ok(HighEntropy { candidates })
    }

    /// High-entropy runs in `input` that overlap none of `known` (another
    /// rule already explains them).
    pub(super) fn find(&self, input: &[u8], known: &[(Rule, Range<usize>)]) -> Vec<Range<usize>> {
        // Candidates come in order; so do the known spans once sorted: one
        // sweep instead of comparing every candidate with every span (which
        // was quadratic on inputs full of known tokens).
        let mut spans: Vec<&Range<usize>> = known.iter().map(|(_, s)| s).collect();
        spans.sort_by_key(|s| s.start);
        // The furthest end among spans starting before each index.
        let mut reach = Vec::with_capacity(spans.len());
        let mut furthest = 0;
        for s in &spans {
            furthest = furthest.max(s.end);
            reach.push(furthest);
        }
        self.candidates
            .find_iter(input)
            .map(|m| m.range())
            .filter(|run| {
                // Spans starting before the run's end: the last of them
                // tells, through `reach`, whether any reaches into the run.
                let before = spans.partition_point(|s| s.start < run.end);
                before == 0 || reach[before - 1] <= run.start
            })
            .filter(|run| input.get(run.clone()).is_some_and(is_high_entropy))
            .collect()
    }
}

/// Whether one candidate run looks like a random secret. See the
/// [module documentation](self).
pub(super) fn is_high_entropy(run: &[u8]) -> bool {
    let decoded = percent_decode_base64(run);
    let run = decoded.as_slice();
    let token = run
        .strip_suffix(b"==")
        .or_else(|| run.strip_suffix(b"="))
        .unwrap_or(run);
    if token.len() < MIN_LEN {
        return false;
    }
    if token.iter().all(|b| b.is_ascii_hexdigit() || *b == b'-') {
        return false;
    }
    let has = |class: fn(&u8) -> bool| token.iter().any(class);
    if !(has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase) && has(u8::is_ascii_digit)) {
        return false;
    }
    if is_encoded_prose(token) {
        return false;
    }
    shannon(token) >= threshold(token.len())
}

/// `run` with `%2B`, `%2F` and `%3D` (either case) decoded; the candidate
/// pattern allows no other escape.
fn percent_decode_base64(run: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(run.len());
    let mut rest = run;
    while let Some((&b, tail)) = rest.split_first() {
        let escaped = match tail {
            [hi, lo, ..] if b == b'%' => match (hi, lo.to_ascii_uppercase()) {
                (b'2', b'B') => Some(b'+'),
                (b'2', b'F') => Some(b'/'),
                (b'3', b'D') => Some(b'='),
                _ => None,
            },
            _ => None,
        };
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                rest = tail.get(2..).unwrap_or_default();
            }
            None => {
                out.push(b);
                rest = tail;
            }
        }
    }
    out
}

/// Either base64 alphabet, any padding, trailing bits allowed: we only ask
/// whether the run decodes to text.
const LENIENT: [GeneralPurpose; 2] = [
    GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    ),
    GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    ),
];

/// Whether `token` is base64 of prose: printable UTF-8 with at least one
/// space, mostly letters and spaces. A credential (`user:password`, a key)
/// has no spaces; a message or a file's contents does.
fn is_encoded_prose(token: &[u8]) -> bool {
    LENIENT.iter().any(|engine| {
        let Ok(decoded) = engine.decode(token) else {
            return false;
        };
        let Ok(text) = std::str::from_utf8(&decoded) else {
            return false;
        };
        let total = text.chars().count();
        let spaces = text.chars().filter(|c| *c == ' ').count();
        let wordy = text
            .chars()
            .filter(|c| c.is_alphabetic() || c.is_whitespace())
            .count();
        spaces > 0
            && !text.chars().any(|c| c.is_control() && !c.is_whitespace())
            && wordy * 5 >= total * 4
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    fn flagged(input: &str) -> Vec<&str> {
        HighEntropy::new()
            .unwrap()
            .find(input.as_bytes(), &[])
            .into_iter()
            .map(|span| &input[span])
            .collect()
    }

    #[test]
    fn thresholds_interpolate() {
        assert_eq!(threshold(0), 3.60);
        assert_eq!(threshold(20), 3.60);
        assert!((threshold(22) - 3.725).abs() < 1e-9);
        assert_eq!(threshold(64), 4.85);
        assert_eq!(threshold(10_000), 5.65);
        for pair in THRESHOLDS.windows(2) {
            assert!(pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1);
        }
    }

    #[test]
    fn shannon_of_known_strings() {
        assert_eq!(shannon(b""), 0.0);
        assert_eq!(shannon(b"aaaa"), 0.0);
        assert!((shannon(b"abcd") - 2.0).abs() < 1e-12);
        assert!((shannon(b"0123456789abcdef") - 4.0).abs() < 1e-12);
    }

    #[test]
    fn random_tokens_are_flagged() {
        let aws_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYz9EXAMPLEK";
        assert_eq!(flagged(&format!("secret: {aws_secret}\n")), [aws_secret]);
        let alnum = "Zq8xR2mT9vW4yB7nK3pL6sD1fG5hJ0cA";
        assert_eq!(flagged(&format!("\"{alnum}\"")), [alnum]);
        let padded = STANDARD.encode([
            0x9au8, 0x33, 0xf1, 0x07, 0xc4, 0x5e, 0x88, 0x21, 0xb9, 0x6d, 0x02, 0xee, 0x47, 0x1a,
            0xd3, 0x70, 0x5b, 0xa6,
        ]);
        assert_eq!(flagged(&padded), [padded.as_str()]);
    }

    #[test]
    fn percent_encoded_base64_is_one_run() {
        let key = "wJalrXUtnFEMI%2FK7MDENG%2FbPxRfiCYz9EXAMPLEK%2b1%3D";
        assert_eq!(flagged(&format!("?k={key}&x")), [key]);
        assert_eq!(
            percent_decode_base64(b"a%2Fb%2bc%3dd%41%2"),
            b"a/b+c=d%41%2"
        );
    }

    #[test]
    fn ids_hashes_and_prose_are_not() {
        for input in [
            // UUIDs, upper and lower case.
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "7C9E6679-7425-40DE-944B-E07FC1F90AE7",
            // sha1, sha256, git SHA.
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
            // Identifiers and paths: no digits, or no upper case.
            "HttpServerConfigurationBuilder snake_case_identifier_name",
            "/usr/local/lib/python3/site-packages/requests/adapters",
            // Short runs.
            "Zq8xR2mT9vW4yB7nK3p",
        ] {
            assert_eq!(flagged(input), Vec::<&str>::new(), "{input}");
        }
        let prose = URL_SAFE_NO_PAD.encode("The quick brown fox jumps over the lazy dog 42 times.");
        assert_eq!(flagged(&prose), Vec::<&str>::new());
        assert_eq!(
            flagged(&STANDARD.encode("Hello, World! 123 and more")),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn runs_explained_by_another_rule_are_skipped() {
        let input = "x Zq8xR2mT9vW4yB7nK3pL6sD1fG5hJ0cA y";
        let h = HighEntropy::new().unwrap();
        assert_eq!(h.find(input.as_bytes(), &[]).len(), 1);
        assert!(h.find(input.as_bytes(), &[(Rule::Jwt, 5..6)]).is_empty());
        assert_eq!(h.find(input.as_bytes(), &[(Rule::Jwt, 0..2)]).len(), 1);
    }
}
