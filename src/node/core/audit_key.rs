//! Where the ceremony log's signing key lives: in the node's token under its application PIN
//! (the default), or in a token of its own with a PIN of its own (`[audit.token]`). On its own
//! token, whoever holds the application PIN (the host administrator, a copy of the PIN file)
//! cannot sign a rewritten log: they can change the records, but not make checkpoints that
//! verify with the key auditors pinned (docs/operations.md, "The audit key's own token").

use std::sync::Arc;

use crate::audit::Checkpoint;
use crate::audit::bundle::spki_pem_from_point;
use crate::config::NodeConfig;
use crate::hsm::{HsmConfig, HsmError, Pkcs11Token, Token, same_module};

use super::super::NodeError;
use super::log::{SIGNING_LABEL, Signing};

/// The token that holds the audit-signing pair, and how to use it.
pub(crate) struct AuditKey {
    /// The audit key's token: the node's own token, or the one `[audit.token]` names.
    token: Arc<dyn Token>,
    /// Set when the key has a token of its own in the main token's PKCS#11 module: one loaded
    /// library serves both, so the main token's recycle (`C_Finalize`, to free SoftHSM2's
    /// session objects) would cut a signature short. Signing holds that module meanwhile.
    module_shared_with: Option<Arc<dyn Token>>,
    /// The audit token's label, when it is a token of its own.
    own: Option<String>,
}

impl AuditKey {
    /// Opens the audit key where the config puts it and reads its public half (making the pair
    /// on a log without checkpoints, see [`Signing::load`]). With `[audit.token]`, the token
    /// is logged in to with its own PIN; a main token that still holds the pair that signed
    /// this log refuses the start: moving the key would break the log for every auditor.
    pub(crate) fn open(
        config: &NodeConfig,
        main: &Arc<dyn Token>,
        sealed: Option<&Checkpoint>,
    ) -> Result<(AuditKey, Signing), NodeError> {
        let Some(audit) = &config.audit_token else {
            let signing = Signing::load(main.as_ref(), sealed, "the token")?;
            let key = AuditKey {
                token: Arc::clone(main),
                module_shared_with: None,
                own: None,
            };
            return Ok((key, signing));
        };
        let token = open_audit_token(audit)?;
        let label = token.capabilities().label.clone();
        let main_caps = main.capabilities();
        if token.capabilities().serial == main_caps.serial
            && label == main_caps.label
            && same_module(&audit.module, &config.hsm.module)
        {
            return Err(NodeError::FailedPrecondition(format!(
                "[audit.token] ({}) is the token of [token] (`{label}`, serial {}): the audit key \
                 needs a token of its own with a PIN of its own; name another token, or leave \
                 [audit.token] out to keep the key on [token]",
                audit.locator, main_caps.serial
            )));
        }
        refuse_a_key_left_on_the_main_token(main.as_ref(), &main_caps.label, &label, sealed)?;
        let place = format!("the audit token `{label}` ([audit.token])");
        let signing = Signing::load(&token, sealed, &place)?;
        tracing::info!(
            token = %label,
            key = %signing.fingerprint,
            "the audit-signing key is on its own token"
        );
        let module_shared_with =
            same_module(&audit.module, &config.hsm.module).then(|| Arc::clone(main));
        let key = AuditKey {
            token: Arc::new(token),
            module_shared_with,
            own: Some(label),
        };
        Ok((key, signing))
    }

    /// Signs a SHA-256 digest with the audit key; returns r || s. A signature whose sessions
    /// were closed under it (the main token initialised the shared module again) is tried once
    /// more: the audit token rebuilds its sessions on that second call.
    pub(crate) fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        let signed = {
            let _hold = self
                .module_shared_with
                .as_ref()
                .map(|main| main.hold_module());
            match self.token.sign_digest(SIGNING_LABEL, digest) {
                Err(e)
                    if e.is_session_lost()
                        && let Some(own) = &self.own =>
                {
                    tracing::info!(token = %own, error = %e, "the audit token lost its sessions; signing again");
                    self.token.sign_digest(SIGNING_LABEL, digest)
                }
                other => other,
            }
        };
        // What the main token put off while the module was held.
        if let Some(main) = &self.module_shared_with {
            main.recycle_if_due();
        }
        signed
    }

    /// Whether the audit key's token answers (the main token's check, when they are one).
    pub(crate) fn check_alive(&self) -> Result<(), HsmError> {
        self.token.check_alive()
    }
}

/// Logs in to the audit token with its own PIN; the error names `[audit.token]`, so that an
/// operator does not look for the fault in `[token]`.
fn open_audit_token(audit: &HsmConfig) -> Result<Pkcs11Token, NodeError> {
    Pkcs11Token::open(audit).map_err(|e| {
        let hint = match e {
            HsmError::PinIncorrect | HsmError::PinLocked => {
                " (its PIN is the audit token's own, held by whoever keeps the audit key, not \
                 [token]'s application PIN)"
            }
            _ => "",
        };
        NodeError::FailedPrecondition(format!(
            "cannot open the audit token of [audit.token] ({}): {e}{hint}",
            audit.locator
        ))
    })
}

/// Refuses to start when the main token still holds an audit-signing pair that signed this
/// log's last checkpoint: the log would go on under another key, which no auditor pinned. A
/// pair that signed nothing of this log is only reported: it is of no use to a forger, since
/// auditors pin the audit token's key.
fn refuse_a_key_left_on_the_main_token(
    main: &dyn Token,
    main_label: &str,
    audit_label: &str,
    sealed: Option<&Checkpoint>,
) -> Result<(), NodeError> {
    let point = match main.signing_key(SIGNING_LABEL, false) {
        Ok(point) => point,
        Err(HsmError::KeyNotFound { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let signed_this_log = match (sealed, spki_pem_from_point(&point)) {
        (Some(last), Ok(pem)) => crate::audit::verify::checkpoint_verifies(last, &pem),
        _ => false,
    };
    if signed_this_log {
        let seq = sealed.map_or(0, |c| c.seq);
        return Err(NodeError::FailedPrecondition(format!(
            "the ceremony log's checkpoints (the last at record {seq}) were signed by the \
             audit-signing key {SIGNING_LABEL} on the node's token `{main_label}`, but \
             [audit.token] puts the key on `{audit_label}`: hkms does not move the key of a log \
             (auditors pinned the old one, and a new key would break the log for them). Keep \
             the old layout by leaving [audit.token] out of the config; or archive this log \
             (`hkms audit export`) and start a new node whose log begins with the key on its own \
             token (`hkms node init --audit-token` in a new folder)"
        )));
    }
    tracing::warn!(
        token = %main_label,
        label = SIGNING_LABEL,
        "the node's token still holds an audit-signing pair that signed nothing of this log: \
         the application PIN can use it; auditors pin the audit token's key, so destroy the old \
         pair when no older log needs it"
    );
    Ok(())
}
