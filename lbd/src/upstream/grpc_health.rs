//! gRPC health checks (`[pool.health] kind = "grpc"`): one `grpc.health.v1.Health/Check`
//! call over HTTP/2 with prior knowledge, on a connection of its own.
//!
//! The backend is up only when the call succeeds (`grpc-status: 0`) and answers SERVING;
//! NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN, an error status (UNIMPLEMENTED from a server
//! without the health service), a timeout or a broken answer are all down.
//!
//! The two messages are tiny (`HealthCheckRequest { string service = 1; }`,
//! `HealthCheckResponse { ServingStatus status = 1; }`), so they are encoded and decoded
//! here by hand rather than with a protobuf library: a length-prefixed gRPC frame around
//! one protobuf field. The decoder skips fields it does not know, as protobuf requires.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::l7::grpc::{GRPC_MESSAGE, GRPC_STATUS};

/// The method every gRPC health check calls.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// Largest answer read (a HealthCheckResponse is a few bytes).
const MAX_ANSWER: usize = 16 * 1024;

/// `HealthCheckResponse.ServingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingStatus {
    Unknown,
    Serving,
    NotServing,
    ServiceUnknown,
    /// A value this version of the protocol does not name.
    Other(u64),
}

impl ServingStatus {
    fn from_value(v: u64) -> Self {
        match v {
            0 => ServingStatus::Unknown,
            1 => ServingStatus::Serving,
            2 => ServingStatus::NotServing,
            3 => ServingStatus::ServiceUnknown,
            n => ServingStatus::Other(n),
        }
    }
}

impl std::fmt::Display for ServingStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServingStatus::Unknown => f.write_str("UNKNOWN"),
            ServingStatus::Serving => f.write_str("SERVING"),
            ServingStatus::NotServing => f.write_str("NOT_SERVING"),
            ServingStatus::ServiceUnknown => f.write_str("SERVICE_UNKNOWN"),
            ServingStatus::Other(n) => write!(f, "status {n}"),
        }
    }
}

/// Why a gRPC answer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the answer has no complete gRPC message")]
    Truncated,
    #[error("the answer is compressed (lbd asks for none)")]
    Compressed,
    #[error("the protobuf message is malformed")]
    Malformed,
}

/// Why a gRPC health check failed (the backend's side, always).
#[derive(Debug, thiserror::Error)]
pub enum GrpcProbeError {
    #[error("HTTP/2 handshake: {0}")]
    Handshake(hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("request: {0}")]
    Send(hyper::Error),
    #[error("HTTP status {0}")]
    HttpStatus(StatusCode),
    #[error("reading the answer: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("grpc-status {code} ({message})")]
    GrpcStatus { code: String, message: String },
    #[error("no grpc-status in the answer")]
    NoGrpcStatus,
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("the backend reports {0}")]
    NotServing(ServingStatus),
}

/// A `HealthCheckRequest { service }` as a gRPC message (uncompressed frame).
pub fn encode_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        // Field 1, wire type 2 (length-delimited); an empty string is not written at all.
        message.put_u8(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    frame.freeze()
}

/// The status in a gRPC-framed `HealthCheckResponse` (absent field: UNKNOWN, protobuf's
/// default).
pub fn decode_response(mut frame: &[u8]) -> Result<ServingStatus, DecodeError> {
    if frame.len() < 5 {
        return Err(DecodeError::Truncated);
    }
    if frame[0] != 0 {
        return Err(DecodeError::Compressed);
    }
    frame.advance(1);
    let len = frame.get_u32() as usize;
    let mut message = frame.get(..len).ok_or(DecodeError::Truncated)?;
    let mut status = ServingStatus::Unknown;
    while !message.is_empty() {
        let key = get_varint(&mut message)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = get_varint(&mut message)?;
                if field == 1 {
                    status = ServingStatus::from_value(v);
                }
            }
            1 => skip(&mut message, 8)?,
            2 => {
                let n = usize::try_from(get_varint(&mut message)?)
                    .map_err(|_| DecodeError::Malformed)?;
                skip(&mut message, n)?;
            }
            5 => skip(&mut message, 4)?,
            _ => return Err(DecodeError::Malformed),
        }
    }
    Ok(status)
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(DecodeError::Malformed)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::Malformed)
}

fn skip(buf: &mut &[u8], n: usize) -> Result<(), DecodeError> {
    *buf = buf.get(n..).ok_or(DecodeError::Malformed)?;
    Ok(())
}

/// One Check call on `stream` (the caller bounds it with the probe timeout).
pub async fn check(
    stream: TcpStream,
    authority: &str,
    service: &str,
) -> Result<(), GrpcProbeError> {
    let _ = stream.set_nodelay(true);
    let (mut tx, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .map_err(GrpcProbeError::Handshake)?;
    let driver = tokio::spawn(conn);
    let req = Request::post(format!("http://{authority}{CHECK_PATH}"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, "lbd-health-check")
        .body(Full::new(encode_request(service)))?;
    let result = call(&mut tx, req).await;
    driver.abort();
    result
}

async fn call(
    tx: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(), GrpcProbeError> {
    let resp = tx.send_request(req).await.map_err(GrpcProbeError::Send)?;
    if resp.status() != StatusCode::OK {
        return Err(GrpcProbeError::HttpStatus(resp.status()));
    }
    // A "trailers-only" answer carries the status in its headers.
    if resp.headers().contains_key(GRPC_STATUS) {
        grpc_ok(resp.headers())?;
    }
    let collected = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(GrpcProbeError::Body)?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    grpc_ok(&trailers)?;
    match decode_response(&collected.to_bytes())? {
        ServingStatus::Serving => Ok(()),
        other => Err(GrpcProbeError::NotServing(other)),
    }
}

/// `grpc-status: 0` in these headers or trailers.
fn grpc_ok(h: &HeaderMap) -> Result<(), GrpcProbeError> {
    let text =
        |v: Option<&HeaderValue>| v.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match text(h.get(GRPC_STATUS)) {
        Some(code) if code.trim() == "0" => Ok(()),
        Some(code) => Err(GrpcProbeError::GrpcStatus {
            code,
            message: text(h.get(GRPC_MESSAGE)).unwrap_or_default(),
        }),
        None => Err(GrpcProbeError::NoGrpcStatus),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encoding_is_a_framed_field_1_string() {
        assert_eq!(&encode_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &encode_request("app.Greeter")[..],
            b"\x00\x00\x00\x00\x0d\x0a\x0bapp.Greeter"
        );
        // A name of 200 bytes needs a two-byte length varint (200 = 0xc8 0x01).
        let long = "s".repeat(200);
        let frame = encode_request(&long);
        assert_eq!(&frame[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
        assert_eq!(frame.len(), 5 + 203);
    }

    fn response(message: &[u8]) -> Vec<u8> {
        let mut f = vec![0];
        f.extend_from_slice(&(message.len() as u32).to_be_bytes());
        f.extend_from_slice(message);
        f
    }

    #[test]
    fn response_decoding_reads_field_1_and_skips_the_rest() {
        assert_eq!(
            decode_response(&response(&[0x08, 0x01])),
            Ok(ServingStatus::Serving)
        );
        assert_eq!(
            decode_response(&response(&[0x08, 0x02])),
            Ok(ServingStatus::NotServing)
        );
        assert_eq!(
            decode_response(&response(&[0x08, 0x03])),
            Ok(ServingStatus::ServiceUnknown)
        );
        // Absent field: protobuf's default, UNKNOWN.
        assert_eq!(decode_response(&response(&[])), Ok(ServingStatus::Unknown));
        // Unknown fields of every wire type around it are skipped.
        let mut m = vec![0x12, 0x02, b'h', b'i']; // field 2, string
        m.extend([0x19, 1, 2, 3, 4, 5, 6, 7, 8]); // field 3, fixed64
        m.extend([0x25, 1, 2, 3, 4]); // field 4, fixed32
        m.extend([0x28, 0x96, 0x01]); // field 5, varint 150
        m.extend([0x08, 0x01]);
        assert_eq!(decode_response(&response(&m)), Ok(ServingStatus::Serving));
        assert_eq!(
            decode_response(&response(&[0x08, 0x07])),
            Ok(ServingStatus::Other(7))
        );
    }

    #[test]
    fn broken_answers_are_errors_not_panics() {
        assert_eq!(decode_response(&[]), Err(DecodeError::Truncated));
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 9, 8]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_response(&[1, 0, 0, 0, 2, 8, 1]),
            Err(DecodeError::Compressed)
        );
        for bad in [
            &[0x08][..],         // key without value
            &[0x08, 0x80],       // unterminated varint
            &[0x12, 0x05, b'a'], // string longer than the message
            &[0x0b],             // wire type 3 (groups): not accepted
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ] {
            assert_eq!(
                decode_response(&response(bad)),
                Err(DecodeError::Malformed),
                "{bad:?}"
            );
        }
    }
}
