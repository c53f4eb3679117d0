//! hkms: a hierarchical key management service in front of PKCS#11 HSMs, for a national smart
//! card programme. The HSM does the cryptography and holds every key; hkms keeps the key
//! hierarchy (national → provincial → municipal), decides who may ask for what, and records it.
//! See docs/design.md for the design and docs/architecture.md for the layout: each module
//! below is one layer.

#![deny(missing_docs)]

pub mod audit;
pub mod card;
pub mod cli;
pub mod config;
pub mod durable;
pub mod hierarchy;
pub mod hsm;
pub mod node;
pub mod pki;
pub mod policy;
pub mod server;
pub mod store;
pub mod transport;
pub mod untrusted_text;
pub mod wiping_alloc;

/// The public gRPC API, generated from `proto/hkms/v1/`.
#[allow(missing_docs)]
pub mod proto {
    tonic::include_proto!("hkms.v1");

    pub mod codec;
    pub mod request_id;

    /// The `domain` of every `google.rpc.ErrorInfo` hkms answers with: the API's package, the
    /// same on every node, so that a program reads one set of reasons (docs/api.md, "Errors").
    pub const ERROR_DOMAIN: &str = "hkms.v1";

    /// Encoded descriptors of the API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/hkms_descriptor.bin"));
}
