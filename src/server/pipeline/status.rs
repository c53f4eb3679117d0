//! Node errors as gRPC statuses. The codes come from the one table, [`ErrorClass`]; the
//! message is the error's own text, which says what to do and never carries a secret. Every
//! status carries, in `grpc-status-details-bin`, a `google.rpc.ErrorInfo` with the error's
//! `Reason` (domain `hkms.v1`) and its machine values, and a `google.rpc.BadRequest`
//! naming the field when one field of the request is wrong: programs branch on those, never
//! on the English (docs/api.md, "Errors").

use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::super::edge::details::error_info;
use crate::audit::record::{MAX_MESSAGE, cut};
use crate::node::{ErrorClass, NodeError};

/// The gRPC code of an error class.
pub fn code_of(class: ErrorClass) -> Code {
    Code::from_i32(class.grpc_code())
}

/// The name records and metrics give a gRPC code: `OK`, a class's name, or `UNKNOWN` for a code
/// hkms never answers with.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        other => ErrorClass::from_grpc_code(other as i32).map_or("UNKNOWN", ErrorClass::code_name),
    }
}

/// The gRPC status for a node error, with its reason, metadata and wrong field.
pub fn to_status(e: &NodeError) -> Status {
    if let NodeError::Replayed {
        class,
        message,
        details,
    } = e
    {
        // As it was first sent: cut then, details and all.
        return Status::with_details(code_of(*class), message.clone(), details.clone().into());
    }
    // The message may quote the caller's input; cut as in the record, it stays a header's size.
    let message = cut(&e.to_string(), MAX_MESSAGE);
    let mut details = error_info(e.reason(), e.metadata());
    if let Some(field) = e.field() {
        details.add_bad_request_violation(field, message.clone());
    }
    Status::with_error_details(code_of(e.class()), message, details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Reason;

    fn info(s: &Status) -> tonic_types::ErrorInfo {
        s.get_details_error_info()
            .expect("every status carries an ErrorInfo")
    }

    #[test]
    fn a_status_carries_its_reason_domain_and_metadata() {
        let e: NodeError = NodeError::because(Reason::CeremonyRequired, "needs a ceremony")
            .with("operation", "generate")
            .into();
        let s = to_status(&e);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), "needs a ceremony");
        let i = info(&s);
        assert_eq!(i.reason, "CEREMONY_REQUIRED");
        assert_eq!(i.domain, "hkms.v1");
        assert_eq!(
            i.metadata.get("operation").map(String::as_str),
            Some("generate")
        );
        assert!(s.get_details_bad_request().is_none());
    }

    #[test]
    fn a_wrong_field_is_named_in_a_bad_request() {
        let s = to_status(&NodeError::invalid_field("region", "bad region"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(info(&s).reason, "INVALID_FIELD");
        assert_eq!(
            info(&s).metadata.get("field").map(String::as_str),
            Some("region")
        );
        let bad = s.get_details_bad_request().expect("a BadRequest");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "region");
        assert_eq!(bad.field_violations[0].description, "bad region");
    }

    #[test]
    fn errors_without_a_reason_of_their_own_get_their_variants() {
        for (e, reason) in [
            (NodeError::InvalidArgument("x".into()), "INVALID_REQUEST"),
            (
                NodeError::FailedPrecondition("x".into()),
                "PRECONDITION_FAILED",
            ),
            (NodeError::Internal("x".into()), "INTERNAL_ERROR"),
            (
                NodeError::Hsm(crate::hsm::HsmError::SessionLost {
                    function: "f".into(),
                    rv: "r".into(),
                }),
                "TOKEN_UNAVAILABLE",
            ),
        ] {
            assert_eq!(info(&to_status(&e)).reason, reason, "{e}");
        }
    }

    #[test]
    fn a_card_limit_says_when_it_frees_up() {
        let s = to_status(&NodeError::ResourceExhausted(crate::node::LimitRefusal {
            limit: crate::node::CardLimit::PerCardPerDay,
            value: 10,
            frees_at: Some(1_000),
            wait_secs: Some(60),
        }));
        let i = info(&s);
        assert_eq!(i.reason, "CARD_LIMIT_REACHED");
        assert_eq!(
            i.metadata.get("retry_after_secs").map(String::as_str),
            Some("60")
        );
        assert_eq!(i.metadata.get("value").map(String::as_str), Some("10"));
    }

    #[test]
    fn the_codec_names_an_undecodable_body_with_the_nodes_reason() {
        assert_eq!(
            crate::proto::codec::MALFORMED_BODY,
            Reason::MalformedBody.as_str()
        );
    }

    #[test]
    fn every_class_names_the_code_it_maps_to() {
        // Records name a failure by its class; the answer carries the mapped status. They agree.
        for e in [
            NodeError::InvalidArgument("x".into()),
            NodeError::NotFound("x".into()),
            NodeError::AlreadyExists("x".into()),
            NodeError::FailedPrecondition("x".into()),
            NodeError::PermissionDenied("x".into()),
            NodeError::ResourceExhausted(crate::node::LimitRefusal {
                limit: crate::node::CardLimit::PerCardPerDay,
                value: 10,
                frees_at: Some(1),
                wait_secs: Some(1),
            }),
            NodeError::Internal("x".into()),
            NodeError::Hsm(crate::hsm::HsmError::SessionLost {
                function: "f".into(),
                rv: "r".into(),
            }),
        ] {
            assert_eq!(
                code_name(to_status(&e).code()),
                e.class().code_name(),
                "{e}"
            );
        }
    }

    #[test]
    fn every_class_has_its_own_grpc_code_and_name() {
        // The table holds every class: a class missing from it would be named INTERNAL.
        for class in ErrorClass::all() {
            let listed = match class {
                ErrorClass::Unauthenticated
                | ErrorClass::InvalidArgument
                | ErrorClass::NotFound
                | ErrorClass::AlreadyExists
                | ErrorClass::FailedPrecondition
                | ErrorClass::PermissionDenied
                | ErrorClass::ResourceExhausted
                | ErrorClass::Unavailable
                | ErrorClass::Internal
                | ErrorClass::Unimplemented => true,
            };
            assert!(listed);
        }
        assert_eq!(
            ErrorClass::all().count(),
            10,
            "every class is in the table once"
        );
        for class in ErrorClass::all() {
            let code = code_of(class);
            // tonic's own name of the code, in SCREAMING_SNAKE_CASE, is the recorded name.
            let mut tonic_name = String::new();
            for (i, c) in format!("{code:?}").chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    tonic_name.push('_');
                }
                tonic_name.push(c.to_ascii_uppercase());
            }
            assert_eq!(class.code_name(), tonic_name, "{class:?}");
            assert_eq!(ErrorClass::from_grpc_code(code as i32), Some(class));
        }
    }

    #[test]
    fn a_replayed_failure_is_answered_as_it_was_first() {
        let first = Status::with_details(
            Code::FailedPrecondition,
            "ceremony c-1 expired",
            vec![1, 2, 3].into(),
        );
        let again = to_status(&NodeError::Replayed {
            class: ErrorClass::FailedPrecondition,
            message: first.message().to_string(),
            details: first.details().to_vec(),
        });
        assert_eq!(again.code(), first.code());
        assert_eq!(again.message(), first.message());
        assert_eq!(again.details(), first.details());
    }

    #[test]
    fn an_oversized_message_is_cut() {
        let id = "k".repeat(1 << 20);
        let s = to_status(&NodeError::InvalidArgument(format!("bad key id {id}")));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().starts_with("bad key id kkk"));
        assert!(s.message().ends_with("…(cut)"));
        assert_eq!(
            s.message().chars().count(),
            MAX_MESSAGE + "…(cut)".chars().count()
        );
    }

    #[test]
    fn classes_map_to_their_codes() {
        let s = to_status(&NodeError::InvalidArgument("bad region".into()));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "bad region");
        assert_eq!(
            to_status(&NodeError::NotFound("x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            to_status(&NodeError::FailedPrecondition("x".into())).code(),
            Code::FailedPrecondition
        );
    }
}
