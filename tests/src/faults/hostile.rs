//! What a hostile client sends, below what tonic's typed clients allow: raw gRPC frames with the
//! compressed flag set, bodies that are not protobuf, and a DEFLATE bomb in a gzip member.

use http_body_util::BodyExt as _;
use tonic::codegen::Bytes;
use tonic::codegen::Service as _;
use tonic::transport::Channel;

/// One gRPC length-prefixed message: flag (1 = compressed), big-endian length, payload.
pub fn grpc_frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.push(u8::from(compressed));
    frame.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(payload);
    frame
}

/// The outcome of a raw call: the gRPC status code (None if the server sent none) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOutcome {
    pub code: Option<i32>,
    pub message: String,
    /// The response body (length-prefixed messages) before the trailers.
    pub body: Vec<u8>,
}

/// Splits a gRPC body into its messages (uncompressed ones only; a compressed one ends it).
pub fn grpc_messages(body: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    let mut rest = body;
    while let (Some(&0), Some(length)) = (
        rest.first(),
        rest.get(1..5).and_then(|l| <[u8; 4]>::try_from(l).ok()),
    ) {
        let length = u32::from_be_bytes(length) as usize;
        let Some(message) = rest.get(5..5 + length) else {
            break;
        };
        messages.push(message);
        rest = rest.get(5 + length..).unwrap_or_default();
    }
    messages
}

/// Sends `body` (already framed) to `path` as one request and reads the whole answer, within
/// `timeout`. `encoding` goes into `grpc-encoding` when given.
pub async fn raw_call(
    channel: Channel,
    path: &str,
    body: Vec<u8>,
    encoding: Option<&str>,
    timeout: std::time::Duration,
) -> anyhow::Result<RawOutcome> {
    let mut builder = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(encoding) = encoding {
        builder = builder.header("grpc-encoding", encoding);
    }
    let request = builder.body(tonic::body::Body::new(http_body_util::Full::new(
        Bytes::from(body),
    )))?;
    let mut channel = channel;
    let outcome = tokio::time::timeout(timeout, async move {
        std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
        let response = channel.call(request).await?;
        let (parts, body) = response.into_parts();
        let header = |map: &tonic::codegen::http::HeaderMap, name: &str| {
            map.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut code = header(&parts.headers, "grpc-status").and_then(|v| v.parse().ok());
        let mut message = header(&parts.headers, "grpc-message").unwrap_or_default();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes().to_vec();
        if let Some(trailers) = trailers {
            if code.is_none() {
                code = header(&trailers, "grpc-status").and_then(|v| v.parse().ok());
            }
            if message.is_empty() {
                message = header(&trailers, "grpc-message").unwrap_or_default();
            }
        }
        Ok::<_, anyhow::Error>(RawOutcome {
            code,
            message,
            body,
        })
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer to {path} within {timeout:?}"))??;
    Ok(outcome)
}

/// Writes bits least-significant first, as DEFLATE packs them.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bit: u32,
    used: u8,
}

impl BitWriter {
    fn bits(&mut self, value: u32, count: u8) {
        for i in 0..count {
            self.bit |= ((value >> i) & 1) << self.used;
            self.used += 1;
            if self.used == 8 {
                self.bytes.push(self.bit as u8);
                self.bit = 0;
                self.used = 0;
            }
        }
    }

    /// Huffman codes go most-significant bit first.
    fn code(&mut self, code: u32, length: u8) {
        for i in (0..length).rev() {
            self.bits((code >> i) & 1, 1);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.used > 0 {
            self.bytes.push(self.bit as u8);
        }
        self.bytes
    }
}

/// A gzip member that inflates to about `inflated` zero bytes (RFC 1951 fixed-Huffman block:
/// one literal, then back-references of 258 bytes at distance 1, 13 bits each: about 160:1).
/// The CRC is left zero: a decompressor finds out only after inflating everything, which is
/// the harm the bomb is for.
pub fn gzip_bomb(inflated: usize) -> Vec<u8> {
    let mut writer = BitWriter::default();
    writer.bits(1, 1); // BFINAL
    writer.bits(1, 2); // BTYPE = 01, fixed Huffman codes
    writer.code(0x30, 8); // literal 0
    let repeats = inflated.saturating_sub(1) / 258;
    for _ in 0..repeats {
        writer.code(0xc5, 8); // length code 285: 258 bytes
        writer.code(0, 5); // distance code 0: distance 1
    }
    writer.code(0, 7); // end of block (256)
    let deflate = writer.finish();
    let total = 1 + repeats * 258;
    let mut member = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    member.extend_from_slice(&deflate);
    member.extend_from_slice(&0u32.to_le_bytes());
    member.extend_from_slice(&(total as u32).to_le_bytes());
    member
}
