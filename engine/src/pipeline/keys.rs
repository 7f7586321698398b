//! API keys and WebSocket tickets: the use cases behind `swapline keys …`
//! and request authentication. Secrets are 32 random bytes shown once, with
//! a prefix (`swl_` for keys, `swt_` for tickets) so a leaked one is easy to
//! recognise; the store keeps only their SHA-256 digest and finds a secret
//! by its digest, so no secret is ever compared byte by byte (and none is
//! logged). Imports `domain` and the `store` seam; never `api`.

use crate::{
    domain::{ApiKey, KeyGrant, KeyId, NewKey, OrderId, Scope, SecretHash, Ticket, Timestamp},
    store::{Store, StoreError},
};
use std::{sync::Arc, time::Duration};
use thiserror::Error;

/// Prefix of API key secrets.
pub const KEY_PREFIX: &str = "swl_";
/// Prefix of WebSocket tickets.
pub const TICKET_PREFIX: &str = "swt_";

/// Why a key could not be created or revoked.
#[derive(Debug, Error)]
pub enum KeyError {
    /// A bad name or scope list.
    #[error("{0}")]
    Invalid(String),
    /// No key has this id.
    #[error("no key {0}")]
    NotFound(KeyId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a request's credentials were refused; each has a stable `reason`
/// (the metric label and the log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Rejection {
    /// No credentials, and they are required.
    #[error("send an API key: Authorization: Bearer <secret>")]
    Missing,
    /// The `Authorization` header is not `Bearer <secret>`.
    #[error("the Authorization header must be \"Bearer <secret>\"")]
    Malformed,
    /// No key has this secret.
    #[error("unknown API key")]
    UnknownKey,
    /// The key was revoked.
    #[error("this API key was revoked")]
    RevokedKey,
    /// No such ticket, or it was used already.
    #[error("unknown or already used ticket")]
    BadTicket,
    /// The ticket expired.
    #[error("the ticket expired; ask POST /api/ws-tickets for a new one")]
    ExpiredTicket,
    /// The ticket is for another order.
    #[error("the ticket is for another order")]
    WrongOrder,
}

impl Rejection {
    /// Every rejection.
    pub const ALL: [Rejection; 7] = [
        Rejection::Missing,
        Rejection::Malformed,
        Rejection::UnknownKey,
        Rejection::RevokedKey,
        Rejection::BadTicket,
        Rejection::ExpiredTicket,
        Rejection::WrongOrder,
    ];

    /// Stable snake_case name.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Missing => "missing_credentials",
            Rejection::Malformed => "malformed_authorization",
            Rejection::UnknownKey => "unknown_key",
            Rejection::RevokedKey => "revoked_key",
            Rejection::BadTicket => "unknown_ticket",
            Rejection::ExpiredTicket => "expired_ticket",
            Rejection::WrongOrder => "ticket_for_another_order",
        }
    }

    /// Whether credentials were sent but are wrong (RFC 6750 §3.1
    /// `invalid_token`), rather than missing.
    pub fn is_invalid_token(self) -> bool {
        !matches!(self, Rejection::Missing | Rejection::Malformed)
    }
}

/// A key just created, with its secret (shown once, never stored).
#[derive(Clone, PartialEq, Eq)]
pub struct CreatedKey {
    /// The key as stored.
    pub key: ApiKey,
    /// Its secret, `swl_…`.
    pub secret: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &self.key)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// A ticket just issued.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedTicket {
    /// The ticket, `swt_…`, for `?ticket=`.
    pub secret: String,
    /// It opens nothing after this instant.
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for IssuedTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTicket")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// 32 random bytes (two UUID v4s: the OS generator), base58, after `prefix`.
fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("{prefix}{}", bs58::encode(bytes).into_string())
}

/// Keys and tickets over the store.
#[derive(Clone)]
pub struct Keys {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

impl Keys {
    /// Keys kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Keys { store }
    }

    /// Creates a key named `name` with `scopes`; answers it with its secret,
    /// which is not kept anywhere.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] for an empty or over-long name or no scope;
    /// [`KeyError::Store`].
    pub async fn create(
        &self,
        name: &str,
        scopes: Vec<Scope>,
        orders_per_minute: Option<u32>,
    ) -> Result<CreatedKey, KeyError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(KeyError::Invalid("a key name has 1 to 100 characters".into()));
        }
        if scopes.is_empty() {
            return Err(KeyError::Invalid("name at least one scope (trade, read, admin)".into()));
        }
        let secret = new_secret(KEY_PREFIX);
        let key = self
            .store
            .create_key(&NewKey {
                id: KeyId::new(),
                name: name.to_owned(),
                scopes,
                orders_per_minute,
                secret_hash: SecretHash::of(&secret),
            })
            .await?;
        tracing::info!(key_id = %key.id, name = key.name, "API key created");
        Ok(CreatedKey { key, secret })
    }

    /// Every key, oldest first (never their secrets).
    ///
    /// # Errors
    /// The store's.
    pub async fn list(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.store.keys().await
    }

    /// Revokes a key: requests with it get 401 from then on, on every node.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; [`KeyError::Store`].
    pub async fn revoke(&self, id: KeyId) -> Result<ApiKey, KeyError> {
        let key = self.store.revoke_key(id).await?.ok_or(KeyError::NotFound(id))?;
        tracing::info!(key_id = %key.id, name = key.name, "API key revoked");
        Ok(key)
    }

    /// The grant of the active key whose secret is `secret`.
    ///
    /// # Errors
    /// The store's; a refused secret is the inner `Err`.
    pub async fn authenticate(&self, secret: &str) -> Result<Result<KeyGrant, Rejection>, StoreError> {
        Ok(match self.store.key_by_secret(&SecretHash::of(secret)).await? {
            None => Err(Rejection::UnknownKey),
            Some(key) if !key.is_active() => Err(Rejection::RevokedKey),
            Some(key) => Ok(key.grant()),
        })
    }

    /// A single-use ticket for `order`'s stream, valid for `ttl`.
    ///
    /// # Errors
    /// The store's.
    pub async fn issue_ticket(
        &self,
        order: OrderId,
        key: Option<KeyId>,
        ttl: Duration,
    ) -> Result<IssuedTicket, StoreError> {
        let secret = new_secret(TICKET_PREFIX);
        let expires_at = Timestamp(std::time::SystemTime::now() + ttl);
        self.store
            .create_ticket(&Ticket {
                hash: SecretHash::of(&secret),
                order_id: order,
                key,
                expires_at,
            })
            .await?;
        Ok(IssuedTicket { secret, expires_at })
    }

    /// Uses up the ticket `secret` for `order`'s stream: it never opens
    /// anything again, whatever the answer.
    ///
    /// # Errors
    /// The store's; a refused ticket is the inner `Err`.
    pub async fn redeem_ticket(&self, secret: &str, order: OrderId) -> Result<Result<Ticket, Rejection>, StoreError> {
        Ok(match self.store.take_ticket(&SecretHash::of(secret)).await? {
            None => Err(Rejection::BadTicket),
            Some(ticket) if !ticket.valid_at(Timestamp::now()) => Err(Rejection::ExpiredTicket),
            Some(ticket) if ticket.order_id != order => Err(Rejection::WrongOrder),
            Some(ticket) => Ok(ticket),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, SqliteSync};

    async fn keys() -> (tempfile::TempDir, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("k.db"), SqliteSync::Normal, Duration::from_secs(5)).unwrap();
        store.migrate().await.unwrap();
        (dir, Keys::new(Arc::new(store)))
    }

    #[test]
    fn every_rejection_reason_has_its_metric_series() {
        for rejection in Rejection::ALL {
            assert!(
                crate::telemetry::AUTH_REASONS.contains(&(401, rejection.reason())),
                "{rejection:?}"
            );
        }
    }

    #[test]
    fn secrets_are_prefixed_random_and_long() {
        let (a, b) = (new_secret(KEY_PREFIX), new_secret(KEY_PREFIX));
        assert!(a.starts_with("swl_") && a.len() >= 4 + 43, "{a}");
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_created_key_authenticates_until_revoked_and_its_secret_is_not_stored() {
        let (_dir, keys) = keys().await;
        let created = keys.create("ci", vec![Scope::Trade], Some(5)).await.unwrap();
        assert!(!format!("{created:?}").contains(&created.secret));
        let grant = keys.authenticate(&created.secret).await.unwrap().unwrap();
        assert_eq!((grant.id, grant.orders_per_minute), (created.key.id, Some(5)));
        assert_eq!(keys.authenticate("swl_nope").await.unwrap(), Err(Rejection::UnknownKey));
        keys.revoke(created.key.id).await.unwrap();
        assert_eq!(
            keys.authenticate(&created.secret).await.unwrap(),
            Err(Rejection::RevokedKey)
        );
        assert!(matches!(keys.revoke(KeyId::new()).await, Err(KeyError::NotFound(_))));
        assert!(matches!(
            keys.create(" ", vec![Scope::Read], None).await,
            Err(KeyError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn a_ticket_opens_its_order_once_and_never_after_it_expires() {
        let (_dir, keys) = keys().await;
        let order = OrderId::new();
        let ticket = keys.issue_ticket(order, None, Duration::from_secs(60)).await.unwrap();
        assert!(ticket.secret.starts_with("swt_"));
        assert!(keys.redeem_ticket(&ticket.secret, order).await.unwrap().is_ok());
        assert_eq!(
            keys.redeem_ticket(&ticket.secret, order).await.unwrap(),
            Err(Rejection::BadTicket)
        );
        let other = keys.issue_ticket(order, None, Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            keys.redeem_ticket(&other.secret, OrderId::new()).await.unwrap(),
            Err(Rejection::WrongOrder)
        );
        let short = keys.issue_ticket(order, None, Duration::from_millis(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            keys.redeem_ticket(&short.secret, order).await.unwrap(),
            Err(Rejection::ExpiredTicket)
        );
    }
}
