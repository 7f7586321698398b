//! HTTP plumbing: body type, JSON responses, query strings.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};
use serde::Serialize;

/// Every response body is a buffered one.
pub type Body = Full<Bytes>;

/// A JSON response.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("response bodies serialise");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
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
