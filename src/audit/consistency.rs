//! What a witness checks before it cosigns: that the record lines a node sends extend, hash by
//! hash, the point of its log the witness verified last, and end on the checkpoint's head.
//! Pure: the witness's state in, its new state or the reason for a refusal out.

use super::Checkpoint;
use super::record::{GENESIS, line_hash};

/// How far a witness has verified one node's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// SHA-256 of the node's audit key (SPKI DER, uppercase hex), pinned at first contact.
    pub node_key_sha256: String,
    /// The last record verified (0: none yet).
    pub seq: u64,
    /// Its hash (`GENESIS` when `seq` is 0).
    pub head: String,
}

/// Why lines or a checkpoint do not extend what the witness saw: a rewrite, a fork or a
/// rollback (the first kind is an alert), or a request that is just malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Inconsistency {
    /// The node's log no longer extends what the witness verified.
    #[error("{0}")]
    NotExtending(String),
    /// The request itself is wrong (lines out of range, not records).
    #[error("{0}")]
    Malformed(String),
}

/// Checks `lines` (record lines from `from_seq`) against `state` and `checkpoint`; returns the
/// new state. The checkpoint's signature and key are checked by the caller.
pub fn extend(
    state: &Verified,
    checkpoint: &Checkpoint,
    from_seq: u64,
    lines: &[String],
) -> Result<Verified, Inconsistency> {
    if checkpoint.seq < state.seq {
        return Err(Inconsistency::NotExtending(format!(
            "checkpoint {} is behind record {} that this witness verified of the log: the log \
             was cut back (a rollback)",
            checkpoint.seq, state.seq
        )));
    }
    if lines.is_empty() {
        if checkpoint.seq == state.seq && checkpoint.head != state.head {
            return Err(Inconsistency::NotExtending(format!(
                "checkpoint {} names head {}, but this witness verified record {} with hash {}: \
                 the log was rewritten",
                checkpoint.seq, checkpoint.head, state.seq, state.head
            )));
        }
        return Ok(state.clone());
    }
    if from_seq != state.seq + 1 {
        return Err(Inconsistency::Malformed(format!(
            "the lines start at record {from_seq}; this witness needs them from record {}",
            state.seq + 1
        )));
    }
    let last = from_seq + lines.len() as u64 - 1;
    if last > checkpoint.seq {
        return Err(Inconsistency::Malformed(format!(
            "the lines go to record {last}, past the checkpoint's record {}",
            checkpoint.seq
        )));
    }
    let mut prev = if state.seq == 0 {
        GENESIS.to_string()
    } else {
        state.head.clone()
    };
    for (i, line) in lines.iter().enumerate() {
        let seq = from_seq + i as u64;
        let (line_seq, line_prev) = seq_and_prev(line).ok_or_else(|| {
            Inconsistency::Malformed(format!("line {} is not a record line", i + 1))
        })?;
        if line_seq != seq {
            return Err(Inconsistency::Malformed(format!(
                "line {} is record {line_seq}, expected record {seq}",
                i + 1
            )));
        }
        if line_prev != prev {
            return Err(Inconsistency::NotExtending(format!(
                "record {seq} does not chain to record {} that this witness verified: the log \
                 was rewritten or forked",
                seq - 1
            )));
        }
        prev = line_hash(line);
    }
    if last == checkpoint.seq && prev != checkpoint.head {
        return Err(Inconsistency::NotExtending(format!(
            "record {last} does not hash to the checkpoint's head: the checkpoint does not \
             cover these records"
        )));
    }
    Ok(Verified {
        node_key_sha256: state.node_key_sha256.clone(),
        seq: last,
        head: prev,
    })
}

/// The `seq` and `prev` of a record line, read as JSON.
fn seq_and_prev(line: &str) -> Option<(u64, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some((
        v.get("seq")?.as_u64()?,
        v.get("prev")?.as_str()?.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, prev: &str) -> String {
        format!("{{\"v\":1,\"seq\":{seq},\"actor\":\"a{seq}\",\"prev\":\"{prev}\"}}")
    }

    /// A log of `n` lines, chained from genesis.
    fn log(n: u64) -> Vec<String> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_string();
        for seq in 1..=n {
            let l = line(seq, &prev);
            prev = line_hash(&l);
            out.push(l);
        }
        out
    }

    fn checkpoint(seq: u64, head: &str) -> Checkpoint {
        Checkpoint {
            v: 1,
            seq,
            head: head.to_string(),
            time: String::new(),
            node: "n".into(),
            key_fingerprint: String::new(),
            signature: String::new(),
        }
    }

    fn start() -> Verified {
        Verified {
            node_key_sha256: "K".into(),
            seq: 0,
            head: GENESIS.into(),
        }
    }

    #[test]
    fn lines_in_chunks_reach_the_checkpoint() {
        let l = log(5);
        let cp = checkpoint(5, &line_hash(&l[4]));
        let s = extend(&start(), &cp, 1, &l[..2]).unwrap();
        assert_eq!(s.seq, 2);
        let s = extend(&s, &cp, 3, &l[2..]).unwrap();
        assert_eq!((s.seq, s.head.as_str()), (5, cp.head.as_str()));
        // Nothing new: the same checkpoint again is fine.
        assert_eq!(extend(&s, &cp, 6, &[]).unwrap(), s);
    }

    #[test]
    fn a_rewritten_record_a_cut_log_and_a_wrong_head_are_refused() {
        let l = log(6);
        let s = extend(&start(), &checkpoint(3, &line_hash(&l[2])), 1, &l[..3]).unwrap();
        // Record 3 rewritten, and 4 re-chained to it.
        let forged3 = line(3, &line_hash(&l[1])).replace("a3", "evil");
        let forged4 = line(4, &line_hash(&forged3));
        let cp = checkpoint(4, &line_hash(&forged4));
        let e = extend(&s, &cp, 4, &[forged4]).unwrap_err();
        assert!(matches!(e, Inconsistency::NotExtending(_)), "{e}");
        // Cut back to record 2, then grown again: behind, or not chaining.
        let e = extend(&s, &checkpoint(2, &line_hash(&l[1])), 3, &[]).unwrap_err();
        assert!(e.to_string().contains("rollback"), "{e}");
        let e = extend(&s, &checkpoint(3, "00"), 4, &[]).unwrap_err();
        assert!(e.to_string().contains("rewritten"), "{e}");
        // A head the lines do not reach.
        let e = extend(&s, &checkpoint(4, "00"), 4, &l[3..4]).unwrap_err();
        assert!(matches!(e, Inconsistency::NotExtending(_)), "{e}");
    }

    #[test]
    fn lines_out_of_place_are_malformed() {
        let l = log(4);
        let cp = checkpoint(3, &line_hash(&l[2]));
        let e = extend(&start(), &cp, 2, &l[1..3]).unwrap_err();
        assert!(matches!(e, Inconsistency::Malformed(_)), "{e}");
        let e = extend(&start(), &cp, 1, &l).unwrap_err();
        assert!(matches!(e, Inconsistency::Malformed(_)), "{e}");
        let e = extend(&start(), &cp, 1, &["junk".to_string()]).unwrap_err();
        assert!(matches!(e, Inconsistency::Malformed(_)), "{e}");
    }
}
