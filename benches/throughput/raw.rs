//! The raw side: a loop in this process on its own SoftHSM2 token, one PKCS#11 session per
//! client thread, making exactly the PKCS#11 calls the node makes for one request.
//!
//! It finds keys through `cryptoki`, as the node does, and makes every other call through the
//! node's own `hkms::hsm::raw::RawModule` (`cryptoki-sys` and the module's function list):
//! C_DeriveKey with `CKM_AES_ECB_ENCRYPT_DATA`, which cryptoki cannot express, and C_Sign,
//! C_Encrypt and C_WrapKey, which cryptoki makes with other call patterns than the node (it first
//! asks for the output length; the node makes one call with a buffer large enough). Minimal: no
//! pool, no checks beyond the return value.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki_sys::{CK_MECHANISM_TYPE, CKM_AES_CMAC, CKM_AES_ECB_ENCRYPT_DATA};
use hkms::card::CardCommand;
use hkms::hierarchy::{Algorithm, Factor, KeyId, Usage};
use hkms::hsm::raw::RawModule;
use hkms::hsm::{HsmError, Lifetime, SecretKeySpec};
use hkms::transport::Package;

use crate::report::{Outcome, Run};
use crate::support::{self, Token, slot_of};
use crate::{PIN, card_of};
/// A raw operation: one request's PKCS#11 calls on the calling thread's session.
pub type RawOp<'a> = &'a (dyn Fn(&Session, usize) -> Outcome + Sync);

/// Runs `count` operations numbered `first..first + count` on `threads` threads, thread `k`
/// on session `k` of `sessions`; stops early at `cap`.
pub fn drive_raw(
    sessions: &mut Vec<Session>,
    threads: usize,
    first: usize,
    count: usize,
    cap: Duration,
    op: RawOp<'_>,
) -> Run {
    let next = AtomicUsize::new(first);
    let end = first + count;
    let mine: Vec<Session> = sessions.drain(..threads).collect();
    let start = Instant::now();
    let deadline = start + cap;
    let (back, all) = std::thread::scope(|s| {
        let workers: Vec<_> = mine
            .into_iter()
            .map(|session| {
                let next = &next;
                s.spawn(move || {
                    let mut outcomes = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= end || Instant::now() >= deadline {
                            break;
                        }
                        let t = Instant::now();
                        let outcome = op(&session, i);
                        outcomes.push((t.elapsed(), outcome));
                    }
                    (session, outcomes)
                })
            })
            .collect();
        let mut back = Vec::new();
        let mut all = Vec::new();
        for w in workers {
            let (session, outcomes) = w.join().expect("raw worker");
            back.push(session);
            all.extend(outcomes);
        }
        (back, all)
    });
    let run = Run::from(start.elapsed(), all);
    sessions.splice(0..0, back);
    run
}

/// The raw side: the node's raw calls on the module and the token's wrap mechanism.
pub struct Raw {
    module: RawModule,
    wrap: CK_MECHANISM_TYPE,
    /// Handles found by label, kept as the node keeps them (`src/hsm/handles.rs`): each key
    /// is searched once per process. Labels are unique across the two raw tokens.
    handles: Mutex<HashMap<String, ObjectHandle>>,
}

/// Derivations the raw loop retried after CKR_GENERAL_ERROR (the node retries the same way).
static RAW_RETRIES: AtomicUsize = AtomicUsize::new(0);

impl Raw {
    /// Takes another reference to `module`, which this process has loaded and initialised
    /// (through cryptoki); `wrap` is the token's RFC 5649 wrap mechanism. No handle is known yet.
    pub fn new(module: &Path, wrap: CK_MECHANISM_TYPE) -> Raw {
        Raw {
            module: RawModule::load(module).expect("load the module"),
            wrap,
            handles: Default::default(),
        }
    }

    /// The raw loop's retries after CKR_GENERAL_ERROR since the last `reset_retries`.
    pub fn retries() -> usize {
        RAW_RETRIES.load(Ordering::Relaxed)
    }

    /// Counts retries from zero again.
    pub fn reset_retries() {
        RAW_RETRIES.store(0, Ordering::Relaxed);
    }

    /// The handle of the secret key `label`: searched on first use, then remembered.
    fn find(&self, s: &Session, label: &str) -> Result<ObjectHandle, String> {
        if let Some(h) = self.handles.lock().expect("handles").get(label) {
            return Ok(*h);
        }
        let h = find(s, label)?;
        self.handles
            .lock()
            .expect("handles")
            .insert(label.to_string(), h);
        Ok(h)
    }

    /// UnblockPin: the APDU for card `i` from the master `master`.
    pub fn unblock(&self, s: &Session, master: &str, i: usize) -> Result<Vec<u8>, String> {
        let (serial, challenge) = card_of(i);
        self.unblock_card(s, master, &serial, &challenge, PIN)
    }

    /// UnblockPin for one card: its serial, its challenge and the new PIN, as text.
    pub fn unblock_card(
        &self,
        s: &Session,
        master: &str,
        serial: &str,
        challenge: &str,
        pin: &str,
    ) -> Result<Vec<u8>, String> {
        let serial = Factor::from_card_serial(serial).map_err(|e| e.to_string())?;
        let challenge = hkms::card::parse_challenge(challenge).map_err(|e| e.to_string())?;
        let block = hkms::card::pin_block(pin);
        let master = self.find(s, master)?;
        let label = format!("hkms/card-key/{}", uuid::Uuid::new_v4().simple());
        let m = &self.module;
        let key = m
            .derive_encrypt_data(
                s.handle(),
                CKM_AES_ECB_ENCRYPT_DATA,
                master.handle(),
                &serial.data_block(),
                &hkms::hsm::templates::card_key_template(&label, false),
                &[],
            )
            .map_err(|e| e.to_string())?;
        let built = (|| -> Result<Vec<u8>, HsmError> {
            let encrypted: [u8; 16] = m
                .encrypt(s.handle(), key, None, block.as_slice())?
                .try_into()
                .expect("one block");
            let cbc = m.encrypt(
                s.handle(),
                key,
                Some(&hkms::card::mac_iv(&challenge)),
                &hkms::card::mac_input(CardCommand::Unblock, &encrypted),
            )?;
            let mac: [u8; hkms::card::MAC_LEN] = cbc[cbc.len() - 16..][..hkms::card::MAC_LEN]
                .try_into()
                .expect("MAC length");
            Ok(hkms::card::apdu(CardCommand::Unblock, &encrypted, &mac))
        })();
        let destroyed = m.destroy_object(s.handle(), key);
        let apdu = built.map_err(|e| e.to_string())?;
        destroyed.map_err(|e| e.to_string())?;
        Ok(apdu)
    }

    /// DeriveSubKey: the child of `parent` for `region`, a token key that stays; its label and
    /// KCV.
    pub fn derive(
        &self,
        s: &Session,
        parent: &str,
        region: &str,
    ) -> Result<(String, [u8; 3]), String> {
        let region = hkms::hierarchy::Region::parse(region).map_err(|e| e.to_string())?;
        let block = Factor::from_region(&region).data_block();
        let parent = self.find(s, parent)?;
        let id = KeyId::new_random();
        let label = id.ck_label();
        let template = hkms::hsm::templates::secret_key_template(&SecretKeySpec {
            algorithm: Algorithm::Aes128,
            usage: Usage::Derive,
            exportable: true,
            label: label.clone(),
            id: id.ck_id(),
            lifetime: Lifetime::Token,
        });
        let m = &self.module;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let made = m
                .derive_encrypt_data(
                    s.handle(),
                    CKM_AES_ECB_ENCRYPT_DATA,
                    parent.handle(),
                    &block,
                    &template,
                    &[],
                )
                .and_then(|key| {
                    m.sign(s.handle(), CKM_AES_CMAC, key, &[0u8; 16])
                        .inspect_err(|_| {
                            let _ = m.destroy_object(s.handle(), key);
                        })
                });
            match made {
                Ok(mac) => return Ok((label, [mac[0], mac[1], mac[2]])),
                Err(e) if e.is_token_hiccup() && attempt < 3 => {
                    RAW_RETRIES.fetch_add(1, Ordering::Relaxed);
                    if let Ok(found) =
                        s.find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                    {
                        for o in found {
                            let _ = s.destroy_object(o);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5 * attempt));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// ExportKey: wraps `key` under the transport key of `card` and MACs header + wrapped key
    /// with the card's package MAC key; returns the wrapped key.
    pub fn export(
        &self,
        s: &Session,
        card: &str,
        key: &str,
        header: &[u8],
    ) -> Result<Vec<u8>, String> {
        let transport = self.find(s, &hkms::hsm::transport::transport_label(card))?;
        let key = self.find(s, key)?;
        let wrapped = self
            .module
            .wrap_key(s.handle(), self.wrap, transport.handle(), key.handle())
            .map_err(|e| e.to_string())?;
        self.package_mac(s, card, header, &wrapped)?;
        Ok(wrapped)
    }

    fn package_mac(
        &self,
        s: &Session,
        card: &str,
        header: &[u8],
        wrapped: &[u8],
    ) -> Result<Vec<u8>, String> {
        let signed = Package::signed_bytes(header, wrapped).map_err(|e| e.to_string())?;
        let mac_key = self.find(s, &hkms::hsm::transport::package_mac_label(card))?;
        self.module
            .sign(s.handle(), CKM_AES_CMAC, mac_key.handle(), &signed)
            .map_err(|e| e.to_string())
    }

    /// PersonaliseCards, one card: for each master, the card key wrapped for the bureau and
    /// its package MAC; returns the card keys' KCVs.
    pub fn personalise(
        &self,
        s: &Session,
        masters: &[String; 2],
        headers: &[Vec<u8>; 2],
        card: &str,
        serial: &str,
    ) -> Result<Vec<[u8; 3]>, String> {
        let factor = Factor::from_card_serial(serial).map_err(|e| e.to_string())?;
        let m = &self.module;
        let mut kcvs = Vec::new();
        for (master, header) in masters.iter().zip(headers) {
            let master = self.find(s, master)?;
            let transport = self.find(s, &hkms::hsm::transport::transport_label(card))?;
            let label = format!("hkms/card-export/{}", uuid::Uuid::new_v4().simple());
            let key = m
                .derive_encrypt_data(
                    s.handle(),
                    CKM_AES_ECB_ENCRYPT_DATA,
                    master.handle(),
                    &factor.data_block(),
                    &hkms::hsm::templates::card_key_template(&label, true),
                    &[],
                )
                .map_err(|e| e.to_string())?;
            let out = m
                .sign(s.handle(), CKM_AES_CMAC, key, &[0u8; 16])
                .and_then(|kcv| {
                    let wrapped = m.wrap_key(s.handle(), self.wrap, transport.handle(), key)?;
                    Ok((kcv, wrapped))
                });
            let destroyed = m.destroy_object(s.handle(), key);
            let (kcv, wrapped) = out.map_err(|e| e.to_string())?;
            destroyed.map_err(|e| e.to_string())?;
            self.package_mac(s, card, header, &wrapped)?;
            kcvs.push([kcv[0], kcv[1], kcv[2]]);
        }
        Ok(kcvs)
    }
}

/// The one secret key with this label (CKA_CLASS + CKA_LABEL, as the node's `find_key`).
fn find(s: &Session, label: &str) -> Result<ObjectHandle, String> {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| format!("find {label}: {e}"))?;
    match found.as_slice() {
        [one] => Ok(*one),
        other => Err(format!("{} objects labelled {label}", other.len())),
    }
}

/// `count` read-write sessions on a token, the user logged in once (on the first).
pub fn raw_sessions(pkcs11: &Pkcs11, token: &Token, count: usize) -> Vec<Session> {
    let slot = slot_of(pkcs11, &token.label);
    let sessions: Vec<Session> = (0..count)
        .map(|_| pkcs11.open_rw_session(slot).expect("open session"))
        .collect();
    sessions[0]
        .login(
            UserType::User,
            Some(&secrecy::SecretString::from(support::USER_PIN)),
        )
        .expect("log in");
    sessions
}
