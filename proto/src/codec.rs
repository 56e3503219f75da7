//! The protobuf codec with small per-stream buffers.
//!
//! tonic's default codec gives every stream an 8 KiB decode buffer and an 8 KiB encode buffer,
//! kept for the stream's life, and grows the decode buffer by 8 KiB steps (a third of the
//! verifier's streams ended holding 32 KiB). Attestation messages are a few hundred bytes to a
//! few KiB, and a verifier holds one stream per device: 10,000 devices paid over 150 MiB for
//! buffers that were mostly empty (heaptrack, load generator). Here each buffer starts at
//! 1 KiB and grows only to what a message needs. Everything else is `tonic_prost`'s codec.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode/decode buffer per stream.
const BUFFER_BYTES: usize = 1024;
/// An encoder hands each message to HTTP/2 on its own (tonic's default gathers 32 KiB). Gathered
/// messages arrive as one 16 KiB DATA frame, and the receiving stream's buffer, kept for the
/// stream's life, grows to hold it: the verifier's per-device buffers stayed 16-20 KiB even
/// with evidence in 4 KiB parts. One message per chunk bounds them to a part plus a frame.
const YIELD_THRESHOLD: usize = 1;

/// [`ProstCodec`] with [`BUFFER_BYTES`] buffers; named by the generated code (`build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}
