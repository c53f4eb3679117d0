//! The classes of failure and their gRPC codes: hkms's one table of status codes, which the
//! pipeline answers with and records name.

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
    /// No such method (never recorded: no service is reached).
    Unimplemented,
}

/// Every class with its gRPC code number and canonical name (google.rpc.Code).
const CLASSES: [(ErrorClass, i32, &str); 10] = [
    (ErrorClass::InvalidArgument, 3, "INVALID_ARGUMENT"),
    (ErrorClass::NotFound, 5, "NOT_FOUND"),
    (ErrorClass::AlreadyExists, 6, "ALREADY_EXISTS"),
    (ErrorClass::PermissionDenied, 7, "PERMISSION_DENIED"),
    (ErrorClass::ResourceExhausted, 8, "RESOURCE_EXHAUSTED"),
    (ErrorClass::FailedPrecondition, 9, "FAILED_PRECONDITION"),
    (ErrorClass::Unimplemented, 12, "UNIMPLEMENTED"),
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
