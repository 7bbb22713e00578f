//! A lean gRPC unary caller on the `h2` crate, for [`crate::Client::H2`].
//!
//! Why by hand: the load generator shares this 2-core machine with the server it measures, so
//! every microsecond it spends per call is taken from the server. tonic's client (a tower stack,
//! a `Buffer` task per channel, hyper's dispatch task per connection) measured ~26 µs of CPU per
//! unary call here, more than the predictor spent answering it (~22 µs), so the unary benchmark
//! was measuring the client as much as the server. This caller speaks the same protocol straight
//! on an h2 connection: it sends the request's headers and its one length-prefixed message, then
//! reads the answer's message and trailers and checks `grpc-status`. It only does unary calls
//! of one message each way, without compression, which is all the benchmark needs; `--client
//! tonic` keeps the full client for comparison.

use std::future::poll_fn;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use prost::Message;
use tokio::net::TcpStream;

/// How long connecting (TCP and the HTTP/2 handshake) may take, as for the tonic client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One HTTP/2 connection; clones share it (each clone can have its own call in flight).
#[derive(Clone)]
pub struct Connection {
    sender: SendRequest<Bytes>,
    /// `http://host:port`, the scheme and authority of every request.
    base: String,
}

/// Why a call failed. Any of them counts as an error; none stops the run.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection or the stream failed.
    #[error("http/2: {0}")]
    H2(#[from] h2::Error),
    /// The request could not be built.
    #[error("bad request: {0}")]
    Request(String),
    /// The server answered with a status other than 200 or a `grpc-status` other than 0.
    #[error("{0}")]
    Refused(String),
    /// The answer's message could not be read.
    #[error("bad answer: {0}")]
    Malformed(String),
}

impl Connection {
    /// Opens a connection to `url` (`http://host:port`).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let Some(authority) = url.strip_prefix("http://") else {
            bail!("the h2 client needs an http:// url, got {url:?}");
        };
        let authority = authority.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            bail!("the h2 client needs http://host:port with no path, got {url:?}");
        }
        let connecting = async {
            let tcp = TcpStream::connect(authority).await.with_context(|| format!("cannot connect to {url}"))?;
            tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
            h2::client::handshake(tcp).await.with_context(|| format!("HTTP/2 handshake with {url}"))
        };
        let (sender, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .with_context(|| format!("connecting to {url} timed out"))??;
        // The connection task ends when every sender is dropped or the peer goes away.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender, base: format!("http://{authority}") })
    }

    /// Opens a new connection to the same server in place of this one (after it was lost).
    pub async fn reconnect(&mut self) -> anyhow::Result<()> {
        *self = Self::connect(&self.base).await?;
        Ok(())
    }

    /// The URI of a method, `path` being `/package.Service/Method`: made once, used per call.
    pub fn method(&self, path: &str) -> anyhow::Result<Uri> {
        format!("{}{path}", self.base).parse().with_context(|| format!("invalid method path {path:?}"))
    }

    /// Calls `method` (from [`Connection::method`]) with `request` and decodes the answer.
    pub async fn unary<Q: Message, A: Message + Default>(&mut self, method: &Uri, request: &Q) -> Result<A, CallError> {
        let length = u32::try_from(request.encoded_len()).map_err(|_| CallError::Request("too long".into()))?;
        let mut frame = BytesMut::with_capacity(5 + request.encoded_len());
        frame.put_u8(0);
        frame.put_u32(length);
        request.encode(&mut frame).map_err(|e| CallError::Request(e.to_string()))?;
        let head = Request::builder()
            .method(Method::POST)
            .uri(method.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| CallError::Request(e.to_string()))?;
        poll_fn(|cx| self.sender.poll_ready(cx)).await?;
        let (answer, mut send) = self.sender.send_request(head, false)?;
        send.send_data(frame.freeze(), true)?;
        let answer = answer.await?;
        let (parts, mut body) = answer.into_parts();
        if parts.status != StatusCode::OK {
            return Err(CallError::Refused(format!("HTTP status {}", parts.status)));
        }
        // A call refused before any message is a "trailers-only" answer: the status is in the
        // headers.
        if let Some(status) = parts.headers.get("grpc-status") {
            check_status(status, &parts.headers)?;
        }
        let mut message = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            message.extend_from_slice(&chunk);
        }
        match body.trailers().await? {
            Some(trailers) => match trailers.get("grpc-status") {
                Some(status) => check_status(status, &trailers)?,
                None => return Err(CallError::Malformed("trailers without grpc-status".into())),
            },
            None if parts.headers.contains_key("grpc-status") => {}
            None => return Err(CallError::Malformed("no trailers".into())),
        }
        decode_one(message.freeze())
    }
}

impl CallError {
    /// Whether the connection is gone (broken, or closed by the server with GOAWAY): every later
    /// call on it fails at once, so the caller should connect again.
    pub fn connection_lost(&self) -> bool {
        matches!(self, CallError::H2(error) if error.is_io() || error.is_go_away())
    }
}

/// Fails unless `status` is `0` (OK), with the server's message when it gave one.
fn check_status(status: &HeaderValue, headers: &HeaderMap) -> Result<(), CallError> {
    if status.as_bytes() == b"0" {
        return Ok(());
    }
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("");
    Err(CallError::Refused(format!("grpc-status {} {message}", String::from_utf8_lossy(status.as_bytes()))))
}

/// Decodes the one length-prefixed, uncompressed message of a unary answer.
fn decode_one<A: Message + Default>(mut body: Bytes) -> Result<A, CallError> {
    if body.len() < 5 {
        return Err(CallError::Malformed(format!("{} bytes, shorter than a message prefix", body.len())));
    }
    let compressed = body.get_u8();
    let length = body.get_u32() as usize;
    if compressed != 0 {
        return Err(CallError::Malformed("compressed message (none was asked for)".into()));
    }
    if length != body.len() {
        return Err(CallError::Malformed(format!("prefix says {length} bytes, {} came", body.len())));
    }
    A::decode(body).map_err(|e| CallError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightops_api::predictor::v1::PredictResponse;

    #[test]
    fn a_message_must_match_its_prefix() {
        let answer = PredictResponse::default();
        let mut body = BytesMut::new();
        body.put_u8(0);
        body.put_u32(u32::try_from(answer.encoded_len()).expect("small"));
        answer.encode(&mut body).expect("encodes");
        let decoded: PredictResponse = decode_one(body.clone().freeze()).expect("decodes");
        assert_eq!(decoded, answer);
        body.put_u8(1);
        let error = decode_one::<PredictResponse>(body.freeze()).expect_err("one byte too many");
        assert!(error.to_string().contains("prefix says 0 bytes, 1 came"), "{error}");
        assert!(decode_one::<PredictResponse>(Bytes::from_static(&[0, 0])).is_err());
        assert!(decode_one::<PredictResponse>(Bytes::from_static(&[1, 0, 0, 0, 0])).is_err());
    }

    #[test]
    fn a_non_zero_status_is_refused_with_its_message() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-message", HeaderValue::from_static("ride.trip_distance: must be finite"));
        let error = check_status(&HeaderValue::from_static("3"), &headers).expect_err("not OK");
        assert_eq!(error.to_string(), "grpc-status 3 ride.trip_distance: must be finite");
        assert!(check_status(&HeaderValue::from_static("0"), &headers).is_ok());
    }
}
