//! Decoding of compressed HTTP bodies, so that redaction scans plaintext.
//!
//! [`crate::redact`] can only find a secret in bytes it understands: a
//! gzip'd echo of the request would carry the credential past it untouched.
//! So the backend decodes every upstream response body before scanning it,
//! and a body in a coding edgeward does not decode is refused, never passed
//! through unscanned.
//!
//! 1. Send [`SUPPORTED_CODINGS`] as `Accept-Encoding` upstream, so a
//!    well-behaved upstream only uses codings this module decodes.
//! 2. Buffer the response body and call [`decode_body`] with every
//!    `Content-Encoding` header value (`headers.get_all(CONTENT_ENCODING)`).
//! 3. Redact the decoded bytes and hand them to the guest *without* the
//!    upstream's `Content-Encoding` (and with a fresh `Content-Length`).
//!
//! ```
//! use std::io::Write;
//! use http::{HeaderMap, HeaderValue, header::CONTENT_ENCODING};
//! use edgeward_core::codec::decode_body;
//!
//! let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
//! gz.write_all(b"hello")?;
//! let body = gz.finish()?;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
//! let plain = decode_body(headers.get_all(CONTENT_ENCODING), &body, 1 << 20)?;
//! assert_eq!(&*plain, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Decompression bombs: no call ever holds more than `max_decoded` bytes of
//! output per layer; decoding stops with [`DecodeError::TooLarge`] as soon as
//! the output would exceed it. At most [`MAX_STACKED_CODINGS`] layers are
//! decoded, which bounds the CPU a nested bomb can cost.
//!
//! Non-goals: `br`, `zstd` and `compress` (no pure-Rust decoder in the core's
//! dependencies; refusing them is safe because we never advertise them),
//! streaming decoding, and transfer codings (hyper removes `chunked`).

use std::borrow::Cow;
use std::io::{self, Read};

use flate2::bufread::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use http::HeaderValue;

/// The codings [`decode_body`] decodes, as the `Accept-Encoding` value the
/// backend sends upstream.
pub const SUPPORTED_CODINGS: &str = "gzip, deflate";

/// The most non-identity codings decoded for one body. Real servers apply
/// one; each layer can cost up to `max_decoded` bytes of work, so a long
/// chain of nested layers is refused instead.
pub const MAX_STACKED_CODINGS: usize = 3;

/// The longest coding name echoed back in [`DecodeError::Unsupported`].
const MAX_PRINTED_CODING_LEN: usize = 32;

/// Why a body could not be decoded. Every variant means "refuse the
/// response": the body cannot be scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body uses a content coding edgeward does not decode.
    #[error("unsupported content coding {coding:?}")]
    Unsupported {
        /// The coding's name, lower-cased, or `"<invalid>"` when it is not a
        /// short token of `[a-z0-9._-]` (it comes from the upstream and ends
        /// up in logs).
        coding: String,
    },
    /// The body is not valid data in the coding it claims (including a
    /// truncated stream, a bad checksum, or bytes after the end).
    #[error("corrupt {coding} body")]
    Corrupt {
        /// The coding that failed: `"gzip"` or `"deflate"`.
        coding: &'static str,
    },
    /// The decoded body would be larger than `limit` bytes.
    #[error("decoded body exceeds {limit} bytes")]
    TooLarge {
        /// The `max_decoded` limit that was hit.
        limit: usize,
    },
    /// More than `max` non-identity codings are stacked.
    #[error("more than {max} stacked content codings")]
    TooManyCodings {
        /// [`MAX_STACKED_CODINGS`].
        max: usize,
    },
    /// A `Content-Encoding` value is not a valid list of tokens.
    #[error("invalid Content-Encoding header")]
    InvalidHeader,
}

/// A content coding [`decode_body`] can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContentCoding {
    /// `gzip` or `x-gzip` (RFC 1952), possibly several members.
    Gzip,
    /// `deflate`: zlib-wrapped (RFC 1950) as RFC 9110 says, or raw deflate
    /// (RFC 1951), which some servers send instead.
    Deflate,
}

impl ContentCoding {
    /// The coding's canonical name.
    pub fn name(self) -> &'static str {
        match self {
            ContentCoding::Gzip => "gzip",
            ContentCoding::Deflate => "deflate",
        }
    }
}

/// Parses all `Content-Encoding` values into the codings applied, in the
/// order they were applied; `identity` and empty list elements are dropped.
///
/// # Errors
///
/// [`DecodeError::InvalidHeader`], [`DecodeError::Unsupported`] or
/// [`DecodeError::TooManyCodings`].
pub fn content_codings<'h>(
    content_encoding: impl IntoIterator<Item = &'h HeaderValue>,
) -> Result<Vec<ContentCoding>, DecodeError> {
    let mut codings = Vec::new();
    for value in content_encoding {
        let value = value.to_str().map_err(|_| DecodeError::InvalidHeader)?;
        // RFC 9110 §5.6.1: a list may contain empty elements and optional
        // whitespace around the commas; several header lines are one list.
        for element in value.split(',') {
            let name = element.trim_matches([' ', '\t']);
            if name.is_empty() {
                continue;
            }
            if !name.bytes().all(is_tchar) {
                return Err(DecodeError::InvalidHeader);
            }
            let coding = match name.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => ContentCoding::Gzip,
                "deflate" => ContentCoding::Deflate,
                _ => {
                    return Err(DecodeError::Unsupported {
                        coding: printable_coding(name),
                    });
                }
            };
            if codings.len() == MAX_STACKED_CODINGS {
                return Err(DecodeError::TooManyCodings {
                    max: MAX_STACKED_CODINGS,
                });
            }
            codings.push(coding);
        }
    }
    Ok(codings)
}

/// Decodes `body` according to all its `Content-Encoding` values, undoing the
/// codings in reverse order of application. Pass
/// `headers.get_all(CONTENT_ENCODING)`, or an `Option<&HeaderValue>`.
///
/// Returns the body itself (borrowed) when no decoding is needed. An empty
/// body decodes to an empty body whatever the (supported) coding: servers
/// label empty `HEAD`, `204` and `304` responses with the coding of the
/// full representation.
///
/// # Errors
///
/// Any [`DecodeError`]; the result is never more than `max_decoded` bytes,
/// even for an unencoded body ([`DecodeError::TooLarge`]).
pub fn decode_body<'b, 'h>(
    content_encoding: impl IntoIterator<Item = &'h HeaderValue>,
    body: &'b [u8],
    max_decoded: usize,
) -> Result<Cow<'b, [u8]>, DecodeError> {
    let codings = content_codings(content_encoding)?;
    let mut current = Cow::Borrowed(body);
    for coding in codings.into_iter().rev() {
        current = Cow::Owned(decode_one(coding, &current, max_decoded)?);
    }
    if current.len() > max_decoded {
        return Err(DecodeError::TooLarge { limit: max_decoded });
    }
    Ok(current)
}

fn decode_one(coding: ContentCoding, input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let corrupt = DecodeError::Corrupt {
        coding: coding.name(),
    };
    // Each decoder reads from a `&[u8]` it advances as it consumes input, so
    // afterwards `get_ref()` is whatever followed the end of the stream.
    let (out, rest) = match coding {
        ContentCoding::Gzip => {
            // Multi-member: RFC 1952 allows concatenated members, and bytes
            // after the last member must form another member or fail.
            let mut decoder = MultiGzDecoder::new(input);
            let out = read_capped(&mut decoder, limit, &corrupt)?;
            (out, decoder.get_ref().len())
        }
        ContentCoding::Deflate if has_zlib_header(input) => {
            let mut decoder = ZlibDecoder::new(input);
            let out = read_capped(&mut decoder, limit, &corrupt)?;
            (out, decoder.get_ref().len())
        }
        ContentCoding::Deflate => {
            let mut decoder = DeflateDecoder::new(input);
            let out = read_capped(&mut decoder, limit, &corrupt)?;
            (out, decoder.get_ref().len())
        }
    };
    // Bytes after the end of the stream are refused rather than ignored: a
    // body that means different things to different decoders is not one we
    // want to reason about.
    if rest != 0 {
        return Err(corrupt);
    }
    Ok(out)
}

/// Whether `input` starts with a valid zlib header (RFC 1950 §2.2): method 8
/// (deflate), window at most 32 KiB, and the header checksum. A raw deflate
/// stream passes this by chance with probability well under 1/31 (its first
/// block would also have to be a non-final stored block).
fn has_zlib_header(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Reads `reader` to its end, failing as soon as the output would exceed
/// `limit`, and never reserving more than `limit` bytes.
fn read_capped<R: Read>(
    reader: &mut R,
    limit: usize,
    corrupt: &DecodeError,
) -> Result<Vec<u8>, DecodeError> {
    let too_large = DecodeError::TooLarge { limit };
    // The decoder itself is cut off one byte past the limit, so even a bug in
    // the accounting below could not make it produce unbounded output.
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut reader = reader.take(cap);
    let mut out = Vec::new();
    let mut chunk = [0u8; 8 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(corrupt.clone()),
        };
        let new_len = out.len().checked_add(n).ok_or_else(|| too_large.clone())?;
        if new_len > limit {
            return Err(too_large);
        }
        if new_len > out.capacity() {
            // Grow geometrically, like `Vec` would, but never past `limit`
            // (`new_len <= limit` was checked above).
            let target = out.capacity().saturating_mul(2).max(new_len).min(limit);
            out.reserve_exact(target - out.len());
        }
        // `n <= chunk.len()`: `read` never reports more than the buffer holds.
        out.extend_from_slice(&chunk[..n]);
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The coding name as it may appear in an error, or `"<invalid>"`.
fn printable_coding(name: &str) -> String {
    let printable = name.len() <= MAX_PRINTED_CODING_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if printable {
        name.to_ascii_lowercase()
    } else {
        "<invalid>".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use http::HeaderMap;
    use http::header::CONTENT_ENCODING;
    use std::io::Write;

    const TEXT: &[u8] = b"{\"echo\":\"Authorization: Bearer sk-live-0123456789\"}";
    const MIB: usize = 1024 * 1024;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(header: &str, body: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let value = HeaderValue::from_str(header).unwrap();
        decode_body(Some(&value), body, MIB).map(Cow::into_owned)
    }

    #[test]
    fn gzip_and_x_gzip_any_case() {
        let body = gzip(TEXT);
        for name in ["gzip", "x-gzip", "GZIP", "X-GZip", " gzip\t"] {
            assert_eq!(decode(name, &body).unwrap(), TEXT, "{name:?}");
        }
    }

    #[test]
    fn deflate_zlib_and_raw() {
        assert!(has_zlib_header(&zlib(TEXT)));
        assert!(!has_zlib_header(&raw_deflate(TEXT)));
        assert_eq!(decode("deflate", &zlib(TEXT)).unwrap(), TEXT);
        assert_eq!(decode("Deflate", &raw_deflate(TEXT)).unwrap(), TEXT);
    }

    #[test]
    fn zlib_header_detection_at_every_level() {
        for level in 0..=9 {
            let mut e = ZlibEncoder::new(Vec::new(), Compression::new(level));
            e.write_all(TEXT).unwrap();
            assert!(has_zlib_header(&e.finish().unwrap()), "level {level}");
        }
    }

    #[test]
    fn stacked_codings_decode_in_reverse() {
        // Applied gzip first, then deflate.
        let body = zlib(&gzip(TEXT));
        assert_eq!(decode("gzip, deflate", &body).unwrap(), TEXT);
        assert_eq!(
            decode("deflate, gzip", &body).unwrap_err(),
            DecodeError::Corrupt { coding: "gzip" }
        );
        // The same list split over two header lines.
        let mut headers = HeaderMap::new();
        headers.append(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.append(
            CONTENT_ENCODING,
            HeaderValue::from_static("identity, deflate"),
        );
        let out = decode_body(headers.get_all(CONTENT_ENCODING), &body, MIB).unwrap();
        assert_eq!(&*out, TEXT);
    }

    #[test]
    fn identity_and_absent_are_no_ops() {
        for header in ["identity", "", " , ", "Identity", "identity,,identity"] {
            let out = decode_body(Some(&HeaderValue::from_str(header).unwrap()), TEXT, MIB);
            assert!(
                matches!(out, Ok(Cow::Borrowed(b)) if b == TEXT),
                "{header:?}"
            );
        }
        let out = decode_body(None, TEXT, MIB).unwrap();
        assert!(matches!(out, Cow::Borrowed(_)));
        let headers = HeaderMap::new();
        let out = decode_body(headers.get_all(CONTENT_ENCODING), TEXT, MIB).unwrap();
        assert_eq!(&*out, TEXT);
    }

    #[test]
    fn list_whitespace_and_empty_elements() {
        let body = gzip(TEXT);
        for header in [
            ", gzip",
            "gzip ,",
            " ,\tgzip , ",
            "identity, gzip, identity",
        ] {
            assert_eq!(decode(header, &body).unwrap(), TEXT, "{header:?}");
        }
    }

    #[test]
    fn unsupported_codings_are_refused() {
        for (header, shown) in [
            ("br", "br"),
            ("zstd", "zstd"),
            ("compress", "compress"),
            ("x-compress", "x-compress"),
            ("BR", "br"),
            ("gzip, br", "br"),
            ("snappy.v1_x", "snappy.v1_x"),
            // Valid tokens, but not printable under our stricter rule.
            ("we!rd", "<invalid>"),
            ("a-very-long-coding-name-that-goes-on-and-on", "<invalid>"),
        ] {
            assert_eq!(
                decode(header, b"x").unwrap_err(),
                DecodeError::Unsupported {
                    coding: shown.to_owned()
                },
                "{header:?}"
            );
        }
    }

    #[test]
    fn malformed_headers_are_invalid() {
        for header in ["gzip;q=1", "\"gzip\"", "gz ip", "gzip/1", "gzip, (x)"] {
            assert_eq!(
                decode(header, b"x").unwrap_err(),
                DecodeError::InvalidHeader,
                "{header:?}"
            );
        }
        // obs-text: not visible ASCII, so not a string at all.
        let value = HeaderValue::from_bytes(b"gzip\xff").unwrap();
        assert_eq!(
            decode_body(Some(&value), b"x", MIB).unwrap_err(),
            DecodeError::InvalidHeader
        );
    }

    #[test]
    fn error_messages_do_not_echo_unsanitised_names() {
        let err = decode("<script>", b"x").unwrap_err();
        assert_eq!(err, DecodeError::InvalidHeader);
        let err = decode("x-evil|name", b"x").unwrap_err();
        assert!(!err.to_string().contains("evil"), "{err}");
    }

    #[test]
    fn corrupt_gzip() {
        let good = gzip(TEXT);
        let corrupt = DecodeError::Corrupt { coding: "gzip" };
        // Not gzip at all.
        assert_eq!(decode("gzip", TEXT).unwrap_err(), corrupt);
        // Truncated: inside the deflate data, and inside the trailer.
        assert_eq!(
            decode("gzip", &good[..good.len() / 2]).unwrap_err(),
            corrupt
        );
        assert_eq!(
            decode("gzip", &good[..good.len() - 2]).unwrap_err(),
            corrupt
        );
        // CRC mismatch.
        let mut bad_crc = good.clone();
        let crc_at = bad_crc.len() - 8;
        bad_crc[crc_at] ^= 0x55;
        assert_eq!(decode("gzip", &bad_crc).unwrap_err(), corrupt);
        // Garbage after the member.
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"trailing garbage");
        assert_eq!(decode("gzip", &trailing).unwrap_err(), corrupt);
    }

    #[test]
    fn gzip_multiple_members() {
        let mut body = gzip(b"first ");
        body.extend(gzip(b"second"));
        assert_eq!(decode("gzip", &body).unwrap(), b"first second");
    }

    #[test]
    fn corrupt_deflate() {
        let corrupt = DecodeError::Corrupt { coding: "deflate" };
        let good = zlib(TEXT);
        // A zlib header followed by garbage is not retried as raw deflate.
        let mut bad = good[..2].to_vec();
        bad.extend_from_slice(&[0xff; 16]);
        assert_eq!(decode("deflate", &bad).unwrap_err(), corrupt);
        // Truncated zlib (checksum missing) and truncated raw deflate.
        assert_eq!(
            decode("deflate", &good[..good.len() - 1]).unwrap_err(),
            corrupt
        );
        let raw = raw_deflate(TEXT);
        assert_eq!(
            decode("deflate", &raw[..raw.len() / 2]).unwrap_err(),
            corrupt
        );
        // Adler-32 mismatch.
        let mut bad_adler = good.clone();
        let last = bad_adler.len() - 1;
        bad_adler[last] ^= 1;
        assert_eq!(decode("deflate", &bad_adler).unwrap_err(), corrupt);
        // Bytes after the end of the stream.
        for mut body in [good, raw] {
            body.extend_from_slice(b"tail");
            assert_eq!(decode("deflate", &body).unwrap_err(), corrupt);
        }
    }

    #[test]
    fn decompression_bomb_is_stopped() {
        let zeros = vec![0u8; 10 * MIB];
        for (header, body) in [
            ("gzip", gzip(&zeros)),
            ("deflate", zlib(&zeros)),
            ("deflate", raw_deflate(&zeros)),
        ] {
            assert!(body.len() < 64 * 1024);
            assert_eq!(
                decode(header, &body).unwrap_err(),
                DecodeError::TooLarge { limit: MIB },
                "{header}"
            );
        }
        // Nested: each layer small, the inner one a bomb.
        let nested = gzip(&gzip(&zeros));
        assert_eq!(
            decode("gzip, gzip", &nested).unwrap_err(),
            DecodeError::TooLarge { limit: MIB }
        );
    }

    #[test]
    fn limit_is_exact() {
        let data = vec![7u8; 100_000];
        let body = gzip(&data);
        let value = HeaderValue::from_static("gzip");
        let out = decode_body(Some(&value), &body, data.len()).unwrap();
        assert_eq!(out.len(), data.len());
        assert!(out.into_owned().capacity() <= data.len());
        assert_eq!(
            decode_body(Some(&value), &body, data.len() - 1).unwrap_err(),
            DecodeError::TooLarge {
                limit: data.len() - 1
            }
        );
        // An unencoded body is held to the same limit.
        assert_eq!(
            decode_body(None, &data, 10).unwrap_err(),
            DecodeError::TooLarge { limit: 10 }
        );
        assert_eq!(
            decode_body(None, &data, data.len()).unwrap().len(),
            data.len()
        );
    }

    #[test]
    fn empty_body_decodes_to_empty() {
        for header in ["gzip", "deflate", "gzip, deflate"] {
            assert_eq!(decode(header, b"").unwrap(), b"", "{header}");
        }
        // But an unsupported coding is refused even then.
        assert!(matches!(
            decode("br", b""),
            Err(DecodeError::Unsupported { .. })
        ));
    }

    #[test]
    fn too_many_codings() {
        let ok = "gzip, gzip, gzip";
        assert_eq!(
            content_codings(Some(&HeaderValue::from_static(ok)))
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            decode("gzip, gzip, gzip, deflate", b"x").unwrap_err(),
            DecodeError::TooManyCodings {
                max: MAX_STACKED_CODINGS
            }
        );
        // identity does not count.
        let with_identity = "identity, gzip, identity, gzip, identity, gzip, identity";
        assert!(content_codings(Some(&HeaderValue::from_static(with_identity))).is_ok());
    }

    #[test]
    fn supported_codings_parse() {
        let value = HeaderValue::from_static(SUPPORTED_CODINGS);
        assert_eq!(
            content_codings(Some(&value)).unwrap(),
            [ContentCoding::Gzip, ContentCoding::Deflate]
        );
    }
}
