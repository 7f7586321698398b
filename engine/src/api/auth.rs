//! Who is calling and from where: `Authorization: Bearer <secret>`
//! (RFC 6750 §2.1) or a WebSocket `?ticket=`, the 401 and 403 answers with
//! their `WWW-Authenticate` challenge (RFC 6750 §3, RFC 9110 §11.6.1), and
//! browser origins: CORS headers on REST, preflight `OPTIONS`, and the
//! `Origin` check of WebSocket upgrades (RFC 6455 §10.2).
//!
//! Deciding is here; keys and tickets are kept by `pipeline::Keys`.

use super::{
    ApiState,
    error::ApiError,
    http::{Body, query_param},
};
use crate::{
    domain::{Caller, Order, Scope},
    pipeline::Rejection,
    telemetry::event,
};
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode,
    header::{self, HeaderValue},
};
use std::net::SocketAddr;

/// The realm named in every challenge.
const REALM: &str = "swapline";

/// Request headers a browser may send cross-origin.
pub(super) const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key";

/// Response headers a browser script may read cross-origin.
const EXPOSED_HEADERS: &str = "WWW-Authenticate, Retry-After, RateLimit, RateLimit-Policy, Idempotent-Replayed";

/// How long a browser may cache a preflight answer, seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// What a request authenticated as: a caller, and, for a WebSocket upgrade
/// that carries one, the ticket still to redeem for its order (the caller is
/// then anonymous: the ticket alone decides).
#[derive(Debug, Clone)]
pub(super) struct Access {
    /// The caller.
    pub caller: Caller,
    /// `?ticket=` of an upgrade.
    pub ticket: Option<String>,
}

/// 401 `unauthorized` with its `WWW-Authenticate: Bearer` challenge; a
/// wrong credential adds `error="invalid_token"` (RFC 6750 §3.1).
pub(super) fn unauthorized(rejection: Rejection) -> ApiError {
    event::auth_rejected(401, rejection.reason());
    let challenge = if rejection.is_invalid_token() {
        format!("Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{rejection}\"")
    } else if rejection == Rejection::Malformed {
        format!("Bearer realm=\"{REALM}\", error=\"invalid_request\"")
    } else {
        format!("Bearer realm=\"{REALM}\"")
    };
    ApiError {
        challenge: Some(challenge.into()),
        ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", rejection.to_string())
    }
}

/// 403 `forbidden`: the key lacks `scope` (RFC 6750 §3.1
/// `insufficient_scope`).
pub(super) fn forbidden(caller: &Caller, scope: Scope) -> ApiError {
    event::auth_rejected(403, "scope");
    if let Some(key) = &caller.key {
        tracing::debug!(key_id = %key.id, scope = scope.as_str(), "the key lacks the scope");
    }
    ApiError {
        challenge: Some(format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\"").into()),
        ..ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this API key lacks the `{scope}` scope"),
        )
    }
}

/// 403 `origin_not_allowed`: a browser origin not in
/// `server.allowed_origins`.
pub(super) fn origin_refused(origin: &str) -> ApiError {
    event::auth_rejected(403, "origin");
    ApiError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        format!("origin {origin:?} is not in server.allowed_origins"),
    )
}

/// The `Origin` header, if any (as text).
pub(super) fn origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn origin_allowed(state: &ApiState, origin: &str) -> bool {
    state
        .settings
        .allowed_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
}

/// A WebSocket upgrade from a browser origin that is not allowed is refused
/// (browsers send `Origin` on every upgrade; other clients need not). A page
/// served by this engine (the console at `/console`) is same-origin and
/// always allowed: its `Origin` names the `Host` it was loaded from
/// (RFC 6454 §4), which another site's page cannot forge.
pub(super) fn check_upgrade_origin(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    match origin(headers) {
        Some(origin) if !origin_allowed(state, &origin) && !same_origin(headers, &origin) => {
            Err(origin_refused(&origin))
        }
        _ => Ok(()),
    }
}

/// Whether `origin` is `http://<Host>` or `https://<Host>` of this request.
fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) && rest.eq_ignore_ascii_case(host)
}

/// Authenticates a request: the key of `Authorization: Bearer`, else (on a
/// WebSocket upgrade) a `?ticket=` to redeem later, else none, which is a
/// 401 when `auth.required`. A key that is sent is always checked.
pub(super) async fn access<B>(
    state: &ApiState,
    request: &Request<B>,
    peer: SocketAddr,
    upgrade: bool,
) -> Result<Access, ApiError> {
    let anonymous = Caller::anonymous(peer.ip());
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let secret = bearer(value).map_err(unauthorized)?;
        return match state.keys.authenticate(secret).await.map_err(ApiError::store)? {
            Ok(grant) => Ok(Access {
                caller: Caller {
                    key: Some(grant),
                    ip: peer.ip(),
                },
                ticket: None,
            }),
            Err(rejection) => Err(unauthorized(rejection)),
        };
    }
    if upgrade && let Some(ticket) = query_param(request.uri().query(), "ticket") {
        return Ok(Access {
            caller: anonymous,
            ticket: Some(ticket),
        });
    }
    if state.settings.auth_required {
        return Err(unauthorized(Rejection::Missing));
    }
    Ok(Access {
        caller: anonymous,
        ticket: None,
    })
}

/// The secret of `Bearer <secret>` (the scheme is case-insensitive,
/// RFC 9110 §11.1).
fn bearer(value: &HeaderValue) -> Result<&str, Rejection> {
    let text = value.to_str().map_err(|_| Rejection::Malformed)?;
    let (scheme, secret) = text.trim().split_once(' ').ok_or(Rejection::Malformed)?;
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() || secret.contains(' ') {
        return Err(Rejection::Malformed);
    }
    Ok(secret)
}

/// Whether `caller` may see `order`: its own, or every order for an admin
/// (and for everyone while auth is off and no key is sent). Another key's
/// order answers 404, as if it did not exist: existence is not leaked.
pub(super) fn may_see(caller: &Caller, order: &Order) -> bool {
    caller.sees_all() || (order.owner.is_some() && order.owner == caller.owner())
}

/// Adds the CORS headers of an allowed `origin` to a REST answer.
pub(super) fn add_cors(state: &ApiState, origin: Option<&str>, response: &mut Response<Body>) {
    let headers = response.headers_mut();
    // Answers differ by Origin: caches must key on it.
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin.filter(|o| origin_allowed(state, o)) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
}

/// The answer to `OPTIONS` on a route that answers `method`: 204 with the
/// allowed methods and headers for an allowed origin (a CORS preflight),
/// 204 with `Allow` without an origin (RFC 9110 §9.3.7), 403 for another
/// origin.
pub(super) fn preflight(state: &ApiState, origin: Option<&str>, method: &Method) -> Result<Response<Body>, ApiError> {
    let methods = format!("{method}, OPTIONS");
    let mut response = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::ALLOW, &methods)
        .body(Body::empty())
        .expect("static response parts are valid");
    let Some(origin) = origin else {
        return Ok(response);
    };
    if !origin_allowed(state, origin) {
        return Err(origin_refused(origin));
    }
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_str(&methods).expect("method names are valid header values"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_takes_the_secret_after_a_case_insensitive_scheme() {
        let value = |text: &'static str| HeaderValue::from_static(text);
        assert_eq!(bearer(&value("Bearer swl_abc")), Ok("swl_abc"));
        assert_eq!(bearer(&value("bearer  swl_abc ")), Ok("swl_abc"));
        for bad in ["Basic dXNlcg==", "Bearer", "Bearer ", "swl_abc", "Bearer a b"] {
            assert_eq!(bearer(&value(bad)), Err(Rejection::Malformed), "{bad}");
        }
    }

    #[test]
    fn an_origin_naming_the_requests_own_host_is_same_origin() {
        let headers = |host: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static(host));
            headers
        };
        assert!(same_origin(&headers("127.0.0.1:3000"), "http://127.0.0.1:3000"));
        assert!(same_origin(&headers("swap.example.com"), "https://swap.example.com"));
        assert!(!same_origin(&headers("127.0.0.1:3000"), "http://127.0.0.1:3001"));
        assert!(!same_origin(&headers("swap.example.com"), "https://evil.example"));
        assert!(!same_origin(&headers("swap.example.com"), "null"));
        assert!(!same_origin(&HeaderMap::new(), "http://127.0.0.1:3000"));
    }

    #[test]
    fn a_missing_key_gets_a_bare_challenge_and_a_wrong_one_invalid_token() {
        let missing = unauthorized(Rejection::Missing);
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert_eq!(missing.challenge.as_deref(), Some("Bearer realm=\"swapline\""));
        let revoked = unauthorized(Rejection::RevokedKey).into_response();
        let challenge = revoked.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"swapline\", error=\"invalid_token\""),
            "{challenge}"
        );
    }
}
