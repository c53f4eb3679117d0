//! Unknown methods, answered before routing: UNIMPLEMENTED with a message that names the
//! method and says what the node serves, and the reason `UNKNOWN_METHOD`. tonic's router and
//! its generated services answer an unknown path with an empty message, which tells a program
//! (or a person with grpcurl) nothing about a typo in the service or method name.
//!
//! The methods the node serves are read once, at start, from the same descriptors that server
//! reflection serves: a method cannot be served here and be unknown there, or the other way.
//! Nothing is recorded: no service is reached.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use prost::Message;
use tonic::Status;
use tonic::codegen::http;
use tower_layer::Layer;
use tower_service::Service;

use super::details::refusal;
use crate::node::Reason;

/// The services the node serves, each with its methods.
#[derive(Debug, Clone, Default)]
pub struct Methods {
    services: BTreeMap<String, BTreeSet<String>>,
}

impl Methods {
    /// The methods of every service in the encoded `FileDescriptorSet`s.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Result<Methods, prost::DecodeError> {
        let mut services: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(*set)?;
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = match (package.as_str(), service.name) {
                        (_, None) => continue,
                        ("", Some(n)) => n,
                        (p, Some(n)) => format!("{p}.{n}"),
                    };
                    services
                        .entry(name)
                        .or_default()
                        .extend(service.method.into_iter().filter_map(|m| m.name));
                }
            }
        }
        Ok(Methods { services })
    }

    /// `Ok` for a path `/package.Service/Method` the node serves; otherwise the status to
    /// answer with.
    pub fn check(&self, path: &str) -> Result<(), Status> {
        let (service, method) = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .unwrap_or((path, ""));
        let cut = crate::audit::record::cut(path, 128);
        let shown = crate::untrusted_text::escape(&cut);
        let metadata = || {
            vec![
                ("method", crate::audit::record::cut(path, 128)),
                ("service", crate::audit::record::cut(service, 128)),
            ]
        };
        match self.services.get(service) {
            Some(methods) if methods.contains(method) => Ok(()),
            Some(methods) => Err(refusal(
                Reason::UnknownMethod,
                format!(
                    "{service} has no method `{shown}`; its methods are {} (server reflection \
                     lists them)",
                    methods.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                metadata(),
            )),
            None => Err(refusal(
                Reason::UnknownMethod,
                format!(
                    "this node serves no method `{shown}`: a path is /SERVICE/METHOD, and the \
                     services are {} (server reflection lists their methods)",
                    self.services.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                metadata(),
            )),
        }
    }
}

/// The layer that answers unknown methods (put inside the certificate check, so that a
/// caller without a certificate learns nothing of the node's methods).
#[derive(Debug, Clone)]
pub struct KnownMethodsLayer {
    methods: Arc<Methods>,
}

impl KnownMethodsLayer {
    /// Answers every path that `methods` does not list.
    pub fn new(methods: Methods) -> KnownMethodsLayer {
        KnownMethodsLayer {
            methods: Arc::new(methods),
        }
    }
}

impl<S> Layer<S> for KnownMethodsLayer {
    type Service = KnownMethods<S>;

    fn layer(&self, inner: S) -> KnownMethods<S> {
        KnownMethods {
            inner,
            methods: Arc::clone(&self.methods),
        }
    }
}

/// [`KnownMethodsLayer`]'s service.
#[derive(Debug, Clone)]
pub struct KnownMethods<S> {
    inner: S,
    methods: Arc<Methods>,
}

impl<S, B, R> Service<http::Request<B>> for KnownMethods<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<http::Response<R>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.methods.check(request.uri().path()) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(status) => {
                let path = crate::audit::record::cut(request.uri().path(), 128);
                tracing::warn!(path = %crate::untrusted_text::escape(&path), "unknown method");
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    fn methods() -> Methods {
        Methods::from_descriptor_sets(&[crate::proto::FILE_DESCRIPTOR_SET]).expect("descriptors")
    }

    #[test]
    fn a_served_method_passes() {
        assert!(methods().check("/hkms.v1.KeyService/GetKey").is_ok());
    }

    #[test]
    fn an_unknown_method_of_a_served_service_is_named_with_the_services_methods() {
        let s = methods()
            .check("/hkms.v1.KeyService/Nope")
            .expect_err("no such method");
        assert_eq!(s.code(), tonic::Code::Unimplemented);
        assert!(
            s.message().contains("`/hkms.v1.KeyService/Nope`"),
            "{}",
            s.message()
        );
        assert!(s.message().contains("GetKey"), "{}", s.message());
        let info = s.get_details_error_info().expect("info");
        assert_eq!(info.reason, "UNKNOWN_METHOD");
        assert_eq!(
            info.metadata.get("service").map(String::as_str),
            Some("hkms.v1.KeyService")
        );
    }

    #[test]
    fn an_unknown_service_lists_the_services() {
        for path in ["/hkms.v1.Nope/GetKey", "/", "", "no-slash", "/a/b/c"] {
            let s = methods().check(path).expect_err(path);
            assert_eq!(s.code(), tonic::Code::Unimplemented, "{path}");
            assert!(
                s.message().contains("hkms.v1.KeyService"),
                "{}",
                s.message()
            );
        }
    }
}
