//! Errors of the HSM layer: every `CKR_*` the token can return is mapped to a message that says
//! what went wrong and what the operator can do about it. No PIN or key byte ever appears here.

use std::path::PathBuf;

use cryptoki::error::{Error as CkError, RvError};

/// What the caller of the HSM layer should conclude from an error; the gRPC layer maps it to a
/// status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsmErrorKind {
    /// The token or its sessions are not usable right now; retrying later may work.
    Unavailable,
    /// The request cannot work on this token or with this key as it is.
    FailedPrecondition,
    /// The key asked for is not on the token.
    NotFound,
    /// Something the operator must fix in the configuration (module, token, PIN).
    Configuration,
    /// A fault inside the token or this layer.
    Internal,
}

/// An error from the HSM layer.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The PKCS#11 module could not be loaded or initialised.
    #[error(
        "cannot load the PKCS#11 module {path}: {reason}; check `module` in the [token] section \
         of the node config (for SoftHSM2 run softhsm-setup/install.sh)"
    )]
    ModuleLoad {
        /// The module path from the configuration.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// No token matches the configured label or URI.
    #[error(
        "no token matches {wanted}; tokens present: {present}; check the [token] section of the node config"
    )]
    TokenNotFound {
        /// What was asked for.
        wanted: String,
        /// Labels of the tokens that are present (labels are not secret).
        present: String,
    },
    /// More than one token matches the configured label or URI.
    #[error(
        "{count} tokens match {wanted}; make the [token] selection unique (add serial= to the pkcs11: URI)"
    )]
    AmbiguousToken {
        /// What was asked for.
        wanted: String,
        /// How many matched.
        count: usize,
    },
    /// The configured `pkcs11:` URI cannot be read.
    #[error("invalid pkcs11: URI: {0} (RFC 7512, e.g. pkcs11:token=hkms-dev)")]
    BadUri(String),
    /// The user PIN could not be read from its source.
    #[error("cannot read the user PIN: {0}")]
    PinSource(String),
    /// The token refused the user PIN.
    #[error(
        "the token refused the user PIN (CKR_PIN_INCORRECT); check the PIN file or variable named \
         in the node config; repeated failures may lock the token"
    )]
    PinIncorrect,
    /// The user PIN is locked.
    #[error(
        "the user PIN of the token is locked (CKR_PIN_LOCKED); the security officer must reset it"
    )]
    PinLocked,
    /// The token lacks a mechanism hkms needs for this request.
    #[error(
        "the token does not offer {what}; use a token that has it or a key type that does not need it"
    )]
    Unsupported {
        /// The missing capability.
        what: String,
    },
    /// The node's token lacks a mechanism or a rule hkms needs for this request, as the token
    /// itself said (its mechanism list, or its answer to a template): hkms refuses rather than
    /// do the work another way.
    #[error(
        "token {token} does not offer {what}; hkms refuses what needs it: use a token that has \
         it, or a key type that does not need it"
    )]
    TokenLacks {
        /// The token, as `"label" (manufacturer model)`.
        token: String,
        /// The missing mechanism or rule, by its PKCS#11 name.
        what: String,
    },
    /// A key registered in the store was not found on the token.
    #[error(
        "key {label} is not on the token; the registry and the token disagree (run `hkms keys orphans`)"
    )]
    KeyNotFound {
        /// The key's `CKA_LABEL`.
        label: String,
    },
    /// More than one object carries a label that must be unique.
    #[error(
        "{count} objects on the token carry label {label}; remove the duplicates with the token's tools"
    )]
    DuplicateLabel {
        /// The duplicated label.
        label: String,
        /// How many objects carry it.
        count: usize,
    },
    /// A fixed object of the node (the ID MAC key) breaks the rules hkms makes it under: made
    /// outside hkms, or changed since. Using it could hand its value, or an oracle for it, to
    /// whoever made it.
    #[error(
        "the token's {label} breaks the rules hkms makes it under ({broken}); hkms will not use \
         it. Restore the token from a backup; or destroy that object with the token's tools and \
         restart, which makes a new key (ID numbers recorded so far then no longer match new \
         records)"
    )]
    UnsafeKey {
        /// The object's label.
        label: String,
        /// The broken rules, as the attribute audit words them (attribute names, never values).
        broken: String,
    },
    /// No session became free in time.
    #[error(
        "all {size} HSM sessions stayed busy for {waited_ms} ms; retry, or raise `sessions` in [token]"
    )]
    PoolTimeout {
        /// Pool size.
        size: usize,
        /// How long the request waited.
        waited_ms: u128,
    },
    /// A call found the token gone or its sessions dead (`CKR_SESSION_HANDLE_INVALID`,
    /// `CKR_DEVICE_REMOVED`, a finalized library, ...). The pool is rebuilt behind it.
    #[error(
        "the HSM connection was lost ({function} returned {rv}); hkms is re-establishing it, \
         retry the request shortly"
    )]
    SessionLost {
        /// The PKCS#11 function.
        function: String,
        /// The `CKR_*` name.
        rv: String,
    },
    /// The sessions were lost and are not rebuilt yet.
    #[error(
        "the HSM connection was lost and is being re-established ({detail}); retry the request \
         shortly, and if this lasts check that the token is present and its module works"
    )]
    Reconnecting {
        /// Where the rebuild stands (never a PIN).
        detail: String,
    },
    /// The token answered with an unexpected value.
    #[error("the token returned an unexpected {what}; the token or its module may be faulty")]
    Unexpected {
        /// What was wrong.
        what: String,
    },
    /// A PKCS#11 call failed.
    #[error("{function} failed with {rv}: {advice}")]
    Pkcs11 {
        /// The PKCS#11 function.
        function: String,
        /// The `CKR_*` name.
        rv: String,
        /// What to do about it.
        advice: &'static str,
        /// How to classify it.
        kind: HsmErrorKind,
    },
}

impl HsmError {
    /// How the caller should treat this error.
    pub fn kind(&self) -> HsmErrorKind {
        match self {
            HsmError::ModuleLoad { .. }
            | HsmError::TokenNotFound { .. }
            | HsmError::AmbiguousToken { .. }
            | HsmError::BadUri(_)
            | HsmError::PinSource(_)
            | HsmError::PinIncorrect
            | HsmError::PinLocked
            | HsmError::UnsafeKey { .. } => HsmErrorKind::Configuration,
            HsmError::Unsupported { .. } | HsmError::TokenLacks { .. } => {
                HsmErrorKind::FailedPrecondition
            }
            HsmError::KeyNotFound { .. } => HsmErrorKind::NotFound,
            HsmError::DuplicateLabel { .. } | HsmError::Unexpected { .. } => HsmErrorKind::Internal,
            HsmError::PoolTimeout { .. }
            | HsmError::SessionLost { .. }
            | HsmError::Reconnecting { .. } => HsmErrorKind::Unavailable,
            HsmError::Pkcs11 { kind, .. } => *kind,
        }
    }

    /// A `CKR_GENERAL_ERROR`: SoftHSM2 returns it now and then for a valid request under
    /// concurrent load; a careful retry may succeed.
    pub fn is_token_hiccup(&self) -> bool {
        matches!(self, HsmError::Pkcs11 { rv, .. } if rv == "GeneralError")
    }

    /// The token or its sessions are gone: the pool must be rebuilt.
    pub fn is_session_lost(&self) -> bool {
        matches!(self, HsmError::SessionLost { .. })
    }

    /// An error a vanished token also gives (SoftHSM2 answers `CKR_GENERAL_ERROR`, finds no
    /// objects, or calls a handle invalid when its token folder disappears): worth asking the
    /// token whether it is still there before blaming the request.
    pub fn may_mean_token_gone(&self) -> bool {
        match self {
            HsmError::KeyNotFound { .. } => true,
            HsmError::Pkcs11 { rv, .. } => matches!(
                rv.as_str(),
                "GeneralError"
                    | "FunctionFailed"
                    | "ObjectHandleInvalid"
                    | "KeyHandleInvalid"
                    | "WrappingKeyHandleInvalid"
                    | "UnwrappingKeyHandleInvalid"
            ),
            _ => false,
        }
    }

    /// Whether a call refused an object handle (a remembered one may be stale).
    pub(crate) fn is_invalid_handle(&self) -> bool {
        matches!(self, HsmError::Pkcs11 { rv, .. }
            if matches!(rv.as_str(), "ObjectHandleInvalid" | "KeyHandleInvalid"
                | "WrappingKeyHandleInvalid" | "UnwrappingKeyHandleInvalid"))
    }

    /// Maps a raw `CK_RV` from a call made through [`crate::hsm`]'s raw path.
    pub(crate) fn from_rv(function: &str, rv: cryptoki_sys::CK_RV) -> HsmError {
        match cryptoki::error::Rv::from(rv) {
            cryptoki::error::Rv::Ok => HsmError::Unexpected {
                what: format!("CKR_OK treated as an error by {function}"),
            },
            cryptoki::error::Rv::Error(e) => from_rv_error(function, e),
        }
    }
}

impl From<CkError> for HsmError {
    fn from(e: CkError) -> Self {
        match e {
            CkError::Pkcs11(rv, function) => from_rv_error(&format!("{function:?}"), rv),
            CkError::LibraryLoading(err) => HsmError::ModuleLoad {
                path: PathBuf::new(),
                reason: err.to_string(),
            },
            other => HsmError::Unexpected {
                what: format!("answer ({other})"),
            },
        }
    }
}

fn from_rv_error(function: &str, rv: RvError) -> HsmError {
    use HsmErrorKind::*;
    let (advice, kind) = match rv {
        RvError::PinIncorrect => return HsmError::PinIncorrect,
        RvError::PinLocked => return HsmError::PinLocked,
        rv if loses_session(rv) => {
            return HsmError::SessionLost {
                function: function.to_string(),
                rv: format!("{rv:?}"),
            };
        }
        RvError::DeviceMemory | RvError::HostMemory => (
            "the token or host is out of memory; free objects or memory and retry",
            Unavailable,
        ),
        RvError::MechanismInvalid | RvError::MechanismParamInvalid => (
            "the token does not offer this mechanism for this key; check the key type's algorithm",
            FailedPrecondition,
        ),
        RvError::KeyFunctionNotPermitted | RvError::KeyTypeInconsistent => (
            "the key's attributes do not allow this operation; check the key type's usage",
            FailedPrecondition,
        ),
        RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid => (
            "the key is gone from the token; check the registry with `hkms keys orphans`",
            NotFound,
        ),
        RvError::TemplateIncomplete
        | RvError::TemplateInconsistent
        | RvError::AttributeTypeInvalid
        | RvError::AttributeValueInvalid
        | RvError::AttributeReadOnly => (
            "the token rejected hkms's key template; it may not support a required attribute",
            FailedPrecondition,
        ),
        RvError::KeyNotWrappable | RvError::KeyUnextractable => (
            "the key may not leave the token this way (by design)",
            FailedPrecondition,
        ),
        RvError::TokenWriteProtected => (
            "the token is write-protected; hkms needs a writable token",
            FailedPrecondition,
        ),
        _ => ("unexpected token error; see the token's logs", Internal),
    };
    HsmError::Pkcs11 {
        function: function.to_string(),
        rv: format!("{rv:?}"),
        advice,
        kind,
    }
}

/// Return values after which the sessions (or the whole library) are gone and must be
/// rebuilt: the token was removed or reset, the sessions or the login were dropped, or the
/// library was finalized under us.
fn loses_session(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::CryptokiNotInitialized
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn pin_incorrect_has_its_own_message() {
        let e = HsmError::from(CkError::Pkcs11(RvError::PinIncorrect, Function::Login));
        assert!(matches!(e, HsmError::PinIncorrect));
        assert_eq!(e.kind(), HsmErrorKind::Configuration);
    }

    #[test]
    fn lost_session_is_unavailable_and_says_retry() {
        let e = HsmError::from_rv("C_DeriveKey", cryptoki_sys::CKR_SESSION_HANDLE_INVALID);
        assert_eq!(e.kind(), HsmErrorKind::Unavailable);
        assert!(e.to_string().contains("retry"));
        assert!(e.to_string().contains("C_DeriveKey"));
        assert!(e.to_string().contains("re-establishing"));
    }

    #[test]
    fn dead_sessions_removed_tokens_and_a_finalized_library_are_session_loss() {
        for rv in [
            cryptoki_sys::CKR_SESSION_HANDLE_INVALID,
            cryptoki_sys::CKR_SESSION_CLOSED,
            cryptoki_sys::CKR_USER_NOT_LOGGED_IN,
            cryptoki_sys::CKR_DEVICE_REMOVED,
            cryptoki_sys::CKR_DEVICE_ERROR,
            cryptoki_sys::CKR_TOKEN_NOT_PRESENT,
            cryptoki_sys::CKR_TOKEN_NOT_RECOGNIZED,
            cryptoki_sys::CKR_CRYPTOKI_NOT_INITIALIZED,
        ] {
            let e = HsmError::from_rv("C_Sign", rv);
            assert!(e.is_session_lost(), "{rv:#x}: {e}");
            assert_eq!(e.kind(), HsmErrorKind::Unavailable, "{rv:#x}");
            assert!(!e.may_mean_token_gone(), "{rv:#x}");
        }
    }

    #[test]
    fn request_errors_are_not_session_loss() {
        for rv in [
            cryptoki_sys::CKR_TEMPLATE_INCONSISTENT,
            cryptoki_sys::CKR_MECHANISM_INVALID,
            cryptoki_sys::CKR_KEY_FUNCTION_NOT_PERMITTED,
            cryptoki_sys::CKR_DEVICE_MEMORY,
            cryptoki_sys::CKR_PIN_INCORRECT,
        ] {
            let e = HsmError::from_rv("C_DeriveKey", rv);
            assert!(!e.is_session_lost(), "{rv:#x}: {e}");
            assert!(!e.may_mean_token_gone(), "{rv:#x}");
        }
        assert!(
            !HsmError::PoolTimeout {
                size: 4,
                waited_ms: 1
            }
            .is_session_lost()
        );
    }

    #[test]
    fn errors_a_vanished_softhsm2_token_gives_ask_for_a_check() {
        assert!(
            HsmError::from_rv("C_GenerateKey", cryptoki_sys::CKR_GENERAL_ERROR)
                .may_mean_token_gone()
        );
        assert!(
            HsmError::from_rv("C_SignInit", cryptoki_sys::CKR_OBJECT_HANDLE_INVALID)
                .may_mean_token_gone()
        );
        assert!(
            HsmError::KeyNotFound {
                label: "hkms/k-1".into()
            }
            .may_mean_token_gone()
        );
    }

    #[test]
    fn reconnecting_is_unavailable_and_says_retry() {
        let e = HsmError::Reconnecting {
            detail: "the token is still absent".into(),
        };
        assert_eq!(e.kind(), HsmErrorKind::Unavailable);
        assert!(e.to_string().contains("being re-established"));
        assert!(e.to_string().contains("retry"));
    }

    #[test]
    fn only_a_general_error_is_a_hiccup_worth_a_retry() {
        assert!(
            HsmError::from_rv("C_DeriveKey", cryptoki_sys::CKR_GENERAL_ERROR).is_token_hiccup()
        );
        assert!(
            !HsmError::from_rv("C_DeriveKey", cryptoki_sys::CKR_TEMPLATE_INCONSISTENT)
                .is_token_hiccup()
        );
        assert!(!HsmError::PinIncorrect.is_token_hiccup());
    }

    #[test]
    fn unknown_code_is_internal() {
        let e = HsmError::from_rv("C_Sign", cryptoki_sys::CKR_FUNCTION_FAILED);
        assert_eq!(e.kind(), HsmErrorKind::Internal);
    }
}
