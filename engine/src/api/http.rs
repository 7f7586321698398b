//! HTTP plumbing: body type, JSON responses, query strings.

use bytes::Bytes;
use hyper::{
    Response, StatusCode,
    body::{Frame, SizeHint},
    header,
};
use serde::Serialize;
use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::sync::mpsc;

/// A response body: buffered (every answer but one), or streamed from a
/// bounded channel (Server-Sent Events), ending when its sender is dropped.
#[derive(Debug)]
pub enum Body {
    /// The whole body, sent once (`None` once sent).
    Full(Option<Bytes>),
    /// Chunks as they come.
    Stream(mpsc::Receiver<Bytes>),
}

impl Body {
    /// A buffered body.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Body::Full(Some(bytes).filter(|b| !b.is_empty()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Body::Full(None)
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(chunks) => chunks.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// A JSON response.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("response bodies serialise");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::new(bytes))
        .expect("static response parts are valid")
}

/// The first value of a query parameter, decoded as
/// `application/x-www-form-urlencoded` (the WHATWG URL standard's rules:
/// `+` is a space, `%XX` a byte, an invalid escape stays as written).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_decodes_parameters() {
        let q = Some("status=pending&limit=5&cursor=a%2Fb&empty");
        assert_eq!(query_param(q, "status").as_deref(), Some("pending"));
        assert_eq!(query_param(q, "cursor").as_deref(), Some("a/b"));
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(None, "status"), None);
        assert_eq!(query_param(Some("x=%zz%"), "x").as_deref(), Some("%zz%"));
    }
}
