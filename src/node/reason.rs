//! Why a request failed, as a program reads it: one stable word per kind of failure, sent in
//! the status's `google.rpc.ErrorInfo` (docs/api.md lists them). The gRPC code says how bad
//! (caller's input, state, policy, fault) and the message says what to do, in English; the
//! reason is what a program branches on. Two failures of one code that a program must tell
//! apart ("needs a ceremony", "the key is in the wrong state") have two reasons.
//!
//! A reason's word never changes once released: programs compare it. Each reason belongs to
//! one class, so a reason also fixes the gRPC code it comes with.

use super::class::ErrorClass;

/// One kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    // UNAUTHENTICATED
    /// The connection carried no client certificate.
    ClientCertificateMissing,
    /// The certificate carries no usable hkms identity (none, several, or a malformed one).
    IdentityInvalid,
    /// A revocation list in force names the certificate or its chain.
    CertificateRevoked,

    // INVALID_ARGUMENT
    /// One field of the request is wrong: `BadRequest` names it.
    InvalidField,
    /// The body is not the protobuf message the method takes.
    MalformedBody,
    /// The policy declares no key type of that name.
    UnknownKeyType,
    /// A key package does not verify or does not fit this node.
    PackageInvalid,
    /// The request is wrong in a way no single field carries (the message says how).
    InvalidRequest,

    // NOT_FOUND
    /// No key of that id that the caller may see.
    KeyNotFound,
    /// No ceremony of that id.
    CeremonyNotFound,
    /// Not there (another kind of thing than a key or a ceremony).
    ResourceNotFound,

    // ALREADY_EXISTS
    /// The caller has approved this ceremony already.
    AlreadyApproved,
    /// The caller has entered a component of this ceremony already, or all are in.
    ComponentAlreadyEntered,
    /// The parent key has a live sub-key for that region already.
    KeyAlreadyDerived,
    /// This key package was imported already.
    PackageAlreadyImported,
    /// This card's transport key is registered already.
    CardAlreadyLoaded,
    /// The client's request id came, within the retry window, with another request.
    RequestIdTaken,
    /// Already there (something else).
    ResourceExists,

    // PERMISSION_DENIED
    /// The policy in force denies the caller this operation.
    PolicyDenied,
    /// Only persons of the policy's officer roster approve, and this certificate is on none.
    NotOnRoster,
    /// This node does not witness the caller's region.
    NotWitnessedHere,

    // FAILED_PRECONDITION
    /// The operation is under dual control: open a ceremony for it.
    CeremonyRequired,
    /// The operation is not under dual control: call it directly.
    CeremonyNotRequired,
    /// The ceremony is no longer open (running, done, failed, cancelled, used).
    CeremonyNotOpen,
    /// The ceremony expired before its approvals.
    CeremonyExpired,
    /// The ceremony is of another kind than the request needs.
    WrongCeremony,
    /// The same person approved with another certificate.
    PersonAlreadyApproved,
    /// The key's lifecycle state does not allow the request.
    WrongKeyState,
    /// The key type is not made (generated, derived, exported) at this tier or this way.
    KeyTypeNotAllowedHere,
    /// The card, its transport key or its PIN is not in a state to serve the request.
    CardNotReady,
    /// The key package is past its `not_after`, or older than a key registered here.
    PackageStale,
    /// The policy file or the policy kept in the registry does not allow the reload.
    PolicyNotReloadable,
    /// The token misses a key the node needs, or refuses the request as it is.
    TokenRefused,
    /// A witness refuses a checkpoint that does not extend the log it saw (a fork or a
    /// rollback): an alert, not a retry.
    CheckpointRefused,
    /// The node is not in a state that allows the request (the message says which).
    PreconditionFailed,

    // RESOURCE_EXHAUSTED
    /// A card-command velocity limit refuses the request for now.
    CardLimitReached,

    // UNIMPLEMENTED
    /// No such service or method.
    UnknownMethod,

    // UNAVAILABLE
    /// The token (HSM) cannot be reached right now.
    TokenUnavailable,

    // INTERNAL
    /// The request could not be written to the ceremony log, so it was refused.
    AuditLogUnavailable,
    /// The token failed.
    TokenFault,
    /// The registry failed.
    RegistryFault,
    /// Any other fault of the node.
    InternalError,
}

impl Reason {
    /// Every reason, in the order of docs/api.md's table.
    pub const ALL: [Reason; 42] = [
        Reason::ClientCertificateMissing,
        Reason::IdentityInvalid,
        Reason::CertificateRevoked,
        Reason::InvalidField,
        Reason::MalformedBody,
        Reason::UnknownKeyType,
        Reason::PackageInvalid,
        Reason::InvalidRequest,
        Reason::KeyNotFound,
        Reason::CeremonyNotFound,
        Reason::ResourceNotFound,
        Reason::AlreadyApproved,
        Reason::ComponentAlreadyEntered,
        Reason::KeyAlreadyDerived,
        Reason::PackageAlreadyImported,
        Reason::CardAlreadyLoaded,
        Reason::RequestIdTaken,
        Reason::ResourceExists,
        Reason::PolicyDenied,
        Reason::NotOnRoster,
        Reason::NotWitnessedHere,
        Reason::CeremonyRequired,
        Reason::CeremonyNotRequired,
        Reason::CeremonyNotOpen,
        Reason::CeremonyExpired,
        Reason::WrongCeremony,
        Reason::PersonAlreadyApproved,
        Reason::WrongKeyState,
        Reason::KeyTypeNotAllowedHere,
        Reason::CardNotReady,
        Reason::PackageStale,
        Reason::PolicyNotReloadable,
        Reason::TokenRefused,
        Reason::CheckpointRefused,
        Reason::PreconditionFailed,
        Reason::CardLimitReached,
        Reason::UnknownMethod,
        Reason::TokenUnavailable,
        Reason::AuditLogUnavailable,
        Reason::TokenFault,
        Reason::RegistryFault,
        Reason::InternalError,
    ];

    /// The reason's word on the wire (`ErrorInfo.reason`), UPPER_SNAKE_CASE. Never changes.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ClientCertificateMissing => "CLIENT_CERTIFICATE_MISSING",
            Reason::IdentityInvalid => "IDENTITY_INVALID",
            Reason::CertificateRevoked => "CERTIFICATE_REVOKED",
            Reason::InvalidField => "INVALID_FIELD",
            Reason::MalformedBody => "MALFORMED_BODY",
            Reason::UnknownKeyType => "UNKNOWN_KEY_TYPE",
            Reason::PackageInvalid => "PACKAGE_INVALID",
            Reason::InvalidRequest => "INVALID_REQUEST",
            Reason::KeyNotFound => "KEY_NOT_FOUND",
            Reason::CeremonyNotFound => "CEREMONY_NOT_FOUND",
            Reason::ResourceNotFound => "RESOURCE_NOT_FOUND",
            Reason::AlreadyApproved => "ALREADY_APPROVED",
            Reason::ComponentAlreadyEntered => "COMPONENT_ALREADY_ENTERED",
            Reason::KeyAlreadyDerived => "KEY_ALREADY_DERIVED",
            Reason::PackageAlreadyImported => "PACKAGE_ALREADY_IMPORTED",
            Reason::CardAlreadyLoaded => "CARD_ALREADY_LOADED",
            Reason::RequestIdTaken => "REQUEST_ID_TAKEN",
            Reason::ResourceExists => "RESOURCE_EXISTS",
            Reason::PolicyDenied => "POLICY_DENIED",
            Reason::NotOnRoster => "NOT_ON_ROSTER",
            Reason::NotWitnessedHere => "NOT_WITNESSED_HERE",
            Reason::CeremonyRequired => "CEREMONY_REQUIRED",
            Reason::CeremonyNotRequired => "CEREMONY_NOT_REQUIRED",
            Reason::CeremonyNotOpen => "CEREMONY_NOT_OPEN",
            Reason::CeremonyExpired => "CEREMONY_EXPIRED",
            Reason::WrongCeremony => "WRONG_CEREMONY",
            Reason::PersonAlreadyApproved => "PERSON_ALREADY_APPROVED",
            Reason::WrongKeyState => "WRONG_KEY_STATE",
            Reason::KeyTypeNotAllowedHere => "KEY_TYPE_NOT_ALLOWED_HERE",
            Reason::CardNotReady => "CARD_NOT_READY",
            Reason::PackageStale => "PACKAGE_STALE",
            Reason::PolicyNotReloadable => "POLICY_NOT_RELOADABLE",
            Reason::TokenRefused => "TOKEN_REFUSED",
            Reason::CheckpointRefused => "CHECKPOINT_REFUSED",
            Reason::PreconditionFailed => "PRECONDITION_FAILED",
            Reason::CardLimitReached => "CARD_LIMIT_REACHED",
            Reason::UnknownMethod => "UNKNOWN_METHOD",
            Reason::TokenUnavailable => "TOKEN_UNAVAILABLE",
            Reason::AuditLogUnavailable => "AUDIT_LOG_UNAVAILABLE",
            Reason::TokenFault => "TOKEN_FAULT",
            Reason::RegistryFault => "REGISTRY_FAULT",
            Reason::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The class, and so the gRPC code, every failure of this reason is answered with.
    pub fn class(self) -> ErrorClass {
        match self {
            Reason::ClientCertificateMissing
            | Reason::IdentityInvalid
            | Reason::CertificateRevoked => ErrorClass::Unauthenticated,
            Reason::InvalidField
            | Reason::MalformedBody
            | Reason::UnknownKeyType
            | Reason::PackageInvalid
            | Reason::InvalidRequest => ErrorClass::InvalidArgument,
            Reason::KeyNotFound | Reason::CeremonyNotFound | Reason::ResourceNotFound => {
                ErrorClass::NotFound
            }
            Reason::AlreadyApproved
            | Reason::ComponentAlreadyEntered
            | Reason::KeyAlreadyDerived
            | Reason::PackageAlreadyImported
            | Reason::CardAlreadyLoaded
            | Reason::RequestIdTaken
            | Reason::ResourceExists => ErrorClass::AlreadyExists,
            Reason::PolicyDenied | Reason::NotOnRoster | Reason::NotWitnessedHere => {
                ErrorClass::PermissionDenied
            }
            Reason::CeremonyRequired
            | Reason::CeremonyNotRequired
            | Reason::CeremonyNotOpen
            | Reason::CeremonyExpired
            | Reason::WrongCeremony
            | Reason::PersonAlreadyApproved
            | Reason::WrongKeyState
            | Reason::KeyTypeNotAllowedHere
            | Reason::CardNotReady
            | Reason::PackageStale
            | Reason::PolicyNotReloadable
            | Reason::TokenRefused
            | Reason::CheckpointRefused
            | Reason::PreconditionFailed => ErrorClass::FailedPrecondition,
            Reason::CardLimitReached => ErrorClass::ResourceExhausted,
            Reason::UnknownMethod => ErrorClass::Unimplemented,
            Reason::TokenUnavailable => ErrorClass::Unavailable,
            Reason::AuditLogUnavailable
            | Reason::TokenFault
            | Reason::RegistryFault
            | Reason::InternalError => ErrorClass::Internal,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_reason_is_listed_once_and_has_its_own_word() {
        let listed: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(listed.len(), Reason::ALL.len(), "a reason listed twice");
        // A reason missing from ALL would be missing from the documentation test too: the
        // match below fails to compile when a variant is added, and makes it be listed here.
        for r in Reason::ALL {
            let _: () = match r {
                Reason::ClientCertificateMissing
                | Reason::IdentityInvalid
                | Reason::CertificateRevoked
                | Reason::InvalidField
                | Reason::MalformedBody
                | Reason::UnknownKeyType
                | Reason::PackageInvalid
                | Reason::InvalidRequest
                | Reason::KeyNotFound
                | Reason::CeremonyNotFound
                | Reason::ResourceNotFound
                | Reason::AlreadyApproved
                | Reason::ComponentAlreadyEntered
                | Reason::KeyAlreadyDerived
                | Reason::PackageAlreadyImported
                | Reason::CardAlreadyLoaded
                | Reason::RequestIdTaken
                | Reason::ResourceExists
                | Reason::PolicyDenied
                | Reason::NotOnRoster
                | Reason::NotWitnessedHere
                | Reason::CeremonyRequired
                | Reason::CeremonyNotRequired
                | Reason::CeremonyNotOpen
                | Reason::CeremonyExpired
                | Reason::WrongCeremony
                | Reason::PersonAlreadyApproved
                | Reason::WrongKeyState
                | Reason::KeyTypeNotAllowedHere
                | Reason::CardNotReady
                | Reason::PackageStale
                | Reason::PolicyNotReloadable
                | Reason::TokenRefused
                | Reason::CheckpointRefused
                | Reason::PreconditionFailed
                | Reason::CardLimitReached
                | Reason::UnknownMethod
                | Reason::TokenUnavailable
                | Reason::AuditLogUnavailable
                | Reason::TokenFault
                | Reason::RegistryFault
                | Reason::InternalError => (),
            };
        }
    }

    #[test]
    fn words_are_upper_snake_case() {
        for r in Reason::ALL {
            let w = r.as_str();
            assert!(
                !w.is_empty()
                    && !w.starts_with('_')
                    && !w.ends_with('_')
                    && !w.contains("__")
                    && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{w}"
            );
        }
    }

    #[test]
    fn released_words_never_change() {
        // Programs compare these words: a change here breaks them. Add new reasons; never
        // rename or reuse one.
        let released = [
            (
                Reason::ClientCertificateMissing,
                "CLIENT_CERTIFICATE_MISSING",
            ),
            (Reason::IdentityInvalid, "IDENTITY_INVALID"),
            (Reason::CertificateRevoked, "CERTIFICATE_REVOKED"),
            (Reason::InvalidField, "INVALID_FIELD"),
            (Reason::MalformedBody, "MALFORMED_BODY"),
            (Reason::UnknownKeyType, "UNKNOWN_KEY_TYPE"),
            (Reason::PackageInvalid, "PACKAGE_INVALID"),
            (Reason::InvalidRequest, "INVALID_REQUEST"),
            (Reason::KeyNotFound, "KEY_NOT_FOUND"),
            (Reason::CeremonyNotFound, "CEREMONY_NOT_FOUND"),
            (Reason::ResourceNotFound, "RESOURCE_NOT_FOUND"),
            (Reason::AlreadyApproved, "ALREADY_APPROVED"),
            (Reason::ComponentAlreadyEntered, "COMPONENT_ALREADY_ENTERED"),
            (Reason::KeyAlreadyDerived, "KEY_ALREADY_DERIVED"),
            (Reason::PackageAlreadyImported, "PACKAGE_ALREADY_IMPORTED"),
            (Reason::CardAlreadyLoaded, "CARD_ALREADY_LOADED"),
            (Reason::ResourceExists, "RESOURCE_EXISTS"),
            (Reason::PolicyDenied, "POLICY_DENIED"),
            (Reason::NotOnRoster, "NOT_ON_ROSTER"),
            (Reason::NotWitnessedHere, "NOT_WITNESSED_HERE"),
            (Reason::CeremonyRequired, "CEREMONY_REQUIRED"),
            (Reason::CeremonyNotRequired, "CEREMONY_NOT_REQUIRED"),
            (Reason::CeremonyNotOpen, "CEREMONY_NOT_OPEN"),
            (Reason::CeremonyExpired, "CEREMONY_EXPIRED"),
            (Reason::WrongCeremony, "WRONG_CEREMONY"),
            (Reason::PersonAlreadyApproved, "PERSON_ALREADY_APPROVED"),
            (Reason::WrongKeyState, "WRONG_KEY_STATE"),
            (Reason::KeyTypeNotAllowedHere, "KEY_TYPE_NOT_ALLOWED_HERE"),
            (Reason::CardNotReady, "CARD_NOT_READY"),
            (Reason::PackageStale, "PACKAGE_STALE"),
            (Reason::PolicyNotReloadable, "POLICY_NOT_RELOADABLE"),
            (Reason::TokenRefused, "TOKEN_REFUSED"),
            (Reason::CheckpointRefused, "CHECKPOINT_REFUSED"),
            (Reason::PreconditionFailed, "PRECONDITION_FAILED"),
            (Reason::CardLimitReached, "CARD_LIMIT_REACHED"),
            (Reason::UnknownMethod, "UNKNOWN_METHOD"),
            (Reason::TokenUnavailable, "TOKEN_UNAVAILABLE"),
            (Reason::AuditLogUnavailable, "AUDIT_LOG_UNAVAILABLE"),
            (Reason::TokenFault, "TOKEN_FAULT"),
            (Reason::RegistryFault, "REGISTRY_FAULT"),
            (Reason::InternalError, "INTERNAL_ERROR"),
            (Reason::RequestIdTaken, "REQUEST_ID_TAKEN"),
        ];
        assert_eq!(released.len(), Reason::ALL.len());
        for (r, word) in released {
            assert_eq!(r.as_str(), word, "{r:?}");
        }
    }

    /// The rows of docs/api.md's table of reasons: (reason, code), as written.
    fn documented() -> Vec<(String, String)> {
        let doc = include_str!("../../docs/api.md");
        let errors = doc
            .split("\n## ")
            .find(|s| s.starts_with("Errors"))
            .expect("docs/api.md has a section \"## Errors\"");
        errors
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let word = |c: &str| {
                    c.strip_prefix('`')
                        .and_then(|c| c.strip_suffix('`'))
                        .map(str::to_string)
                };
                Some((word(cells.get(1)?)?, word(cells.get(2)?)?))
            })
            .collect()
    }

    #[test]
    fn docs_api_md_lists_every_reason_with_its_code() {
        let rows = documented();
        for r in Reason::ALL {
            let code = r.class().code_name();
            let found: Vec<_> = rows.iter().filter(|(w, _)| w == r.as_str()).collect();
            assert_eq!(
                found.len(),
                1,
                "docs/api.md lists {} once in its table of reasons",
                r.as_str()
            );
            assert_eq!(
                found[0].1,
                code,
                "docs/api.md gives {} its code",
                r.as_str()
            );
        }
        for (word, _) in &rows {
            assert!(
                Reason::ALL.iter().any(|r| r.as_str() == word),
                "docs/api.md lists `{word}`, which is no reason"
            );
        }
    }

    #[test]
    fn the_two_failed_preconditions_programs_must_tell_apart_have_two_reasons() {
        assert_eq!(
            Reason::CeremonyRequired.class(),
            Reason::WrongKeyState.class()
        );
        assert_ne!(Reason::CeremonyRequired, Reason::WrongKeyState);
    }
}
