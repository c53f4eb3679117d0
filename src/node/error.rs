//! Errors of the node's use cases, classified so the gRPC layer can pick a status code, and
//! each with a [`Reason`] and machine values so that a program can act on it without reading
//! the English.

use crate::hierarchy::HierarchyError;
use crate::hsm::{HsmError, HsmErrorKind};
use crate::store::StoreError;

use super::{ErrorClass, LimitRefusal, Reason};

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
    /// A failure of a named kind, with the values a program needs to act on it (the key, the
    /// ceremony, the field). Its class is its reason's.
    #[error("{0}")]
    Failure(Box<Failure>),
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

/// Longest metadata value (or field name) an error carries, in characters: as long as a record's
/// parameters, so what a caller sent cannot grow an answer's trailers.
const MAX_VALUE: usize = 128;

/// A failure with its reason: the message for people, the reason, metadata and field for
/// programs. Made with [`NodeError::because`] or [`NodeError::invalid_field`].
#[derive(Debug)]
pub struct Failure {
    reason: Reason,
    message: String,
    metadata: Vec<(&'static str, String)>,
    field: Option<String>,
}

impl Failure {
    /// Adds a machine value (`key_id`, `ceremony_id`, `state`, ...): never a secret, and at
    /// most 128 characters of what the caller sent.
    pub fn with(mut self, key: &'static str, value: impl ToString) -> Failure {
        let value = crate::audit::record::cut(&value.to_string(), MAX_VALUE);
        self.metadata.retain(|(k, _)| *k != key);
        self.metadata.push((key, value));
        self
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Failure> for NodeError {
    fn from(f: Failure) -> Self {
        NodeError::Failure(Box::new(f))
    }
}

/// The request field a wrong value came in, as the proto names it (`region`, `parent_id`,
/// `params.key_type`), for the input readers that do not know it themselves.
pub trait InField<T> {
    /// Names `field` as the one that is wrong when `self` is a refusal of the caller's input
    /// that names no field yet.
    fn field(self, field: &str) -> Result<T, NodeError>;
}

impl<T> InField<T> for Result<T, NodeError> {
    fn field(self, field: &str) -> Result<T, NodeError> {
        self.map_err(|e| e.in_field(field))
    }
}

impl NodeError {
    /// A failure of kind `reason`, with `message` for people; add machine values with
    /// [`Failure::with`].
    pub fn because(reason: Reason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
            metadata: Vec::new(),
            field: None,
        }
    }

    /// The caller's field `field` (as the proto names it) is wrong: INVALID_ARGUMENT, with the
    /// field named for programs (`BadRequest`) as well as in `message`.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> NodeError {
        // Fields are named by the services, from the proto; cut all the same, as metadata is.
        let field = crate::audit::record::cut(field, MAX_VALUE);
        let mut f = NodeError::because(Reason::InvalidField, message).with("field", &field);
        f.field = Some(field);
        f.into()
    }

    /// This error, with `field` named as the wrong one if it is a refusal of the caller's input
    /// that names no field yet; any other error as it is.
    pub fn in_field(self, field: &str) -> NodeError {
        match self {
            NodeError::InvalidArgument(message) => NodeError::invalid_field(field, message),
            NodeError::Failure(f)
                if matches!(f.reason, Reason::InvalidField | Reason::InvalidRequest)
                    && f.field.is_none() =>
            {
                let Failure {
                    message, metadata, ..
                } = *f;
                let mut e = NodeError::invalid_field(field, message);
                if let NodeError::Failure(g) = &mut e {
                    for (k, v) in metadata {
                        if k != "field" {
                            g.metadata.push((k, v));
                        }
                    }
                }
                e
            }
            other => other,
        }
    }

    /// This error with `value` as its `key` metadata when it has none (the key id of a
    /// registry refusal that does not know it): the same reason, class and message.
    pub fn about(self, key: &'static str, value: impl ToString) -> NodeError {
        let metadata = self.metadata();
        // A limit's refusal keeps its own variant: the pipeline counts it apart.
        if matches!(self, NodeError::ResourceExhausted(_))
            || metadata.iter().any(|(k, _)| *k == key)
        {
            return self;
        }
        let mut f = NodeError::because(self.reason(), self.to_string());
        f.metadata = metadata;
        f.field = self.field().map(str::to_string);
        f.with(key, value).into()
    }

    /// The class of this error: its reason's.
    pub fn class(&self) -> ErrorClass {
        match self {
            NodeError::Replayed { class, .. } => *class,
            _ => self.reason().class(),
        }
    }

    /// The kind of failure, for programs. Errors made without one get the reason of their
    /// variant (for the registry's and the token's, of their kind).
    pub fn reason(&self) -> Reason {
        match self {
            NodeError::Failure(f) => f.reason,
            NodeError::InvalidArgument(_) => Reason::InvalidRequest,
            NodeError::NotFound(_) => Reason::ResourceNotFound,
            NodeError::AlreadyExists(_) => Reason::ResourceExists,
            NodeError::FailedPrecondition(_) => Reason::PreconditionFailed,
            NodeError::PermissionDenied(_) => Reason::PolicyDenied,
            NodeError::ResourceExhausted(_) => Reason::CardLimitReached,
            NodeError::Hsm(e) => match e.kind() {
                HsmErrorKind::Unavailable => Reason::TokenUnavailable,
                HsmErrorKind::FailedPrecondition => Reason::TokenRefused,
                HsmErrorKind::NotFound | HsmErrorKind::Configuration | HsmErrorKind::Internal => {
                    Reason::TokenFault
                }
            },
            NodeError::Store(e) => match e {
                StoreError::AlreadyExists { .. } => Reason::KeyAlreadyDerived,
                StoreError::PackageImported { .. } => Reason::PackageAlreadyImported,
                StoreError::RequestIdTaken { .. } => Reason::RequestIdTaken,
                StoreError::NotFound { .. } => Reason::KeyNotFound,
                StoreError::Conflict { .. } | StoreError::Transition(_) => Reason::WrongKeyState,
                _ => Reason::RegistryFault,
            },
            NodeError::Internal(_) => Reason::InternalError,
            // Its first answer's reason travels in its kept details; this one is for logs.
            NodeError::Replayed { class, .. } => match class {
                ErrorClass::InvalidArgument => Reason::InvalidRequest,
                ErrorClass::NotFound => Reason::ResourceNotFound,
                ErrorClass::AlreadyExists => Reason::ResourceExists,
                ErrorClass::PermissionDenied => Reason::PolicyDenied,
                ErrorClass::ResourceExhausted => Reason::CardLimitReached,
                ErrorClass::Unavailable => Reason::TokenUnavailable,
                _ => Reason::PreconditionFailed,
            },
        }
    }

    /// The machine values that go with the reason (`ErrorInfo.metadata`): ids, states, limits;
    /// never a secret.
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            NodeError::Failure(f) => f.metadata.clone(),
            NodeError::ResourceExhausted(r) => {
                let mut m = vec![
                    ("limit", r.limit.as_str().to_string()),
                    ("value", r.value.to_string()),
                ];
                if let Some(at) = r.frees_at {
                    m.push(("frees_at", at.to_string()));
                }
                if let Some(wait) = r.wait_secs {
                    m.push(("retry_after_secs", wait.to_string()));
                }
                m
            }
            NodeError::Store(e) => match e {
                StoreError::AlreadyExists { parent, region } => vec![
                    ("parent_id", parent.to_string()),
                    ("region", region.to_string()),
                ],
                StoreError::PackageImported { package_id } => {
                    vec![("package_id", package_id.clone())]
                }
                StoreError::NotFound { id } => vec![("key_id", id.to_string())],
                StoreError::Conflict {
                    id,
                    expected,
                    actual,
                } => vec![
                    ("key_id", id.to_string()),
                    ("state", actual.to_string()),
                    ("expected_state", expected.to_string()),
                ],
                StoreError::Transition(HierarchyError::IllegalTransition { from, to, .. }) => {
                    vec![("state", from.clone()), ("requested_state", to.clone())]
                }
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// The request field that is wrong, as the proto names it, when the error names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            NodeError::Failure(f) => f.field.as_deref(),
            _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hierarchy::{KeyId, KeyState};

    fn key() -> KeyId {
        KeyId::parse("k-0123456789abcdef0123456789abcdef").expect("key id")
    }

    #[test]
    fn a_failure_takes_its_reasons_class_and_keeps_its_message() {
        let e: NodeError = NodeError::because(Reason::WrongKeyState, "key k-1 is suspended")
            .with("key_id", "k-1")
            .into();
        assert_eq!(e.class(), ErrorClass::FailedPrecondition);
        assert_eq!(e.to_string(), "key k-1 is suspended");
        assert_eq!(e.metadata(), vec![("key_id", "k-1".to_string())]);
        assert_eq!(e.field(), None);
    }

    #[test]
    fn naming_the_field_turns_an_input_refusal_into_invalid_field() {
        let e = Err::<(), _>(NodeError::InvalidArgument("bad region".into()))
            .field("region")
            .unwrap_err();
        assert_eq!(e.reason(), Reason::InvalidField);
        assert_eq!(e.field(), Some("region"));
        assert_eq!(e.to_string(), "bad region");
        // The first field named stays: a reader nested in another names the inner one.
        let e = Err::<(), _>(e).field("params").unwrap_err();
        assert_eq!(e.field(), Some("region"));
        // Other errors are left as they are.
        let e = Err::<(), _>(NodeError::NotFound("no key".into()))
            .field("id")
            .unwrap_err();
        assert_eq!(e.reason(), Reason::ResourceNotFound);
        assert_eq!(e.field(), None);
    }

    #[test]
    fn about_adds_a_missing_value_and_changes_nothing_else() {
        let conflict =
            NodeError::Store(StoreError::Transition(HierarchyError::IllegalTransition {
                from: "suspended".into(),
                to: "suspended".into(),
                allowed: "active".into(),
            }));
        let message = conflict.to_string();
        let e = conflict.about("key_id", "k-1");
        assert_eq!(e.reason(), Reason::WrongKeyState);
        assert_eq!(e.class(), ErrorClass::FailedPrecondition);
        assert_eq!(e.to_string(), message);
        let meta = e.metadata();
        assert!(meta.contains(&("key_id", "k-1".to_string())), "{meta:?}");
        assert!(
            meta.contains(&("state", "suspended".to_string())),
            "{meta:?}"
        );
        // A value it has is kept.
        let e = e.about("key_id", "k-2");
        assert!(e.metadata().contains(&("key_id", "k-1".to_string())));
    }

    #[test]
    fn registry_and_token_errors_keep_the_codes_records_had() {
        // Records name a failure by its class: deriving it from the reason changed none.
        for (e, class) in [
            (
                NodeError::Store(StoreError::NotFound { id: key() }),
                ErrorClass::NotFound,
            ),
            (
                NodeError::Store(StoreError::Conflict {
                    id: key(),
                    expected: KeyState::Active,
                    actual: KeyState::Suspended,
                }),
                ErrorClass::FailedPrecondition,
            ),
            (
                NodeError::Store(StoreError::PackageImported {
                    package_id: "p".into(),
                }),
                ErrorClass::AlreadyExists,
            ),
            (NodeError::Store(StoreError::Poisoned), ErrorClass::Internal),
            (
                NodeError::Hsm(HsmError::SessionLost {
                    function: "f".into(),
                    rv: "r".into(),
                }),
                ErrorClass::Unavailable,
            ),
            (
                NodeError::PermissionDenied("no".into()),
                ErrorClass::PermissionDenied,
            ),
            (
                NodeError::InvalidArgument("no".into()),
                ErrorClass::InvalidArgument,
            ),
        ] {
            assert_eq!(e.class(), class, "{e}");
        }
    }
}
