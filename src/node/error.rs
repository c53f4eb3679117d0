//! Errors of the node's use cases, classified so the gRPC layer can pick a status code.

use crate::hierarchy::HierarchyError;
use crate::hsm::{HsmError, HsmErrorKind};
use crate::store::StoreError;

use super::LimitRefusal;

/// Why a key operation did not happen. Messages never contain key material or PINs.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request is malformed (bad region code, unknown key type, bad id...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The key asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The policy denies the request; the message is the decision's reason.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is well-formed but the system is not in a state that allows it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A velocity limit refused the request (card commands): the message names the limit, its
    /// value and when it frees up.
    #[error("{0}")]
    ResourceExhausted(LimitRefusal),
    /// The HSM refused or failed.
    #[error("HSM: {0}")]
    Hsm(HsmError),
    /// The registry refused or failed.
    #[error("registry: {0}")]
    Store(StoreError),
    /// A fault that is not the caller's.
    #[error("internal error: {0}")]
    Internal(String),
    /// The failure a request with the same client request id answered first, answered again
    /// to its retry (docs/api.md): its class and message as they were.
    #[error("{message}")]
    Replayed {
        /// The first answer's class.
        class: ErrorClass,
        /// Its message, as sent then.
        message: String,
        /// Its status details, encoded, as sent then (empty for none).
        details: Vec<u8>,
    },
}

/// How a failed request is reported: to its caller (a gRPC status code) and in its record
/// (the code's canonical name). This is hkms's one table of status codes: the pipeline maps
/// a class to its gRPC code by number, and records name it by [`ErrorClass::code_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The caller carried no usable identity (no certificate, a bad one, a revoked one).
    Unauthenticated,
    /// The caller's input is wrong.
    InvalidArgument,
    /// Not there.
    NotFound,
    /// Already there.
    AlreadyExists,
    /// Not allowed in the current state.
    FailedPrecondition,
    /// The policy says no.
    PermissionDenied,
    /// A velocity limit says not now.
    ResourceExhausted,
    /// Try again later.
    Unavailable,
    /// The service's fault.
    Internal,
}

/// Every class with its gRPC code number and canonical name (google.rpc.Code).
const CLASSES: [(ErrorClass, i32, &str); 9] = [
    (ErrorClass::InvalidArgument, 3, "INVALID_ARGUMENT"),
    (ErrorClass::NotFound, 5, "NOT_FOUND"),
    (ErrorClass::AlreadyExists, 6, "ALREADY_EXISTS"),
    (ErrorClass::PermissionDenied, 7, "PERMISSION_DENIED"),
    (ErrorClass::ResourceExhausted, 8, "RESOURCE_EXHAUSTED"),
    (ErrorClass::FailedPrecondition, 9, "FAILED_PRECONDITION"),
    (ErrorClass::Internal, 13, "INTERNAL"),
    (ErrorClass::Unavailable, 14, "UNAVAILABLE"),
    (ErrorClass::Unauthenticated, 16, "UNAUTHENTICATED"),
];

impl ErrorClass {
    fn entry(self) -> (ErrorClass, i32, &'static str) {
        // Every class is in the table (a unit test walks them all).
        CLASSES.into_iter().find(|(c, _, _)| *c == self).unwrap_or((
            ErrorClass::Internal,
            13,
            "INTERNAL",
        ))
    }

    /// The canonical gRPC code name of the class, as records name it.
    pub fn code_name(self) -> &'static str {
        self.entry().2
    }

    /// The gRPC status code number the caller is answered with.
    pub fn grpc_code(self) -> i32 {
        self.entry().1
    }

    /// Every class, in the table's order.
    pub fn all() -> impl Iterator<Item = ErrorClass> {
        CLASSES.into_iter().map(|(c, _, _)| c)
    }

    /// The class answered with gRPC code number `code`, if hkms answers with it.
    pub fn from_grpc_code(code: i32) -> Option<ErrorClass> {
        CLASSES
            .into_iter()
            .find(|(_, n, _)| *n == code)
            .map(|(c, _, _)| c)
    }
}

impl NodeError {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            NodeError::InvalidArgument(_) => ErrorClass::InvalidArgument,
            NodeError::NotFound(_) => ErrorClass::NotFound,
            NodeError::AlreadyExists(_) => ErrorClass::AlreadyExists,
            NodeError::FailedPrecondition(_) => ErrorClass::FailedPrecondition,
            NodeError::PermissionDenied(_) => ErrorClass::PermissionDenied,
            NodeError::ResourceExhausted(_) => ErrorClass::ResourceExhausted,
            NodeError::Hsm(e) => match e.kind() {
                HsmErrorKind::Unavailable => ErrorClass::Unavailable,
                HsmErrorKind::FailedPrecondition => ErrorClass::FailedPrecondition,
                HsmErrorKind::NotFound | HsmErrorKind::Configuration | HsmErrorKind::Internal => {
                    ErrorClass::Internal
                }
            },
            NodeError::Store(e) => match e {
                StoreError::AlreadyExists { .. }
                | StoreError::PackageImported { .. }
                | StoreError::RequestIdTaken { .. } => ErrorClass::AlreadyExists,
                StoreError::NotFound { .. } => ErrorClass::NotFound,
                StoreError::Conflict { .. } | StoreError::Transition(_) => {
                    ErrorClass::FailedPrecondition
                }
                _ => ErrorClass::Internal,
            },
            NodeError::Internal(_) => ErrorClass::Internal,
            NodeError::Replayed { class, .. } => *class,
        }
    }
}

// Plain `From` impls rather than `#[from]`: the message already embeds the inner error, and a
// `source` too would print it twice in an error chain.
impl From<HsmError> for NodeError {
    fn from(e: HsmError) -> Self {
        NodeError::Hsm(e)
    }
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        NodeError::Store(e)
    }
}

impl From<HierarchyError> for NodeError {
    fn from(e: HierarchyError) -> Self {
        NodeError::InvalidArgument(e.to_string())
    }
}
