//! Client request ids (docs/api.md, "Retries and request ids"): a request that acted claims
//! its caller's `request_id` in the transaction of its change and record, and its answer is
//! kept once it is made, so that a retry within the retention window gets that answer instead
//! of acting again, across restarts.

use rusqlite::{Connection, OptionalExtension, params};

use super::CachedSql;
use super::{RetryStore, SqliteStore, StoreError};
use crate::audit::RetryClaim;

/// What a request that acted answered, kept for its retries: the reply's encoded protobuf
/// message, or the status of a failure that came after it acted. Neither holds a secret in
/// the clear (docs/api.md says what each RPC's answer carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptAnswer {
    /// The reply message, encoded.
    Reply(Vec<u8>),
    /// The status the request failed with.
    Status {
        /// The gRPC status code number.
        code: i32,
        /// Its message.
        message: String,
        /// Its details (an encoded `google.rpc.Status`'s details; empty for none).
        details: Vec<u8>,
    },
}

/// An answer to keep for a claimed request id: see [`RetryStore::keep_answers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAnswer {
    /// The caller (identity URI).
    pub actor: String,
    /// Their request id.
    pub client_request_id: String,
    /// The node's id of the request that answered.
    pub request_id: String,
    /// What it answered.
    pub answer: KeptAnswer,
}

/// A claimed request id, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// The RPC it was claimed at.
    pub rpc: String,
    /// SHA-256 of the body that came with it, 64 hex digits.
    pub body_sha256: String,
    /// The node's id of the request that claimed it (its records carry it).
    pub request_id: String,
    /// Unix seconds after which the id is free again.
    pub expires_at: u64,
    /// What that request answered; `None` when it stopped (a crash) between its change and
    /// keeping its answer.
    pub answer: Option<KeptAnswer>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn secs(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Claims `claim`'s request id for request `request_id` of `actor`, inside the transaction
/// that writes the request's record (and its change). A later write of the same request (its
/// ceremony's run) finds its own claim and leaves it; an unexpired claim of another request
/// fails the write ([`StoreError::RequestIdTaken`]), so that two requests with one id never
/// both act, whatever the callers' timing; an expired one is replaced.
pub(super) fn claim_in(
    tx: &Connection,
    actor: &str,
    request_id: &str,
    claim: &RetryClaim,
) -> Result<(), StoreError> {
    let context = "claiming a client request id";
    let held: Option<(String, i64)> = tx
        .query_row_cached(
            "SELECT request_id, expires_at FROM client_requests \
             WHERE actor = ?1 AND client_request_id = ?2",
            params![actor, claim.client_request_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(StoreError::sqlite(context))?;
    match held {
        Some((holder, _)) if holder == request_id => return Ok(()),
        Some((holder, expires_at)) if expires_at > secs(now_secs()) => {
            return Err(StoreError::RequestIdTaken {
                client_request_id: claim.client_request_id.clone(),
                request_id: holder,
            });
        }
        _ => {}
    }
    tx.execute_cached(
        "INSERT OR REPLACE INTO client_requests \
         (actor, client_request_id, rpc, body_sha256, request_id, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            actor,
            claim.client_request_id,
            claim.rpc,
            claim.body_sha256,
            request_id,
            secs(claim.expires_at)
        ],
    )
    .map_err(StoreError::sqlite(context))?;
    Ok(())
}

impl RetryStore for SqliteStore {
    fn client_request(
        &self,
        actor: &str,
        client_request_id: &str,
        now: u64,
    ) -> Result<Option<ClientRequest>, StoreError> {
        let conn = self.lock()?;
        type Row = (
            String,
            String,
            String,
            i64,
            Option<Vec<u8>>,
            Option<i64>,
            Option<String>,
            Option<Vec<u8>>,
        );
        let row: Option<Row> = conn
            .query_row_cached(
                "SELECT rpc, body_sha256, request_id, expires_at, answer, code, message, details \
                 FROM client_requests \
                 WHERE actor = ?1 AND client_request_id = ?2 AND expires_at > ?3",
                params![actor, client_request_id, secs(now)],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                },
            )
            .optional()
            .map_err(StoreError::sqlite("reading a client request id"))?;
        let Some((rpc, body_sha256, request_id, expires_at, reply, code, message, details)) = row
        else {
            return Ok(None);
        };
        let answer = match (reply, code) {
            (Some(reply), None) => Some(KeptAnswer::Reply(reply)),
            (None, Some(code)) => Some(KeptAnswer::Status {
                code: i32::try_from(code).map_err(|_| StoreError::Corrupt {
                    id: format!("client request {client_request_id}"),
                    what: format!("status code {code} is out of range"),
                })?,
                message: message.unwrap_or_default(),
                details: details.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(Some(ClientRequest {
            rpc,
            body_sha256,
            request_id,
            expires_at: u64::try_from(expires_at).unwrap_or(0),
            answer,
        }))
    }

    fn keep_answers(&self, answers: &[RetryAnswer]) -> Result<usize, StoreError> {
        if answers.is_empty() {
            return Ok(0);
        }
        let context = "keeping the answer of a client request";
        self.write(context, |tx| {
            let mut kept = 0;
            for a in answers {
                let (reply, code, message, details) = match &a.answer {
                    KeptAnswer::Reply(bytes) => (Some(bytes.as_slice()), None, None, None),
                    KeptAnswer::Status {
                        code,
                        message,
                        details,
                    } => (
                        None,
                        Some(i64::from(*code)),
                        Some(message.as_str()),
                        Some(details.as_slice()),
                    ),
                };
                kept += tx
                    .execute_cached(
                        "UPDATE client_requests \
                         SET answer = ?4, code = ?5, message = ?6, details = ?7 \
                         WHERE actor = ?1 AND client_request_id = ?2 AND request_id = ?3 \
                         AND answer IS NULL AND code IS NULL",
                        params![
                            a.actor,
                            a.client_request_id,
                            a.request_id,
                            reply,
                            code,
                            message,
                            details
                        ],
                    )
                    .map_err(StoreError::sqlite(context))?;
            }
            Ok(kept)
        })
    }

    fn forget_client_requests(&self, now: u64) -> Result<usize, StoreError> {
        self.write("forgetting expired client request ids", |tx| {
            tx.execute_cached(
                "DELETE FROM client_requests WHERE expires_at <= ?1",
                params![secs(now)],
            )
            .map_err(StoreError::sqlite("forgetting expired client request ids"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditDraft;
    use crate::store::test_support::root_record;
    use crate::store::{AuditLog, KeyRegistry};

    const ME: &str = "hkms://officer/national/000000/a";

    fn draft(request_id: &str, client_request_id: &str, expires_at: u64) -> AuditDraft {
        AuditDraft {
            request_id: request_id.into(),
            actor: ME.into(),
            rpc: "GenerateKey".into(),
            retry: Some(RetryClaim {
                client_request_id: client_request_id.into(),
                rpc: "GenerateKey".into(),
                body_sha256: "ab".repeat(32),
                expires_at,
            }),
            ..AuditDraft::default()
        }
    }

    fn later() -> u64 {
        now_secs() + 3600
    }

    #[test]
    fn a_claim_is_written_with_the_change_and_its_record() {
        let store = SqliteStore::open_in_memory().unwrap();
        let key = root_record("card-master");
        store
            .insert_key_audited(&key, &draft("r-1", "retry-1", later()))
            .unwrap();
        let kept = store
            .client_request(ME, "retry-1", now_secs())
            .unwrap()
            .unwrap();
        assert_eq!(kept.request_id, "r-1");
        assert_eq!(kept.rpc, "GenerateKey");
        assert_eq!(kept.answer, None, "no answer until it is kept");
        // Scoped to the caller.
        assert_eq!(
            store
                .client_request("hkms://officer/national/000000/b", "retry-1", now_secs())
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_second_request_with_a_claimed_id_writes_nothing() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .insert_key_audited(
                &root_record("card-master"),
                &draft("r-1", "retry-1", later()),
            )
            .unwrap();
        let second = root_record("pin-unblock");
        let err = store
            .insert_key_audited(&second, &draft("r-2", "retry-1", later()))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::RequestIdTaken { request_id, .. } if request_id == "r-1"),
            "{err}"
        );
        assert_eq!(store.get_key(&second.id).unwrap(), None, "no change");
        assert_eq!(store.audit_head().unwrap().unwrap().0, 1, "no record");
        // The same request writes again (a ceremony's run after its approval): its own claim.
        store
            .append_audit(&draft("r-1", "retry-1", later()))
            .unwrap();
    }

    #[test]
    fn an_expired_claim_is_free_again_and_swept() {
        let store = SqliteStore::open_in_memory().unwrap();
        let past = now_secs() - 1;
        store.append_audit(&draft("r-1", "old", past)).unwrap();
        assert_eq!(store.client_request(ME, "old", now_secs()).unwrap(), None);
        store.append_audit(&draft("r-2", "old", later())).unwrap();
        let kept = store
            .client_request(ME, "old", now_secs())
            .unwrap()
            .unwrap();
        assert_eq!(kept.request_id, "r-2", "the expired claim was replaced");

        store.append_audit(&draft("r-3", "gone", past)).unwrap();
        assert_eq!(store.forget_client_requests(now_secs()).unwrap(), 1);
        assert_eq!(store.forget_client_requests(now_secs()).unwrap(), 0);
        assert!(
            store
                .client_request(ME, "old", now_secs())
                .unwrap()
                .is_some()
        );
    }

    fn keep(store: &SqliteStore, id: &str, request_id: &str, answer: &KeptAnswer) -> usize {
        store
            .keep_answers(&[RetryAnswer {
                actor: ME.into(),
                client_request_id: id.into(),
                request_id: request_id.into(),
                answer: answer.clone(),
            }])
            .unwrap()
    }

    #[test]
    fn an_answer_is_kept_once_by_the_request_that_claimed_the_id() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.append_audit(&draft("r-1", "x", later())).unwrap();
        let reply = KeptAnswer::Reply(vec![1, 2, 3]);
        assert_eq!(keep(&store, "x", "r-2", &reply), 0, "not r-2's");
        assert_eq!(keep(&store, "x", "r-1", &reply), 1);
        let failed = KeptAnswer::Status {
            code: 9,
            message: "m".into(),
            details: vec![],
        };
        assert_eq!(keep(&store, "x", "r-1", &failed), 0, "kept once");
        let kept = store.client_request(ME, "x", now_secs()).unwrap().unwrap();
        assert_eq!(kept.answer, Some(reply));

        store.append_audit(&draft("r-3", "y", later())).unwrap();
        assert_eq!(keep(&store, "y", "r-3", &failed), 1);
        let kept = store.client_request(ME, "y", now_secs()).unwrap().unwrap();
        assert_eq!(kept.answer, Some(failed));
        assert_eq!(store.keep_answers(&[]).unwrap(), 0);
    }

    #[test]
    fn a_record_without_a_claim_claims_nothing() {
        let store = SqliteStore::open_in_memory().unwrap();
        let plain = AuditDraft {
            retry: None,
            ..draft("r-1", "x", later())
        };
        store.append_audit(&plain).unwrap();
        assert_eq!(store.client_request(ME, "x", now_secs()).unwrap(), None);
    }
}
