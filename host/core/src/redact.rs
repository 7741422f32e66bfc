//! Redaction of live secrets from response bytes, in their common encodings.
//!
//! The backend injects real upstream credentials into requests outside the
//! sandbox. An upstream API may echo the request back (headers and body,
//! sometimes re-encoded: an "echo" endpoint, an error message quoting the
//! `Authorization` header, a JSON body with the header base64'd inside), so the
//! credential could flow back to the untrusted guest. Before any response bytes
//! reach the guest, every known secret is replaced by [`REDACTION_MARKER`].
//!
//! 1. Build one [`Redactor`] per set of live secrets (it is immutable, `Send`
//!    and `Sync`; share it behind an `Arc` or clone it, cloning is cheap).
//! 2. Buffer the whole response body (decoded with [`crate::codec`] first) and
//!    call [`Redactor::redact`] on it, and on every header value.
//! 3. Send only [`Redacted::bytes`] to the guest; [`Redacted::hits`] is the
//!    number of replacements, for the audit log.
//!
//! ```
//! use edgeward_core::redact::{Redactor, REDACTION_MARKER};
//!
//! let redactor = Redactor::new([b"sk-live-0123456789".as_slice()])?;
//! // "Basic " + base64("user:sk-live-0123456789"), as an echo endpoint returns it.
//! let echoed = r#"{"authorization":"Basic dXNlcjpzay1saXZlLTAxMjM0NTY3ODk="}"#;
//! let (clean, hits) = redactor.redact_str(echoed);
//! assert_eq!(hits, 1);
//! assert!(clean.contains(REDACTION_MARKER));
//! assert!(!redactor.contains_secret(clean.as_bytes()));
//! # Ok::<(), edgeward_core::redact::RedactError>(())
//! ```
//!
//! # What is matched
//!
//! For every secret, all of these forms, in one leftmost-longest
//! Aho-Corasick pass (so a long encoded form wins over a shorter overlapping
//! one and is replaced whole):
//!
//! - the raw bytes;
//! - base64, standard and URL-safe alphabets, padded and unpadded, and the
//!   secret embedded in a larger base64 blob at each of the three byte
//!   alignments (only the characters that depend on nothing but secret bytes
//!   are matched, so the match does not depend on what surrounds the secret);
//!   the standard forms also with `/` escaped as `\/`, as a JSON encoder may
//!   write them;
//! - hex, lower and upper case;
//! - percent-encoding: RFC 3986 (unreserved kept), form-urlencoded (space as
//!   `+`, WHATWG and `quote_plus` flavours), `encodeURIComponent`, and
//!   "everything non-alphanumeric", each with upper- and lower-case hex;
//! - JSON string escapes (secrets that are valid UTF-8): minimal escaping as
//!   `serde_json` writes it, with `/` as `\/`, with non-ASCII as `\uXXXX`
//!   (`ensure_ascii`), and with every non-alphanumeric character as `\uXXXX`,
//!   upper- and lower-case hex.
//!
//! # Limits (non-goals)
//!
//! - Matching works on one buffer: a secret split across two chunks is only
//!   caught because callers pass whole buffered bodies, never stream chunks.
//! - Encodings not listed above are not caught: double base64, base64 with
//!   line breaks inside the secret (MIME), mixed-case hex, UTF-16, compression
//!   or encryption of the echoed data, a secret reversed or split by the
//!   upstream, and so on.
//! - Inside a base64 blob, the one or two characters at each edge of the
//!   secret that also carry bits of neighbouring bytes stay in the output:
//!   at most a few bits of the secret's first and last byte.
//! - Secrets shorter than [`MIN_SECRET_LEN`] bytes are refused: matching them
//!   would redact random text, and such a secret is guessable anyway.
//! - Redaction is defence in depth. It cannot stop an upstream that cooperates
//!   with an attacker (it can transform the secret in any way it likes); the
//!   primary defence is that the guest never holds the credential and only
//!   reaches upstreams its grants allow.

use std::borrow::Cow;
use std::fmt;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// The bytes that replace every match.
pub const REDACTION_MARKER: &str = "[REDACTED]";

/// The shortest secret (and the shortest encoded pattern) that is matched, in
/// bytes. Shorter patterns would redact ordinary text by accident.
pub const MIN_SECRET_LEN: usize = 8;

/// Why a [`Redactor`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedactError {
    /// A secret is shorter than `min` bytes. Which one is deliberately not
    /// said: even its length is more than an error message needs to carry.
    #[error("a secret is shorter than {min} bytes and cannot be redacted reliably")]
    SecretTooShort {
        /// The minimum length, [`MIN_SECRET_LEN`].
        min: usize,
    },
    /// The matching automaton exceeded aho-corasick's size limits (far more or
    /// far longer secrets than any configuration should hold).
    #[error("the redaction automaton could not be built: too many or too long secrets")]
    Build,
}

/// Replaces every known secret, in its common encodings, by
/// [`REDACTION_MARKER`]. See the [module documentation](self).
#[derive(Clone, Default)]
pub struct Redactor {
    /// `None` for an empty set of secrets: aho-corasick would accept zero
    /// patterns, but skipping the search entirely is simpler and faster.
    ///
    /// The automaton keeps its own copy of every pattern, which cannot be
    /// zeroized on drop; only our intermediate copies are.
    matcher: Option<AhoCorasick>,
    pattern_count: usize,
}

/// The result of [`Redactor::redact`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted<'a> {
    /// The input with every match replaced; borrowed when nothing matched.
    pub bytes: Cow<'a, [u8]>,
    /// How many matches were replaced.
    pub hits: usize,
}

impl Redacted<'_> {
    /// The redacted bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes.into_owned()
    }
}

impl fmt::Debug for Redactor {
    // Only the count: the patterns are the secrets themselves, and a Debug
    // print ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.pattern_count)
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// Builds a redactor for `secrets`. An empty set gives a redactor that
    /// changes nothing.
    ///
    /// # Errors
    ///
    /// [`RedactError::SecretTooShort`] if any secret is shorter than
    /// [`MIN_SECRET_LEN`]; [`RedactError::Build`] if the automaton is too big.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Result<Redactor, RedactError> {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for secret in secrets {
            if secret.len() < MIN_SECRET_LEN {
                return Err(RedactError::SecretTooShort {
                    min: MIN_SECRET_LEN,
                });
            }
            add_patterns(secret, &mut patterns);
        }
        patterns.sort_unstable_by(|a, b| a.as_slice().cmp(b.as_slice()));
        patterns.dedup_by(|a, b| a.as_slice() == b.as_slice());
        if patterns.is_empty() {
            return Ok(Redactor::empty());
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns.iter().map(|p| p.as_slice()))
            .map_err(|_| RedactError::Build)?;
        Ok(Redactor {
            matcher: Some(matcher),
            pattern_count: patterns.len(),
        })
    }

    /// A redactor with no secrets: [`redact`](Self::redact) returns its input.
    pub fn empty() -> Redactor {
        Redactor {
            matcher: None,
            pattern_count: 0,
        }
    }

    /// Whether this redactor has no patterns.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// The number of distinct patterns (all secrets, all encodings).
    pub fn pattern_count(&self) -> usize {
        self.pattern_count
    }

    /// Replaces every match in `input` by [`REDACTION_MARKER`].
    ///
    /// Matches do not overlap; a match that overlaps an earlier, longer one is
    /// broken by it, so no complete pattern survives in the output.
    pub fn redact<'a>(&self, input: &'a [u8]) -> Redacted<'a> {
        let Some(matcher) = &self.matcher else {
            return Redacted {
                bytes: Cow::Borrowed(input),
                hits: 0,
            };
        };
        let mut out: Option<Vec<u8>> = None;
        let mut hits = 0;
        let mut copied_up_to = 0;
        for m in matcher.find_iter(input) {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(input.len()));
            // Matches come in increasing, non-overlapping order, so
            // `copied_up_to <= m.start() <= m.end() <= input.len()`.
            buf.extend_from_slice(&input[copied_up_to..m.start()]);
            buf.extend_from_slice(REDACTION_MARKER.as_bytes());
            copied_up_to = m.end();
            hits += 1;
        }
        match out {
            None => Redacted {
                bytes: Cow::Borrowed(input),
                hits: 0,
            },
            Some(mut buf) => {
                buf.extend_from_slice(&input[copied_up_to..]);
                Redacted {
                    bytes: Cow::Owned(buf),
                    hits,
                }
            }
        }
    }

    /// [`redact`](Self::redact) for text: the redacted string and the number
    /// of hits.
    ///
    /// A secret that is not valid UTF-8 can match in the middle of a
    /// character; the broken bytes around the marker then become U+FFFD.
    pub fn redact_str(&self, input: &str) -> (String, usize) {
        let Redacted { bytes, hits } = self.redact(input.as_bytes());
        let text = match String::from_utf8(bytes.into_owned()) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        (text, hits)
    }

    /// Where the secrets are: the byte ranges [`Redactor::redact`] replaces,
    /// in order and disjoint (the same leftmost-longest search).
    pub fn find_ranges(&self, input: &[u8]) -> Vec<std::ops::Range<usize>> {
        match &self.matcher {
            None => Vec::new(),
            Some(m) => m.find_iter(input).map(|found| found.range()).collect(),
        }
    }

    /// Whether `input` holds any secret in any encoding.
    pub fn contains_secret(&self, input: &[u8]) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_match(input))
    }
}

/// Appends every encoded form of `secret` that is at least
/// [`MIN_SECRET_LEN`] long.
fn add_patterns(secret: &[u8], out: &mut Vec<Zeroizing<Vec<u8>>>) {
    let mut push = |p: Zeroizing<Vec<u8>>| {
        if p.len() >= MIN_SECRET_LEN {
            out.push(p);
        }
    };

    push(Zeroizing::new(secret.to_vec()));

    for form in base64_forms(secret) {
        push(form);
    }

    push(Zeroizing::new(hex::encode(secret).into_bytes()));
    push(Zeroizing::new(hex::encode_upper(secret).into_bytes()));

    for flavour in &PERCENT_FLAVOURS {
        for upper in [true, false] {
            push(percent_encode(secret, flavour, upper));
        }
    }

    if let Ok(text) = std::str::from_utf8(secret) {
        for form in json_forms(text) {
            push(form);
        }
    }
}

/// `(padded, unpadded, may contain '/')` for each alphabet.
const BASE64_ALPHABETS: [(&GeneralPurpose, &GeneralPurpose, bool); 2] = [
    (&STANDARD, &STANDARD_NO_PAD, true),
    (&URL_SAFE, &URL_SAFE_NO_PAD, false),
];

/// Full encodings of the secret alone, and the alignment-independent middle
/// of its encoding at each offset mod 3 inside a larger blob; standard-alphabet
/// forms also with `/` JSON-escaped.
fn base64_forms(secret: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let n = secret.len();
    let mut forms = Vec::new();
    for (padded, unpadded, has_slash) in BASE64_ALPHABETS {
        let mut plain: Vec<Zeroizing<Vec<u8>>> = vec![
            Zeroizing::new(padded.encode(secret).into_bytes()),
            Zeroizing::new(unpadded.encode(secret).into_bytes()),
        ];
        for k in 0..3usize {
            // `k` filler bytes before the secret put it at offset k mod 3; the
            // 3 after make sure the last secret-only character is emitted.
            let mut buf = Zeroizing::new(vec![0u8; k]);
            buf.extend_from_slice(secret);
            buf.extend_from_slice(&[0u8; 3]);
            let encoded = Zeroizing::new(unpadded.encode(buf.as_slice()).into_bytes());
            // Character j covers bits 6j..6j+6 of the buffer; the secret
            // covers bits 8k..8(k+n). Keep the characters entirely inside.
            let first = (8 * k).div_ceil(6);
            let end = n.saturating_add(k).saturating_mul(8) / 6;
            // Always in range: `encoded` has ceil(8(k+n+3)/6) > end characters.
            if let Some(middle) = encoded.get(first..end) {
                plain.push(Zeroizing::new(middle.to_vec()));
            }
        }
        for form in plain {
            if has_slash && form.contains(&b'/') {
                forms.push(json_escape_slashes(&form));
            }
            forms.push(form);
        }
    }
    forms
}

fn json_escape_slashes(s: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() + 8));
    for &b in s {
        if b == b'/' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// One percent-encoding convention: which non-alphanumeric ASCII bytes are
/// kept as they are, and whether space becomes `+`.
struct PercentFlavour {
    keep: &'static [u8],
    space_as_plus: bool,
}

const PERCENT_FLAVOURS: [PercentFlavour; 6] = [
    // RFC 3986 unreserved (also PHP rawurlencode, Go url.PathEscape-like).
    PercentFlavour {
        keep: b"-._~",
        space_as_plus: false,
    },
    // Python quote_plus, Go url.QueryEscape.
    PercentFlavour {
        keep: b"-._~",
        space_as_plus: true,
    },
    // WHATWG application/x-www-form-urlencoded (browsers, URLSearchParams).
    PercentFlavour {
        keep: b"*-._",
        space_as_plus: true,
    },
    // PHP urlencode, Java URLEncoder without '*'.
    PercentFlavour {
        keep: b"-._",
        space_as_plus: true,
    },
    // JavaScript encodeURIComponent.
    PercentFlavour {
        keep: b"-_.!~*'()",
        space_as_plus: false,
    },
    // Everything that is not alphanumeric.
    PercentFlavour {
        keep: b"",
        space_as_plus: false,
    },
];

fn percent_encode(secret: &[u8], flavour: &PercentFlavour, upper: bool) -> Zeroizing<Vec<u8>> {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() * 3));
    for &b in secret {
        if b.is_ascii_alphanumeric() || flavour.keep.contains(&b) {
            out.push(b);
        } else if b == b' ' && flavour.space_as_plus {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 0xf)],
            ]);
        }
    }
    out
}

/// JSON string-body forms of `text` (without the surrounding quotes).
fn json_forms(text: &str) -> Vec<Zeroizing<Vec<u8>>> {
    let mut forms = Vec::new();
    // Serialising a `str` cannot fail; if it ever did, the other forms below
    // are still produced.
    if let Ok(quoted) = serde_json::to_string(text) {
        let quoted = Zeroizing::new(quoted);
        // serde_json always wraps a string in exactly one pair of quotes.
        if let Some(minimal) = quoted.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            let slashed = json_escape_slashes(minimal.as_bytes());
            forms.push(ascii_only(minimal.as_bytes()));
            forms.push(ascii_only(&slashed));
            forms.push(Zeroizing::new(minimal.as_bytes().to_vec()));
            forms.push(slashed);
        }
    }
    for upper in [false, true] {
        for escape_non_ascii in [false, true] {
            forms.push(json_escape_all(text, upper, escape_non_ascii));
        }
    }
    forms
}

/// Rewrites the non-ASCII characters of an already JSON-escaped string as
/// `\uXXXX` (lower-case hex, UTF-16 surrogate pairs), as Python's
/// `json.dumps` and PHP's `json_encode` do by default.
fn ascii_only(escaped: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(escaped.len() + 16));
    // `escaped` comes from a `&str` with ASCII-only insertions, so it is
    // valid UTF-8; the lossy path is never taken and would only drop a form.
    let Ok(text) = std::str::from_utf8(escaped) else {
        return out;
    };
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c as u8);
        } else {
            push_u_escapes(&mut out, c, false);
        }
    }
    out
}

/// Every non-alphanumeric ASCII character as `\u00XX`; non-ASCII characters
/// as `\uXXXX` too when `escape_non_ascii`, else raw.
fn json_escape_all(text: &str, upper: bool, escape_non_ascii: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 6));
    let mut utf8 = [0u8; 4];
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c as u8);
        } else if c.is_ascii() || escape_non_ascii {
            push_u_escapes(&mut out, c, upper);
        } else {
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
    out
}

fn push_u_escapes(out: &mut Vec<u8>, c: char, upper: bool) {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut units = [0u16; 2];
    for &unit in c.encode_utf16(&mut units).iter() {
        out.extend_from_slice(b"\\u");
        for shift in [12u16, 8, 4, 0] {
            out.push(digits[usize::from((unit >> shift) & 0xf)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sk-live-4f9a???>>Zq7/xy~?~";

    fn redactor(secrets: &[&[u8]]) -> Redactor {
        Redactor::new(secrets.iter().copied()).unwrap()
    }

    /// Asserts that `encoded`, embedded in text, is detected and replaced
    /// whole.
    fn assert_redacts(r: &Redactor, encoded: &str) {
        let input = format!("before {encoded} after");
        assert!(
            r.contains_secret(input.as_bytes()),
            "not detected: {encoded}"
        );
        let (out, hits) = r.redact_str(&input);
        assert_eq!(
            out,
            format!("before {REDACTION_MARKER} after"),
            "for {encoded}"
        );
        assert_eq!(hits, 1, "for {encoded}");
    }

    /// Tiny deterministic PRNG so tests need no OS randomness.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn raw_and_hex() {
        let r = redactor(&[SECRET.as_bytes()]);
        assert_redacts(&r, SECRET);
        assert_redacts(&r, &hex::encode(SECRET));
        assert_redacts(&r, &hex::encode_upper(SECRET));
    }

    #[test]
    fn base64_full_encodings() {
        let r = redactor(&[SECRET.as_bytes()]);
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            assert_redacts(&r, &engine.encode(SECRET));
        }
        // The standard encoding of this secret contains '/', so the
        // JSON-escaped form differs from the plain one.
        let std = STANDARD.encode(SECRET);
        assert!(std.contains('/'));
        assert_redacts(&r, &std.replace('/', "\\/"));
    }

    /// The characters of `blob`'s base64 that depend only on
    /// `blob[start..start + n]`, computed independently of the redactor.
    fn independent_chars(encoded: &str, start: usize, n: usize) -> &str {
        let first = (8 * start).div_ceil(6);
        let end = (8 * (start + n)) / 6;
        &encoded[first..end]
    }

    fn check_embedded(r: &Redactor, secret: &[u8], prefix_len: usize, suffix_len: usize) {
        let mut rng =
            XorShift(0x9e37_79b9_7f4a_7c15 ^ (prefix_len as u64) << 8 ^ suffix_len as u64);
        let mut blob = rng.bytes(prefix_len);
        blob.extend_from_slice(secret);
        blob.extend_from_slice(&rng.bytes(suffix_len));
        for (name, engine, json_slash) in [
            ("standard", STANDARD, false),
            ("url-safe", URL_SAFE_NO_PAD, false),
            ("standard in JSON", STANDARD, true),
        ] {
            let mut encoded = engine.encode(&blob);
            let mut middle = independent_chars(&encoded, prefix_len, secret.len()).to_owned();
            if json_slash {
                encoded = encoded.replace('/', "\\/");
                middle = middle.replace('/', "\\/");
            }
            let ctx = format!("{name}, prefix {prefix_len}, suffix {suffix_len}");
            assert!(r.contains_secret(encoded.as_bytes()), "not detected: {ctx}");
            let out = r.redact(encoded.as_bytes());
            assert!(out.hits >= 1, "{ctx}");
            assert!(!r.contains_secret(&out.bytes), "survived: {ctx}");
            let out = String::from_utf8(out.into_bytes()).unwrap();
            assert!(!out.contains(&middle), "independent chars survived: {ctx}");
            assert!(out.contains(REDACTION_MARKER), "{ctx}");
        }
    }

    #[test]
    fn base64_every_alignment_inside_a_blob() {
        let r = redactor(&[SECRET.as_bytes()]);
        for prefix_len in 0..6 {
            for suffix_len in 0..4 {
                check_embedded(&r, SECRET.as_bytes(), prefix_len, suffix_len);
            }
        }
    }

    #[test]
    fn base64_every_alignment_random_binary_secrets() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for _ in 0..24 {
            let len = MIN_SECRET_LEN + (rng.next() % 40) as usize;
            let secret = rng.bytes(len);
            let r = redactor(&[&secret]);
            for prefix_len in 0..6 {
                check_embedded(&r, &secret, prefix_len, prefix_len % 3);
            }
        }
    }

    #[test]
    fn basic_auth_header_echo() {
        let r = redactor(&[SECRET.as_bytes()]);
        for user in ["u", "us", "user", "a-much-longer-user"] {
            let header = format!("Basic {}", STANDARD.encode(format!("{user}:{SECRET}")));
            let (out, hits) = r.redact_str(&header);
            assert_eq!(hits, 1, "user {user}");
            assert!(!r.contains_secret(out.as_bytes()));
        }
    }

    #[test]
    fn percent_encodings() {
        let secret = "k3y/ab c+d~\u{e9}!x";
        let r = redactor(&[secret.as_bytes()]);
        for encoded in [
            // RFC 3986, upper and lower hex.
            "k3y%2Fab%20c%2Bd~%C3%A9%21x",
            "k3y%2fab%20c%2bd~%c3%a9%21x",
            // Form-urlencoded: WHATWG and quote_plus.
            "k3y%2Fab+c%2Bd%7E%C3%A9%21x",
            "k3y%2Fab+c%2Bd~%C3%A9%21x",
            "k3y%2fab+c%2bd~%c3%a9%21x",
            // encodeURIComponent.
            "k3y%2Fab%20c%2Bd~%C3%A9!x",
            // Everything non-alphanumeric.
            "k3y%2Fab%20c%2Bd%7E%C3%A9%21x",
            "k3y%2fab%20c%2bd%7e%c3%a9%21x",
        ] {
            assert_redacts(&r, encoded);
        }
        // Cross-check against the percent-encoding crate.
        const RFC3986: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        assert_redacts(
            &r,
            &percent_encoding::utf8_percent_encode(secret, RFC3986).to_string(),
        );
    }

    #[test]
    fn percent_encoded_query_string() {
        let secret = "tok en/with+chars=1&2";
        let r = redactor(&[secret.as_bytes()]);
        let url = "https://echo.example/get?a=1&key=tok+en%2Fwith%2Bchars%3D1%262&b=2";
        let (out, hits) = r.redact_str(url);
        assert_eq!(hits, 1);
        assert_eq!(out, "https://echo.example/get?a=1&key=[REDACTED]&b=2");
    }

    #[test]
    fn json_escapes() {
        let secret = "pa\"ss\\w/rd-\u{e9}\u{1F600}9";
        let r = redactor(&[secret.as_bytes()]);
        for encoded in [
            // serde_json, minimal escaping.
            "pa\\\"ss\\\\w/rd-\u{e9}\u{1F600}9",
            // '/' escaped.
            "pa\\\"ss\\\\w\\/rd-\u{e9}\u{1F600}9",
            // ensure_ascii (Python), with and without '\/' (PHP).
            "pa\\\"ss\\\\w/rd-\\u00e9\\ud83d\\ude009",
            "pa\\\"ss\\\\w\\/rd-\\u00e9\\ud83d\\ude009",
            // Every non-alphanumeric character escaped, both cases.
            "pa\\u0022ss\\u005cw\\u002frd\\u002d\\u00e9\\ud83d\\ude009",
            "pa\\u0022ss\\u005Cw\\u002Frd\\u002D\\u00E9\\uD83D\\uDE009",
            // Non-alphanumeric ASCII escaped, non-ASCII raw.
            "pa\\u0022ss\\u005cw\\u002frd\\u002d\u{e9}\u{1F600}9",
        ] {
            assert_redacts(&r, encoded);
        }
        // The serde_json form really is what serde_json writes.
        let body = serde_json::json!({ "echo": secret }).to_string();
        let (out, hits) = r.redact_str(&body);
        assert_eq!((out.as_str(), hits), (r#"{"echo":"[REDACTED]"}"#, 1));
    }

    #[test]
    fn json_body_with_escaped_slashes_and_base64() {
        let r = redactor(&[SECRET.as_bytes()]);
        let b64 = STANDARD.encode(format!("user:{SECRET}"));
        // The point of the test: the base64 form needs JSON slash escaping.
        assert!(b64.contains('/'), "{b64}");
        let body = format!(
            r#"{{"headers":{{"Authorization":"Basic {}","X-Key":"{}"}}}}"#,
            b64.replace('/', "\\/"),
            SECRET.replace('/', "\\/"),
        );
        assert!(r.contains_secret(body.as_bytes()));
        let (out, hits) = r.redact_str(&body);
        assert_eq!(hits, 2);
        assert!(!r.contains_secret(out.as_bytes()));
        assert!(out.ends_with(r#""X-Key":"[REDACTED]"}}"#), "{out}");
    }

    #[test]
    fn hits_are_counted() {
        let other = b"second-secret-value";
        let r = redactor(&[SECRET.as_bytes(), other]);
        let input = format!(
            "{SECRET} and {} and {SECRET}{} and {}",
            hex::encode(SECRET),
            String::from_utf8_lossy(other),
            URL_SAFE_NO_PAD.encode(other),
        );
        let red = r.redact(input.as_bytes());
        assert_eq!(red.hits, 5);
        assert_eq!(
            red.bytes.as_ref(),
            b"[REDACTED] and [REDACTED] and [REDACTED][REDACTED] and [REDACTED]"
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        let err = Redactor::new([b"12345678".as_slice(), b"1234567".as_slice()]).unwrap_err();
        assert_eq!(
            err,
            RedactError::SecretTooShort {
                min: MIN_SECRET_LEN
            }
        );
        assert!(Redactor::new([b"".as_slice()]).is_err());
        assert!(Redactor::new([b"12345678".as_slice()]).is_ok());
    }

    #[test]
    fn empty_set_changes_nothing() {
        for r in [
            Redactor::empty(),
            Redactor::new([]).unwrap(),
            Redactor::default(),
        ] {
            assert!(r.is_empty());
            assert_eq!(r.pattern_count(), 0);
            let red = r.redact(b"anything");
            assert!(matches!(red.bytes, Cow::Borrowed(b"anything")));
            assert_eq!(red.hits, 0);
            assert!(!r.contains_secret(b"anything"));
        }
    }

    #[test]
    fn no_false_positives_on_unrelated_text() {
        let r = redactor(&[SECRET.as_bytes(), b"ghp_0123456789abcdefABCDEF"]);
        let mut rng = XorShift(42);
        let mut input = b"Lorem ipsum dolor sit amet, {\"key\": \"sk-live-\", \"n\": 12345678} \
            c2stbGl2ZQ== 736b2d6c697665 %2F%2B \\u0022"
            .to_vec();
        input.extend(rng.bytes(64 * 1024));
        let red = r.redact(&input);
        assert_eq!(red.hits, 0);
        assert!(matches!(red.bytes, Cow::Borrowed(_)));
        assert!(!r.contains_secret(&input));
    }

    #[test]
    fn leftmost_longest_replaces_the_encoded_form_whole() {
        // The alignment-0 pattern is a prefix of the padded encoding; the
        // whole padded encoding must go, not leave "==" behind.
        let r = redactor(&[b"abcdefgh"]);
        let (out, hits) = r.redact_str("x YWJjZGVmZ2g= y");
        assert_eq!((out.as_str(), hits), ("x [REDACTED] y", 1));
    }

    #[test]
    fn patterns_are_deduplicated_and_short_ones_dropped() {
        // An alphanumeric secret: raw, percent and JSON forms coincide.
        let r = redactor(&[b"abcdefgh", b"abcdefgh"]);
        let single = redactor(&[b"abcdefgh"]);
        assert_eq!(r.pattern_count(), single.pattern_count());
        // Raw (percent and JSON forms coincide with it), hex (digits only,
        // so both cases coincide), and base64 (both alphabets coincide):
        // padded, unpadded, and the middles at alignments 0, 1 and 2.
        assert_eq!(single.pattern_count(), 1 + 1 + 5);
    }

    #[test]
    fn debug_does_not_leak() {
        let r = redactor(&[SECRET.as_bytes()]);
        let dbg = format!("{r:?} {:#?}", r);
        assert!(dbg.contains(&r.pattern_count().to_string()));
        for needle in ["sk-live", "4f9a", "c2st", "736b", "Zq7"] {
            assert!(!dbg.contains(needle), "{dbg}");
        }
        let err = Redactor::new([b"tiny".as_slice()]).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("tiny"));
    }

    #[test]
    fn non_utf8_secret_in_text() {
        let secret = [0xffu8, 0xfe, b'a', b'b', b'c', b'd', b'e', b'f', 0x80];
        let r = redactor(&[&secret]);
        assert_redacts(&r, &hex::encode(secret));
        assert_redacts(&r, &STANDARD.encode(secret));
        let mut raw = b"x ".to_vec();
        raw.extend_from_slice(&secret);
        assert_eq!(r.redact(&raw).bytes.as_ref(), b"x [REDACTED]");
    }

    #[test]
    fn redactor_is_send_sync() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Redactor>();
    }
}
