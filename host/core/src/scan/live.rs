//! Where a [`Redactor`] matches, as byte ranges of its input: the live
//! credentials and tokens the caller holds, in every encoding `redact`
//! knows. The set of encodings stays defined in one place (`redact`).

use std::ops::Range;

use crate::redact::Redactor;

/// The ranges of `input` the Redactor replaces, sorted and disjoint.
pub(super) fn spans(redactor: &Redactor, input: &[u8]) -> Vec<Range<usize>> {
    redactor.find_ranges(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::REDACTION_MARKER;

    /// Replacing the ranges must give exactly what `redact` gives.
    fn check(redactor: &Redactor, input: &[u8]) {
        let mut out = Vec::new();
        let mut at = 0;
        for r in spans(redactor, input) {
            assert!(r.start >= at && r.end <= input.len());
            out.extend_from_slice(&input[at..r.start]);
            out.extend_from_slice(REDACTION_MARKER.as_bytes());
            at = r.end;
        }
        out.extend_from_slice(&input[at..]);
        assert_eq!(out, redactor.redact(input).into_bytes());
    }

    #[test]
    fn spans_reproduce_the_redactor_output() {
        let r = Redactor::new([
            b"s3cr3t-value-1".as_slice(),
            b"another-secret-22".as_slice(),
        ])
        .unwrap();
        check(&r, b"nothing here");
        check(&r, b"a s3cr3t-value-1 b another-secret-22 c s3cr3t-value-1");
        check(&r, b"[REDACTED] s3cr3t-value-1[REDACTED]");
        check(
            &r,
            b"czNjcjN0LXZhbHVlLTE= in base64, s3cr3t%2Dvalue%2D1 percent",
        );
        assert!(spans(&r, b"no").is_empty());
        assert_eq!(spans(&r, b"xs3cr3t-value-1y"), vec![1..15]);
    }
}
