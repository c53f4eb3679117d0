//! The only module that speaks PKCS#11. Callers see the [`Token`] trait and plain hkms types;
//! they never see `cryptoki`. [`Pkcs11Token`] is the PKCS#11 implementation: one login, a pool
//! of sessions, templates that follow docs/design.md §3, and the in-HSM diversification and KCVs.
//! All calls block: async callers use `spawn_blocking`.

pub mod attribute_audit;
pub mod capabilities;
mod card;
mod error;
mod handles;
pub mod id_mac;
pub mod locator;
pub mod mechanisms;
pub mod pin;
mod pool;
mod probe;
pub mod raw;
mod recovery;
mod signing;
pub mod templates;
mod timing;
mod token;
pub mod token_init;
pub mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki_sys::{CK_MECHANISM_TYPE, CK_OBJECT_HANDLE};
use secrecy::SecretString;

pub use attribute_audit::{ObjectFacts, Violation};
pub use capabilities::{Capabilities, KeySizes};
pub use error::{HsmError, HsmErrorKind};
pub use id_mac::{ID_MAC_LABEL, ID_MAC_LEN, IdMacKey};
pub use locator::TokenLocator;
pub use pin::PinSource;
pub use probe::{Attack, ProbeReport, Verdict};
pub use recovery::DEFAULT_SESSION_OBJECT_BUDGET;
pub use templates::{Lifetime, SecretKeySpec};
pub use token::{ModuleHold, Token};

use crate::hierarchy::{Algorithm, Factor, Kcv, KcvMethod};
use pool::{AllSessions, PooledSession, SessionPool};

/// A pooled session and the token lock it was taken under (see `Inner::token_lock`); both go
/// back on drop.
pub(crate) struct TokenSession<'a> {
    session: PooledSession<'a>,
    _lock: TokenLock<'a>,
}

/// Held for its drop only.
enum TokenLock<'a> {
    Shared(#[allow(dead_code)] std::sync::RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] std::sync::RwLockWriteGuard<'a, ()>),
}

impl<'a> std::ops::Deref for TokenSession<'a> {
    type Target = PooledSession<'a>;
    fn deref(&self) -> &PooledSession<'a> {
        &self.session
    }
}
use raw::RawModule;
use recovery::Recovery;

/// How to reach the token.
#[derive(Debug, Clone)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (`libsofthsm2.so`).
    pub module: PathBuf,
    /// Which token.
    pub locator: TokenLocator,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// How many sessions to keep open (concurrent requests).
    pub sessions: usize,
    /// How long a request waits for a free session.
    pub session_wait: Duration,
}

/// A logged-in PKCS#11 token. Cheap to clone; all clones share the sessions.
#[derive(Clone)]
pub struct Pkcs11Token {
    inner: Arc<Inner>,
}

struct Inner {
    // Field order is drop order: sessions close before the library is released.
    pool: SessionPool,
    raw: RawModule,
    ctx: Pkcs11,
    /// Where the token is, and how to find it again after it was lost.
    recovery: Recovery,
    caps: Capabilities,
    /// Kept to log the user back in after security-officer work and after a lost session.
    pin: SecretString,
    /// Creating a token object takes it exclusively, everything else shares it: SoftHSM2
    /// 2.6.1 fails a creation now and then when anything else runs on the token meanwhile
    /// (CKR_GENERAL_ERROR, CKR_TEMPLATE_INCONSISTENT...; softhsm/SoftHSMv2#573). Session
    /// objects (card keys) are made under the shared side.
    token_lock: std::sync::RwLock<()>,
    /// Handles of keys found by label (`handles.rs`).
    handles: handles::HandleCache,
    /// Session objects destroyed since the module was last initialised, and after how many it
    /// is initialised again (0: never); see `recovery.rs`, `Pkcs11Token::recycle`.
    session_objects: std::sync::atomic::AtomicU64,
    session_object_budget: std::sync::atomic::AtomicU64,
    recycling: std::sync::atomic::AtomicBool,
    /// A session object could not be destroyed: the next recycle comes at once, whatever the
    /// budget (closing the sessions destroys their objects on any token).
    session_object_kept: std::sync::atomic::AtomicBool,
    /// Card jobs hold it shared ([`Pkcs11Token::hold_module`]); initialising the module again
    /// to free session objects needs it alone, and waits for a later turn rather than cut a
    /// card job's sessions (cards often sit in the same module as the token).
    module_hold: std::sync::RwLock<()>,
}

impl std::fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Token")
            .field("token", &self.inner.caps.label)
            .field("serial", &self.inner.caps.serial)
            .finish()
    }
}

impl Pkcs11Token {
    /// Loads the module, finds the token, logs in once and opens the session pool. A wrong PIN
    /// or a missing token is an error here, so the service refuses to start and says why.
    pub fn open(config: &HsmConfig) -> Result<Pkcs11Token, HsmError> {
        let pin = config.pin.read()?;
        let ctx = load_module(&config.module)?;
        let raw = RawModule::load(&config.module)?;
        let (slot, caps) = find_token(&ctx, &raw, &config.locator)?;
        let limit = caps.session_limit(config.sessions);
        if limit < config.sessions {
            tracing::info!(
                configured = config.sessions,
                used = limit,
                token = %caps.manufacturer,
                "this token is used through one session at a time (see Capabilities::session_limit)"
            );
        }
        let sessions = open_sessions(&ctx, slot, limit, &pin)?;
        let mut caps = caps;
        // In a session of its own: a token that refuses the key may still leave an empty
        // session object, which closing the session takes.
        caps.derive_template = ctx
            .open_rw_session(slot)
            .is_ok_and(|s| templates::accepts_derive_template(&raw, s.handle()));
        let budget = recovery::DEFAULT_SESSION_OBJECT_BUDGET;
        Ok(Pkcs11Token {
            inner: Arc::new(Inner {
                pool: SessionPool::new(sessions, config.session_wait),
                raw,
                ctx,
                recovery: Recovery::new(config.locator.clone(), caps.serial.clone(), slot),
                caps,
                pin,
                token_lock: std::sync::RwLock::new(()),
                handles: handles::HandleCache::default(),
                session_objects: std::sync::atomic::AtomicU64::new(0),
                session_object_budget: std::sync::atomic::AtomicU64::new(budget),
                recycling: std::sync::atomic::AtomicBool::new(false),
                session_object_kept: std::sync::atomic::AtomicBool::new(false),
                module_hold: std::sync::RwLock::new(()),
            }),
        })
    }

    /// The `CKA_DERIVE_TEMPLATE` a key of `usage` carries, where the token takes one: what
    /// every key derived from it must be ([`templates::children_template`]).
    pub(crate) fn children_template(
        &self,
        usage: crate::hierarchy::Usage,
    ) -> Vec<raw::NestedTemplate> {
        if self.inner.caps.derive_template && usage == crate::hierarchy::Usage::Derive {
            vec![templates::children_template()]
        } else {
            Vec::new()
        }
    }

    /// What the token is and offers.
    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    /// Generates a secret key in the token and returns its KCV. On any failure after the key
    /// was made, the key is destroyed before the error is returned.
    pub fn generate_key(&self, spec: &SecretKeySpec) -> Result<Kcv, HsmError> {
        self.guarded(|| {
            self.inner
                .caps
                .require_generate(spec.algorithm, spec.usage)?;
            let s = self.writing_session()?;
            let mechanism = match spec.algorithm {
                Algorithm::Aes128 | Algorithm::Aes256 => cryptoki_sys::CKM_AES_KEY_GEN,
                Algorithm::Des2 => cryptoki_sys::CKM_DES2_KEY_GEN,
            };
            let template = templates::secret_key_template(spec);
            let nested = self.children_template(spec.usage);
            let mut attempt = 0;
            loop {
                attempt += 1;
                let made = self
                    .inner
                    .raw
                    .generate_key(s.handle(), mechanism, &template, &nested)
                    .and_then(|key| self.kcv_or_destroy(&s, key, spec.algorithm));
                match made {
                    // The same SoftHSM2 hiccup as in `derive_key` (softhsm/SoftHSMv2#573): retried
                    // the same way, after removing whatever carries the new key's label.
                    Err(e) if e.is_token_hiccup() && attempt < 3 => {
                        tracing::warn!(attempt, error = %e, "key generation failed in the token; retrying");
                        if let Ok(found) =
                            s.find_objects(&[Attribute::Label(spec.label.as_bytes().to_vec())])
                        {
                            for o in found {
                                let _ = s.destroy_object(o);
                            }
                        }
                        std::thread::sleep(Duration::from_millis(5 * attempt));
                    }
                    other => return other,
                }
            }
        })
    }

    /// Diversifies `parent` with `factor` inside the token (docs/design.md §3: AES family
    /// `AES-ECB_parent(D || ~D)`, 3DES family `3DES-ECB_parent(D || ~D)` into `CKK_DES2`), making
    /// the child described by `child`, and returns the child's KCV.
    pub fn derive_key(
        &self,
        parent_label: &str,
        parent_algorithm: Algorithm,
        factor: &Factor,
        child: &SecretKeySpec,
    ) -> Result<Kcv, HsmError> {
        self.guarded(|| self.derive_key_now(parent_label, parent_algorithm, factor, child))
    }

    /// The derivation itself, with its retry; `derive_key` runs it guarded.
    fn derive_key_now(
        &self,
        parent_label: &str,
        parent_algorithm: Algorithm,
        factor: &Factor,
        child: &SecretKeySpec,
    ) -> Result<Kcv, HsmError> {
        self.inner.caps.require_derive(parent_algorithm)?;
        let child_algorithm = derived_algorithm(parent_algorithm);
        if child.algorithm != child_algorithm {
            return Err(HsmError::Unsupported {
                what: format!(
                    "diversification of a {} parent into a {} child (it yields {})",
                    parent_algorithm.as_str(),
                    child.algorithm.as_str(),
                    child_algorithm.as_str()
                ),
            });
        }
        let s = self.session_for(child.lifetime)?;
        let parent = self.key_handle(&s, parent_label)?;
        let template = templates::secret_key_template(child);
        let nested = self.children_template(child.usage);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let derived = self
                .inner
                .raw
                .derive_encrypt_data(
                    s.handle(),
                    mechanisms::derive_mechanism(parent_algorithm),
                    parent.handle(),
                    &factor.data_block(),
                    &template,
                    &nested,
                )
                .and_then(|handle| self.kcv_or_destroy(&s, handle, child.algorithm));
            match derived {
                // SoftHSM2 2.6.1 now and then fails a token-object derivation under concurrent
                // load with CKR_GENERAL_ERROR (softhsm/SoftHSMv2#573). Nothing half-made may
                // stay behind a retry: whatever carries the child's label goes first.
                Err(e) if e.is_token_hiccup() && attempt < 3 => {
                    tracing::warn!(attempt, error = %e, "derivation failed in the token; retrying");
                    if let Ok(found) =
                        s.find_objects(&[Attribute::Label(child.label.as_bytes().to_vec())])
                    {
                        for o in found {
                            let _ = s.destroy_object(o);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5 * attempt));
                }
                other => return other,
            }
        }
    }

    /// Creates a key from a clear value (key entry by components, after they were combined),
    /// with the same template as a generated key; returns its KCV. The value is only read.
    pub fn import_clear_key(&self, spec: &SecretKeySpec, value: &[u8]) -> Result<Kcv, HsmError> {
        self.guarded(|| {
            if value.len() != spec.algorithm.key_len() {
                return Err(HsmError::Unexpected {
                    what: format!(
                        "key value of {} bytes for {}",
                        value.len(),
                        spec.algorithm.as_str()
                    ),
                });
            }
            let s = self.session_for(spec.lifetime)?;
            let mut template = templates::secret_key_template(spec);
            template.retain(|a| !matches!(a, Attribute::ValueLen(_)));
            template.push(Attribute::Value(value.to_vec()));
            let mut template = templates::sealed(template);
            let created = self.inner.raw.create_object(
                s.handle(),
                &template,
                &self.children_template(spec.usage),
            );
            // The template's copy of the value is wiped before anything else happens.
            for a in template.iter_mut() {
                if let Attribute::Value(v) = a {
                    zeroize::Zeroize::zeroize(v);
                }
            }
            let key = created?;
            self.kcv_or_destroy(&s, key, spec.algorithm)
        })
    }

    /// The KCV of a clear key component, computed in the token through a session object that
    /// is destroyed right after.
    pub fn component_kcv(&self, algorithm: Algorithm, value: &[u8]) -> Result<Kcv, HsmError> {
        let spec = SecretKeySpec {
            algorithm,
            usage: crate::hierarchy::Usage::Mac,
            exportable: false,
            label: format!("hkms/component-check/{}", uuid::Uuid::new_v4().simple()),
            id: Vec::new(),
            lifetime: Lifetime::Session,
        };
        let kcv = self.import_clear_key(&spec, value)?;
        let destroyed = self.destroy_key(&spec.label);
        if destroyed.is_err() {
            // The clear component's key must not outlive this call: close its session.
            self.session_object_kept();
        }
        self.session_object_destroyed();
        destroyed?;
        Ok(kcv)
    }

    /// The KCV of a key already on the token.
    pub fn kcv(&self, label: &str, algorithm: Algorithm) -> Result<Kcv, HsmError> {
        self.guarded(|| {
            let s = self.session()?;
            let key = self.key_handle(&s, label)?;
            self.kcv_of(&s, key.handle(), algorithm)
        })
    }

    /// Destroys every object with this label; returns how many there were.
    pub fn destroy_key(&self, label: &str) -> Result<usize, HsmError> {
        self.guarded(|| {
            let s = self.session()?;
            self.inner.handles.forget(label);
            let found = s.find_objects(&[Attribute::Label(label.as_bytes().to_vec())])?;
            for object in &found {
                s.destroy_object(*object)?;
            }
            // Again: a search that found the key meanwhile must not keep its handle.
            self.inner.handles.forget(label);
            Ok(found.len())
        })
    }

    /// Destroys every secret key with an empty label (hkms labels all it makes; these are what
    /// a crash during object creation leaves); returns how many went.
    pub fn destroy_unlabelled_secret_keys(&self) -> Result<usize, HsmError> {
        self.guarded(|| {
            let s = self.session()?;
            let found = s.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(Vec::new()),
            ])?;
            for object in &found {
                s.destroy_object(*object)?;
            }
            Ok(found.len())
        })
    }

    /// Labels of every secret key on the token (for the orphan check).
    pub fn secret_key_labels(&self) -> Result<Vec<String>, HsmError> {
        self.guarded(|| {
            let s = self.session()?;
            let mut labels = Vec::new();
            for object in s.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])? {
                for attr in s.get_attributes(object, &[AttributeType::Label])? {
                    if let Attribute::Label(bytes) = attr {
                        labels.push(String::from_utf8_lossy(&bytes).into_owned());
                    }
                }
            }
            labels.sort();
            Ok(labels)
        })
    }

    /// The security attributes of every secret and private key on the token, for the
    /// attribute audit.
    pub fn object_facts(&self) -> Result<Vec<ObjectFacts>, HsmError> {
        self.guarded(|| {
            let s = self.session()?;
            let mut out = Vec::new();
            for (class, name) in [
                (ObjectClass::SECRET_KEY, "secret-key"),
                (ObjectClass::PRIVATE_KEY, "private-key"),
            ] {
                for object in s.find_objects(&[Attribute::Class(class)])? {
                    let mut facts = read_facts(&s, object, name)?;
                    facts.allowed_mechanisms = self
                        .inner
                        .raw
                        .attribute_bytes(
                            s.handle(),
                            object.handle(),
                            cryptoki_sys::CKA_ALLOWED_MECHANISMS,
                        )?
                        .map(|b| mechanisms::parse_allowed_mechanisms(&b));
                    facts.unwrap_template = self
                        .inner
                        .raw
                        .template_flags(
                            s.handle(),
                            object.handle(),
                            cryptoki_sys::CKA_UNWRAP_TEMPLATE,
                        )?
                        .map(named_flags);
                    facts.derive_template = self
                        .inner
                        .raw
                        .template_flags(
                            s.handle(),
                            object.handle(),
                            cryptoki_sys::CKA_DERIVE_TEMPLATE,
                        )?
                        .map(named_flags);
                    out.push(facts);
                }
            }
            Ok(out)
        })
    }

    /// Checks that the token still answers and the PIN is not locked (for health reporting).
    /// While the sessions are lost it tries to rebuild them, and fails until that worked.
    pub fn check_alive(&self) -> Result<(), HsmError> {
        self.check_token()
    }

    /// The handle of the secret key `label`: remembered from an earlier request of this pool
    /// generation, or searched on the token.
    pub(crate) fn key_handle(
        &self,
        s: &PooledSession<'_>,
        label: &str,
    ) -> Result<ObjectHandle, HsmError> {
        let generation = s.generation();
        let epoch = match self.inner.handles.get(generation, label) {
            Ok(handle) => return Ok(handle),
            Err(epoch) => epoch,
        };
        let handle = find_key(s, label)?;
        self.inner.handles.put(generation, epoch, label, handle);
        Ok(handle)
    }

    /// (sessions in use, pool size): how busy the token is, for metrics.
    pub fn session_use(&self) -> (usize, usize) {
        self.inner.pool.use_counts()
    }

    /// A session from the pool, sharing the token with other requests; if the pool was lost,
    /// rebuilds it first (`recovery.rs`).
    pub(crate) fn session(&self) -> Result<TokenSession<'_>, HsmError> {
        self.session_with(false)
    }

    /// A session for creating a token object: nothing else runs on the token meanwhile.
    pub(crate) fn writing_session(&self) -> Result<TokenSession<'_>, HsmError> {
        self.session_with(true)
    }

    /// A writing session for a token object, a sharing one for a session object.
    pub(crate) fn session_for(&self, lifetime: Lifetime) -> Result<TokenSession<'_>, HsmError> {
        self.session_with(lifetime == Lifetime::Token)
    }

    fn session_with(&self, exclusive: bool) -> Result<TokenSession<'_>, HsmError> {
        // The lock first, then the session: nobody waits for the lock holding a session.
        let poisoned = || HsmError::Unexpected {
            what: "state of the token lock (a thread panicked while holding it)".into(),
        };
        let lock = if exclusive {
            TokenLock::Exclusive(self.inner.token_lock.write().map_err(|_| poisoned())?)
        } else {
            TokenLock::Shared(self.inner.token_lock.read().map_err(|_| poisoned())?)
        };
        let session = match self.inner.pool.get() {
            Err(HsmError::Reconnecting { .. }) => {
                self.recover()?;
                self.inner.pool.get()
            }
            other => other,
        }?;
        Ok(TokenSession {
            session,
            _lock: lock,
        })
    }

    /// Every session of the pool (security-officer work); rebuilds a lost pool first.
    pub(crate) fn all_sessions(&self) -> Result<AllSessions<'_>, HsmError> {
        match self.inner.pool.take_all() {
            Err(HsmError::Reconnecting { .. }) => {
                self.recover()?;
                self.inner.pool.take_all()
            }
            other => other,
        }
    }

    fn kcv_of(
        &self,
        s: &Session,
        key: CK_OBJECT_HANDLE,
        algorithm: Algorithm,
    ) -> Result<Kcv, HsmError> {
        let (mechanism, zeros, method): (CK_MECHANISM_TYPE, &[u8], KcvMethod) = match algorithm {
            Algorithm::Aes128 | Algorithm::Aes256 => {
                (mechanisms::AES_CMAC, &[0u8; 16], KcvMethod::AesCmac)
            }
            Algorithm::Des2 => (mechanisms::DES3_CMAC, &[0u8; 8], KcvMethod::Des3Cmac),
        };
        let mac = self.inner.raw.sign(s.handle(), mechanism, key, zeros)?;
        let value: [u8; 3] = mac
            .get(..3)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| HsmError::Unexpected {
                what: format!("CMAC of {} bytes", mac.len()),
            })?;
        Ok(Kcv { value, method })
    }

    fn kcv_or_destroy(
        &self,
        s: &PooledSession<'_>,
        key: CK_OBJECT_HANDLE,
        algorithm: Algorithm,
    ) -> Result<Kcv, HsmError> {
        self.kcv_of(s, key, algorithm).inspect_err(|_| {
            // The key is useless without its KCV; the KCV error is the one worth reporting.
            let _ = self.inner.raw.destroy_object(s.handle(), key);
        })
    }
}

/// The algorithm of a diversified child: one AES block, or a double-length 3DES key.
pub fn derived_algorithm(parent: Algorithm) -> Algorithm {
    match parent {
        Algorithm::Aes128 | Algorithm::Aes256 => Algorithm::Aes128,
        Algorithm::Des2 => Algorithm::Des2,
    }
}

fn find_token(
    ctx: &Pkcs11,
    raw: &RawModule,
    locator: &TokenLocator,
) -> Result<(Slot, Capabilities), HsmError> {
    let (slot, info) = find_slot(ctx, locator)?;
    let mechanisms = raw.mechanism_list(slot.id())?;
    // Asked only for a mechanism the slot lists; a token that will not say leaves the
    // mechanism list to decide alone.
    let aes_key_sizes = mechanisms
        .contains(&mechanisms::AES_KEY_GEN)
        .then(|| raw.mechanism_info(slot.id(), mechanisms::AES_KEY_GEN))
        .and_then(|info| {
            info.inspect_err(|e| {
                tracing::debug!(error = %e, "no key sizes for CKM_AES_KEY_GEN");
            })
            .ok()
        })
        .map(|info| {
            // CK_ULONG is 32 bits on some targets, 64 here.
            #[allow(clippy::unnecessary_cast)]
            KeySizes {
                min: info.ulMinKeySize as u64,
                max: info.ulMaxKeySize as u64,
            }
        });
    let caps = Capabilities {
        label: info.label().trim_end().to_string(),
        manufacturer: info.manufacturer_id().trim_end().to_string(),
        model: info.model().trim_end().to_string(),
        serial: info.serial_number().trim_end().to_string(),
        wrap_pad: Capabilities::pick_wrap_pad(&mechanisms),
        mechanisms,
        aes_key_sizes,
        derive_template: false,
    };
    Ok((slot, caps))
}

/// Loads and initialises a PKCS#11 module (a module another part of the process initialised
/// already is fine: the loader hands back the same library).
pub(crate) fn load_module(path: &std::path::Path) -> Result<Pkcs11, HsmError> {
    let module_err = |reason: String| HsmError::ModuleLoad {
        path: path.to_path_buf(),
        reason,
    };
    let ctx = Pkcs11::new(path).map_err(|e| module_err(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(module_err(format!("C_Initialize: {e}"))),
    }
}

/// Whether two module paths name one library file: the loader hands out one copy of it, with
/// one PKCS#11 state, for both (a symlink, such as Debian's `/usr/lib/softhsm/libsofthsm2.so`,
/// is the file it points to). Paths that cannot be read are compared as written.
pub fn same_module(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// The one initialised token the locator names; errors list the tokens present. Slots whose
/// token cannot be read are passed over.
pub(crate) fn find_slot(
    ctx: &Pkcs11,
    locator: &TokenLocator,
) -> Result<(Slot, cryptoki::slot::TokenInfo), HsmError> {
    let mut matching = Vec::new();
    let mut present = Vec::new();
    for slot in ctx.get_slots_with_token()? {
        // A token taken out since the module listed it (a card moved on: SoftHSM2 keeps its
        // slot until the next C_Initialize, and its info then fails) is not present.
        let info = match ctx.get_token_info(slot) {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(slot = slot.id(), error = %e, "a slot whose token cannot be read is skipped");
                continue;
            }
        };
        if !info.token_initialized() {
            continue;
        }
        present.push(info.label().trim_end().to_string());
        if locator.matches(
            info.label(),
            info.manufacturer_id(),
            info.serial_number(),
            info.model(),
        ) {
            matching.push((slot, info));
        }
    }
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(HsmError::TokenNotFound {
            wanted: locator.to_string(),
            present: if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            },
        }),
        count => Err(HsmError::AmbiguousToken {
            wanted: locator.to_string(),
            count,
        }),
    }
}

/// Logs the user in on `session` (already logged in through another session is fine).
pub(crate) fn login_user(session: &Session, pin: &SecretString) -> Result<(), HsmError> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn open_sessions(
    ctx: &Pkcs11,
    slot: Slot,
    count: usize,
    pin: &SecretString,
) -> Result<Vec<Session>, HsmError> {
    let first = ctx.open_rw_session(slot)?;
    login_user(&first, pin)?;
    let mut sessions = vec![first];
    for _ in 1..count {
        sessions.push(ctx.open_rw_session(slot)?);
    }
    Ok(sessions)
}

fn find_key(s: &Session, label: &str) -> Result<ObjectHandle, HsmError> {
    let _timer = timing::CallTimer::start("C_FindObjects", "none");
    let found = s.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    // Any session of the token, logged in or not, can make a public key with any label. One
    // that is not trusted either is not hkms's: it must neither stand in for a key that went
    // missing nor make a real one ambiguous.
    let mut ours = Vec::with_capacity(found.len());
    for object in found {
        let facts =
            match s.get_attributes(object, &[AttributeType::Private, AttributeType::Trusted]) {
                Ok(facts) => facts,
                // Destroyed since it was found: not ours either way.
                Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => continue,
                Err(e) => return Err(e.into()),
            };
        if facts
            .iter()
            .any(|a| matches!(a, Attribute::Private(true) | Attribute::Trusted(true)))
        {
            ours.push(object);
        }
    }
    match ours.as_slice() {
        [one] => Ok(*one),
        [] => Err(HsmError::KeyNotFound {
            label: label.into(),
        }),
        many => Err(HsmError::DuplicateLabel {
            label: label.into(),
            count: many.len(),
        }),
    }
}

fn read_facts(s: &Session, object: ObjectHandle, class: &str) -> Result<ObjectFacts, HsmError> {
    let wanted = [
        AttributeType::Label,
        AttributeType::Token,
        AttributeType::Private,
        AttributeType::Sensitive,
        AttributeType::Extractable,
        AttributeType::WrapWithTrusted,
        AttributeType::Trusted,
        AttributeType::Derive,
        AttributeType::Encrypt,
        AttributeType::Decrypt,
        AttributeType::Sign,
        AttributeType::Wrap,
        AttributeType::Unwrap,
        AttributeType::Modifiable,
        AttributeType::Destroyable,
        AttributeType::KeyType,
        AttributeType::AlwaysSensitive,
        AttributeType::NeverExtractable,
        AttributeType::Local,
        AttributeType::Verify,
    ];
    let mut facts = ObjectFacts {
        class: class.to_string(),
        ..ObjectFacts::default()
    };
    for attr in s.get_attributes(object, &wanted)? {
        match attr {
            Attribute::Label(b) => facts.label = String::from_utf8_lossy(&b).into_owned(),
            Attribute::Token(v) => facts.token = Some(v),
            Attribute::Private(v) => facts.private = Some(v),
            Attribute::Unwrap(v) => facts.unwrap = Some(v),
            Attribute::Sensitive(v) => facts.sensitive = Some(v),
            Attribute::Extractable(v) => facts.extractable = Some(v),
            Attribute::WrapWithTrusted(v) => facts.wrap_with_trusted = Some(v),
            Attribute::Trusted(v) => facts.trusted = Some(v),
            Attribute::Derive(v) => facts.derive = Some(v),
            Attribute::Encrypt(v) => facts.encrypt = Some(v),
            Attribute::Decrypt(v) => facts.decrypt = Some(v),
            Attribute::Sign(v) => facts.sign = Some(v),
            Attribute::Wrap(v) => facts.wrap = Some(v),
            Attribute::Modifiable(v) => facts.modifiable = Some(v),
            Attribute::Destroyable(v) => facts.destroyable = Some(v),
            Attribute::KeyType(k) => facts.key_type = Some(k.to_string()),
            Attribute::AlwaysSensitive(v) => facts.always_sensitive = Some(v),
            Attribute::NeverExtractable(v) => facts.never_extractable = Some(v),
            Attribute::Local(v) => facts.local = Some(v),
            Attribute::Verify(v) => facts.verify = Some(v),
            _ => {}
        }
    }
    Ok(facts)
}

/// A template's flags by `CKA_*` name.
fn named_flags(flags: Vec<(cryptoki_sys::CK_ATTRIBUTE_TYPE, bool)>) -> Vec<(String, bool)> {
    flags
        .into_iter()
        .map(|(t, v)| (attribute_name(t), v))
        .collect()
}

/// The `CKA_*` name of a boolean attribute the attribute audit reads in templates; others as
/// their number.
fn attribute_name(t: cryptoki_sys::CK_ATTRIBUTE_TYPE) -> String {
    use cryptoki_sys::*;
    let name = match t {
        CKA_SENSITIVE => "CKA_SENSITIVE",
        CKA_EXTRACTABLE => "CKA_EXTRACTABLE",
        CKA_ENCRYPT => "CKA_ENCRYPT",
        CKA_DECRYPT => "CKA_DECRYPT",
        CKA_WRAP => "CKA_WRAP",
        CKA_UNWRAP => "CKA_UNWRAP",
        CKA_DERIVE => "CKA_DERIVE",
        CKA_SIGN => "CKA_SIGN",
        CKA_VERIFY => "CKA_VERIFY",
        CKA_MODIFIABLE => "CKA_MODIFIABLE",
        CKA_WRAP_WITH_TRUSTED => "CKA_WRAP_WITH_TRUSTED",
        CKA_TOKEN => "CKA_TOKEN",
        CKA_PRIVATE => "CKA_PRIVATE",
        _ => return format!("CKA_0x{t:x}"),
    };
    name.to_string()
}
