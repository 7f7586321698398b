//! Who is calling: the API key a request authenticated with (if any), its
//! scopes, and the peer address. Identity only; authentication (checking a
//! secret) happens in `api`, keys are kept by the store.

use std::{fmt, net::IpAddr, str::FromStr};

/// An API key's id: a UUID, shown as its hyphenated text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub uuid::Uuid);

impl KeyId {
    /// A fresh random id (UUID v4).
    pub fn new() -> Self {
        KeyId(uuid::Uuid::new_v4())
    }
}

impl Default for KeyId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for KeyId {
    type Err = uuid::Error;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(KeyId)
    }
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Create and cancel orders.
    Trade,
    /// Read orders, events, lists and WebSocket streams.
    Read,
    /// Everything, on every order, including key management.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Trade, Scope::Read, Scope::Admin];

    /// The scope's name: `trade`, `read`, `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Trade => "trade",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// The scope a name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated API key, as a request carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    /// The key.
    pub id: KeyId,
    /// Its name, for logs.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Its own order-intake limit per minute, overriding
    /// `limits.orders_per_minute`; `None`: the default.
    pub orders_per_minute: Option<u32>,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key the request authenticated with; `None` when none was sent
    /// (allowed only while `auth.required` is false).
    pub key: Option<KeyGrant>,
    /// The peer address.
    pub ip: IpAddr,
}

impl Caller {
    /// A caller without a key, from `ip`.
    pub fn anonymous(ip: IpAddr) -> Self {
        Caller { key: None, ip }
    }

    /// Whether the caller may act with `scope`: a key needs the scope (or
    /// `admin`); a caller without a key may do anything (auth is off).
    pub fn may(&self, scope: Scope) -> bool {
        self.key
            .as_ref()
            .is_none_or(|key| key.scopes.contains(&scope) || key.scopes.contains(&Scope::Admin))
    }

    /// The key that will own what this caller creates.
    pub fn owner(&self) -> Option<KeyId> {
        self.key.as_ref().map(|key| key.id)
    }

    /// Whether the caller sees every order (admin, or auth off), not only
    /// its own.
    pub fn sees_all(&self) -> bool {
        self.key.as_ref().is_none_or(|key| key.scopes.contains(&Scope::Admin))
    }

    /// The scope of per-client state (idempotency keys, request limits):
    /// `key:<id>` for a key, `ip:<address>` without one.
    pub fn client_scope(&self) -> String {
        match &self.key {
            Some(key) => format!("key:{}", key.id),
            None => format!("ip:{}", self.ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scopes: &[Scope]) -> Caller {
        Caller {
            key: Some(KeyGrant {
                id: KeyId::new(),
                name: "k".into(),
                scopes: scopes.to_vec(),
                orders_per_minute: None,
            }),
            ip: "127.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn a_key_may_use_its_scopes_and_admin_may_use_all() {
        let reader = key(&[Scope::Read]);
        assert!(reader.may(Scope::Read) && !reader.may(Scope::Trade) && !reader.sees_all());
        let admin = key(&[Scope::Admin]);
        assert!(Scope::ALL.iter().all(|s| admin.may(*s)) && admin.sees_all());
    }

    #[test]
    fn without_a_key_everything_is_allowed_and_scoped_by_address() {
        let anonymous = Caller::anonymous("10.0.0.7".parse().unwrap());
        assert!(anonymous.may(Scope::Trade) && anonymous.sees_all());
        assert_eq!(anonymous.client_scope(), "ip:10.0.0.7");
        assert_eq!(anonymous.owner(), None);
    }

    #[test]
    fn scope_names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("write"), None);
    }
}
