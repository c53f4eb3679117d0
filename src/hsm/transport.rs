//! Transport keys and key packages in the HSM (docs/design.md §3.6 and §7).
//!
//! Issuing a card: the card token makes an RSA-2048 pair; the security officer imports the
//! card's public key as trusted, generates the AES-256 transport key (a trusted public object,
//! `CKA_WRAP_WITH_TRUSTED`, extractable only for this step) and wraps it to the card with
//! RSA-OAEP (SHA-1: what SoftHSM2 offers); the card unwraps it; the officer drops
//! `CKA_EXTRACTABLE`. Loading a card at the recipient runs the other way: the recipient's HSM
//! makes an RSA pair, the card's security officer makes its public half trusted on the card,
//! the card wraps its transport key to it (the card's copy carries `CKA_WRAP_WITH_TRUSTED`, so
//! no other key on the card can wrap it), the HSM unwraps it. The key is never in clear on the
//! host. Packages wrap sub-keys with RFC 5649 under the transport key and
//! are MACed with a key derived from it for that purpose only.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::MechanismType;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki_sys::CK_MECHANISM;
use secrecy::SecretString;

use super::mechanisms::{self, allowed_mechanisms_attribute};
use super::raw::{NestedTemplate, plain_mechanism};
use super::{HsmError, Pkcs11Token, TokenLocator, find_key, find_slot, load_module, login_user};
use crate::hierarchy::{Algorithm, Kcv, KcvMethod};

/// The fixed data from which the package MAC key is derived from a transport key.
const MAC_KEY_DATA: &[u8; 16] = b"hkms-pkg-mac-v1.";

/// A transport key card: a PKCS#11 token reached with its own PIN (a smart card in production,
/// a SoftHSM2 token in tests).
pub struct CardToken {
    session: Session,
    /// The card as messages name it: `"label" (manufacturer model)`.
    name: String,
    /// The user PIN, to log the user back in after the card's security officer.
    pin: SecretString,
    _ctx: Pkcs11,
}

impl CardToken {
    /// Opens the card and logs in with its PIN.
    pub fn open(
        module: &std::path::Path,
        locator: &TokenLocator,
        pin: &SecretString,
    ) -> Result<CardToken, HsmError> {
        let ctx = load_module(module)?;
        let (slot, info) = find_slot(&ctx, locator)?;
        let session = ctx.open_rw_session(slot)?;
        login_user(&session, pin)?;
        Ok(CardToken {
            session,
            name: format!(
                "\"{}\" ({} {})",
                info.label().trim_end(),
                info.manufacturer_id().trim_end(),
                info.model().trim_end()
            ),
            pin: pin.clone(),
            _ctx: ctx,
        })
    }

    /// Initialises the card module `module` again so that cards inserted since are seen
    /// (SoftHSM2 reads its token folder only in `C_Initialize`). Only for a card module that is
    /// not the node's token module ([`super::same_module`]): that one is the token's to
    /// re-initialise ([`Pkcs11Token::rescan_tokens`]). No card session may be open.
    pub fn rescan(module: &std::path::Path) -> Result<(), HsmError> {
        let ctx = load_module(module)?;
        super::recovery::reinitialise(&ctx)
    }

    /// Has the card's security officer create `public` on the card as a trusted wrapping key
    /// (a public session object: only the SO can set `CKA_TRUSTED`), then logs the user back
    /// in. The card's transport key can be wrapped by no other key.
    fn trust_wrapping_key(
        &self,
        so_pin: &SecretString,
        public: &(Vec<u8>, Vec<u8>),
    ) -> Result<ObjectHandle, HsmError> {
        match self.session.logout() {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => {}
            Err(e) => return Err(e.into()),
        }
        let trusted = match self.session.login(UserType::So, Some(so_pin)) {
            Ok(()) => {
                let key = import_rsa_public(&self.session, public, true).map_err(|e| {
                    trust_refused(e, |what| HsmError::TokenLacks {
                        token: format!("card {}", self.name),
                        what: format!("{what} (loading a transport key card needs it)"),
                    })
                });
                let _ = self.session.logout();
                key
            }
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(HsmError::Pkcs11 {
                function: "C_Login(card SO)".into(),
                rv: "PinIncorrect".into(),
                advice: "the card refused its security officer PIN; check it (each wrong try \
                         counts towards locking it)",
                kind: super::HsmErrorKind::FailedPrecondition,
            }),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(HsmError::Pkcs11 {
                function: "C_Login(card SO)".into(),
                rv: "PinLocked".into(),
                advice: "the card's security officer PIN is locked; the card cannot be loaded \
                         and must be issued again",
                kind: super::HsmErrorKind::FailedPrecondition,
            }),
            Err(e) => Err(e.into()),
        };
        login_user(&self.session, &self.pin)?;
        trusted
    }
}

fn oaep() -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    ))
}

fn rsa_pair(s: &Session, label: &str) -> Result<(ObjectHandle, ObjectHandle), HsmError> {
    let public = [
        Attribute::Token(false),
        Attribute::Encrypt(false),
        Attribute::Verify(false),
        Attribute::Wrap(true),
        Attribute::ModulusBits(2048.into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let private = [
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Unwrap(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    Ok(s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)?)
}

/// Modulus and public exponent of an RSA public key.
fn rsa_public(s: &Session, key: ObjectHandle) -> Result<(Vec<u8>, Vec<u8>), HsmError> {
    let mut modulus = None;
    let mut exponent = None;
    for a in s.get_attributes(
        key,
        &[AttributeType::Modulus, AttributeType::PublicExponent],
    )? {
        match a {
            Attribute::Modulus(m) => modulus = Some(m),
            Attribute::PublicExponent(e) => exponent = Some(e),
            _ => {}
        }
    }
    match (modulus, exponent) {
        (Some(m), Some(e)) => Ok((m, e)),
        _ => Err(HsmError::Unexpected {
            what: "RSA public key without modulus or exponent".into(),
        }),
    }
}

/// What a token that will not mark a key trusted answers, as hkms's refusal: a transport key
/// travels only under a key its security officer trusts (`CKA_WRAP_WITH_TRUSTED`), and hkms does
/// not drop that rule for such a token. Kryoptic 1.5 never lets anyone set `CKA_TRUSTED` on a
/// key.
fn trust_refused(e: HsmError, lacks: impl FnOnce(&'static str) -> HsmError) -> HsmError {
    match e {
        HsmError::Pkcs11 { ref rv, .. }
            if matches!(
                rv.as_str(),
                "AttributeTypeInvalid" | "AttributeReadOnly" | "AttributeValueInvalid"
            ) =>
        {
            lacks("CKA_TRUSTED set by its security officer on a wrapping key")
        }
        other => other,
    }
}

fn import_rsa_public(
    s: &Session,
    (modulus, exponent): &(Vec<u8>, Vec<u8>),
    trusted: bool,
) -> Result<ObjectHandle, HsmError> {
    let mut t = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Wrap(true),
        Attribute::Encrypt(false),
        Attribute::Verify(false),
        Attribute::Modulus(modulus.clone()),
        Attribute::PublicExponent(exponent.clone()),
    ];
    if trusted {
        t.push(Attribute::Trusted(true));
    }
    Ok(s.create_object(&t)?)
}

fn card_kcv(s: &Session, key: ObjectHandle) -> Result<Kcv, HsmError> {
    let mac = s.sign(&Mechanism::AesCMac, key, &[0u8; 16])?;
    let value: [u8; 3] = mac
        .get(..3)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| HsmError::Unexpected {
            what: "CMAC length".into(),
        })?;
    Ok(Kcv {
        value,
        method: KcvMethod::AesCmac,
    })
}

fn find_on(s: &Session, label: &str) -> Result<ObjectHandle, HsmError> {
    find_key(s, label)
}

/// Which end of a card a transport key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TransportRole {
    /// The issuing node's copy: made by the security officer, trusted (it alone may wrap keys
    /// that carry CKA_WRAP_WITH_TRUSTED), a public object, extractable only until it is on the
    /// card.
    Issuer,
    /// The recipient's copy: unwraps packages and derives their MAC key, never wraps or leaves.
    Recipient,
}

/// The template of an AES-256 transport key on a node's token. Both ends can derive the
/// package MAC key and compute the KCV; `CKA_ALLOWED_MECHANISMS` keeps them to that and to
/// RFC 5649.
pub(super) fn transport_key_template(
    label: &str,
    card_id: &str,
    wrap_pad: cryptoki_sys::CK_MECHANISM_TYPE,
    role: TransportRole,
) -> Vec<Attribute> {
    let issuer = role == TransportRole::Issuer;
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(!issuer),
        Attribute::Sensitive(true),
        Attribute::Extractable(issuer),
        Attribute::WrapWithTrusted(true),
        Attribute::Wrap(issuer),
        Attribute::Unwrap(!issuer),
        // Derive (the package MAC key) and sign (the KCV) are needed once at issuance; the
        // issuer's public copy loses both right after (see `issue_transport_key`).
        Attribute::Derive(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(true),
        Attribute::Verify(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(card_id.as_bytes().to_vec()),
        allowed_mechanisms_attribute(&[
            wrap_pad,
            mechanisms::AES_ECB_ENCRYPT_DATA,
            mechanisms::AES_CMAC,
        ]),
    ];
    if issuer {
        // Sealed after its copy is on the card and registered (`seal_issuer_key`): until then
        // the security officer still takes usages away from it.
        t.push(Attribute::Trusted(true));
        t.push(Attribute::ValueLen(32.into()));
        t
    } else {
        super::templates::sealed(t)
    }
}

/// What the packages under a card's transport key carry, which its loaded copy fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageKeys {
    /// Diversified sub-keys, for a node: derive keys, never able to encrypt.
    SubKeys,
    /// Card keys, for a personalisation bureau: leaves, never able to derive.
    CardKeys,
}

/// What every key unwrapped under a recipient's transport key must be (`CKA_UNWRAP_TEMPLATE`):
/// sensitive, kept in this HSM for good, unchangeable, and either a derive key that cannot
/// encrypt or a leaf that cannot derive. Without it, whoever holds the token's user PIN could
/// unwrap any package (packages are not secret) into a key they can read, or encrypt a
/// region's data block with a sub-key and get its child in clear. SoftHSM2 refuses an unwrap
/// whose template does not give each of these the same value.
pub(super) fn package_key_unwrap_template(keys: PackageKeys) -> NestedTemplate {
    let mut attributes = vec![
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::WrapWithTrusted(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
    ];
    match keys {
        PackageKeys::SubKeys => attributes.extend([
            Attribute::Derive(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
        ]),
        PackageKeys::CardKeys => attributes.push(Attribute::Derive(false)),
    }
    attributes.push(Attribute::Modifiable(false));
    NestedTemplate {
        kind: cryptoki_sys::CKA_UNWRAP_TEMPLATE,
        attributes,
    }
}

/// The label of the package MAC key derived from a card's transport key.
pub fn package_mac_label(card_id: &str) -> String {
    format!("hkms/package-mac/{card_id}")
}

/// What every transport key's label starts with.
const TRANSPORT_LABEL_PREFIX: &str = "hkms/transport/";

/// The label of a transport key on the node's token and on its card.
pub fn transport_label(card_id: &str) -> String {
    format!("{TRANSPORT_LABEL_PREFIX}{card_id}")
}

impl Pkcs11Token {
    pub(crate) fn wrap_pad(&self) -> Result<cryptoki_sys::CK_MECHANISM_TYPE, HsmError> {
        self.inner.caps.wrap_pad.ok_or_else(|| {
            self.inner
                .caps
                .lacks("RFC 5649 key wrap (CKM_AES_KEY_WRAP_PAD / CKM_AES_KEY_WRAP_KWP)")
        })
    }

    /// Runs `f` in a security-officer session. Every pooled session is held meanwhile (the
    /// login state is the whole application's), and the user is logged back in afterwards.
    pub fn with_security_officer<T>(
        &self,
        so_pin: &SecretString,
        f: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        self.guarded(|| {
            let all = self.all_sessions()?;
            let s = all.first()?;
            match s.logout() {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => {}
                Err(e) => return Err(e.into()),
            }
            let result = match s.login(UserType::So, Some(so_pin)) {
                Ok(()) => {
                    let r = f(s);
                    let _ = s.logout();
                    r
                }
                Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(HsmError::Pkcs11 {
                    function: "C_Login(SO)".into(),
                    rv: "PinIncorrect".into(),
                    advice: "the security officer PIN was refused; check the SO PIN source",
                    kind: super::HsmErrorKind::FailedPrecondition,
                }),
                Err(e) => Err(e.into()),
            };
            // A logout ends every private object's handle (SoftHSM2 hands out new ones after
            // the login); no request runs meanwhile, as all sessions are held.
            self.inner.handles.clear();
            if let Err(e) = login_user(s, &self.inner.pin) {
                // The sessions would go back logged out: have the recovery log in again.
                tracing::error!(error = %e, "cannot log the user back in after security-officer work");
                return Err(HsmError::SessionLost {
                    function: "C_Login(user) after security-officer work".into(),
                    rv: e.to_string(),
                });
            }
            result
        })
    }

    /// Issues a transport key for `card_id` onto `card`; returns its KCV on this token and on
    /// the card (they must agree).
    pub fn issue_transport_key(
        &self,
        so_pin: &SecretString,
        card: &CardToken,
        card_id: &str,
    ) -> Result<(Kcv, Kcv), HsmError> {
        let wrap_pad = self.wrap_pad()?;
        let label = transport_label(card_id);
        let (card_pub, card_priv) = rsa_pair(&card.session, &format!("hkms/card-rsa/{card_id}"))?;
        let card_public = rsa_public(&card.session, card_pub)?;
        let wrapped = self.with_security_officer(so_pin, |so| {
            let trusted = import_rsa_public(so, &card_public, true).map_err(|e| {
                trust_refused(e, |what| {
                    self.inner
                        .caps
                        .lacks(format!("{what} (issuing a transport key card needs it)"))
                })
            })?;
            let key = so.generate_key(
                &Mechanism::AesKeyGen,
                &transport_key_template(&label, card_id, wrap_pad, TransportRole::Issuer),
            )?;
            let wrapped = so.wrap_key(&oaep(), trusted, key);
            // Whatever happened, the key stays only here and can never be extracted again.
            let locked = so.update_attributes(key, &[Attribute::Extractable(false)]);
            let _ = so.destroy_object(trusted);
            let wrapped = match (wrapped, locked) {
                (Ok(w), Ok(())) => w,
                (w, l) => {
                    let _ = so.destroy_object(key);
                    w?;
                    l?;
                    return Err(HsmError::Unexpected {
                        what: "wrap result".into(),
                    });
                }
            };
            Ok(wrapped)
        })?;
        let on_card = card.session.unwrap_key(
            &oaep(),
            card_priv,
            &wrapped,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                // The card hands its key on to the recipient's HSM, wrapped, once: loading
                // destroys the card's copy. Only a key the card's security officer trusts can
                // wrap it, so the card and its user PIN alone cannot get it out.
                Attribute::Extractable(true),
                Attribute::WrapWithTrusted(true),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                // CMAC for its KCV, nothing else: a MAC of one block would give the package
                // MAC key away to whoever holds the card and its user PIN.
                Attribute::Sign(true),
                allowed_mechanisms_attribute(&[mechanisms::AES_CMAC]),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(card_id.as_bytes().to_vec()),
            ],
        );
        let _ = card.session.destroy_object(card_pub);
        let _ = card.session.destroy_object(card_priv);
        let on_card = on_card.inspect_err(|_| {
            let _ = self.destroy_key(&label);
        })?;
        let finished = (|| -> Result<(Kcv, Kcv), HsmError> {
            let mine = self.kcv(&label, Algorithm::Aes256)?;
            let theirs = card_kcv(&card.session, on_card)?;
            if mine != theirs {
                return Err(HsmError::Unexpected {
                    what: "transport key KCV on the card that differs from the HSM's".into(),
                });
            }
            self.make_package_mac_key(card_id)?;
            self.strip_issuer_key(&label)?;
            Ok((mine, theirs))
        })();
        if finished.is_err() {
            let _ = card.session.destroy_object(on_card);
            let _ = self.destroy_key(&label);
            let _ = self.destroy_key(&package_mac_label(card_id));
        }
        finished
    }

    /// Seals every issuer's copy of a transport key that is still modifiable and whose card is
    /// `registered` (a node stopped between registering a card and sealing its key, or an
    /// earlier hkms); strips the others to wrapping only, leaving them destroyable for the
    /// operator (`hkms keys orphans`). Run at start; returns how many it sealed.
    pub fn seal_issuer_keys(&self, registered: &[String]) -> Result<usize, HsmError> {
        let labels = self.guarded(|| {
            let s = self.session()?;
            let found = s.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Private(false),
                Attribute::Trusted(true),
                Attribute::Modifiable(true),
            ])?;
            let mut labels = Vec::new();
            for key in found {
                for a in s.get_attributes(key, &[AttributeType::Label])? {
                    if let Attribute::Label(l) = a {
                        let label = String::from_utf8_lossy(&l).into_owned();
                        if label.starts_with(TRANSPORT_LABEL_PREFIX) {
                            labels.push(label);
                        }
                    }
                }
            }
            Ok(labels)
        })?;
        let mut count = 0;
        for label in &labels {
            let card_id = label.strip_prefix(TRANSPORT_LABEL_PREFIX).unwrap_or(label);
            if registered.iter().any(|r| r == card_id) {
                self.seal_issuer_key(card_id)?;
                count += 1;
                tracing::warn!(%label, "sealed an issuer's transport key that was left modifiable");
            } else {
                self.strip_issuer_key(label)?;
                tracing::warn!(%label, "an issuer's transport key has no registered card: it can only wrap now; destroy it (see `hkms keys orphans`)");
            }
        }
        Ok(count)
    }

    /// Leaves the issuer's copy of a transport key able to wrap and nothing else; until
    /// [`Pkcs11Token::seal_issuer_key`], it can still be destroyed (a card whose registration
    /// failed is taken back).
    fn strip_issuer_key(&self, label: &str) -> Result<(), HsmError> {
        self.guarded(|| {
            let s = self.writing_session()?;
            let key = find_on(&s, label)?;
            s.update_attributes(
                key,
                &[
                    Attribute::Derive(false),
                    Attribute::Sign(false),
                    Attribute::Unwrap(false),
                    Attribute::Encrypt(false),
                    Attribute::Decrypt(false),
                ],
            )?;
            Ok(())
        })
    }

    /// Makes the issuer's copy of the transport key of `card_id` what it stays for good: able
    /// to wrap and nothing else, unchangeable and undestroyable.
    ///
    /// It is a public object (only the SO can make it trusted), and any session of the token,
    /// even one that never logged in, may change or destroy a public object that allows it:
    /// turn CKA_UNWRAP or CKA_DERIVE back on and read the packages wrapped under it, or destroy
    /// it and cut the province off. So it is replaced by a copy that can be neither modified
    /// nor destroyed (a copy keeps CKA_TRUSTED).
    pub fn seal_issuer_key(&self, card_id: &str) -> Result<(), HsmError> {
        let label = transport_label(card_id);
        self.strip_issuer_key(&label)?;
        self.guarded(|| {
            let s = self.writing_session()?;
            let key = find_on(&s, &label)?;
            let sealed = s.copy_object(
                key,
                // Not CKA_COPYABLE: SoftHSM2 takes it in no copy. A copy of this copy cannot
                // differ from it (CKA_MODIFIABLE=false).
                &[Attribute::Destroyable(false), Attribute::Modifiable(false)],
            )?;
            if let Err(e) = s.destroy_object(key) {
                // Left to the next start's sealing; the copy would make the label ambiguous.
                let _ = s.destroy_object(sealed);
                return Err(e.into());
            }
            self.inner.handles.forget(&label);
            Ok(())
        })
    }

    /// Derives the package MAC key of `card_id` from its transport key into a private token
    /// key that can only compute CMACs.
    fn make_package_mac_key(&self, card_id: &str) -> Result<(), HsmError> {
        self.guarded(|| {
            let s = self.writing_session()?;
            let transport = find_on(&s, &transport_label(card_id))?;
            let label = package_mac_label(card_id);
            self.inner.raw.derive_encrypt_data(
                s.handle(),
                mechanisms::AES_ECB_ENCRYPT_DATA,
                transport.handle(),
                MAC_KEY_DATA,
                &super::templates::mac_only_key_template(
                    KeyType::AES,
                    16,
                    &label,
                    card_id.as_bytes(),
                    mechanisms::AES_CMAC,
                ),
                &[],
            )?;
            Ok(())
        })
    }

    /// The KCV of the transport key of `card_id` on `card`, to compare with the one its issuer
    /// gave before loading it.
    pub fn card_transport_kcv(&self, card: &CardToken, card_id: &str) -> Result<Kcv, HsmError> {
        card_kcv(
            &card.session,
            find_on(&card.session, &transport_label(card_id))?,
        )
    }

    /// Loads the transport key of `card_id` from `card` into this token (unwrap and derive only);
    /// returns its KCV here and on the card; the copy here unwraps only `keys`. The card's
    /// security officer makes this HSM's wrapping key trusted on the card for it. The card
    /// keeps its copy until [`Pkcs11Token::spend_card_copy`], so a load whose record fails can
    /// be done again.
    pub fn load_transport_key(
        &self,
        card: &CardToken,
        card_so_pin: &SecretString,
        card_id: &str,
        keys: PackageKeys,
    ) -> Result<(Kcv, Kcv), HsmError> {
        let wrap_pad = self.wrap_pad()?;
        let label = transport_label(card_id);
        let theirs = self.card_transport_kcv(card, card_id)?;
        // The RSA pair is made of session objects and the card's calls are slow: both happen
        // with the token shared. Only the unwrap, which creates a token object, takes it alone.
        let (pub_key, priv_key, made_in) = {
            let s = self.session()?;
            let (public, private) = rsa_pair(&s, &format!("hkms/load-rsa/{card_id}"))?;
            (public, private, s.generation())
        };
        // The pair's handles mean something only in sessions of the generation that made it: a
        // rebuild meanwhile (a lost token) closed its session and may reuse the numbers.
        let same_generation = |s: &super::TokenSession<'_>| {
            if s.generation() == made_in {
                Ok(())
            } else {
                Err(HsmError::SessionLost {
                    function: "loading a transport key".into(),
                    rv: "the token was opened again during the load; load the card again".into(),
                })
            }
        };
        let mine = (|| -> Result<Kcv, HsmError> {
            let public = {
                let s = self.session()?;
                same_generation(&s)?;
                rsa_public(&s, pub_key)?
            };
            let card_wrapping = card.trust_wrapping_key(card_so_pin, &public)?;
            // Found again: the logins on the card ended the handles of its private objects.
            let wrapped = find_on(&card.session, &label)
                .and_then(|on_card| Ok(card.session.wrap_key(&oaep(), card_wrapping, on_card)?));
            let _ = card.session.destroy_object(card_wrapping);
            let wrapped = wrapped?;
            let s = self.writing_session()?;
            same_generation(&s)?;
            let oaep = oaep();
            let key = self.inner.raw.unwrap_key(
                s.handle(),
                &CK_MECHANISM::from(&oaep),
                priv_key.handle(),
                &wrapped,
                &transport_key_template(&label, card_id, wrap_pad, TransportRole::Recipient),
                &[
                    vec![package_key_unwrap_template(keys)],
                    // It derives its package MAC key.
                    self.children_template(crate::hierarchy::Usage::Derive),
                ]
                .concat(),
            )?;
            self.kcv_or_destroy(&s, key, Algorithm::Aes256)
        })();
        // Session objects of a pooled session: any session of this login may destroy them. In
        // another generation their session is closed, and they are gone with it.
        let destroyed = self.session().and_then(|s| {
            if s.generation() != made_in {
                return Ok(());
            }
            let public = s.destroy_object(pub_key);
            let private = s.destroy_object(priv_key);
            Ok(public.and(private)?)
        });
        if destroyed.is_err() {
            self.session_object_kept();
        }
        self.session_object_destroyed();
        self.session_object_destroyed();
        let mine = mine?;
        if mine != theirs {
            let _ = self.destroy_key(&label);
            return Err(HsmError::Unexpected {
                what: "transport key KCV in the HSM that differs from the card's".into(),
            });
        }
        self.make_package_mac_key(card_id).inspect_err(|_| {
            let _ = self.destroy_key(&label);
        })?;
        Ok((mine, theirs))
    }

    /// Destroys the card's copy of the transport key of `card_id`: it was extractable only to
    /// travel to one HSM, and is spent once that HSM's copy is registered.
    pub fn spend_card_copy(&self, card: &CardToken, card_id: &str) -> Result<(), HsmError> {
        let on_card = find_on(&card.session, &transport_label(card_id))?;
        Ok(card.session.destroy_object(on_card)?)
    }

    /// Wraps the key `key_label` under the transport key of `card_id` (RFC 5649).
    pub fn wrap_for_transport(&self, card_id: &str, key_label: &str) -> Result<Vec<u8>, HsmError> {
        self.guarded(|| {
            let mech = self.wrap_pad()?;
            let s = self.session()?;
            let transport = self.key_handle(&s, &transport_label(card_id))?;
            let key = self.key_handle(&s, key_label)?;
            self.inner
                .raw
                .wrap_key(s.handle(), mech, transport.handle(), key.handle())
        })
    }

    /// The package MAC (AES-CMAC, 16 bytes) of `data` with the key derived from the transport
    /// key of `card_id` for that purpose only.
    pub fn package_mac(&self, card_id: &str, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.guarded(|| {
            let s = self.session()?;
            let mac_key = self.key_handle(&s, &package_mac_label(card_id))?;
            self.inner
                .raw
                .sign(s.handle(), mechanisms::AES_CMAC, mac_key.handle(), data)
        })
    }

    /// Unwraps a package's key under the transport key of `card_id` into a token key made from
    /// `spec`'s template; returns its KCV. On any failure nothing is left on the token.
    pub fn unwrap_from_transport(
        &self,
        card_id: &str,
        wrapped: &[u8],
        spec: &super::SecretKeySpec,
    ) -> Result<Kcv, HsmError> {
        self.guarded(|| {
            let mech = self.wrap_pad()?;
            let s = self.writing_session()?;
            let transport = self.key_handle(&s, &transport_label(card_id))?;
            let mut template = super::templates::secret_key_template(spec);
            // SoftHSM2 refuses CKA_VALUE_LEN in an unwrap template.
            template.retain(|a| !matches!(a, Attribute::ValueLen(_)));
            let key = self.inner.raw.unwrap_key(
                s.handle(),
                &plain_mechanism(mech),
                transport.handle(),
                wrapped,
                &template,
                &self.children_template(spec.usage),
            )?;
            self.kcv_or_destroy(&s, key, spec.algorithm)
        })
    }
}
