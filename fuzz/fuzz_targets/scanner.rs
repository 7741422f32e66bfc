//! `Scanner::apply` on arbitrary bytes (scanning works on bytes, not text).
#![no_main]

use edgeward_fuzz::SCANNER;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scanned = SCANNER.apply(data);
    // Callers slice the input with these ranges (audit records, markers).
    for finding in &scanned.findings {
        assert!(finding.start <= finding.end && finding.end <= data.len());
    }
});
