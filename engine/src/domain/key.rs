//! API keys and WebSocket tickets as the store keeps them: never a secret,
//! only its SHA-256 digest ([`SecretHash`]), so a leaked database grants
//! nothing. Pure: generating secrets and checking them happen in
//! `pipeline::keys`.

use super::{KeyGrant, KeyId, OrderId, Scope, Timestamp};
use sha2::{Digest, Sha256};
use std::fmt;

/// The SHA-256 digest of a secret (an API key's or a ticket's). Secrets are
/// looked up by digest, so no secret is ever compared byte by byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    /// The digest of `secret` as the client sends it.
    pub fn of(secret: &str) -> Self {
        SecretHash(Sha256::digest(secret.as_bytes()).into())
    }
}

impl fmt::Debug for SecretHash {
    /// Only a prefix: enough to tell two apart in a log, never the digest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// An API key to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// Fresh id.
    pub id: KeyId,
    /// A name for people and logs.
    pub name: String,
    /// What it may do (never empty).
    pub scopes: Vec<Scope>,
    /// Its own order-intake limit per minute; `None`: the default.
    pub orders_per_minute: Option<u32>,
    /// The digest of its secret.
    pub secret_hash: SecretHash,
}

/// An API key as stored (without its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Id.
    pub id: KeyId,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Its own order-intake limit per minute; `None`: the default.
    pub orders_per_minute: Option<u32>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    /// Whether the key still authenticates.
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }

    /// What a request authenticated with this key carries.
    pub fn grant(&self) -> KeyGrant {
        KeyGrant {
            id: self.id,
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            orders_per_minute: self.orders_per_minute,
        }
    }
}

/// Scopes as stored and typed on the command line: `trade,read`.
pub fn scopes_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// Parses `trade,read` (spaces allowed, duplicates dropped, sorted).
///
/// # Errors
/// The unknown name, or an empty list.
pub fn parse_scopes(text: &str) -> Result<Vec<Scope>, String> {
    let mut scopes = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let scope = Scope::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown scope {name:?}; one of {}", known.join(", "))
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err("name at least one scope (trade, read, admin)".into());
    }
    scopes.sort();
    Ok(scopes)
}

/// A WebSocket ticket: lets one upgrade of one order's stream in, once,
/// before it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The digest of the ticket.
    pub hash: SecretHash,
    /// The order whose stream it opens.
    pub order_id: OrderId,
    /// The key that asked for it (`None`: auth was off).
    pub key: Option<KeyId>,
    /// It opens nothing after this instant.
    pub expires_at: Timestamp,
}

impl Ticket {
    /// Whether it still opens its order's stream at `now`.
    pub fn valid_at(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_lists_parse_sorted_without_duplicates_and_refuse_unknown_names() {
        assert_eq!(parse_scopes("read, trade,read"), Ok(vec![Scope::Trade, Scope::Read]));
        assert_eq!(scopes_text(&[Scope::Trade, Scope::Read]), "trade,read");
        assert!(parse_scopes("write").unwrap_err().contains("write"));
        assert!(parse_scopes(" , ").is_err());
    }

    #[test]
    fn a_secret_hash_is_sha256_and_debug_never_shows_it_whole() {
        let hash = SecretHash::of("abc");
        assert_eq!(hash.0[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(format!("{hash:?}"), "SecretHash(ba78…)");
    }
}
