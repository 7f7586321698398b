//! A small HTTP/1.1 and WebSocket client, for the load-test tool and the
//! end-to-end tests: one connection per request, no TLS (loopback tools).
//!
//! May import: nothing of ours.

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload, handshake};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, StatusCode, header, upgrade::Upgraded};
use hyper_util::rt::TokioIo;
use std::future::Future;
use thiserror::Error;
use tokio::net::TcpStream;

/// Client failures.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Could not connect.
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    /// HTTP protocol failure.
    #[error("http: {0}")]
    Http(String),
    /// WebSocket protocol failure.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// The server answered the upgrade with this HTTP status, not 101.
    #[error("websocket upgrade refused with HTTP {0}")]
    Refused(u16),
}

/// A buffered HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Response {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// `host:port` of a base URL such as `http://127.0.0.1:3000`.
pub fn authority(base: &str) -> &str {
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("ws://"))
        .unwrap_or(base);
    rest.split('/').next().unwrap_or(rest)
}

/// Sends one request on a fresh connection.
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
) -> Result<Response, ClientError> {
    let host = authority(base).to_owned();
    let stream = TcpStream::connect(&host)
        .await
        .map_err(|e| ClientError::Connect(host.clone(), e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(connection);
    let mut builder = Request::builder().method(method).uri(path).header(header::HOST, &host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// `GET path`.
pub async fn get(base: &str, path: &str) -> Result<Response, ClientError> {
    request(base, "GET", path, &[], None).await
}

/// `POST path` with a JSON body.
pub async fn post_json(base: &str, path: &str, body: &serde_json::Value) -> Result<Response, ClientError> {
    let bytes = Bytes::from(serde_json::to_vec(body).expect("JSON values serialise"));
    request(base, "POST", path, &[("content-type", "application/json")], Some(bytes)).await
}

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

/// A message read from a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame.
    Text(String),
    /// The server closed with this code and reason.
    Close(u16, String),
}

/// A client WebSocket that answers pings by itself.
pub struct Socket {
    ws: FragmentCollector<TokioIo<Upgraded>>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").finish_non_exhaustive()
    }
}

/// Opens a WebSocket on `path` (e.g. `/api/orders/status/<id>?since=3`).
pub async fn connect(base: &str, path: &str) -> Result<Socket, ClientError> {
    connect_with(base, path, &[]).await
}

/// [`connect`] with extra request headers (`Authorization`, `Origin`).
pub async fn connect_with(base: &str, path: &str, headers: &[(&str, &str)]) -> Result<Socket, ClientError> {
    let host = authority(base).to_owned();
    let stream = TcpStream::connect(&host)
        .await
        .map_err(|e| ClientError::Connect(host.clone(), e))?;
    let _ = stream.set_nodelay(true);
    let mut builder = Request::builder()
        .method("GET")
        .uri(path)
        .header(header::HOST, &host)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header("Sec-WebSocket-Key", handshake::generate_key())
        .header("Sec-WebSocket-Version", "13");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let (ws, _) = handshake::client(&SpawnExecutor, request, stream)
        .await
        .map_err(|e| match e {
            fastwebsockets::WebSocketError::InvalidStatusCode(status) => ClientError::Refused(status),
            e => ClientError::WebSocket(e.to_string()),
        })?;
    Ok(Socket {
        ws: FragmentCollector::new(ws),
    })
}

impl Socket {
    /// The next text message or the close; pings are answered on the way.
    pub async fn next(&mut self) -> Result<Message, ClientError> {
        loop {
            let frame = self
                .ws
                .read_frame()
                .await
                .map_err(|e| ClientError::WebSocket(e.to_string()))?;
            match frame.opcode {
                OpCode::Text => {
                    return String::from_utf8(frame.payload.to_vec())
                        .map(Message::Text)
                        .map_err(|e| ClientError::WebSocket(e.to_string()));
                }
                OpCode::Close => {
                    let payload = frame.payload.to_vec();
                    let code = payload.get(..2).map_or(1005, |b| u16::from_be_bytes([b[0], b[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
                    return Ok(Message::Close(code, reason));
                }
                _ => continue,
            }
        }
    }

    /// Reads until the server closes: (text messages, close code).
    pub async fn drain(&mut self) -> Result<(Vec<String>, u16), ClientError> {
        let mut texts = Vec::new();
        loop {
            match self.next().await? {
                Message::Text(text) => texts.push(text),
                Message::Close(code, _) => return Ok((texts, code)),
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.ws
            .write_frame(Frame::close(1000, b""))
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))
    }

    /// Sends a text message (e.g. a `subscribe` on `/api/stream`).
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.ws
            .write_frame(Frame::text(Payload::Borrowed(text.as_bytes())))
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))
    }

    /// Sends a ping (the server answers with a pong, consumed by `next`).
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.ws
            .write_frame(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"hi")))
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))
    }
}
