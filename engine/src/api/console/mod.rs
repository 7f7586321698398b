//! The operator console at `GET /console`: one HTML page, one script and one
//! stylesheet, embedded in the binary (`include_str!`) and served with a
//! strict Content-Security-Policy, so the page loads nothing from anywhere
//! but this engine and runs no inline script.
//!
//! The page itself holds no data and is served without a key; every data
//! request it makes carries the key the operator types in
//! (`Authorization: Bearer`, kept in the tab's `sessionStorage`), and its
//! WebSockets open with single-use tickets (`POST /api/ws-tickets`).

use super::http::Body;
use bytes::Bytes;
use hyper::{Response, StatusCode, header};

/// The page.
const HTML: &str = include_str!("console.html");
/// Its script (plain ES2020, no framework, no build step).
const JS: &str = include_str!("console.js");
/// Its stylesheet.
const CSS: &str = include_str!("console.css");

/// `Content-Security-Policy` of every console response (W3C CSP Level 3):
/// scripts, styles and fetches from this origin only; WebSockets to
/// `ws:`/`wss:` as well, because browsers that predate CSP 3 do not let
/// `'self'` match a `ws:` URL; no plugins, no framing, no `<base>`, no form
/// posts (the script handles every form).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file: its body and media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// The file's text.
    pub body: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

/// The asset at `/console/<name>` (`name` empty: the page itself), or
/// `None` for a name the console does not have (the router answers 404).
pub fn asset(name: &str) -> Option<Asset> {
    let (body, content_type) = match name {
        "" | "index.html" => (HTML, "text/html; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        "console.css" => (CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

/// The `200` answer for `asset`, with its security headers: the CSP,
/// `X-Content-Type-Options: nosniff` (Fetch standard, so a script is never
/// read as another type), `Referrer-Policy: no-referrer` and
/// `Cache-Control: no-cache` (an upgraded engine serves its new console at
/// once).
pub fn response(asset: Asset) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, asset.content_type)
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::new(Bytes::from_static(asset.body.as_bytes())))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_two_assets_are_served_with_their_types() {
        assert_eq!(asset("").unwrap().content_type, "text/html; charset=utf-8");
        assert_eq!(
            asset("console.js").unwrap().content_type,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(asset("console.css").unwrap().content_type, "text/css; charset=utf-8");
        assert_eq!(asset("../Cargo.toml"), None);
        assert_eq!(asset("other.js"), None);
    }

    #[test]
    fn responses_carry_a_self_only_policy() {
        let page = response(asset("").unwrap());
        assert_eq!(page.status(), StatusCode::OK);
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
        assert!(csp.contains("connect-src 'self' ws: wss:"), "{csp}");
        assert_eq!(page.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    /// Everything the page loads comes from this engine: no absolute URL in
    /// a `src`/`href`, no inline script or style (the CSP would block them),
    /// and data is never written with `innerHTML`.
    #[test]
    fn the_page_loads_only_its_own_assets_and_never_writes_html() {
        for attribute in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
            assert!(!HTML.contains(attribute), "the page names an external URL: {attribute}");
        }
        assert!(HTML.contains("src=\"/console/console.js\""));
        assert!(HTML.contains("href=\"/console/console.css\""));
        assert!(!HTML.contains("<script>"), "inline script");
        assert!(!HTML.contains("style=\""), "inline style");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!JS.contains(sink), "the script uses {sink}");
        }
    }
}
