//! The audit log's hash chain: how a record is hashed, and pure verification.
//!
//! Every record carries its sequence number (1, 2, …), the hash of the record
//! before it (32 zero bytes for the first) and its own hash:
//!
//! ```text
//! hash = SHA-256( "edgeward audit record v1\0"
//!               || u64be(seq) || prev_hash
//!               || u64be(at) || str(kind) || str(decision)
//!               || opt(agent) || opt(instance) || opt(device) || opt(user)
//!               || opt(grant) || opt(method) || opt(origin) || opt(path)
//!               || opt(reason) || opt(jti) || opt(admin) )
//! str(s)       = u64be(byte length of s) || s
//! opt(None)    = 0x00
//! opt(Some(s)) = 0x01 || str(s)
//! ```
//!
//! Every field is length-prefixed and in a fixed order, so two different
//! entries never serialize alike. What each kind of tampering looks like to
//! [`verify_chain`]:
//!
//! | tampering | detected as |
//! |---|---|
//! | a field changed | [`AuditError::Edited`]: the hash no longer matches |
//! | a record removed | [`AuditError::Deleted`]: a gap in the sequence |
//! | records swapped or moved | [`AuditError::Reordered`]: `prev_hash` no longer links |
//! | a record changed *and* rehashed | [`AuditError::Reordered`] at the next record |
//! | the whole tail rewritten and rehashed | [`AuditError::BadCheckpoint`] / [`AuditError::HeadMismatch`] |
//! | the tail cut off | [`AuditError::Truncated`]: a checkpoint or the exported head lies beyond the end |
//!
//! The last two need something the attacker cannot rewrite: checkpoints
//! signed with the backend key, and head hashes exported off the machine.
//! Deleting checkpoints too is caught only by an exported head: export it.
//!
//! Signing a checkpoint is the caller's job (it holds the key): it signs
//! [`Checkpoint::signing_input`] and stores the result.

use sha2::{Digest as _, Sha256};

/// `prev_hash` of the first record.
pub const ZERO_HASH: [u8; 32] = [0; 32];

/// Longest field of an entry, bytes. Entries are decisions, not payloads:
/// a longer field is a bug in the caller (or an attempt to bloat the log).
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

const RECORD_DOMAIN: &[u8] = b"edgeward audit record v1\0";
const CHECKPOINT_DOMAIN: &[u8] = b"edgeward audit checkpoint v1\0";

/// One decision to record.
///
/// Callers must not put secrets, credentials, tokens or query strings in any
/// field: `path` is the path only (no `?…`), `reason` is our own words, not
/// an upstream's body. The backend scans records for known secret formats
/// too, but that is the second line of defence, not the first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEntry {
    /// When, unix seconds.
    pub at: u64,
    /// What happened: `exchange`, `egress`, `admin`, `stop`, `revoke`, …
    pub kind: String,
    /// The outcome: `allow`, `deny`, …
    pub decision: String,
    /// Agent name.
    pub agent: Option<String>,
    /// Instance id.
    pub instance: Option<String>,
    /// Device id.
    pub device: Option<String>,
    /// The user the agent acted for.
    pub user: Option<String>,
    /// Grant name.
    pub grant: Option<String>,
    /// HTTP method.
    pub method: Option<String>,
    /// Upstream origin.
    pub origin: Option<String>,
    /// Request path, without the query.
    pub path: Option<String>,
    /// Why (the full detail that the wire may not get).
    pub reason: Option<String>,
    /// Token id.
    pub jti: Option<String>,
    /// The admin principal, for admin actions.
    pub admin: Option<String>,
    /// For a call a policy let through: what its sequence state must
    /// remember. Stored beside the record, in the same transaction, and
    /// replayed when the backend starts; not part of the hash chain.
    pub policy_event: Option<PolicyEvent>,
}

/// A forwarded call as policy state counts it (see
/// `edgeward_core::policy::record`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEvent {
    /// The user it was made for.
    pub user: Option<String>,
    /// The delegation root.
    pub root: String,
    /// The acting agent.
    pub agent: String,
    /// The grant.
    pub grant: String,
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// Bytes sent upstream (body, URL, headers).
    pub bytes: u64,
}

impl AuditEntry {
    /// The fields in hashing order, with their names (for error messages).
    fn optional_fields(&self) -> [(&'static str, &Option<String>); 11] {
        [
            ("agent", &self.agent),
            ("instance", &self.instance),
            ("device", &self.device),
            ("user", &self.user),
            ("grant", &self.grant),
            ("method", &self.method),
            ("origin", &self.origin),
            ("path", &self.path),
            ("reason", &self.reason),
            ("jti", &self.jti),
            ("admin", &self.admin),
        ]
    }

    /// The first field longer than [`MAX_FIELD_BYTES`], if any.
    pub fn oversized_field(&self) -> Option<&'static str> {
        let required = [("kind", &self.kind), ("decision", &self.decision)];
        required
            .into_iter()
            .find(|(_, v)| v.len() > MAX_FIELD_BYTES)
            .map(|(name, _)| name)
            .or_else(|| {
                self.optional_fields()
                    .into_iter()
                    .find(|(_, v)| v.as_ref().is_some_and(|v| v.len() > MAX_FIELD_BYTES))
                    .map(|(name, _)| name)
            })
    }
}

/// A stored audit record: the entry and its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position, from 1, without gaps.
    pub seq: u64,
    /// Hash of the record before (zeros for the first).
    pub prev_hash: [u8; 32],
    /// This record's hash, see [`record_hash`].
    pub hash: [u8; 32],
    /// What was recorded.
    pub entry: AuditEntry,
}

/// A signed statement "the log's record `seq` has hash `hash`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The record it covers (and, through the chain, every one before).
    pub seq: u64,
    /// That record's hash.
    pub hash: [u8; 32],
    /// When it was signed, unix seconds.
    pub at: u64,
    /// Which signing key.
    pub kid: String,
    /// Signature over [`Checkpoint::signing_input`].
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// The bytes the backend key signs: a domain, then seq, hash, time and kid.
    pub fn signing_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 56 + self.kid.len());
        out.extend_from_slice(CHECKPOINT_DOMAIN);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.at.to_be_bytes());
        put_str(&mut out, &self.kid);
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // usize is at most 64 bits on every target Rust supports: lossless.
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The hash of record `seq` with this predecessor hash and entry.
pub fn record_hash(seq: u64, prev_hash: &[u8; 32], entry: &AuditEntry) -> [u8; 32] {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(RECORD_DOMAIN);
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(prev_hash);
    buf.extend_from_slice(&entry.at.to_be_bytes());
    put_str(&mut buf, &entry.kind);
    put_str(&mut buf, &entry.decision);
    for (_, field) in entry.optional_fields() {
        match field {
            None => buf.push(0),
            Some(s) => {
                buf.push(1);
                put_str(&mut buf, s);
            }
        }
    }
    Sha256::digest(&buf).into()
}

/// Why a chain failed verification: the first bad record and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The record's contents do not match its hash.
    #[error("audit record {seq} was edited: its contents do not match its hash")]
    Edited {
        /// The edited record.
        seq: u64,
    },
    /// A gap in the sequence: records were removed.
    #[error("audit records after {after_seq} were deleted: the next record is {next_seq}")]
    Deleted {
        /// The last record before the gap (0: the log's start).
        after_seq: u64,
        /// The first record after it.
        next_seq: u64,
    },
    /// The record does not link to the one before it: records were swapped or
    /// moved, or the one before was rewritten with a recomputed hash.
    #[error("audit record {seq} is out of place: it does not link to the record before it")]
    Reordered {
        /// The first record whose link is broken.
        seq: u64,
    },
    /// A signed checkpoint or the exported head covers records the log no
    /// longer has: its tail was cut off.
    #[error(
        "the audit log was truncated: it ends at record {have_head}, but a checkpoint or the exported head covers record {checkpoint_seq}"
    )]
    Truncated {
        /// The last record present (0: none).
        have_head: u64,
        /// The checkpoint's or exported head's record.
        checkpoint_seq: u64,
    },
    /// A checkpoint's signature does not verify, or its hash is not the
    /// record's.
    #[error("the audit checkpoint at record {seq} is bad: {reason}")]
    BadCheckpoint {
        /// The record it claims to cover.
        seq: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The record at the exported head's position has another hash: the log
    /// was rewritten up to there.
    #[error("audit record {seq} does not match the exported head")]
    HeadMismatch {
        /// The exported head's record.
        seq: u64,
    },
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHead {
    /// The last record's sequence number and hash (`None`: the log is empty).
    pub head: Option<(u64, [u8; 32])>,
    /// How many records were checked.
    pub records: u64,
    /// How many checkpoints were checked (signature and hash).
    pub checkpoints: usize,
}

/// Verifies a chain one record at a time, so a long log can be checked in
/// pages without holding it in memory. [`verify_chain`] wraps it.
pub struct ChainVerifier<'a, F> {
    /// Sorted by seq; `next_checkpoint` indexes the first not yet checked.
    checkpoints: Vec<&'a Checkpoint>,
    next_checkpoint: usize,
    verify_sig: F,
    expected_head: Option<(u64, [u8; 32])>,
    last: Option<(u64, [u8; 32])>,
    records: u64,
}

impl<'a, F: Fn(&Checkpoint) -> bool> ChainVerifier<'a, F> {
    /// Start at the log's first record. `verify_sig` checks a checkpoint's
    /// signature; `expected_head` is a head exported earlier, if any.
    pub fn new(
        checkpoints: &'a [Checkpoint],
        verify_sig: F,
        expected_head: Option<(u64, [u8; 32])>,
    ) -> Self {
        let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
        sorted.sort_by_key(|c| c.seq);
        ChainVerifier {
            checkpoints: sorted,
            next_checkpoint: 0,
            verify_sig,
            expected_head,
            last: None,
            records: 0,
        }
    }

    /// The next record, in the order the log holds them.
    pub fn push(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        let (last_seq, last_hash) = self.last.unwrap_or((0, ZERO_HASH));
        let expected = last_seq.saturating_add(1);
        if record.seq > expected {
            return Err(AuditError::Deleted {
                after_seq: last_seq,
                next_seq: record.seq,
            });
        }
        if record.seq < expected {
            // A sequence number seen already, or one going backwards.
            return Err(AuditError::Reordered { seq: record.seq });
        }
        // The link is checked before the hash: a record moved to another
        // place keeps a hash that is right for its old place, so the broken
        // link is what names the fault.
        if record.prev_hash != last_hash {
            return Err(AuditError::Reordered { seq: record.seq });
        }
        if record_hash(record.seq, &record.prev_hash, &record.entry) != record.hash {
            return Err(AuditError::Edited { seq: record.seq });
        }
        while let Some(cp) = self.checkpoints.get(self.next_checkpoint).copied() {
            if cp.seq > record.seq {
                break;
            }
            // Only a checkpoint for seq 0 can be behind the first record.
            if cp.seq < record.seq {
                return Err(AuditError::BadCheckpoint {
                    seq: cp.seq,
                    reason: "it covers no record",
                });
            }
            if !(self.verify_sig)(cp) {
                return Err(AuditError::BadCheckpoint {
                    seq: cp.seq,
                    reason: "its signature does not verify",
                });
            }
            if cp.hash != record.hash {
                return Err(AuditError::BadCheckpoint {
                    seq: cp.seq,
                    reason: "its hash is not the record's",
                });
            }
            self.next_checkpoint += 1;
        }
        if let Some((seq, hash)) = self.expected_head
            && seq == record.seq
            && hash != record.hash
        {
            return Err(AuditError::HeadMismatch { seq });
        }
        self.last = Some((record.seq, record.hash));
        self.records += 1;
        Ok(())
    }

    /// After the last record: anything signed or exported beyond it means
    /// the tail is gone.
    pub fn finish(self) -> Result<VerifiedHead, AuditError> {
        let have_head = self.last.map_or(0, |(seq, _)| seq);
        if let Some(cp) = self.checkpoints.get(self.next_checkpoint).copied() {
            // A forged checkpoint must not pass for evidence of truncation.
            if !(self.verify_sig)(cp) {
                return Err(AuditError::BadCheckpoint {
                    seq: cp.seq,
                    reason: "its signature does not verify",
                });
            }
            return Err(AuditError::Truncated {
                have_head,
                checkpoint_seq: cp.seq,
            });
        }
        if let Some((seq, _)) = self.expected_head
            && seq > have_head
        {
            return Err(AuditError::Truncated {
                have_head,
                checkpoint_seq: seq,
            });
        }
        Ok(VerifiedHead {
            head: self.last,
            records: self.records,
            checkpoints: self.next_checkpoint,
        })
    }
}

/// Verify a whole log, from record 1, in the order given.
///
/// Returns the first fault, or what was established. An empty log with no
/// checkpoints and no expected head verifies (there is nothing to check).
pub fn verify_chain(
    records: impl IntoIterator<Item = AuditRecord>,
    checkpoints: &[Checkpoint],
    verify_sig: impl Fn(&Checkpoint) -> bool,
    expected_head: Option<(u64, [u8; 32])>,
) -> Result<VerifiedHead, AuditError> {
    let mut verifier = ChainVerifier::new(checkpoints, verify_sig, expected_head);
    for record in records {
        verifier.push(&record)?;
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: u64, reason: &str) -> AuditEntry {
        AuditEntry {
            at,
            kind: "egress".into(),
            decision: "allow".into(),
            agent: Some("weather-bot".into()),
            reason: Some(reason.into()),
            ..AuditEntry::default()
        }
    }

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev_hash = out.last().map_or(ZERO_HASH, |r| r.hash);
            let entry = entry(1_700_000_000 + seq, &format!("r{seq}"));
            let hash = record_hash(seq, &prev_hash, &entry);
            out.push(AuditRecord {
                seq,
                prev_hash,
                hash,
                entry,
            });
        }
        out
    }

    fn checkpoint(r: &AuditRecord, good: bool) -> Checkpoint {
        Checkpoint {
            seq: r.seq,
            hash: r.hash,
            at: r.entry.at,
            kid: "k1".into(),
            signature: if good {
                b"good".to_vec()
            } else {
                b"bad".to_vec()
            },
        }
    }

    fn sig_ok(c: &Checkpoint) -> bool {
        c.signature == b"good"
    }

    /// Pins the serialization (computed independently, with Python's hashlib,
    /// from the format in the module docs): changing it breaks every log.
    #[test]
    fn hash_test_vector() {
        let e = entry(1_700_000_000, "ok");
        assert_eq!(
            hex::encode(record_hash(1, &ZERO_HASH, &e)),
            "2cda801f0fd5d09c82972b5a68820ea653b0679b9fa9c1dcd277e2e5760d87a6"
        );
    }

    #[test]
    fn none_and_empty_hash_differently() {
        let a = AuditEntry {
            agent: None,
            ..entry(1, "x")
        };
        let b = AuditEntry {
            agent: Some(String::new()),
            ..entry(1, "x")
        };
        assert_ne!(
            record_hash(1, &ZERO_HASH, &a),
            record_hash(1, &ZERO_HASH, &b)
        );
        // Moving bytes between adjacent fields changes the hash.
        let c = AuditEntry {
            kind: "eg".into(),
            decision: "ressallow".into(),
            ..entry(1, "x")
        };
        assert_ne!(
            record_hash(1, &ZERO_HASH, &c),
            record_hash(1, &ZERO_HASH, &entry(1, "x"))
        );
    }

    #[test]
    fn a_good_chain_verifies() {
        let records = chain(5);
        let cps = [checkpoint(&records[2], true), checkpoint(&records[4], true)];
        let head = (5, records[4].hash);
        let v = verify_chain(records.clone(), &cps, sig_ok, Some(head)).unwrap();
        assert_eq!(v.head, Some(head));
        assert_eq!(v.records, 5);
        assert_eq!(v.checkpoints, 2);
        let empty = verify_chain(Vec::new(), &[], sig_ok, None).unwrap();
        assert_eq!(empty.head, None);
    }

    #[test]
    fn faults_are_named() {
        let records = chain(5);

        let mut edited = records.clone();
        edited[2].entry.decision = "deny".into();
        assert_eq!(
            verify_chain(edited, &[], sig_ok, None),
            Err(AuditError::Edited { seq: 3 })
        );

        let mut deleted = records.clone();
        deleted.remove(1);
        assert_eq!(
            verify_chain(deleted, &[], sig_ok, None),
            Err(AuditError::Deleted {
                after_seq: 1,
                next_seq: 3
            })
        );

        let mut first_gone = records.clone();
        first_gone.remove(0);
        assert_eq!(
            verify_chain(first_gone, &[], sig_ok, None),
            Err(AuditError::Deleted {
                after_seq: 0,
                next_seq: 2
            })
        );

        // Swap the positions (seq values) of records 2 and 3.
        let mut swapped = records.clone();
        swapped.swap(1, 2);
        swapped[1].seq = 2;
        swapped[2].seq = 3;
        assert_eq!(
            verify_chain(swapped, &[], sig_ok, None),
            Err(AuditError::Reordered { seq: 2 })
        );

        // Edit record 2 and recompute its hash: record 3 no longer links.
        let mut rehashed = records.clone();
        rehashed[1].entry.decision = "deny".into();
        rehashed[1].hash = record_hash(2, &rehashed[1].prev_hash, &rehashed[1].entry);
        assert_eq!(
            verify_chain(rehashed, &[], sig_ok, None),
            Err(AuditError::Reordered { seq: 3 })
        );

        let duplicated = [records[0].clone(), records[0].clone()];
        assert_eq!(
            verify_chain(duplicated, &[], sig_ok, None),
            Err(AuditError::Reordered { seq: 1 })
        );
    }

    #[test]
    fn truncation_needs_a_checkpoint_or_head() {
        let records = chain(5);
        let cut: Vec<_> = records[..3].to_vec();
        // Without outside evidence, a cut tail looks like a shorter log.
        assert!(verify_chain(cut.clone(), &[], sig_ok, None).is_ok());
        let cps = [checkpoint(&records[4], true)];
        assert_eq!(
            verify_chain(cut.clone(), &cps, sig_ok, None),
            Err(AuditError::Truncated {
                have_head: 3,
                checkpoint_seq: 5
            })
        );
        assert_eq!(
            verify_chain(cut.clone(), &[], sig_ok, Some((5, records[4].hash))),
            Err(AuditError::Truncated {
                have_head: 3,
                checkpoint_seq: 5
            })
        );
        // A forged checkpoint beyond the end is reported as forged.
        let forged = [checkpoint(&records[4], false)];
        assert!(matches!(
            verify_chain(cut, &forged, sig_ok, None),
            Err(AuditError::BadCheckpoint { seq: 5, .. })
        ));
    }

    #[test]
    fn checkpoints_and_heads_catch_a_rewritten_log() {
        let records = chain(4);
        // Rewrite record 2 and rehash everything after it: the chain itself
        // is consistent again, only outside evidence can tell.
        let mut rewritten = records.clone();
        rewritten[1].entry.reason = Some("rewritten".into());
        for i in 1..rewritten.len() {
            let prev = rewritten[i - 1].hash;
            rewritten[i].prev_hash = prev;
            rewritten[i].hash = record_hash(rewritten[i].seq, &prev, &rewritten[i].entry);
        }
        assert!(verify_chain(rewritten.clone(), &[], sig_ok, None).is_ok());
        let cps = [checkpoint(&records[2], true)];
        assert_eq!(
            verify_chain(rewritten.clone(), &cps, sig_ok, None),
            Err(AuditError::BadCheckpoint {
                seq: 3,
                reason: "its hash is not the record's"
            })
        );
        assert_eq!(
            verify_chain(rewritten, &[], sig_ok, Some((4, records[3].hash))),
            Err(AuditError::HeadMismatch { seq: 4 })
        );
        let bad_sig = [checkpoint(&records[1], false)];
        assert_eq!(
            verify_chain(records, &bad_sig, sig_ok, None),
            Err(AuditError::BadCheckpoint {
                seq: 2,
                reason: "its signature does not verify"
            })
        );
    }

    #[test]
    fn oversized_fields_are_named() {
        let mut e = entry(1, "x");
        assert_eq!(e.oversized_field(), None);
        e.path = Some("/".repeat(MAX_FIELD_BYTES + 1));
        assert_eq!(e.oversized_field(), Some("path"));
    }

    #[test]
    fn checkpoint_signing_input_covers_every_field() {
        let records = chain(1);
        let a = checkpoint(&records[0], true);
        let mut b = a.clone();
        b.kid = "k2".into();
        assert_ne!(a.signing_input(), b.signing_input());
        let mut c = a.clone();
        c.at += 1;
        assert_ne!(a.signing_input(), c.signing_input());
        // The signature itself is not signed.
        let mut d = a.clone();
        d.signature = b"other".to_vec();
        assert_eq!(a.signing_input(), d.signing_input());
    }
}
