//! Maps node errors to gRPC status codes. The message is the error's own text, which says what
//! to do and never carries a secret.

use tonic::{Code, Status};

use crate::audit::record::{MAX_MESSAGE, cut};
use crate::node::{ErrorClass, NodeError};

/// The gRPC status for a node error.
pub fn to_status(e: &NodeError) -> Status {
    let code = match e.class() {
        ErrorClass::InvalidArgument => Code::InvalidArgument,
        ErrorClass::NotFound => Code::NotFound,
        ErrorClass::AlreadyExists => Code::AlreadyExists,
        ErrorClass::FailedPrecondition => Code::FailedPrecondition,
        ErrorClass::PermissionDenied => Code::PermissionDenied,
        ErrorClass::Unavailable => Code::Unavailable,
        ErrorClass::Internal => Code::Internal,
    };
    // The message may quote the caller's input; cut as in the record, it stays a header's size.
    Status::new(code, cut(&e.to_string(), MAX_MESSAGE))
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
            NodeError::Internal("x".into()),
            NodeError::Hsm(crate::hsm::HsmError::SessionLost {
                function: "f".into(),
                rv: "r".into(),
            }),
        ] {
            assert_eq!(
                crate::server::keys::code_name(to_status(&e).code()),
                e.class().code_name(),
                "{e}"
            );
        }
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
