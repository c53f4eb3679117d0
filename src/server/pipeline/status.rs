//! Node errors as gRPC statuses. The codes come from the one table, [`ErrorClass`]; the
//! message is the error's own text, which says what to do and never carries a secret.

use tonic::{Code, Status};

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

/// The gRPC status for a node error.
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
    Status::new(code_of(e.class()), cut(&e.to_string(), MAX_MESSAGE))
}

#[cfg(test)]
mod tests {
    use super::*;

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
                | ErrorClass::Internal => true,
            };
            assert!(listed);
        }
        assert_eq!(
            ErrorClass::all().count(),
            9,
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
