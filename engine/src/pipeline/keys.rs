//! API keys and WebSocket tickets: the use cases behind `swapline keys …`
//! and request authentication.
//!
//! A key's secret is 32 random bytes shown once, prefixed `swl_` so a
//! leaked one is easy to recognise; the store keeps only its SHA-256 digest
//! and finds a secret by its digest, so no secret is ever compared byte by
//! byte (and none is logged). A node caches what a digest authenticated as
//! for `auth.key_cache_ttl`, so a revocation reaches every node within that
//! time.
//!
//! A ticket (`swt_…`) is stateless until it is used: it carries its order,
//! its key, its expiry and a random nonce, signed with HMAC-SHA256 (RFC
//! 2104; the tag truncated to 128 bits, §5) under a secret all nodes share
//! through the store, in URL-safe base64 (RFC 4648 §5) since it travels in
//! a query string. Issuing one writes nothing; using one records its
//! digest in the store, so it opens one stream once on any node.
//!
//! Imports `domain` and the `store` seam; never `api`.

use crate::{
    domain::{ApiKey, KeyGrant, KeyId, NewKey, OrderId, Scope, SecretHash, Ticket, Timestamp},
    store::{Store, StoreError},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use thiserror::Error;
use tokio::sync::OnceCell;

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

/// 32 random bytes (two UUID v4s: the OS generator).
fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes
}

/// 32 random bytes, base58, after `prefix`.
fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", bs58::encode(random_bytes()).into_string())
}

/// What a stream ticket (`GET /api/stream`) carries where an order
/// ticket carries its order: the nil UUID, which no order has (order ids
/// are random), so a stream ticket never opens an order's socket and an
/// order's ticket never opens the stream ([`Rejection::WrongOrder`]).
pub const STREAM_TICKET: OrderId = OrderId(uuid::Uuid::nil());

/// The store's name of the secret that signs tickets.
const TICKET_SIGNING_SECRET: &str = "ws_ticket";

/// What a ticket says, signed: version 1, order id (16 bytes), whether a
/// key asked (1) and its id (16, zeros if none), expiry (Unix ms, u64
/// big-endian), nonce (16 random bytes).
const TICKET_CLAIMS: usize = 1 + 16 + 1 + 16 + 8 + 16;
/// The HMAC-SHA256 tag, truncated to its left 128 bits (RFC 2104 §5
/// allows truncation to no less than half the output and 80 bits).
const TICKET_TAG: usize = 16;
const TICKET_VERSION: u8 = 1;

type TicketMac = Hmac<Sha256>;

fn ticket_mac(secret: &[u8; 32], claims: &[u8]) -> TicketMac {
    let mut mac = TicketMac::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(claims);
    mac
}

/// Signs a ticket for `order` (asked by `key`) that expires at
/// `expires_ms` (Unix milliseconds).
fn sign_ticket(secret: &[u8; 32], order: OrderId, key: Option<KeyId>, expires_ms: u64) -> String {
    let mut token = Vec::with_capacity(TICKET_CLAIMS + TICKET_TAG);
    token.push(TICKET_VERSION);
    token.extend_from_slice(order.0.as_bytes());
    token.push(u8::from(key.is_some()));
    token.extend_from_slice(key.map(|k| *k.0.as_bytes()).unwrap_or_default().as_slice());
    token.extend_from_slice(&expires_ms.to_be_bytes());
    token.extend_from_slice(&random_bytes()[..16]);
    let tag = ticket_mac(secret, &token).finalize().into_bytes();
    token.extend_from_slice(&tag[..TICKET_TAG]);
    format!("{TICKET_PREFIX}{}", URL_SAFE_NO_PAD.encode(token))
}

/// The claims of a ticket signed with `secret`, or `None` for anything
/// else (not ours, altered, truncated): the tag is checked in constant
/// time before any claim is read.
fn verify_ticket(secret: &[u8; 32], ticket: &str) -> Option<(OrderId, Option<KeyId>, SystemTime)> {
    let token = URL_SAFE_NO_PAD.decode(ticket.strip_prefix(TICKET_PREFIX)?).ok()?;
    if token.len() != TICKET_CLAIMS + TICKET_TAG {
        return None;
    }
    let (claims, tag) = token.split_at(TICKET_CLAIMS);
    ticket_mac(secret, claims).verify_truncated_left(tag).ok()?;
    if claims[0] != TICKET_VERSION {
        return None;
    }
    let id = |at: usize| uuid::Uuid::from_slice(&claims[at..at + 16]).ok();
    let order = OrderId(id(1)?);
    let key = (claims[17] == 1).then(|| id(18)).flatten().map(KeyId);
    let millis = u64::from_be_bytes(claims[34..42].try_into().ok()?);
    Some((order, key, UNIX_EPOCH + Duration::from_millis(millis)))
}

/// At most this many digests are cached; past it the cache starts over.
const KEY_CACHE_CAPACITY: usize = 10_000;

/// What a secret authenticated as.
type Authenticated = Result<KeyGrant, Rejection>;

/// What digests authenticated as, for a short time. Only keys the store
/// knows are cached (active or revoked): an unknown secret always asks
/// the store, so random guesses cannot fill the cache.
#[derive(Debug, Default)]
struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<SecretHash, (Instant, Authenticated)>>,
}

impl KeyCache {
    fn get(&self, hash: &SecretHash) -> Option<Authenticated> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().expect("key cache lock");
        entries
            .get(hash)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, answer)| answer.clone())
    }

    fn put(&self, hash: SecretHash, answer: &Authenticated) {
        if self.ttl.is_zero() || *answer == Err(Rejection::UnknownKey) {
            return;
        }
        let mut entries = self.entries.lock().expect("key cache lock");
        if entries.len() >= KEY_CACHE_CAPACITY {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= KEY_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(hash, (Instant::now(), answer.clone()));
    }
}

/// Keys and tickets over the store.
#[derive(Clone)]
pub struct Keys {
    store: Arc<dyn Store>,
    cache: Arc<KeyCache>,
    signing: Arc<OnceCell<[u8; 32]>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

impl Keys {
    /// Keys kept in `store`, looked up there on every request.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Keys {
            store,
            cache: Arc::default(),
            signing: Arc::default(),
        }
    }

    /// Remembers what a secret authenticated as for `ttl`
    /// (`auth.key_cache_ttl`; zero: no cache), so a busy key costs one
    /// store lookup per `ttl` per node. A revocation then takes effect
    /// within `ttl` rather than on the next request.
    pub fn with_cache(mut self, ttl: Duration) -> Self {
        self.cache = Arc::new(KeyCache {
            ttl,
            entries: Mutex::default(),
        });
        self
    }

    /// The secret that signs tickets, read from (or, the first time on any
    /// node, written to) the store once per process.
    async fn signing_secret(&self) -> Result<&[u8; 32], StoreError> {
        self.signing
            .get_or_try_init(|| self.store.signing_secret(TICKET_SIGNING_SECRET, random_bytes()))
            .await
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

    /// The grant of the active key whose secret is `secret` (from the
    /// cache when [`Keys::with_cache`] was set and the digest was seen
    /// within its time).
    ///
    /// # Errors
    /// The store's; a refused secret is the inner `Err`.
    pub async fn authenticate(&self, secret: &str) -> Result<Result<KeyGrant, Rejection>, StoreError> {
        let hash = SecretHash::of(secret);
        if let Some(answer) = self.cache.get(&hash) {
            return Ok(answer);
        }
        let answer = match self.store.key_by_secret(&hash).await? {
            None => Err(Rejection::UnknownKey),
            Some(key) if !key.is_active() => Err(Rejection::RevokedKey),
            Some(key) => Ok(key.grant()),
        };
        self.cache.put(hash, &answer);
        Ok(answer)
    }

    /// A single-use ticket for `order`'s stream, valid for `ttl`. Nothing
    /// is stored (after the first call in a process, which reads the
    /// signing secret).
    ///
    /// # Errors
    /// The store's, reading the signing secret.
    pub async fn issue_ticket(
        &self,
        order: OrderId,
        key: Option<KeyId>,
        ttl: Duration,
    ) -> Result<IssuedTicket, StoreError> {
        let expires_ms = (SystemTime::now() + ttl)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let expires_ms = u64::try_from(expires_ms).unwrap_or(u64::MAX);
        Ok(IssuedTicket {
            secret: sign_ticket(self.signing_secret().await?, order, key, expires_ms),
            expires_at: Timestamp(UNIX_EPOCH + Duration::from_millis(expires_ms)),
        })
    }

    /// Checks the ticket `secret` for `order`'s stream without using it up:
    /// a ticket that is not ours, was altered, expired, or is for another
    /// order is refused. Whether it was used already is decided by
    /// [`Keys::use_ticket`], once everything else about the request is
    /// known to be fine.
    ///
    /// # Errors
    /// The store's, reading the signing secret; a refused ticket is the
    /// inner `Err`.
    pub async fn check_ticket(&self, secret: &str, order: OrderId) -> Result<Result<Ticket, Rejection>, StoreError> {
        let Some((order_id, key, expires_at)) = verify_ticket(self.signing_secret().await?, secret) else {
            return Ok(Err(Rejection::BadTicket));
        };
        let ticket = Ticket {
            hash: SecretHash::of(secret),
            order_id,
            key,
            expires_at: Timestamp(expires_at),
        };
        if !ticket.valid_at(Timestamp::now()) {
            return Ok(Err(Rejection::ExpiredTicket));
        }
        if ticket.order_id != order {
            return Ok(Err(Rejection::WrongOrder));
        }
        Ok(Ok(ticket))
    }

    /// Uses up a ticket [`Keys::check_ticket`] accepted: it opens one
    /// stream once, on any node; a second use is
    /// [`Rejection::BadTicket`].
    ///
    /// # Errors
    /// The store's; a used ticket is the inner `Err`.
    pub async fn use_ticket(&self, ticket: &Ticket) -> Result<Result<(), Rejection>, StoreError> {
        Ok(if self.store.use_ticket(ticket).await? {
            Ok(())
        } else {
            Err(Rejection::BadTicket)
        })
    }

    /// A single-use ticket for the stream of every order `key` may see
    /// (`GET /api/stream`), valid for `ttl`; signed like an order's, for
    /// [`STREAM_TICKET`].
    ///
    /// # Errors
    /// The store's, reading the signing secret.
    pub async fn issue_stream_ticket(&self, key: Option<KeyId>, ttl: Duration) -> Result<IssuedTicket, StoreError> {
        self.issue_ticket(STREAM_TICKET, key, ttl).await
    }

    /// [`Keys::check_ticket`] for the stream (an order's ticket is
    /// [`Rejection::WrongOrder`]), with whose orders it shows: `None` for
    /// every order (the key is `admin`, or the ticket was issued without a
    /// key), else the key's own. The key is read again, so a key revoked
    /// since is refused ([`Rejection::RevokedKey`]; gone:
    /// [`Rejection::UnknownKey`]). A ticket issued without a key (while
    /// auth was off) is refused when `auth_required` ([`Rejection::Missing`]):
    /// it would show every order to anyone holding it.
    ///
    /// # Errors
    /// The store's; a refused ticket is the inner `Err`.
    pub async fn check_stream_ticket(
        &self,
        secret: &str,
        auth_required: bool,
    ) -> Result<Result<(Ticket, Option<KeyId>), Rejection>, StoreError> {
        let ticket = match self.check_ticket(secret, STREAM_TICKET).await? {
            Ok(ticket) => ticket,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let Some(id) = ticket.key else {
            if auth_required {
                return Ok(Err(Rejection::Missing));
            }
            return Ok(Ok((ticket, None)));
        };
        // Keys are few (operators make them by hand): one list read per
        // stream opened with a ticket.
        let Some(key) = self.store.keys().await?.into_iter().find(|key| key.id == id) else {
            return Ok(Err(Rejection::UnknownKey));
        };
        if !key.is_active() {
            return Ok(Err(Rejection::RevokedKey));
        }
        let sees_all = key.scopes.contains(&Scope::Admin);
        Ok(Ok((ticket, (!sees_all).then_some(id))))
    }

    /// Whether key `id` exists and is not revoked, read from the store (not
    /// the cache of [`Keys::authenticate`]): an open stream asks at each
    /// ping so that revoking its key closes it.
    ///
    /// # Errors
    /// The store's.
    pub async fn is_active(&self, id: KeyId) -> Result<bool, StoreError> {
        Ok(self
            .store
            .keys()
            .await?
            .iter()
            .any(|key| key.id == id && key.is_active()))
    }

    /// [`Keys::check_ticket`] then [`Keys::use_ticket`].
    ///
    /// # Errors
    /// The store's; a refused ticket is the inner `Err`.
    pub async fn redeem_ticket(&self, secret: &str, order: OrderId) -> Result<Result<Ticket, Rejection>, StoreError> {
        let ticket = match self.check_ticket(secret, order).await? {
            Ok(ticket) => ticket,
            Err(rejection) => return Ok(Err(rejection)),
        };
        Ok(self.use_ticket(&ticket).await?.map(|()| ticket))
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

    #[tokio::test]
    async fn a_stream_ticket_opens_only_the_stream_and_an_order_ticket_never_does() {
        let (_dir, keys) = keys().await;
        let key = Some(KeyId::new());
        let stream = keys.issue_stream_ticket(key, Duration::from_secs(60)).await.unwrap();
        let order = OrderId::new();
        assert_eq!(
            keys.check_ticket(&stream.secret, order).await.unwrap().map(|_| ()),
            Err(Rejection::WrongOrder),
            "a stream ticket opens no order"
        );
        let per_order = keys.issue_ticket(order, key, Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            keys.check_stream_ticket(&per_order.secret, true)
                .await
                .unwrap()
                .map(|_| ()),
            Err(Rejection::WrongOrder),
            "an order's ticket opens no stream"
        );
        assert_eq!(
            keys.check_stream_ticket(&stream.secret, true)
                .await
                .unwrap()
                .map(|_| ()),
            Err(Rejection::UnknownKey),
            "a key that is gone"
        );
        let reader = keys.create("reader", vec![Scope::Read], None).await.unwrap();
        let admin = keys.create("admin", vec![Scope::Admin], None).await.unwrap();
        let stream = keys
            .issue_stream_ticket(Some(reader.key.id), Duration::from_secs(60))
            .await
            .unwrap();
        let (checked, audience) = keys.check_stream_ticket(&stream.secret, true).await.unwrap().unwrap();
        assert_eq!((checked.order_id, checked.key), (STREAM_TICKET, Some(reader.key.id)));
        assert_eq!(audience, Some(reader.key.id), "a reader sees its own orders");
        let for_admin = keys
            .issue_stream_ticket(Some(admin.key.id), Duration::from_secs(60))
            .await
            .unwrap();
        let (_, audience) = keys
            .check_stream_ticket(&for_admin.secret, true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(audience, None, "an admin sees every order");
        let keyless = keys.issue_stream_ticket(None, Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            keys.check_stream_ticket(&keyless.secret, true)
                .await
                .unwrap()
                .map(|_| ()),
            Err(Rejection::Missing),
            "a ticket issued while auth was off, once auth is on"
        );
        assert_eq!(
            keys.check_stream_ticket(&keyless.secret, false)
                .await
                .unwrap()
                .map(|t| t.1),
            Ok(None),
            "auth off: it sees every order"
        );
        assert_eq!(keys.use_ticket(&checked).await.unwrap(), Ok(()));
        assert_eq!(
            keys.use_ticket(&checked).await.unwrap(),
            Err(Rejection::BadTicket),
            "once"
        );
        assert!(keys.is_active(reader.key.id).await.unwrap());
        keys.revoke(reader.key.id).await.unwrap();
        assert!(!keys.is_active(reader.key.id).await.unwrap(), "revoked");
        assert!(!keys.is_active(KeyId::new()).await.unwrap(), "unknown");
    }

    #[test]
    fn a_signed_ticket_says_what_it_was_signed_with_and_nothing_altered_passes() {
        let (secret, order, key) = ([7u8; 32], OrderId::new(), KeyId::new());
        let ticket = sign_ticket(&secret, order, Some(key), 1_700_000_000_123);
        assert!(ticket.starts_with("swt_"));
        let (o, k, at) = verify_ticket(&secret, &ticket).expect("valid");
        assert_eq!((o, k), (order, Some(key)));
        assert_eq!(at, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let anonymous = sign_ticket(&secret, order, None, 1);
        assert_eq!(verify_ticket(&secret, &anonymous).unwrap().1, None);
        assert_ne!(
            sign_ticket(&secret, order, None, 1),
            anonymous,
            "a fresh nonce each time"
        );

        assert_eq!(verify_ticket(&[8u8; 32], &ticket), None, "another node's secret");
        let bytes = URL_SAFE_NO_PAD.decode(&ticket[4..]).unwrap();
        for at in [0, 1, 20, 40, bytes.len() - 1] {
            let mut altered = bytes.clone();
            altered[at] ^= 1;
            let altered = format!("swt_{}", URL_SAFE_NO_PAD.encode(altered));
            assert_eq!(verify_ticket(&secret, &altered), None, "byte {at} flipped");
        }
        let short = format!("swt_{}", URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1]));
        for bad in [short.as_str(), "swt_", "swt_0OIl", "swt_a+b/c=", "swl_abc", ""] {
            assert_eq!(verify_ticket(&secret, bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn every_node_signs_with_the_secret_of_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("k.db"), SqliteSync::Normal, Duration::from_secs(5)).unwrap());
        store.migrate().await.unwrap();
        let (a, b) = (Keys::new(store.clone()), Keys::new(store));
        let order = OrderId::new();
        let ticket = a.issue_ticket(order, None, Duration::from_secs(60)).await.unwrap();
        assert!(
            b.redeem_ticket(&ticket.secret, order).await.unwrap().is_ok(),
            "B opens A's"
        );
        assert_eq!(
            a.redeem_ticket(&ticket.secret, order).await.unwrap(),
            Err(Rejection::BadTicket),
            "and A refuses it after B used it"
        );
    }

    #[tokio::test]
    async fn a_cached_key_keeps_working_until_its_ttl_and_unknown_keys_are_not_cached() {
        let (_dir, keys) = keys().await;
        let cached = keys.clone().with_cache(Duration::from_millis(300));
        let created = keys.create("ci", vec![Scope::Read], None).await.unwrap();
        assert!(cached.authenticate(&created.secret).await.unwrap().is_ok());
        keys.revoke(created.key.id).await.unwrap();
        assert!(
            cached.authenticate(&created.secret).await.unwrap().is_ok(),
            "cached: the revocation is not seen yet"
        );
        assert_eq!(
            keys.authenticate(&created.secret).await.unwrap(),
            Err(Rejection::RevokedKey),
            "without the cache it is"
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            cached.authenticate(&created.secret).await.unwrap(),
            Err(Rejection::RevokedKey),
            "after the TTL the cache asks the store"
        );
        assert_eq!(
            cached.authenticate("swl_guess").await.unwrap(),
            Err(Rejection::UnknownKey)
        );
        assert!(
            cached.cache.entries.lock().unwrap().len() == 1,
            "only the known key is cached"
        );
    }
}
