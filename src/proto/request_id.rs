//! The API's mutating requests and their client-chosen `request_id`: what makes a retry safe
//! (docs/api.md, "Retries and request ids").
//!
//! A retry is the same request again: the node compares what the caller sent the second time
//! with what it sent the first, by [`Mutating::body_sha256`]. The hash covers every field but
//! `request_id` itself and the secrets (PINs, key components, ID numbers): the node keeps the
//! hash for the retention window, and a hash of a six-digit PIN or of an ID number beside the
//! request's other fields could be reversed by trying every value.

use prost::Message;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// A request that changes something, which a client makes retry-safe by sending a
/// `request_id`.
pub trait Mutating: Message + Clone + Default {
    /// The `request_id` as sent (empty: none).
    fn request_id(&self) -> &str;

    /// Sets the `request_id` (a client does, before the first try).
    fn set_request_id(&mut self, id: String);

    /// SHA-256 of what a retry must repeat: the message's name and its fields, without
    /// `request_id` and without the secrets, which the node must not keep in any form.
    fn body_sha256(&self) -> [u8; 32];

    /// Wipes the secret fields (a client's copy kept for retries, once it is done with it).
    fn wipe_secrets(&mut self);
}

/// SHA-256 of a message's name and its encoding (prost writes fields in number order, so one
/// message has one encoding, maps aside).
fn digest(name: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    for part in parts {
        h.update([0]);
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Implements [`Mutating`] for messages without a map field, naming the fields left out of
/// the hash as secrets.
macro_rules! mutating {
    ($($msg:ident { $($secret:ident),* }),* $(,)?) => {$(
        impl Mutating for super::$msg {
            fn request_id(&self) -> &str {
                &self.request_id
            }

            fn set_request_id(&mut self, id: String) {
                self.request_id = id;
            }

            fn body_sha256(&self) -> [u8; 32] {
                let mut body = self.clone();
                body.request_id.clear();
                // Wiped, not only cleared: the copy held the secret for a moment.
                body.wipe_secrets();
                digest(stringify!($msg), &[&body.encode_to_vec()])
            }

            fn wipe_secrets(&mut self) {
                $( self.$secret.zeroize(); )*
            }
        }
    )*};
}

mutating! {
    GenerateKeyRequest {},
    DeriveSubKeyRequest {},
    ChangeKeyStateRequest {},
    CeremonyId {},
    EnterComponentRequest { component },
    ReloadPolicyRequest {},
    IssueCardRequest { card_pin },
    LoadCardRequest { card_pin, card_so_pin },
    ExportKeyRequest {},
    ImportKeyRequest {},
    CardCommandRequest { pin, cardholder_id, agent_id },
}

impl Mutating for super::OpenCeremonyRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn set_request_id(&mut self, id: String) {
        self.request_id = id;
    }

    /// The parameters are a map, which prost encodes in the map's own order: they are hashed
    /// sorted by name, after the other fields.
    fn body_sha256(&self) -> [u8; 32] {
        let mut body = self.clone();
        body.request_id.clear();
        let params: std::collections::BTreeMap<String, String> =
            std::mem::take(&mut body.params).into_iter().collect();
        let mut parts = vec![body.encode_to_vec()];
        for (name, value) in params {
            parts.push(name.into_bytes());
            parts.push(value.into_bytes());
        }
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        digest("OpenCeremonyRequest", &parts)
    }

    fn wipe_secrets(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::Mutating;

    #[test]
    fn the_request_id_is_not_part_of_the_body() {
        let a = GenerateKeyRequest {
            key_type: "card-master".into(),
            request_id: "a".into(),
        };
        let b = GenerateKeyRequest {
            request_id: "b".into(),
            ..a.clone()
        };
        assert_eq!(a.body_sha256(), b.body_sha256());
        let other = GenerateKeyRequest {
            key_type: "pin-unblock".into(),
            ..a.clone()
        };
        assert_ne!(a.body_sha256(), other.body_sha256());
    }

    #[test]
    fn messages_of_the_same_bytes_but_another_kind_differ() {
        // `CeremonyId { id }` and `ImportKeyRequest { package }` both encode as field 1.
        let approve = CeremonyId {
            id: "c-1".into(),
            request_id: String::new(),
        };
        let import = ImportKeyRequest {
            package: b"c-1".to_vec(),
            request_id: String::new(),
        };
        assert_ne!(approve.body_sha256(), import.body_sha256());
    }

    #[test]
    fn secrets_are_left_out() {
        let card = |pin: &str, id: &str, serial: &str| CardCommandRequest {
            card_serial: serial.into(),
            challenge: "0011223344556677".into(),
            pin: pin.into(),
            served_by: "counter-1".into(),
            cardholder_id: id.into(),
            agent_id: String::new(),
            request_id: "r".into(),
        };
        assert_eq!(
            card("123456", "440101199001011234", "0102030405060708").body_sha256(),
            card("654321", "440101199001015678", "0102030405060708").body_sha256()
        );
        assert_ne!(
            card("123456", "x", "0102030405060708").body_sha256(),
            card("123456", "x", "0102030405060709").body_sha256()
        );
        let load = |pin: &str, so: &str| LoadCardRequest {
            card_label: "card".into(),
            card_pin: pin.into(),
            card_so_pin: so.into(),
            ..LoadCardRequest::default()
        };
        assert_eq!(load("1", "2").body_sha256(), load("3", "4").body_sha256());
        let component = |c: &[u8]| EnterComponentRequest {
            id: "c-1".into(),
            component: c.to_vec(),
            kcv: "ABCDEF".into(),
            request_id: String::new(),
        };
        assert_eq!(
            component(b"one").body_sha256(),
            component(b"two").body_sha256()
        );
        let mut sent = card("123456", "440101199001011234", "0102030405060708");
        sent.wipe_secrets();
        assert_eq!(
            (sent.pin.as_str(), sent.cardholder_id.as_str()),
            ("", ""),
            "a client's kept copy is wiped"
        );
        assert_eq!(sent.card_serial, "0102030405060708");
    }

    #[test]
    fn ceremony_parameters_count_whatever_their_order() {
        let open = |pairs: &[(&str, &str)]| OpenCeremonyRequest {
            operation: Operation::Manage.into(),
            params: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            request_id: "r".into(),
        };
        let many: Vec<(String, String)> = (0..40)
            .map(|i| (format!("p{i}"), format!("v{i}")))
            .collect();
        let forward: Vec<(&str, &str)> = many.iter().map(|(k, v)| (&**k, &**v)).collect();
        let backward: Vec<(&str, &str)> = forward.iter().rev().copied().collect();
        assert_eq!(open(&forward).body_sha256(), open(&backward).body_sha256());
        // A name and a value do not run into each other.
        assert_ne!(
            open(&[("ab", "c")]).body_sha256(),
            open(&[("a", "bc")]).body_sha256()
        );
        assert_ne!(
            open(&[("key_id", "k-1")]).body_sha256(),
            open(&[("key_id", "k-2")]).body_sha256()
        );
    }

    #[test]
    fn a_client_sets_the_id_it_sends() {
        let mut r = ReloadPolicyRequest::default();
        assert_eq!(r.request_id(), "");
        r.set_request_id("retry-1".into());
        assert_eq!(r.request_id(), "retry-1");
    }
}
