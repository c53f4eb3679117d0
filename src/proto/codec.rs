//! The API's protobuf codec: prost's, except that a body that does not decode is the caller's
//! error, INVALID_ARGUMENT, where tonic's answers INTERNAL (which a client would take for a
//! fault of the node and retry). hkms's own clients share it, so for them an answer that does
//! not decode is INVALID_ARGUMENT too, with the same message naming the message type, and an
//! `ErrorInfo` whose reason is [`MALFORMED_BODY`] (the node's `Reason::MalformedBody`; this
//! layer is below the node, so a unit test there keeps the two words equal).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

/// The reason of an undecodable body, as docs/api.md lists it.
pub const MALFORMED_BODY: &str = "MALFORMED_BODY";

/// Encodes `T`, decodes `U`.
#[derive(Debug, Clone)]
pub struct ApiCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ApiCodec<T, U> {
    fn default() -> Self {
        ApiCodec(PhantomData)
    }
}

impl<T, U> Codec for ApiCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ApiDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ApiDecoder(ProstDecoder::default())
    }
}

/// prost's decoder with the caller's errors named as such.
#[derive(Debug, Clone)]
pub struct ApiDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for ApiDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|e| {
            let name = std::any::type_name::<U>()
                .rsplit("::")
                .next()
                .unwrap_or("message");
            let details = ErrorDetails::with_error_info(
                MALFORMED_BODY,
                super::ERROR_DOMAIN,
                [("message".to_string(), format!("hkms.v1.{name}"))],
            );
            Status::with_error_details(
                tonic::Code::InvalidArgument,
                format!(
                    "the body is not a valid hkms.v1.{name}: {}; send the message the method \
                     takes, encoded with the stubs of proto/hkms/v1/",
                    e.message()
                ),
                details,
            )
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
