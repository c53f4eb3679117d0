//! The seam between hkms and whatever holds its keys: [`Token`] is every operation the node,
//! the server and the CLI ask of a token, in hkms's own types. [`Pkcs11Token`] (SoftHSM2 today)
//! is its first implementation; a second PKCS#11 token with other quirks, or a vendor HSM
//! with its own API, is another. What a token can do is described by its
//! [`Capabilities`], asked from the token itself, never inferred from its name.
//!
//! The trait is object safe: the node core can hold an `Arc<dyn Token>`.

use secrecy::SecretString;

use crate::card::{BLOCK, CHALLENGE_LEN, CardCommand};
use crate::hierarchy::{Algorithm, Factor, Kcv};

use super::id_mac::{ID_MAC_LEN, IdMacKey};
use super::transport::CardToken;
use super::{Capabilities, HsmError, ObjectFacts, Pkcs11Token, SecretKeySpec};

/// A token that holds hkms's keys and computes with them; keys never leave it in clear.
///
/// Keys are named by their label (`CKA_LABEL` on a PKCS#11 token), unique on the token. Every
/// call blocks until the token answered: async callers use `spawn_blocking`. A method fails
/// with [`HsmError`], whose [`kind`](HsmError::kind) says whether to retry, reconfigure or
/// report; a token that lost its connection rebuilds it behind the errors
/// ([`HsmError::Reconnecting`]).
///
/// Security-officer work is one method per use ([`Token::issue_transport_key`]), not a
/// closure over a session: [`Pkcs11Token::with_security_officer`] hands its closure a PKCS#11
/// session, and stays the PKCS#11 token's own.
///
/// The transport-key methods take a [`CardToken`], the PKCS#11 session on a transport key card:
/// a card is itself a PKCS#11 token, and it stays the card handle type until cards get a seam
/// of their own.
pub trait Token: Send + Sync {
    /// What the token is (label, manufacturer, model, serial: for messages only) and what it
    /// offers (mechanisms, key sizes, the RFC 5649 wrap number), as read from the token at
    /// open. Callers ask it, never the token's name, whether something is possible.
    fn capabilities(&self) -> &Capabilities;

    /// Checks that the token answers and its user PIN is not locked, for the health check;
    /// while the connection is lost it drives the rebuild, and fails until that worked.
    fn check_alive(&self) -> Result<(), HsmError>;

    /// (sessions in use, sessions in all): how busy the token is, for metrics and for sizing
    /// batches.
    fn session_use(&self) -> (usize, usize);

    /// Generates the secret key `spec` describes and returns its KCV; on any failure after the
    /// key was made, the key is gone again. For new hierarchy keys.
    fn generate_key(&self, spec: &SecretKeySpec) -> Result<Kcv, HsmError>;

    /// Diversifies the key `parent_label` (of `parent_algorithm`) with `factor` inside the token
    /// into the key `child` describes (docs/design.md §3), and returns the child's KCV. For a
    /// region's or city's key below its parent.
    fn derive_key(
        &self,
        parent_label: &str,
        parent_algorithm: Algorithm,
        factor: &Factor,
        child: &SecretKeySpec,
    ) -> Result<Kcv, HsmError>;

    /// Creates the key `spec` describes from a clear `value` (key entry by components, after
    /// they were combined) and returns its KCV. The value is only read.
    fn import_clear_key(&self, spec: &SecretKeySpec, value: &[u8]) -> Result<Kcv, HsmError>;

    /// The KCV of one clear key component, computed in the token with nothing left behind, so
    /// a custodian can check the component before it is combined.
    fn component_kcv(&self, algorithm: Algorithm, value: &[u8]) -> Result<Kcv, HsmError>;

    /// The KCV of the key `label`, of `algorithm`, already on the token.
    fn kcv(&self, label: &str, algorithm: Algorithm) -> Result<Kcv, HsmError>;

    /// Destroys every object labelled `label`; returns how many there were. For a key whose
    /// creation was not recorded, a revoked transport key, or an orphan.
    fn destroy_key(&self, label: &str) -> Result<usize, HsmError>;

    /// Destroys every secret key without a label (what a crash during a creation leaves, as
    /// hkms labels all it makes); returns how many went. For the orphan clean-up.
    fn destroy_unlabelled_secret_keys(&self) -> Result<usize, HsmError>;

    /// The labels of every secret key on the token, sorted, for the orphan check against the
    /// registry.
    fn secret_key_labels(&self) -> Result<Vec<String>, HsmError>;

    /// The security attributes of every secret and private key on the token, for the
    /// attribute audit ([`super::attribute_audit::check`]).
    fn object_facts(&self) -> Result<Vec<ObjectFacts>, HsmError>;

    /// The public point (uncompressed P-256, 65 bytes) of the ceremony log's signing pair
    /// `label`; with `create`, the pair is made when the token has none (a node's first
    /// start), otherwise its absence is an error.
    fn signing_key(&self, label: &str, create: bool) -> Result<Vec<u8>, HsmError>;

    /// Signs a SHA-256 `digest` with the signing pair `label` (ECDSA P-256); returns r || s,
    /// 64 bytes. For the ceremony log's checkpoints.
    fn sign_digest(&self, label: &str, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError>;

    /// Makes the ID MAC key (`hkms/id-mac`: HMAC-SHA-256, sensitive, never extractable, sign
    /// only, not modifiable) unless the token has it, and checks the one it has against the
    /// attribute audit's rules. Run at start: a second object under the label, a key that
    /// breaks a rule ([`HsmError::UnsafeKey`]) or a token without HMAC-SHA-256
    /// ([`HsmError::Unsupported`]) is an error.
    fn ensure_id_mac_key(&self) -> Result<IdMacKey, HsmError>;

    /// HMAC-SHA-256 of `data` under the ID MAC key, computed in the token: how ID numbers are
    /// recorded, and how an auditor finds the records of one.
    fn id_mac(&self, data: &[u8]) -> Result<[u8; ID_MAC_LEN], HsmError>;

    /// Builds the complete command APDU for one card: derives the card's key from
    /// `master_label` and its `serial`, encrypts `pin_block` and MACs the command over
    /// `challenge`, with the card key gone afterwards. For PIN unblock and reload.
    fn card_command(
        &self,
        command: CardCommand,
        master_label: &str,
        serial: &Factor,
        challenge: &[u8; CHALLENGE_LEN],
        pin_block: &[u8; BLOCK],
    ) -> Result<Vec<u8>, HsmError>;

    /// Derives a card's key from `master_label` and its `serial`, and returns it wrapped under
    /// the personalisation bureau's transport key (`card_id`) with its KCV; the card key is
    /// gone afterwards. For card personalisation.
    fn export_card_key(
        &self,
        master_label: &str,
        serial: &Factor,
        card_id: &str,
    ) -> Result<(Vec<u8>, Kcv), HsmError>;

    /// Tries the known PKCS#11 attacks on throw-away keys made with hkms's templates and
    /// says which the token stops (`probe.rs`); leaves no object behind.
    fn probe_attacks(&self) -> Result<super::ProbeReport, HsmError>;

    /// Seals every issuer's copy of a transport key left modifiable whose card is `registered`
    /// (card ids), so that it can wrap and nothing else, for good; returns how many. Run at
    /// start.
    fn seal_issuer_keys(&self, registered: &[String]) -> Result<usize, HsmError>;

    /// Seals the issuer's copy of the transport key of `card_id` once its card is registered:
    /// from then on no session can change or destroy it.
    fn seal_issuer_key(&self, card_id: &str) -> Result<(), HsmError>;

    /// Issues a transport key for `card_id` onto `card` with the token's security officer
    /// (`so_pin`); returns its KCV here and on the card, which agree.
    fn issue_transport_key(
        &self,
        so_pin: &SecretString,
        card: &CardToken,
        card_id: &str,
    ) -> Result<(Kcv, Kcv), HsmError>;

    /// The KCV of the transport key of `card_id` on `card`, to compare with the issuer's before
    /// loading it.
    fn card_transport_kcv(&self, card: &CardToken, card_id: &str) -> Result<Kcv, HsmError>;

    /// Loads the transport key of `card_id` from `card` into this token, the card's security
    /// officer (`card_so_pin`) trusting this token's wrapping key for it; returns its KCV here
    /// and on the card; a node's copy unwraps only diversified sub-keys. The card keeps its
    /// copy until [`Token::spend_card_copy`].
    fn load_transport_key(
        &self,
        card: &CardToken,
        card_so_pin: &SecretString,
        card_id: &str,
    ) -> Result<(Kcv, Kcv), HsmError>;

    /// Destroys the card's copy of the transport key of `card_id`, once this token's copy is
    /// registered.
    fn spend_card_copy(&self, card: &CardToken, card_id: &str) -> Result<(), HsmError>;

    /// Wraps the key `key_label` under the transport key of `card_id` (RFC 5649), for a key
    /// package.
    fn wrap_for_transport(&self, card_id: &str, key_label: &str) -> Result<Vec<u8>, HsmError>;

    /// The MAC (AES-CMAC, 16 bytes) of a key package's `data`, with the key derived for that
    /// purpose from the transport key of `card_id`.
    fn package_mac(&self, card_id: &str, data: &[u8]) -> Result<Vec<u8>, HsmError>;

    /// Unwraps a package's key under the transport key of `card_id` into the key `spec`
    /// describes; returns its KCV. On any failure nothing is left on the token.
    fn unwrap_from_transport(
        &self,
        card_id: &str,
        wrapped: &[u8],
        spec: &SecretKeySpec,
    ) -> Result<Kcv, HsmError>;

    /// Keeps the token from re-initialising its module while the hold lives: a card job holds
    /// it, since card sessions often live in the same module. A token that never re-initialises
    /// returns [`ModuleHold::nothing`].
    fn hold_module(&self) -> ModuleHold<'_>;

    /// Does the upkeep put off while a [`ModuleHold`] lived (on SoftHSM2: initialising the
    /// module again to free destroyed session objects); called when a card job ends, holding
    /// no session. A no-op when nothing is due.
    fn recycle_if_due(&self);

    /// Makes tokens that appeared since the module was initialised visible to it, for a card
    /// job whose card is not found and whose cards sit in the token's module. On SoftHSM2, which
    /// reads its token folder only at start, the module is initialised again (requests in
    /// flight finish first; new ones wait). Called under the card job's [`ModuleHold`], holding
    /// no session. A token whose module sees new tokens by itself does nothing.
    fn rescan_tokens(&self) -> Result<(), HsmError>;
}

/// What [`Token::hold_module`] returns: the hold ends when it is dropped.
#[must_use = "the module is held only while this lives"]
pub struct ModuleHold<'a> {
    _held: Option<Box<dyn Held + 'a>>,
}

/// Anything kept only for its drop.
trait Held {}
impl<T> Held for T {}

impl<'a> ModuleHold<'a> {
    /// A hold that lasts as long as `guard`, which is dropped with it.
    pub fn new<G: 'a>(guard: G) -> ModuleHold<'a> {
        ModuleHold {
            _held: Some(Box::new(guard)),
        }
    }

    /// A hold on nothing, for a token that never re-initialises under its callers.
    pub fn nothing() -> ModuleHold<'a> {
        ModuleHold { _held: None }
    }
}

impl std::fmt::Debug for ModuleHold<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleHold")
            .field("holds", &self._held.is_some())
            .finish()
    }
}

/// The PKCS#11 token. Its methods are inherent too, and the rest of the crate still calls them
/// on the concrete type (through the `Pkcs11Token` alias); this impl only forwards to them.
impl Token for Pkcs11Token {
    fn capabilities(&self) -> &Capabilities {
        Pkcs11Token::capabilities(self)
    }

    fn check_alive(&self) -> Result<(), HsmError> {
        Pkcs11Token::check_alive(self)
    }

    fn session_use(&self) -> (usize, usize) {
        Pkcs11Token::session_use(self)
    }

    fn generate_key(&self, spec: &SecretKeySpec) -> Result<Kcv, HsmError> {
        Pkcs11Token::generate_key(self, spec)
    }

    fn derive_key(
        &self,
        parent_label: &str,
        parent_algorithm: Algorithm,
        factor: &Factor,
        child: &SecretKeySpec,
    ) -> Result<Kcv, HsmError> {
        Pkcs11Token::derive_key(self, parent_label, parent_algorithm, factor, child)
    }

    fn import_clear_key(&self, spec: &SecretKeySpec, value: &[u8]) -> Result<Kcv, HsmError> {
        Pkcs11Token::import_clear_key(self, spec, value)
    }

    fn component_kcv(&self, algorithm: Algorithm, value: &[u8]) -> Result<Kcv, HsmError> {
        Pkcs11Token::component_kcv(self, algorithm, value)
    }

    fn kcv(&self, label: &str, algorithm: Algorithm) -> Result<Kcv, HsmError> {
        Pkcs11Token::kcv(self, label, algorithm)
    }

    fn destroy_key(&self, label: &str) -> Result<usize, HsmError> {
        Pkcs11Token::destroy_key(self, label)
    }

    fn destroy_unlabelled_secret_keys(&self) -> Result<usize, HsmError> {
        Pkcs11Token::destroy_unlabelled_secret_keys(self)
    }

    fn secret_key_labels(&self) -> Result<Vec<String>, HsmError> {
        Pkcs11Token::secret_key_labels(self)
    }

    fn object_facts(&self) -> Result<Vec<ObjectFacts>, HsmError> {
        Pkcs11Token::object_facts(self)
    }

    fn signing_key(&self, label: &str, create: bool) -> Result<Vec<u8>, HsmError> {
        Pkcs11Token::signing_key(self, label, create)
    }

    fn sign_digest(&self, label: &str, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        Pkcs11Token::sign_digest(self, label, digest)
    }

    fn ensure_id_mac_key(&self) -> Result<IdMacKey, HsmError> {
        Pkcs11Token::ensure_id_mac_key(self)
    }

    fn id_mac(&self, data: &[u8]) -> Result<[u8; ID_MAC_LEN], HsmError> {
        Pkcs11Token::id_mac(self, data)
    }

    fn card_command(
        &self,
        command: CardCommand,
        master_label: &str,
        serial: &Factor,
        challenge: &[u8; CHALLENGE_LEN],
        pin_block: &[u8; BLOCK],
    ) -> Result<Vec<u8>, HsmError> {
        Pkcs11Token::card_command(self, command, master_label, serial, challenge, pin_block)
    }

    fn export_card_key(
        &self,
        master_label: &str,
        serial: &Factor,
        card_id: &str,
    ) -> Result<(Vec<u8>, Kcv), HsmError> {
        Pkcs11Token::export_card_key(self, master_label, serial, card_id)
    }

    fn probe_attacks(&self) -> Result<super::ProbeReport, HsmError> {
        Pkcs11Token::probe_attacks(self)
    }

    fn seal_issuer_keys(&self, registered: &[String]) -> Result<usize, HsmError> {
        Pkcs11Token::seal_issuer_keys(self, registered)
    }

    fn seal_issuer_key(&self, card_id: &str) -> Result<(), HsmError> {
        Pkcs11Token::seal_issuer_key(self, card_id)
    }

    fn issue_transport_key(
        &self,
        so_pin: &SecretString,
        card: &CardToken,
        card_id: &str,
    ) -> Result<(Kcv, Kcv), HsmError> {
        Pkcs11Token::issue_transport_key(self, so_pin, card, card_id)
    }

    fn card_transport_kcv(&self, card: &CardToken, card_id: &str) -> Result<Kcv, HsmError> {
        Pkcs11Token::card_transport_kcv(self, card, card_id)
    }

    fn load_transport_key(
        &self,
        card: &CardToken,
        card_so_pin: &SecretString,
        card_id: &str,
    ) -> Result<(Kcv, Kcv), HsmError> {
        Pkcs11Token::load_transport_key(
            self,
            card,
            card_so_pin,
            card_id,
            super::transport::PackageKeys::SubKeys,
        )
    }

    fn spend_card_copy(&self, card: &CardToken, card_id: &str) -> Result<(), HsmError> {
        Pkcs11Token::spend_card_copy(self, card, card_id)
    }

    fn wrap_for_transport(&self, card_id: &str, key_label: &str) -> Result<Vec<u8>, HsmError> {
        Pkcs11Token::wrap_for_transport(self, card_id, key_label)
    }

    fn package_mac(&self, card_id: &str, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        Pkcs11Token::package_mac(self, card_id, data)
    }

    fn unwrap_from_transport(
        &self,
        card_id: &str,
        wrapped: &[u8],
        spec: &SecretKeySpec,
    ) -> Result<Kcv, HsmError> {
        Pkcs11Token::unwrap_from_transport(self, card_id, wrapped, spec)
    }

    fn hold_module(&self) -> ModuleHold<'_> {
        ModuleHold::new(Pkcs11Token::hold_module(self))
    }

    fn recycle_if_due(&self) {
        Pkcs11Token::recycle_if_due(self)
    }

    fn rescan_tokens(&self) -> Result<(), HsmError> {
        Pkcs11Token::rescan_tokens(self)
    }
}

// `Arc<dyn Token>` is what the node core is to hold: this fails to compile if the trait stops
// being object safe or `Pkcs11Token` stops implementing it.
const _: fn(Pkcs11Token) -> std::sync::Arc<dyn Token> = |t| std::sync::Arc::new(t);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountsDrops<'a>(&'a AtomicUsize);
    impl Drop for CountsDrops<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_module_hold_ends_when_dropped() {
        let dropped = AtomicUsize::new(0);
        let hold = ModuleHold::new(CountsDrops(&dropped));
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        drop(hold);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        drop(ModuleHold::nothing());
    }
}
