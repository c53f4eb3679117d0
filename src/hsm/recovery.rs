//! Losing the token under a running service, and getting it back without a restart.
//!
//! A request whose HSM call fails because the sessions or the token are gone (see
//! [`HsmError::is_session_lost`], or an ambiguous error after which the token no longer answers
//! `C_GetTokenInfo`) fails with UNAVAILABLE and marks the pool's generation broken. The pool then
//! hands out nothing and closes the sessions that come back. The next request (or the health
//! check) rebuilds it, once, under one lock, at most once per back-off step:
//!
//! 1. wait until every session of the lost generation has come back and been closed;
//! 2. find the token again by the configured label or URI (it must have the same serial), open
//!    the sessions and log the user in again with the PIN held since start;
//! 3. if that fails, finalize and initialise the module again and retry step 2 (SoftHSM2 only
//!    sees a token folder again after a new `C_Initialize`);
//! 4. refill the pool, which starts a new generation.
//!
//! While it fails, requests get UNAVAILABLE at once instead of waiting. A refused or locked PIN
//! stops the attempts: retrying would lock the token.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use super::{HsmError, Pkcs11Token, TokenLocator, find_slot, open_sessions};

/// Destroyed session objects between two initialisations of the module, on any token (0 would
/// mean never). SoftHSM2 2.6.1 keeps every destroyed session object in memory until
/// `C_Finalize` (its `SessionObjectStore::deleteObject` never frees it; fixed upstream later),
/// about 250 bytes each: a million cards would otherwise cost the node 0.5 GB, and 100,000 keep
/// it under about 25 MB. No PKCS#11 call tells whether a token leaks so, and a token's name is
/// no capability: the budget applies to every token, where a recycle every 100,000 card keys
/// only costs one pause of the requests (see `Pkcs11Token::recycle_if_due`).
pub const DEFAULT_SESSION_OBJECT_BUDGET: u64 = 100_000;

/// The first wait after a failed rebuild; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two rebuild attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the rebuild needs besides the pool: which token, and where it is now.
pub(crate) struct Recovery {
    locator: TokenLocator,
    /// The serial of the token opened at start; a token with another serial is not taken.
    serial: String,
    /// The token's slot. Written only while the module is initialised again, so that no
    /// session-less call (the health check, a probe) runs across `C_Finalize`.
    slot: RwLock<Slot>,
    attempts: Mutex<Attempts>,
}

struct Attempts {
    next_try: Instant,
    backoff: Duration,
    last_failure: String,
    /// Set after a failure that retrying would make worse (a refused PIN).
    stopped: bool,
}

impl Recovery {
    pub(crate) fn new(locator: TokenLocator, serial: String, slot: Slot) -> Recovery {
        Recovery {
            locator,
            serial,
            slot: RwLock::new(slot),
            attempts: Mutex::new(Attempts {
                next_try: Instant::now(),
                backoff: FIRST_BACKOFF,
                last_failure: String::new(),
                stopped: false,
            }),
        }
    }

    /// The token's slot, held for writing while the module is initialised again.
    fn slot_mut(&self) -> Result<std::sync::RwLockWriteGuard<'_, Slot>, HsmError> {
        self.slot.write().map_err(|_| HsmError::Unexpected {
            what: "state of the token slot (a thread panicked while holding it)".into(),
        })
    }

    /// The token's slot, held so that the module is not initialised again meanwhile.
    pub(crate) fn slot(&self) -> Result<RwLockReadGuard<'_, Slot>, HsmError> {
        self.slot.read().map_err(|_| HsmError::Unexpected {
            what: "state of the token slot (a thread panicked while holding it)".into(),
        })
    }
}

impl Pkcs11Token {
    /// Runs one HSM operation. If it failed because the token or its sessions are gone, the
    /// pool is marked broken and the error says the connection is being re-established.
    pub(crate) fn guarded<T>(
        &self,
        op: impl FnOnce() -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let generation = self.inner.pool.generation();
        op().map_err(|e| self.after_failure(generation, e))
    }

    fn after_failure(&self, generation: u64, e: HsmError) -> HsmError {
        if e.is_invalid_handle() {
            // A remembered handle may be the stale one: search again next time.
            self.inner.handles.clear();
        }
        let e = if e.is_session_lost() {
            e
        } else if e.may_mean_token_gone() {
            match self.probe() {
                Ok(()) => return e,
                Err(gone) => {
                    tracing::debug!(error = %e, "the token stopped answering after this error");
                    lost_because(gone)
                }
            }
        } else {
            return e;
        };
        if self.inner.pool.mark_broken(generation) {
            tracing::warn!(
                token = %self.inner.caps.label,
                generation,
                error = %e,
                "HSM sessions lost; requests fail with UNAVAILABLE until they are rebuilt"
            );
        }
        e
    }

    /// Whether the token still answers `C_GetTokenInfo`.
    fn probe(&self) -> Result<(), HsmError> {
        let slot = self.inner.recovery.slot()?;
        self.inner.ctx.get_token_info(*slot)?;
        Ok(())
    }

    /// Checks that the token answers and the user PIN is not locked; drives the rebuild while
    /// the sessions are lost (the health check calls it every few seconds).
    pub(crate) fn check_token(&self) -> Result<(), HsmError> {
        if self.inner.pool.is_broken() {
            self.recover()?;
        }
        let generation = self.inner.pool.generation();
        let info = {
            let slot = self.inner.recovery.slot()?;
            self.inner.ctx.get_token_info(*slot)
        };
        match info {
            Ok(info) if info.user_pin_locked() => Err(HsmError::PinLocked),
            Ok(_) => Ok(()),
            Err(e) => {
                let e = lost_because(e.into());
                if self.inner.pool.mark_broken(generation) {
                    tracing::warn!(
                        token = %self.inner.caps.label,
                        generation,
                        error = %e,
                        "HSM sessions lost: the token stopped answering the health check; \
                         requests fail with UNAVAILABLE until they are rebuilt"
                    );
                }
                Err(e)
            }
        }
    }

    /// Rebuilds the broken pool, unless another thread is at it or the back-off has not
    /// passed; then it says why the connection is not back yet.
    pub(crate) fn recover(&self) -> Result<(), HsmError> {
        let recovery = &self.inner.recovery;
        let Ok(mut attempts) = recovery.attempts.try_lock() else {
            return Err(HsmError::Reconnecting {
                detail: "another request is rebuilding the sessions".into(),
            });
        };
        if !self.inner.pool.is_broken() {
            return Ok(());
        }
        let not_yet = |a: &Attempts| HsmError::Reconnecting {
            detail: if a.last_failure.is_empty() {
                "the sessions are being rebuilt".into()
            } else {
                format!("last attempt: {}", a.last_failure)
            },
        };
        if attempts.stopped || Instant::now() < attempts.next_try {
            return Err(not_yet(&attempts));
        }
        match self.rebuild() {
            Ok((generation, reinitialised)) => {
                attempts.backoff = FIRST_BACKOFF;
                attempts.last_failure.clear();
                tracing::info!(
                    token = %self.inner.caps.label,
                    generation,
                    sessions = self.inner.pool.size(),
                    reinitialised,
                    "HSM sessions rebuilt; requests are served again"
                );
                Ok(())
            }
            Err(e) => {
                attempts.stopped = matches!(e, HsmError::PinIncorrect | HsmError::PinLocked);
                attempts.last_failure = match &e {
                    HsmError::Reconnecting { detail } => detail.clone(),
                    other => other.to_string(),
                };
                attempts.next_try = Instant::now() + attempts.backoff;
                if attempts.stopped {
                    tracing::error!(
                        token = %self.inner.caps.label,
                        error = %e,
                        "cannot log in to the token again; no more attempts (they could lock \
                         the PIN): fix the PIN and restart hkms"
                    );
                } else {
                    tracing::warn!(
                        token = %self.inner.caps.label,
                        error = %e,
                        retry_in_ms = attempts.backoff.as_millis() as u64,
                        "HSM sessions not rebuilt yet"
                    );
                }
                attempts.backoff = (attempts.backoff * 2).min(MAX_BACKOFF);
                Err(not_yet(&attempts))
            }
        }
    }

    /// Steps 1–4 of the module doc; returns the new generation and whether the module was
    /// initialised again.
    fn rebuild(&self) -> Result<(u64, bool), HsmError> {
        let inner = &self.inner;
        inner.pool.wait_until_returned()?;
        let mut slot = inner.recovery.slot_mut()?;
        let (found, sessions, reinitialised) = match self.reopen() {
            Ok((found, sessions)) => (found, sessions, false),
            Err(e @ (HsmError::PinIncorrect | HsmError::PinLocked)) => return Err(e),
            Err(e) => {
                tracing::info!(
                    error = %e,
                    "the token cannot be reopened as it is; initialising the PKCS#11 module again"
                );
                reinitialise(&inner.ctx)?;
                let (found, sessions) = self.reopen()?;
                (found, sessions, true)
            }
        };
        *slot = found;
        let generation = inner.pool.refill(sessions)?;
        Ok((generation, reinitialised))
    }

    /// Finds the token by its locator (same serial as at start), opens the sessions and logs
    /// the user in.
    fn reopen(&self) -> Result<(Slot, Vec<Session>), HsmError> {
        let inner = &self.inner;
        let (slot, info) = find_slot(&inner.ctx, &inner.recovery.locator)?;
        let serial = info.serial_number().trim_end();
        if serial != inner.recovery.serial {
            return Err(HsmError::Reconnecting {
                detail: format!(
                    "the token matching {} now has serial {serial}, not {}; hkms only goes back \
                     to the token it started with",
                    inner.recovery.locator, inner.recovery.serial
                ),
            });
        }
        let sessions = open_sessions(&inner.ctx, slot, inner.pool.size(), &inner.pin)?;
        Ok((slot, sessions))
    }
}

impl Pkcs11Token {
    /// Counts one destroyed session object; once the budget is spent (see
    /// [`DEFAULT_SESSION_OBJECT_BUDGET`]) initialises the module again, which is the only way
    /// to make SoftHSM2 2.6.1 free them. Call it holding no session.
    pub(crate) fn session_object_destroyed(&self) {
        self.inner.session_objects.fetch_add(1, Ordering::Relaxed);
        self.recycle_if_due();
    }

    /// Initialises the module again when the budget of destroyed session objects is spent, or
    /// a session object could not be destroyed, unless a card job holds the module (it calls
    /// this again when it ends). Call it holding no session.
    pub fn recycle_if_due(&self) {
        let inner = &self.inner;
        let budget = inner.session_object_budget.load(Ordering::Relaxed);
        let spent = inner.session_objects.load(Ordering::Relaxed);
        let kept = inner.session_object_kept.load(Ordering::Acquire);
        if !kept && (budget == 0 || spent < budget) {
            return;
        }
        // A card job is running in this module: it calls again when it ends.
        let Ok(_no_card_job) = inner.module_hold.try_write() else {
            return;
        };
        if inner.recycling.swap(true, Ordering::AcqRel) {
            return;
        }
        inner.session_objects.store(0, Ordering::Relaxed);
        // Cleared before the sessions close: a destroy that fails in a new session after the
        // refill sets it again, and is not lost.
        let kept = inner.session_object_kept.swap(false, Ordering::AcqRel);
        match self.recycle() {
            Ok(generation) => tracing::info!(
                token = %inner.caps.label,
                generation,
                destroyed_session_objects = spent,
                kept_session_object = kept,
                "PKCS#11 module initialised again to free destroyed session objects"
            ),
            Err(e) => {
                if kept {
                    inner.session_object_kept.store(true, Ordering::Release);
                }
                tracing::warn!(
                    token = %inner.caps.label,
                    error = %e,
                    "cannot initialise the PKCS#11 module again; the recovery takes over"
                )
            }
        }
        inner.recycling.store(false, Ordering::Release);
    }

    /// Says that a transient session object (a card key, a component's check key) could not be
    /// destroyed: the module is initialised again after the next destroy, whatever the budget,
    /// which closes every session and so destroys it.
    pub fn session_object_kept(&self) {
        tracing::warn!(
            token = %self.inner.caps.label,
            "a transient session object could not be destroyed; its session will be closed"
        );
        self.inner
            .session_object_kept
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Keeps the module from being initialised again to free session objects while the guard
    /// lives: a card job holds it, since its card sessions would end with the module's. A
    /// rebuild after a lost token still goes ahead.
    pub fn hold_module(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        // The lock guards no data: a poisoned one is as good as a sound one.
        self.inner
            .module_hold
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets after how many destroyed session objects the module is initialised again (0:
    /// never). The default is [`DEFAULT_SESSION_OBJECT_BUDGET`], whatever the token; tests set
    /// a small one.
    pub fn set_session_object_budget(&self, budget: u64) {
        self.inner
            .session_object_budget
            .store(budget, Ordering::Relaxed);
    }

    /// Initialises the module again so that tokens that appeared since it was initialised
    /// are seen: SoftHSM2 reads its token folder only in `C_Initialize`, so a transport key
    /// card made after the node started stays "not present" until then. Waits for the
    /// requests in flight and refills the pool, as the session-object recycle does (which it
    /// also stands for). A card job calls it, under its module hold and before it opens the
    /// card, when the card is not found.
    pub fn rescan_tokens(&self) -> Result<(), HsmError> {
        let inner = &self.inner;
        if inner.recycling.swap(true, Ordering::AcqRel) {
            return Err(HsmError::Reconnecting {
                detail: "the PKCS#11 module is being initialised again".into(),
            });
        }
        let kept = inner.session_object_kept.swap(false, Ordering::AcqRel);
        let spent = inner.session_objects.swap(0, Ordering::Relaxed);
        let result = self.recycle();
        match &result {
            Ok(generation) => tracing::info!(
                token = %inner.caps.label,
                generation,
                "PKCS#11 module initialised again to find tokens that appeared since"
            ),
            Err(e) => {
                if kept {
                    inner.session_object_kept.store(true, Ordering::Release);
                }
                inner.session_objects.fetch_add(spent, Ordering::Relaxed);
                tracing::warn!(
                    token = %inner.caps.label,
                    error = %e,
                    "cannot initialise the PKCS#11 module again to look for new tokens"
                );
            }
        }
        inner.recycling.store(false, Ordering::Release);
        result.map(|_| ())
    }

    /// The session pool's generation: it grows with every rebuild and every recycle.
    pub fn pool_generation(&self) -> u64 {
        self.inner.pool.generation()
    }

    /// Waits until no request holds a session (new ones wait for the pool meanwhile), closes
    /// every session, finalizes and initialises the module, logs in again and refills the
    /// pool. Requests only wait; none fails unless the token cannot be opened again.
    fn recycle(&self) -> Result<u64, HsmError> {
        let inner = &self.inner;
        let all = inner.pool.take_all()?;
        let mut slot = inner.recovery.slot_mut()?;
        // Handles die with the module.
        inner.handles.clear();
        all.replace(|| {
            reinitialise(&inner.ctx)?;
            let (found, sessions) = self.reopen()?;
            *slot = found;
            Ok(sessions)
        })
    }
}

/// `C_Finalize` (a library finalized already is fine) and `C_Initialize` again. Every session
/// of the old generation is closed by now (`wait_until_returned`).
pub(crate) fn reinitialise(ctx: &Pkcs11) -> Result<(), HsmError> {
    match ctx.clone().finalize() {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {}
        Err(e) => return Err(e.into()),
    }
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        // SoftHSM2 fails here (CKR_GENERAL_ERROR) while its token folder is missing.
        Err(CkError::Pkcs11(rv, _)) => Err(HsmError::Reconnecting {
            detail: format!("initialising the PKCS#11 module again returned {rv:?}"),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The error a request gets when a probe showed the token gone.
fn lost_because(probe: HsmError) -> HsmError {
    match probe {
        HsmError::Pkcs11 { function, rv, .. } | HsmError::SessionLost { function, rv } => {
            HsmError::SessionLost { function, rv }
        }
        other => HsmError::Reconnecting {
            detail: format!("the token stopped answering: {other}"),
        },
    }
}
