//! What others vouch for about a node's log: a witness's **cosignature** of one of its
//! checkpoints, and the node's signed **export statement** of its head when a bundle is made.
//! A node's host holds the node's audit key and can re-sign a rewritten log with it; it holds
//! no witness's key, so a rewrite, fork or rollback behind a cosigned checkpoint shows.
//! Formats: docs/audit-format.md §7 and §8.

use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Format version of cosignatures and statements.
pub const WITNESS_FORMAT_VERSION: u32 = 1;

/// A witness's signature over one checkpoint of another node's log: "I saw `node`'s log, signed
/// by the key `node_key_sha256`, reach record `seq` with hash `head`, extending everything I saw
/// of it before". One line of compact JSON in `cosignatures.jsonl`, fields in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cosignature {
    /// Format version, 1.
    pub v: u32,
    /// The witnessed node's name, as in its checkpoints.
    pub node: String,
    /// The checkpoint's record.
    pub seq: u64,
    /// The checkpoint's head: the hash of record `seq`'s line.
    pub head: String,
    /// SHA-256 of the witnessed node's audit key (SPKI DER), 64 uppercase hex digits.
    pub node_key_sha256: String,
    /// The witness's node name.
    pub witness: String,
    /// The witness's audit public key: SPKI DER, hex (an auditor pins its SHA-256).
    pub witness_key: String,
    /// When the witness signed (RFC 3339 UTC, milliseconds).
    pub time: String,
    /// ECDSA P-256 / SHA-256 over [`Cosignature::signed_message`], DER, hex.
    pub signature: String,
}

impl Cosignature {
    /// The exact bytes a witness signs (no trailing newline).
    pub fn message(
        node: &str,
        seq: u64,
        head: &str,
        node_key_sha256: &str,
        witness: &str,
        time: &str,
    ) -> String {
        format!("hkms-audit-cosignature/v1 {node} {seq} {head} {node_key_sha256} {witness} {time}")
    }

    /// The bytes this cosignature's signature covers.
    pub fn signed_message(&self) -> String {
        Cosignature::message(
            &self.node,
            self.seq,
            &self.head,
            &self.node_key_sha256,
            &self.witness,
            &self.time,
        )
    }

    /// SHA-256 of the witness's key (64 uppercase hex digits, as `bundle::spki_sha256`), or
    /// why it is not a key. Computed here so that this module needs nothing of the bundle's,
    /// which holds cosignatures.
    pub fn witness_key_sha256(&self) -> Result<String, String> {
        let der = self.witness_key_der()?;
        Ok(hex::encode_upper(Sha256::digest(&der)))
    }

    fn witness_key_der(&self) -> Result<Vec<u8>, String> {
        hex::decode(&self.witness_key).map_err(|e| format!("witness_key is not hex: {e}"))
    }

    /// Checks the signature with the witness key the cosignature carries; pin that key's
    /// SHA-256 separately ([`Cosignature::witness_key_sha256`]).
    pub fn verify(&self) -> Result<(), String> {
        let der = self.witness_key_der()?;
        let point = ec_point_of_spki(&der)?;
        verify_der_signature(&point, self.signed_message().as_bytes(), &self.signature)
    }

    /// The compact JSON line (without newline).
    pub fn to_line(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses one line of `cosignatures.jsonl`.
    pub fn from_line(line: &str) -> Result<Cosignature, String> {
        let c: Cosignature =
            serde_json::from_str(line).map_err(|e| format!("not a cosignature: {e}"))?;
        if c.v != WITNESS_FORMAT_VERSION {
            return Err(format!("cosignature format version {} is unknown", c.v));
        }
        Ok(c)
    }
}

/// The node's signed statement, made when a bundle is exported, that its log's head was record
/// `seq` with hash `head` at `time`. A bundle that stops before the head it states, or a head
/// behind what a witness cosigned, shows a cut log. `statement.json`, one compact JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportStatement {
    /// Format version, 1.
    pub v: u32,
    /// The node's name.
    pub node: String,
    /// The log's last record at export.
    pub seq: u64,
    /// The hash of that record's line.
    pub head: String,
    /// When the statement was signed (RFC 3339 UTC, milliseconds).
    pub time: String,
    /// Fingerprint of the node's audit key, as in checkpoints.
    pub key_fingerprint: String,
    /// ECDSA P-256 / SHA-256 over [`ExportStatement::signed_message`] with the node's audit
    /// key, DER, hex.
    pub signature: String,
}

impl ExportStatement {
    /// The exact bytes the node signs (no trailing newline).
    pub fn message(node: &str, seq: u64, head: &str, time: &str) -> String {
        format!("hkms-audit-statement/v1 {node} {seq} {head} {time}")
    }

    /// The bytes this statement's signature covers.
    pub fn signed_message(&self) -> String {
        ExportStatement::message(&self.node, self.seq, &self.head, &self.time)
    }

    /// Checks the signature with the node's key, its SPKI DER (`bundle::public_key_point`
    /// reads it from a PEM).
    pub fn verify(&self, node_spki_der: &[u8]) -> Result<(), String> {
        let point = ec_point_of_spki(node_spki_der)?;
        verify_der_signature(&point, self.signed_message().as_bytes(), &self.signature)
    }

    /// The compact JSON line (without newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses `statement.json`.
    pub fn from_line(line: &str) -> Result<ExportStatement, String> {
        let s: ExportStatement =
            serde_json::from_str(line.trim()).map_err(|e| format!("not a statement: {e}"))?;
        if s.v != WITNESS_FORMAT_VERSION {
            return Err(format!("statement format version {} is unknown", s.v));
        }
        Ok(s)
    }
}

/// The EC point of a P-256 SPKI DER (the fixed 26-byte prefix, then 65 bytes).
fn ec_point_of_spki(der: &[u8]) -> Result<Vec<u8>, String> {
    const PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
    let prefix = hex::decode(PREFIX).unwrap_or_default();
    match der.strip_prefix(prefix.as_slice()) {
        Some(point) if point.len() == 65 && point[0] == 4 => Ok(point.to_vec()),
        _ => Err("the key is not an uncompressed P-256 SPKI".into()),
    }
}

fn verify_der_signature(point: &[u8], message: &[u8], signature_hex: &str) -> Result<(), String> {
    let signature =
        hex::decode(signature_hex).map_err(|e| format!("the signature is not hex: {e}"))?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
        .verify(message, &signature)
        .map_err(|_| "the signature does not verify".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_refuse_unknown_fields() {
        let c = Cosignature {
            v: 1,
            node: "guangzhou".into(),
            seq: 40,
            head: "ab".repeat(32),
            node_key_sha256: "CD".repeat(32),
            witness: "guangdong".into(),
            witness_key: "00".into(),
            time: "2026-03-01T09:00:00.000Z".into(),
            signature: "30".into(),
        };
        assert_eq!(Cosignature::from_line(&c.to_line()).unwrap(), c);
        let extra = c.to_line().replace("\"v\":1", "\"v\":1,\"x\":2");
        assert!(Cosignature::from_line(&extra).is_err());
        assert!(c.verify().is_err(), "a key of one zero byte is no key");
        assert_eq!(
            c.signed_message(),
            format!(
                "hkms-audit-cosignature/v1 guangzhou 40 {} {} guangdong 2026-03-01T09:00:00.000Z",
                "ab".repeat(32),
                "CD".repeat(32)
            )
        );
    }
}
