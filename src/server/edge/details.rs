//! The machine-readable part of every error status: a `google.rpc.ErrorInfo` with the failure's
//! [`Reason`] (domain [`ERROR_DOMAIN`]) and its values, sent in `grpc-status-details-bin`.
//! The pipeline adds it to the node's errors (`pipeline::status`); the edge's own refusals (no
//! certificate, a revoked one, an unknown method) are made here, before any service.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::audit::record::{MAX_MESSAGE, cut};
use crate::node::Reason;
use crate::proto::ERROR_DOMAIN;

/// The `ErrorInfo` of `reason` with `metadata` (never a secret).
pub fn error_info(reason: Reason, metadata: Vec<(&'static str, String)>) -> ErrorDetails {
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, metadata)
}

/// A status of `reason` made outside the node's use cases, with `metadata`: its code is the
/// reason's class's; its message, cut as a record's, says what to do.
pub fn refusal(
    reason: Reason,
    message: impl Into<String>,
    metadata: Vec<(&'static str, String)>,
) -> Status {
    Status::with_error_details(
        Code::from_i32(reason.class().grpc_code()),
        cut(&message.into(), MAX_MESSAGE),
        error_info(reason, metadata),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_has_its_reasons_code_and_info() {
        let s = refusal(
            Reason::UnknownMethod,
            "no method",
            vec![("method", "/x/Y".into())],
        );
        assert_eq!(s.code(), Code::Unimplemented);
        let info = s.get_details_error_info().expect("info");
        assert_eq!(info.reason, "UNKNOWN_METHOD");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("method").map(String::as_str),
            Some("/x/Y")
        );
    }
}
