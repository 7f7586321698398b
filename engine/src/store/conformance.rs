//! The store contract: one set of behaviours every [`Store`] +
//! [`ChainStore`] backend must show, run against each real backend by
//! [`store_contract!`] (the shape of apalis's `generic_storage_test!`), so
//! SQLite and PostgreSQL cannot drift. Test-only; imports `domain` and its
//! own seam; never `api`, `pipeline` or `venues`.

use super::{
    Advance, Broadcast, ChainHead, ChainStore, ChainTx, KeyedCreate, Lander, Landing, ListQuery, NewEvent,
    NewIdempotencyKey, PoolRow, Store, StoreError, StoredAnswer, StreamCursor, TxState,
};
use crate::{
    domain::{
        ErrorInfo, EventData, EventKind, KeyId, NewKey, NewOrder, Order, OrderId, OrderPatch, OrderType, Scope,
        SecretHash, Status, Ticket, Timestamp,
    },
    testing,
};
use std::{sync::Arc, time::Duration};

pub(crate) use crate::testing::POSTGRES;

/// What a backend under the contract implements.
pub(crate) trait Backend: Store + ChainStore + 'static {}
impl<T: Store + ChainStore + 'static> Backend for T {}

/// Generates one `#[tokio::test]` per contract case in a `store_contract`
/// module. `$setup` names an `async fn() -> (Guard, Arc<S>)` that yields a
/// fresh, unmigrated store and a guard that removes it when dropped (also
/// when the test fails).
macro_rules! store_contract {
    ($setup:path) => {
        $crate::store::conformance::store_contract!(@cases $setup;
            migrations_apply_once_and_none_stay_pending,
            created_order_starts_at_seq_one,
            events_are_numbered_per_order_and_status_follows,
            append_applies_the_patch_with_the_event,
            append_to_finished_order_is_refused,
            unknown_orders_are_not_found,
            events_after_a_seq_are_the_later_ones_in_order,
            pages_run_newest_first_with_a_cursor,
            status_filter_pages_only_that_status,
            unfinished_orders_are_oldest_first_without_terminal_ones,
            stuck_orders_are_unfinished_ones_idle_past_the_cutoff,
            concurrent_appends_stay_gapless,
            ping_answers,
            keys_are_found_by_their_secret_digest_listed_and_revoked,
            a_ticket_is_used_once_and_expired_uses_are_swept,
            a_signing_secret_is_written_once_and_shared,
            orders_keep_their_owner_and_a_list_can_show_one_owner,
            a_keyed_order_is_stored_with_its_planned_answer_until_one_replaces_it,
            a_keyed_order_keeps_the_key_that_owns_it,
            a_taken_key_stores_nothing_and_scopes_keep_keys_apart,
            racing_creates_with_one_key_make_one_order,
            an_expired_key_is_forgotten_replaced_and_swept,
            a_cancelled_order_is_never_submitted_and_a_submitted_one_never_cancelled,
            a_cancel_racing_the_submission_lets_exactly_one_win,
            an_order_past_its_deadline_is_never_first_submitted,
            a_retry_links_both_ways_once,
            the_dead_letter_filter_matches_the_failure_code,
            an_append_after_a_stale_seq_stores_nothing,
            the_stream_holds_every_event_once_by_owner_and_resumes_after_a_cursor,
        );
    };
    (@cases $setup:path; $($case:ident),* $(,)?) => {
        /// The store contract (`store/conformance.rs`), one test per case.
        mod store_contract {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (_guard, store) = $setup().await;
                    $crate::store::conformance::$case(store).await;
                }
            )*
        }
    };
}
pub(crate) use store_contract;

/// Generates one test per case of the chain state contract in a
/// `chain_contract` module. `$setup` is as for [`store_contract!`];
/// `$again` names a `fn(&Guard) -> Arc<S>` that opens a second handle on
/// the same database (another process), for the racing cases.
macro_rules! chain_contract {
    ($setup:path, $again:path) => {
        /// The chain state contract (`store/conformance.rs`), one test per case.
        mod chain_contract {
            use super::*;
            $crate::store::conformance::chain_contract!(@one $setup, $again;
                the_chain_starts_once_and_the_first_genesis_stands,
                a_signature_is_stored_once_and_a_rebroadcast_only_counts,
                a_dropped_transaction_gets_a_new_chance_only_while_valid,
                an_advance_lands_moves_pools_and_expires_in_one_step,
                an_advance_to_a_reached_slot_does_nothing,
                a_quiet_advance_moves_only_the_tip_until_something_is_due,
            );
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn racing_advancers_land_each_transaction_once() {
                let (guard, store) = $setup().await;
                let other = $again(&guard);
                $crate::store::conformance::racing_advancers_land_each_transaction_once(store, other).await;
            }
        }
    };
    (@one $setup:path, $again:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (_guard, store) = $setup().await;
                $crate::store::conformance::$case(store).await;
            }
        )*
    };
}
pub(crate) use chain_contract;

/// A PostgreSQL schema of one test, dropped (with everything in it) when
/// this guard drops. Creating it fails the test, saying how to start
/// PostgreSQL, when it is not running.
pub(crate) struct TempSchema {
    /// The schema's name.
    pub(crate) name: String,
}

impl TempSchema {
    /// A fresh name; the store's migration creates the schema.
    pub(crate) fn new() -> Self {
        testing::require_postgres();
        TempSchema {
            name: testing::unique_name(),
        }
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        testing::clean_up(move || async move {
            if let Ok((client, connection)) = tokio_postgres::connect(POSTGRES, tokio_postgres::NoTls).await {
                tokio::spawn(connection);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .await;
            }
        });
    }
}

/// An order value (as a backend would read it back), for tests of pure
/// helpers.
pub(crate) fn sample_order() -> Order {
    Order {
        id: OrderId::new(),
        job_id: "j".into(),
        order_type: OrderType::Market,
        token_in: "SOL".into(),
        token_out: "USDC".into(),
        amount_in: 10,
        slippage_bps: 50,
        status: Status::Pending,
        last_kind: EventKind::Pending,
        last_seq: 1,
        quotes: Vec::new(),
        quoted_at: None,
        route: None,
        strategy: None,
        attempts: 0,
        last_error: None,
        tx_hash: None,
        dex: None,
        amount_out: None,
        executed_price: None,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
        created_seq: 1,
        owner: None,
        expires_at: None,
        retry_of: None,
        retried_by: None,
    }
}

/// An order to create (no owner, no deadline).
pub(crate) fn new_order() -> NewOrder {
    NewOrder {
        id: OrderId::new(),
        job_id: "j".into(),
        order_type: OrderType::Market,
        token_in: "SOL".into(),
        token_out: "USDC".into(),
        amount_in: 10,
        slippage_bps: 50,
        owner: None,
        expires_at: None,
        retry_of: None,
    }
}

pub(crate) fn event(data: EventData) -> NewEvent {
    NewEvent {
        message: "m".into(),
        progress: 0,
        data,
        patch: Default::default(),
        after_seq: None,
    }
}

pub(crate) fn pending() -> EventData {
    EventData::Pending {
        token_in: "SOL".into(),
        token_out: "USDC".into(),
        amount: "10".into(),
        slippage: 0.5,
    }
}

pub(crate) fn routing() -> EventData {
    EventData::Routing {
        quotes_fetched: None,
        quotes: None,
    }
}

fn failed() -> EventData {
    EventData::Failed {
        error: "x".into(),
        code: "x".into(),
        is_final: true,
        total_attempts: 0,
    }
}

fn retry_pending() -> EventData {
    EventData::RetryPending {
        delay: 1,
        next_attempt: 2,
    }
}

async fn migrated<S: Backend>(store: &S) {
    store.migrate().await.expect("migrating a fresh store");
}

/// Creates an order (with its `pending` event) and returns its id.
async fn created<S: Backend>(store: &S) -> OrderId {
    let order = new_order();
    store
        .create_order(&order, event(pending()))
        .await
        .expect("creating an order");
    order.id
}

fn page(status: Option<Status>, limit: u32, cursor: Option<i64>) -> ListQuery {
    ListQuery {
        status,
        limit,
        cursor,
        owner: None,
        code: None,
    }
}

/// A fresh store has every migration pending; `migrate` applies them once.
pub(crate) async fn migrations_apply_once_and_none_stay_pending<S: Backend>(store: Arc<S>) {
    // Every backend has the same versions (`store::tests`).
    let all: Vec<u32> = super::sqlite::MIGRATIONS
        .iter()
        .map(|(version, _, _)| *version)
        .collect();
    assert!(
        all.contains(&7) && all.contains(&8) && all.contains(&9),
        "0007: the chain; 0008: the event stream; 0009: drops the execution ledger"
    );
    assert_eq!(store.pending_migrations().await.unwrap(), all);
    assert_eq!(store.migrate().await.unwrap(), all);
    assert!(store.migrate().await.unwrap().is_empty(), "migrations apply once");
    assert!(store.pending_migrations().await.unwrap().is_empty());
}

/// `create_order` stores the order `pending` with its first event, seq 1.
pub(crate) async fn created_order_starts_at_seq_one<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let order = new_order();
    let first = store.create_order(&order, event(pending())).await.unwrap();
    assert_eq!(
        (first.order_id, first.seq, first.data.kind()),
        (order.id, 1, EventKind::Pending)
    );
    let stored = store.order(order.id).await.unwrap().expect("the order is stored");
    assert_eq!(
        (
            stored.status,
            stored.last_kind,
            stored.last_seq,
            stored.amount_in,
            stored.slippage_bps
        ),
        (Status::Pending, EventKind::Pending, 1, 10, 50)
    );
    assert_eq!((stored.token_in.as_str(), stored.token_out.as_str()), ("SOL", "USDC"));
    let events = store.events(order.id, 0).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].seq, events[0].data.clone()), (1, pending()));
}

/// Each append takes the next seq; the order's status follows the event.
pub(crate) async fn events_are_numbered_per_order_and_status_follows<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let order = new_order();
    assert_eq!(store.create_order(&order, event(pending())).await.unwrap().seq, 1);
    let mut patched = event(routing());
    patched.patch.attempts = Some(2);
    assert_eq!(store.append_event(order.id, patched).await.unwrap().seq, 2);
    let stored = store.order(order.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.last_seq, stored.attempts),
        (Status::Routing, 2, 2)
    );
    let seqs: Vec<u64> = store.events(order.id, 0).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(store.events(order.id, 1).await.unwrap().len(), 1);
}

/// The patch lands with its event; fields it leaves out keep their values,
/// and an event kind without a status leaves the status alone.
pub(crate) async fn append_applies_the_patch_with_the_event<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let id = created(&*store).await;
    let mut confirmed = event(routing());
    confirmed.patch.tx_hash = Some("tx".into());
    confirmed.patch.dex = Some("raydium".into());
    confirmed.patch.amount_out = Some(u128::from(u64::MAX >> 1));
    confirmed.patch.executed_price = Some("1.5".into());
    confirmed.patch.last_error = Some(ErrorInfo {
        code: "timeout".into(),
        message: "slow".into(),
    });
    store.append_event(id, confirmed).await.unwrap();
    let retry = store.append_event(id, event(retry_pending())).await.unwrap();
    assert_eq!(retry.seq, 3);
    let stored = store.order(id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.last_kind, stored.last_seq),
        (Status::Routing, EventKind::RetryPending, 3),
        "retry-pending moves no status"
    );
    assert_eq!(stored.tx_hash.as_deref(), Some("tx"));
    assert_eq!(stored.dex.as_deref(), Some("raydium"));
    assert_eq!(stored.amount_out, Some(u128::from(u64::MAX >> 1)));
    assert_eq!(stored.executed_price.as_deref(), Some("1.5"));
    assert_eq!(stored.last_error.map(|e| e.code).as_deref(), Some("timeout"));
}

/// Nothing follows `confirmed` or `failed`: the append is refused with
/// `Finished` and stores nothing.
pub(crate) async fn append_to_finished_order_is_refused<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let id = created(&*store).await;
    store.append_event(id, event(failed())).await.unwrap();
    assert_eq!(
        store.append_event(id, event(failed())).await.unwrap_err(),
        StoreError::Finished(id)
    );
    assert_eq!(
        store.append_event(id, event(routing())).await.unwrap_err(),
        StoreError::Finished(id)
    );
    assert_eq!(
        store.events(id, 0).await.unwrap().len(),
        2,
        "the refused events are not stored"
    );
    let stored = store.order(id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.last_seq), (Status::Failed, 2));
    assert!(store.unfinished_orders().await.unwrap().is_empty());
}

/// An id never created: appends are `NotFound`, reads are empty.
pub(crate) async fn unknown_orders_are_not_found<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let other = OrderId::new();
    assert_eq!(
        store.append_event(other, event(failed())).await.unwrap_err(),
        StoreError::NotFound(other)
    );
    assert!(store.order(other).await.unwrap().is_none());
    assert!(store.events(other, 0).await.unwrap().is_empty());
}

/// `events(id, after)` answers exactly the events with `seq > after`, in
/// order, and only that order's.
pub(crate) async fn events_after_a_seq_are_the_later_ones_in_order<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let (id, other) = (created(&*store).await, created(&*store).await);
    for _ in 0..4 {
        store.append_event(id, event(retry_pending())).await.unwrap();
    }
    store.append_event(other, event(routing())).await.unwrap();
    let seqs = |events: Vec<crate::domain::Event>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.events(id, 2).await.unwrap()), [3, 4, 5]);
    assert_eq!(seqs(store.events(id, 0).await.unwrap()), [1, 2, 3, 4, 5]);
    assert!(store.events(id, 5).await.unwrap().is_empty());
    assert!(store.events(id, 99).await.unwrap().iter().all(|e| e.order_id == id));
    assert_eq!(seqs(store.events(other, 0).await.unwrap()), [1, 2]);
}

/// Pages run newest first; following `next_cursor` visits every order once
/// and the last page has no cursor.
pub(crate) async fn pages_run_newest_first_with_a_cursor<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(created(&*store).await);
    }
    let first = store.list_orders(&page(None, 2, None)).await.unwrap();
    assert_eq!(first.orders.iter().map(|o| o.id).collect::<Vec<_>>(), [ids[4], ids[3]]);
    let mut seen: Vec<OrderId> = first.orders.iter().map(|o| o.id).collect();
    let mut cursor = first.next_cursor;
    while let Some(c) = cursor {
        let next = store
            .list_orders(&page(Some(Status::Pending), 2, Some(c)))
            .await
            .unwrap();
        seen.extend(next.orders.iter().map(|o| o.id));
        cursor = next.next_cursor;
    }
    assert_eq!(seen.len(), 5);
    seen.reverse();
    assert_eq!(seen, ids, "every order once, newest first");
    assert_eq!(store.unfinished_orders().await.unwrap(), ids);
    let exact = store.list_orders(&page(None, 5, None)).await.unwrap();
    assert_eq!((exact.orders.len(), exact.next_cursor), (5, None));
}

/// A status filter pages through only the orders in that status.
pub(crate) async fn status_filter_pages_only_that_status<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(created(&*store).await);
    }
    for id in [ids[0], ids[2], ids[3]] {
        store.append_event(id, event(routing())).await.unwrap();
    }
    let routing_page = store.list_orders(&page(Some(Status::Routing), 2, None)).await.unwrap();
    assert_eq!(
        routing_page.orders.iter().map(|o| o.id).collect::<Vec<_>>(),
        [ids[3], ids[2]]
    );
    assert!(routing_page.orders.iter().all(|o| o.status == Status::Routing));
    let rest = store
        .list_orders(&page(Some(Status::Routing), 2, routing_page.next_cursor))
        .await
        .unwrap();
    assert_eq!(rest.orders.iter().map(|o| o.id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(rest.next_cursor, None);
    let pending_page = store.list_orders(&page(Some(Status::Pending), 10, None)).await.unwrap();
    assert_eq!(
        pending_page.orders.iter().map(|o| o.id).collect::<Vec<_>>(),
        [ids[4], ids[1]]
    );
    let none = store
        .list_orders(&page(Some(Status::Confirmed), 10, None))
        .await
        .unwrap();
    assert!(none.orders.is_empty() && none.next_cursor.is_none());
}

/// Unfinished orders come oldest first; confirmed and failed ones do not.
pub(crate) async fn unfinished_orders_are_oldest_first_without_terminal_ones<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(created(&*store).await);
    }
    let confirmed = EventData::Confirmed {
        tx_hash: "tx".into(),
        dex: "raydium".into(),
        amount_out: "9".into(),
        executed_price: "1".into(),
        slot: 12,
        priority_fee: 10_000,
    };
    store.append_event(ids[1], event(confirmed)).await.unwrap();
    store.append_event(ids[3], event(failed())).await.unwrap();
    store.append_event(ids[2], event(routing())).await.unwrap();
    assert_eq!(store.unfinished_orders().await.unwrap(), [ids[0], ids[2]]);
}

/// Stuck orders: unfinished, and last changed before the cutoff.
pub(crate) async fn stuck_orders_are_unfinished_ones_idle_past_the_cutoff<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    assert_eq!(store.stuck_orders(Duration::ZERO).await.unwrap(), (0, None));
    let (idle, finished) = (created(&*store).await, created(&*store).await);
    store.append_event(finished, event(failed())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let (count, oldest) = store.stuck_orders(Duration::from_millis(20)).await.unwrap();
    assert_eq!(count, 1, "only the unfinished order is stuck");
    let oldest = oldest.expect("the age of the oldest stuck order");
    assert!(
        oldest >= Duration::from_millis(50) && oldest < Duration::from_secs(30),
        "{oldest:?}"
    );
    assert_eq!(store.stuck_orders(Duration::from_secs(3600)).await.unwrap(), (0, None));
    store.append_event(idle, event(routing())).await.unwrap();
    assert_eq!(
        store.stuck_orders(Duration::from_millis(20)).await.unwrap().0,
        0,
        "an event moves the order"
    );
}

/// Appends racing on one order get distinct, consecutive seqs.
pub(crate) async fn concurrent_appends_stay_gapless<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let id = created(&*store).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.append_event(id, event(retry_pending())).await.unwrap().seq })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (2..=51).collect::<Vec<u64>>());
    assert_eq!(store.order(id).await.unwrap().unwrap().last_seq, 51);
}

/// A reachable store answers `ping`.
pub(crate) async fn ping_answers<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    store.ping().await.expect("a reachable store answers ping");
}

fn new_key(secret: &str, scopes: &[Scope]) -> NewKey {
    NewKey {
        id: KeyId::new(),
        name: format!("key {secret}"),
        scopes: scopes.to_vec(),
        orders_per_minute: Some(7),
        secret_hash: SecretHash::of(secret),
    }
}

/// A key is stored as its digest, found by it, listed oldest first, and a
/// revoke marks it (once: the first time stands) without deleting it.
pub(crate) async fn keys_are_found_by_their_secret_digest_listed_and_revoked<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let first = store
        .create_key(&new_key("s1", &[Scope::Trade, Scope::Read]))
        .await
        .unwrap();
    assert_eq!(
        (first.scopes.as_slice(), first.orders_per_minute, first.revoked_at),
        (&[Scope::Trade, Scope::Read][..], Some(7), None)
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = store.create_key(&new_key("s2", &[Scope::Admin])).await.unwrap();
    assert_eq!(
        store.key_by_secret(&SecretHash::of("s1")).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.key_by_secret(&SecretHash::of("nope")).await.unwrap(), None);
    let listed: Vec<KeyId> = store.keys().await.unwrap().iter().map(|k| k.id).collect();
    assert_eq!(listed, [first.id, second.id]);
    let revoked = store.revoke_key(first.id).await.unwrap().expect("the key exists");
    let at = revoked.revoked_at.expect("revoked");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = store.revoke_key(first.id).await.unwrap().unwrap();
    assert_eq!(
        again.revoked_at.map(|t| t.to_string()),
        Some(at.to_string()),
        "the first revoke stands"
    );
    assert!(
        !store
            .key_by_secret(&SecretHash::of("s1"))
            .await
            .unwrap()
            .unwrap()
            .is_active()
    );
    assert_eq!(store.revoke_key(KeyId::new()).await.unwrap(), None);
    assert!(store.keys().await.unwrap()[1].is_active(), "other keys stay active");
}

/// A ticket is recorded as used once: the second use, or a use racing it,
/// is refused on any node; recording a use forgets used tickets that
/// expired (they open nothing anyway).
pub(crate) async fn a_ticket_is_used_once_and_expired_uses_are_swept<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let later = Timestamp(std::time::SystemTime::now() + Duration::from_secs(60));
    let ticket = Ticket {
        hash: SecretHash::of("t1"),
        order_id: OrderId::new(),
        key: Some(KeyId::new()),
        expires_at: later,
    };
    assert!(store.use_ticket(&ticket).await.unwrap(), "first use");
    assert!(!store.use_ticket(&ticket).await.unwrap(), "single use");

    let racing = Ticket {
        hash: SecretHash::of("t-race"),
        ..ticket.clone()
    };
    let uses = futures_util::future::join_all((0..8).map(|_| {
        let (store, racing) = (store.clone(), racing.clone());
        async move { store.use_ticket(&racing).await.unwrap() }
    }))
    .await;
    assert_eq!(uses.iter().filter(|first| **first).count(), 1, "{uses:?}");

    let expired = Ticket {
        hash: SecretHash::of("t2"),
        key: None,
        expires_at: Timestamp(std::time::SystemTime::now() - Duration::from_secs(1)),
        ..ticket.clone()
    };
    assert!(store.use_ticket(&expired).await.unwrap());
    let other = Ticket {
        hash: SecretHash::of("t3"),
        ..ticket.clone()
    };
    assert!(store.use_ticket(&other).await.unwrap());
    assert!(
        store.use_ticket(&expired).await.unwrap(),
        "the expired use was swept by the next use"
    );
    assert!(!store.use_ticket(&ticket).await.unwrap(), "an unexpired use is kept");
}

/// A signing secret is written once, by the first caller, and every later
/// (or racing) caller reads that one.
pub(crate) async fn a_signing_secret_is_written_once_and_shared<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let first = store.signing_secret("ws_ticket", [1; 32]).await.unwrap();
    assert_eq!(first, [1; 32]);
    assert_eq!(store.signing_secret("ws_ticket", [2; 32]).await.unwrap(), [1; 32]);
    let racing = futures_util::future::join_all((0..8u8).map(|i| {
        let store = store.clone();
        async move { store.signing_secret("other", [i + 10; 32]).await.unwrap() }
    }))
    .await;
    assert!(racing.iter().all(|s| *s == racing[0]), "one secret for every racer");
}

/// The owner given at creation is read back, and a list for one owner
/// shows only that owner's orders (with the status filter and the cursor).
pub(crate) async fn orders_keep_their_owner_and_a_list_can_show_one_owner<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let (alice, bob) = (KeyId::new(), KeyId::new());
    let mut ids = Vec::new();
    for owner in [Some(alice), Some(bob), None, Some(alice), Some(alice)] {
        let order = NewOrder { owner, ..new_order() };
        store.create_order(&order, event(pending())).await.unwrap();
        ids.push(order.id);
    }
    assert_eq!(store.order(ids[0]).await.unwrap().unwrap().owner, Some(alice));
    assert_eq!(store.order(ids[2]).await.unwrap().unwrap().owner, None);
    let mine = |cursor| ListQuery {
        status: Some(Status::Pending),
        limit: 2,
        cursor,
        owner: Some(alice),
        code: None,
    };
    let first = store.list_orders(&mine(None)).await.unwrap();
    assert_eq!(first.orders.iter().map(|o| o.id).collect::<Vec<_>>(), [ids[4], ids[3]]);
    let rest = store.list_orders(&mine(first.next_cursor)).await.unwrap();
    assert_eq!(rest.orders.iter().map(|o| o.id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(rest.next_cursor, None);
    let all = store.list_orders(&page(None, 10, None)).await.unwrap();
    assert_eq!(all.orders.len(), 5, "no owner filter: every order");
}

fn new_idempotency_key(scope: &str, key: &str, ttl: Duration) -> NewIdempotencyKey {
    NewIdempotencyKey {
        scope: scope.into(),
        key: key.into(),
        fingerprint: "fp-1".into(),
        answer: StoredAnswer {
            status: 201,
            body: r#"{"success":true,"wsUrl":"ws://node-a/x"}"#.into(),
        },
        expires_at: Timestamp(std::time::SystemTime::now() + ttl),
    }
}

const DAY: Duration = Duration::from_secs(86_400);

/// An order created with an idempotency key records its owner like any
/// other (both features write the order row).
pub(crate) async fn a_keyed_order_keeps_the_key_that_owns_it<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let owner = KeyId::new();
    let order = NewOrder {
        owner: Some(owner),
        ..new_order()
    };
    let key = new_idempotency_key(&format!("key:{owner}"), "k-owned", DAY);
    store.create_order_keyed(&order, event(pending()), &key).await.unwrap();
    assert_eq!(store.order(order.id).await.unwrap().unwrap().owner, Some(owner));
}

/// A keyed order is stored with its record holding the planned answer, not
/// yet final; `settle_key` replaces that answer and makes it final, and
/// skips a key it does not know.
pub(crate) async fn a_keyed_order_is_stored_with_its_planned_answer_until_one_replaces_it<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let order = new_order();
    let key = new_idempotency_key("ip:10.0.0.1", "k1", DAY);
    let created = store.create_order_keyed(&order, event(pending()), &key).await.unwrap();
    assert!(
        matches!(&created, KeyedCreate::Created(e) if e.seq == 1 && e.order_id == order.id),
        "{created:?}"
    );
    assert_eq!(store.events(order.id, 0).await.unwrap().len(), 1);
    let record = store
        .key_record("ip:10.0.0.1", "k1")
        .await
        .unwrap()
        .expect("the key is stored");
    assert_eq!(
        (
            record.fingerprint.as_str(),
            record.order_id,
            &record.answer,
            record.completed
        ),
        ("fp-1", order.id, &key.answer, false)
    );
    assert!(record.created_at.elapsed() < Duration::from_secs(60));
    let failed = StoredAnswer {
        status: 503,
        body: r#"{"success":false,"error":{"code":"queue_unavailable","message":"…"}}"#.into(),
    };
    store.settle_key("ip:10.0.0.1", "k1", &failed).await.unwrap();
    let settled = store.key_record("ip:10.0.0.1", "k1").await.unwrap().unwrap();
    assert_eq!((settled.completed, &settled.answer), (true, &failed));
    store.settle_key("ip:10.0.0.1", "never-stored", &failed).await.unwrap();
    assert!(store.key_record("ip:10.0.0.1", "never-stored").await.unwrap().is_none());
    assert!(store.key_record("ip:10.0.0.1", "k2").await.unwrap().is_none());
}

/// A second create with a key already held stores nothing (no order, no
/// event, the record unchanged); the same key in another scope is another
/// key.
pub(crate) async fn a_taken_key_stores_nothing_and_scopes_keep_keys_apart<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let first = new_order();
    let key = new_idempotency_key("key:a", "same", DAY);
    store.create_order_keyed(&first, event(pending()), &key).await.unwrap();
    let second = new_order();
    let other_body = NewIdempotencyKey {
        fingerprint: "fp-2".into(),
        ..key.clone()
    };
    assert_eq!(
        store
            .create_order_keyed(&second, event(pending()), &other_body)
            .await
            .unwrap(),
        KeyedCreate::Taken
    );
    assert!(store.order(second.id).await.unwrap().is_none(), "no second order");
    assert!(store.events(second.id, 0).await.unwrap().is_empty());
    let record = store.key_record("key:a", "same").await.unwrap().unwrap();
    assert_eq!((record.order_id, record.fingerprint.as_str()), (first.id, "fp-1"));
    let elsewhere = NewIdempotencyKey {
        scope: "key:b".into(),
        ..key
    };
    assert!(matches!(
        store
            .create_order_keyed(&second, event(pending()), &elsewhere)
            .await
            .unwrap(),
        KeyedCreate::Created(_)
    ));
    assert_eq!(store.unfinished_orders().await.unwrap(), [first.id, second.id]);
}

/// Creates racing with one key make exactly one order.
pub(crate) async fn racing_creates_with_one_key_make_one_order<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let order = new_order();
                let key = new_idempotency_key("ip:10.0.0.9", "race", DAY);
                store.create_order_keyed(&order, event(pending()), &key).await.unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), KeyedCreate::Created(_)) {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(store.unfinished_orders().await.unwrap().len(), 1);
}

/// An expired key reads as absent, a new create takes it over (a new
/// order), and the sweep deletes expired records only.
pub(crate) async fn an_expired_key_is_forgotten_replaced_and_swept<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let old = new_order();
    let short = new_idempotency_key("ip:10.0.0.2", "k", Duration::from_millis(50));
    store.create_order_keyed(&old, event(pending()), &short).await.unwrap();
    let kept = new_idempotency_key("ip:10.0.0.2", "kept", DAY);
    store
        .create_order_keyed(&new_order(), event(pending()), &kept)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(store.key_record("ip:10.0.0.2", "k").await.unwrap().is_none(), "expired");
    let again = new_order();
    let renewed = new_idempotency_key("ip:10.0.0.2", "k", Duration::from_millis(50));
    assert!(matches!(
        store
            .create_order_keyed(&again, event(pending()), &renewed)
            .await
            .unwrap(),
        KeyedCreate::Created(_)
    ));
    assert_eq!(
        store.key_record("ip:10.0.0.2", "k").await.unwrap().unwrap().order_id,
        again.id
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(store.sweep_keys().await.unwrap(), 1, "only the expired record");
    assert_eq!(store.sweep_keys().await.unwrap(), 0);
    assert!(store.key_record("ip:10.0.0.2", "kept").await.unwrap().is_some());
}

fn submitted() -> EventData {
    EventData::Submitted {
        attempt: 1,
        max_attempts: 3,
        signatures: vec!["sig".into()],
        signature: "sig".into(),
        blockhash: "hash".into(),
        last_valid_slot: 160,
        priority_fee: 10_000,
    }
}

/// A `submitted` event with the attempt count it sets, as the worker
/// appends it.
fn submission() -> NewEvent {
    NewEvent {
        patch: OrderPatch {
            attempts: Some(1),
            ..OrderPatch::default()
        },
        ..event(submitted())
    }
}

/// `cancelled` is terminal, so a later `submitted` is `Finished`; once an
/// order is submitted, `cancelled` is refused with `Submitted`, even after
/// a failed attempt left it waiting for a retry.
pub(crate) async fn a_cancelled_order_is_never_submitted_and_a_submitted_one_never_cancelled<S: Backend>(
    store: Arc<S>,
) {
    migrated(&*store).await;
    let cancelled = created(&*store).await;
    store.append_event(cancelled, event(routing())).await.unwrap();
    let event_cancelled = store
        .append_event(cancelled, event(EventData::Cancelled {}))
        .await
        .unwrap();
    assert_eq!(event_cancelled.seq, 3);
    assert_eq!(
        store.append_event(cancelled, submission()).await.unwrap_err(),
        StoreError::Finished(cancelled)
    );
    assert_eq!(
        store
            .append_event(cancelled, event(EventData::Cancelled {}))
            .await
            .unwrap_err(),
        StoreError::Finished(cancelled),
        "a second cancel stores nothing"
    );
    let stored = store.order(cancelled).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.last_seq), (Status::Cancelled, 3));
    assert!(!store.unfinished_orders().await.unwrap().contains(&cancelled));

    let submitted = created(&*store).await;
    store.append_event(submitted, submission()).await.unwrap();
    assert_eq!(
        store
            .append_event(submitted, event(EventData::Cancelled {}))
            .await
            .unwrap_err(),
        StoreError::Submitted(submitted)
    );
    store.append_event(submitted, event(retry_pending())).await.unwrap();
    store.append_event(submitted, event(routing())).await.unwrap();
    assert_eq!(
        store
            .append_event(submitted, event(EventData::Cancelled {}))
            .await
            .unwrap_err(),
        StoreError::Submitted(submitted),
        "routed again for a retry, it was still submitted once"
    );
    assert_eq!(store.order(submitted).await.unwrap().unwrap().last_seq, 4);
}

/// A cancel and the first submission sent at once, many times over:
/// exactly one is stored each time, and the order ends as that one says.
pub(crate) async fn a_cancel_racing_the_submission_lets_exactly_one_win<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    for _ in 0..20 {
        let id = created(&*store).await;
        let (cancel, submit) = {
            let (a, b) = (store.clone(), store.clone());
            (
                tokio::spawn(async move { a.append_event(id, event(EventData::Cancelled {})).await }),
                tokio::spawn(async move { b.append_event(id, submission()).await }),
            )
        };
        let (cancel, submit) = (cancel.await.unwrap(), submit.await.unwrap());
        let status = store.order(id).await.unwrap().unwrap().status;
        match (cancel, submit) {
            (Ok(_), Err(e)) => {
                assert_eq!(e, StoreError::Finished(id));
                assert_eq!(status, Status::Cancelled);
            }
            (Err(e), Ok(_)) => {
                assert_eq!(e, StoreError::Submitted(id));
                assert_eq!(status, Status::Submitted);
            }
            other => panic!("exactly one must win: {other:?}"),
        }
        assert_eq!(store.events(id, 0).await.unwrap().len(), 2);
    }
}

/// An order whose `expires_at` passed refuses its first `submitted` with
/// `Expired` (other events still append, so it can be failed); one
/// submitted in time keeps going after the deadline.
pub(crate) async fn an_order_past_its_deadline_is_never_first_submitted<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    // Whole milliseconds, as every backend keeps them.
    let past = Timestamp::parse(&Timestamp(std::time::SystemTime::now() - Duration::from_secs(1)).to_string())
        .expect("a formatted timestamp parses");
    let late = NewOrder {
        expires_at: Some(past),
        ..new_order()
    };
    store.create_order(&late, event(pending())).await.unwrap();
    assert_eq!(store.order(late.id).await.unwrap().unwrap().expires_at, Some(past));
    assert_eq!(
        store.append_event(late.id, submission()).await.unwrap_err(),
        StoreError::Expired(late.id)
    );
    store.append_event(late.id, event(failed())).await.unwrap();
    assert_eq!(store.order(late.id).await.unwrap().unwrap().last_seq, 2);

    let future = Timestamp(std::time::SystemTime::now() + Duration::from_secs(3600));
    let timely = NewOrder {
        expires_at: Some(future),
        ..new_order()
    };
    store.create_order(&timely, event(pending())).await.unwrap();
    store.append_event(timely.id, submission()).await.unwrap();

    let resumed = NewOrder {
        expires_at: Some(past),
        ..new_order()
    };
    store.create_order(&resumed, event(pending())).await.unwrap();
    // Submitted before the deadline (attempts already 1): a retry goes on.
    store
        .append_event(
            resumed.id,
            NewEvent {
                patch: OrderPatch {
                    attempts: Some(1),
                    ..OrderPatch::default()
                },
                ..event(retry_pending())
            },
        )
        .await
        .unwrap();
    store.append_event(resumed.id, submission()).await.unwrap();
}

/// A retry sets `retry_of` on the new order and `retried_by` on the old
/// one in one transaction; a second retry of the same order stores
/// nothing (`AlreadyRetried`), and a retry of a missing order is
/// `NotFound`.
pub(crate) async fn a_retry_links_both_ways_once<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let original = created(&*store).await;
    store.append_event(original, event(failed())).await.unwrap();
    let retry = NewOrder {
        retry_of: Some(original),
        ..new_order()
    };
    store.create_order(&retry, event(pending())).await.unwrap();
    assert_eq!(store.order(retry.id).await.unwrap().unwrap().retry_of, Some(original));
    assert_eq!(store.order(original).await.unwrap().unwrap().retried_by, Some(retry.id));

    let again = NewOrder {
        retry_of: Some(original),
        ..new_order()
    };
    assert_eq!(
        store.create_order(&again, event(pending())).await.unwrap_err(),
        StoreError::AlreadyRetried(original)
    );
    assert_eq!(store.order(again.id).await.unwrap(), None, "nothing stored");
    assert_eq!(store.order(original).await.unwrap().unwrap().retried_by, Some(retry.id));

    let missing = OrderId::new();
    let orphan = NewOrder {
        retry_of: Some(missing),
        ..new_order()
    };
    assert_eq!(
        store.create_order(&orphan, event(pending())).await.unwrap_err(),
        StoreError::NotFound(missing)
    );
    assert_eq!(store.order(orphan.id).await.unwrap(), None);
}

/// `code` keeps only orders whose `last_error.code` is that code.
pub(crate) async fn the_dead_letter_filter_matches_the_failure_code<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let fail = |code: &str| NewEvent {
        patch: OrderPatch {
            last_error: Some(ErrorInfo {
                code: code.into(),
                message: "m".into(),
            }),
            ..OrderPatch::default()
        },
        ..event(EventData::Failed {
            error: "m".into(),
            code: code.into(),
            is_final: true,
            total_attempts: 0,
        })
    };
    let late = created(&*store).await;
    store.append_event(late, fail("deadline_exceeded")).await.unwrap();
    let slipped = created(&*store).await;
    store.append_event(slipped, fail("slippage_exceeded")).await.unwrap();
    created(&*store).await;
    let query = |code: &str| ListQuery {
        status: Some(Status::Failed),
        code: Some(code.into()),
        ..page(None, 10, None)
    };
    let dead = store.list_orders(&query("deadline_exceeded")).await.unwrap();
    assert_eq!(dead.orders.iter().map(|o| o.id).collect::<Vec<_>>(), [late]);
    assert!(store.list_orders(&query("no_quotes")).await.unwrap().orders.is_empty());
    let all_failed = store.list_orders(&page(Some(Status::Failed), 10, None)).await.unwrap();
    assert_eq!(all_failed.orders.len(), 2);
}

/// `after_seq`: an event appended "after seq N" is stored while N is the
/// order's latest event, and refused with `Conflict` (nothing stored, the
/// patch not applied) once another write moved the order on; two writers
/// racing from one read make exactly one write.
pub(crate) async fn an_append_after_a_stale_seq_stores_nothing<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    let id = created(&*store).await;
    let after = |seq| NewEvent {
        after_seq: Some(seq),
        ..submission()
    };
    assert_eq!(store.append_event(id, after(1)).await.unwrap().seq, 2);
    assert_eq!(
        store.append_event(id, after(1)).await.unwrap_err(),
        StoreError::Conflict(id)
    );
    let stored = store.order(id).await.unwrap().unwrap();
    assert_eq!(stored.last_seq, 2, "nothing stored by the stale writer");

    for _ in 0..10 {
        let id = created(&*store).await;
        let (a, b) = tokio::join!(store.append_event(id, after(1)), store.append_event(id, after(1)));
        let won = [a.is_ok(), b.is_ok()];
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "exactly one of two racing writers"
        );
        for result in [a, b] {
            if let Err(e) = result {
                assert_eq!(e, StoreError::Conflict(id));
            }
        }
        assert_eq!(store.events(id, 0).await.unwrap().len(), 2);
    }
}
/// Reads the whole stream after `after` (for `owner`), page by page of
/// `limit`, as a stream reader would, until nothing more is pending:
/// (place, order, seq) of each event.
pub(crate) async fn read_stream<S: Store + ?Sized>(
    store: &S,
    mut after: StreamCursor,
    owner: Option<KeyId>,
    limit: u32,
) -> Vec<(StreamCursor, OrderId, u64)> {
    let mut read = Vec::new();
    let mut waits = 0;
    loop {
        let page = store.stream_events(after, owner, limit).await.unwrap();
        assert!(page.events.len() <= limit as usize, "a page holds at most its limit");
        for item in &page.events {
            assert!(item.at > after, "the stream moves forward only");
            after = item.at;
            read.push((item.at, item.event.order_id, item.event.seq));
        }
        if !page.more {
            return read;
        }
        if page.events.is_empty() {
            // Held back behind a transaction still running somewhere in
            // the cluster (another test's): it ends soon.
            waits += 1;
            assert!(waits < 1000, "the stream stayed held back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub(crate) async fn the_stream_holds_every_event_once_by_owner_and_resumes_after_a_cursor<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    assert_eq!(
        store.stream_head().await.unwrap(),
        StreamCursor::START,
        "an empty stream"
    );
    assert!(
        store
            .stream_events(StreamCursor::START, None, 10)
            .await
            .unwrap()
            .events
            .is_empty()
    );
    let (alice, bob) = (KeyId::new(), KeyId::new());
    let mut expected = Vec::new();
    let mut orders = Vec::new();
    for owner in [Some(alice), Some(bob), None, Some(alice)] {
        let order = NewOrder { owner, ..new_order() };
        store.create_order(&order, event(pending())).await.unwrap();
        orders.push(order.id);
        expected.push((order.id, 1, owner));
    }
    for round in 0..2u64 {
        for (i, id) in orders.iter().enumerate() {
            store.append_event(*id, event(routing())).await.unwrap();
            expected.push((*id, round + 2, [Some(alice), Some(bob), None, Some(alice)][i]));
        }
    }
    let all = read_stream(&*store, StreamCursor::START, None, 3).await;
    let events = |read: &[(StreamCursor, OrderId, u64)]| read.iter().map(|(_, o, s)| (*o, *s)).collect::<Vec<_>>();
    let want = |who: Option<KeyId>| {
        expected
            .iter()
            .filter(|(_, _, owner)| who.is_none() || *owner == who)
            .map(|(o, s, _)| (*o, *s))
            .collect::<Vec<_>>()
    };
    assert_eq!(events(&all), want(None), "every event once, in commit order");
    assert_eq!(
        store.stream_head().await.unwrap(),
        all.last().unwrap().0,
        "the head is the last event"
    );
    assert_eq!(
        events(&read_stream(&*store, StreamCursor::START, Some(alice), 2).await),
        want(Some(alice))
    );
    assert_eq!(
        events(&read_stream(&*store, StreamCursor::START, Some(bob), 100).await),
        want(Some(bob))
    );
    // Resuming after any event gives exactly the rest.
    for cut in [0, 5, all.len() - 1] {
        let rest = read_stream(&*store, all[cut].0, None, 4).await;
        assert_eq!(rest, all[cut + 1..].to_vec(), "resumed after event {cut}");
    }
    let page = store.stream_events(StreamCursor::START, None, 2).await.unwrap();
    assert!(page.more, "a full page says there may be more");
    let last = store.stream_events(all[all.len() - 2].0, None, 2).await.unwrap();
    assert_eq!(last.events.len(), 1);
    assert!(!last.more, "the end of the stream");
}

// ---- The chain state contract ----------------------------------------

/// [`OneToOne`] on a chain whose pools never walk (`Lander::walks`).
#[derive(Default)]
struct Still(OneToOne);

impl Lander for Still {
    fn land(&self, from: u64, to: u64, due: &[ChainTx], pools: &mut [PoolRow]) -> Vec<(String, Landing)> {
        self.0.land(from, to, due, pools)
    }

    fn walks(&self) -> bool {
        false
    }
}

/// Pools that never walk and nothing due: an advance moves the tip
/// without calling the lander or touching a pool; once a transaction is
/// due (or expires) the full advance lands (or expires) it.
pub(crate) async fn a_quiet_advance_moves_only_the_tip_until_something_is_due<S: Backend>(store: Arc<S>) {
    started(&*store).await;
    let lander = Arc::new(Still::default());
    let pools = store.chain_pools().await.unwrap();
    let quiet = store.advance(4, lander.clone()).await.unwrap();
    assert_eq!(quiet.tip, 4);
    let advanced = quiet.advanced.expect("the tip moved");
    assert_eq!((advanced.to, advanced.landed.len(), advanced.expired), (4, 0, 0));
    assert_eq!(
        lander.0.0.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no landing ran"
    );
    assert_eq!(store.chain_head().await.unwrap().unwrap().tip, 4);
    assert_eq!(store.chain_pools().await.unwrap(), pools, "no pool written");

    store.broadcast(&chain_tx("q-due", Some(6), 20)).await.unwrap();
    store.broadcast(&chain_tx("q-old", Some(30), 5)).await.unwrap();
    let quiet = store.advance(5, lander.clone()).await.unwrap();
    assert_eq!(quiet.tip, 5, "nothing due at 5 and nothing past its validity");
    assert_eq!(lander.0.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    let busy = store.advance(6, lander.clone()).await.unwrap().advanced.unwrap();
    assert_eq!(
        lander.0.0.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the full advance ran"
    );
    assert_eq!(busy.expired, 1, "q-old was past its last valid slot");
    let landed: Vec<(&str, Option<u64>)> = busy
        .landed
        .iter()
        .map(|t| (t.signature.as_str(), t.landed_slot))
        .collect();
    assert_eq!(landed, vec![("q-due", Some(6))]);
}

/// A lander for the contract: each due transaction lands at
/// `max(planned, from + 1)` while valid; it swaps 1:1 into its venue's
/// pool, or fails with `slippage_exceeded` when `min_amount_out` is above
/// its amount. Counts its calls.
#[derive(Default)]
struct OneToOne(std::sync::atomic::AtomicUsize);

impl Lander for OneToOne {
    fn land(&self, from: u64, _to: u64, due: &[ChainTx], pools: &mut [PoolRow]) -> Vec<(String, Landing)> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut out = Vec::new();
        for tx in due {
            let slot = tx.planned_slot.expect("a pending tx has a planned slot").max(from + 1);
            if slot > tx.last_valid_slot {
                continue;
            }
            if tx.min_amount_out > tx.amount_in {
                let error = crate::chain::TxError {
                    code: "slippage_exceeded".into(),
                    message: "below the minimum".into(),
                };
                out.push((tx.signature.clone(), Landing::Failed { slot, error }));
                continue;
            }
            let pool = pools.iter_mut().find(|p| p.pool == tx.venue).expect("the venue's pool");
            pool.base_in += tx.amount_in;
            pool.quote_out += tx.amount_in;
            pool.swaps += 1;
            pool.state = format!("{{\"swaps\":{}}}", pool.swaps);
            out.push((
                tx.signature.clone(),
                Landing::Landed {
                    slot,
                    amount_out: tx.amount_in,
                },
            ));
        }
        out
    }
}

fn pool_row(name: &str) -> PoolRow {
    PoolRow {
        pool: name.into(),
        state: "{\"swaps\":0}".into(),
        base_in: 0,
        base_out: 0,
        quote_in: 0,
        quote_out: 0,
        swaps: 0,
    }
}

fn chain_tx(signature: &str, planned: Option<u64>, last_valid_slot: u64) -> ChainTx {
    ChainTx {
        signature: signature.into(),
        order_id: OrderId::new(),
        leg: 0,
        venue: "pool".into(),
        token_in: "SOL".into(),
        token_out: "USDC".into(),
        amount_in: 10,
        min_amount_out: 1,
        blockhash: "hash".into(),
        last_valid_slot,
        priority_fee: 5,
        sent_slot: 0,
        planned_slot: planned,
        state: if planned.is_some() {
            TxState::Pending
        } else {
            TxState::Dropped
        },
        landed_slot: None,
        amount_out: None,
        error: None,
        rebroadcasts: 0,
    }
}

async fn started<S: Backend>(store: &S) -> ChainHead {
    migrated(store).await;
    store.chain_start(1_000, &[pool_row("pool")]).await.unwrap()
}

/// The first start writes the genesis and the pools; a later start keeps
/// them and only adds pools not stored yet.
pub(crate) async fn the_chain_starts_once_and_the_first_genesis_stands<S: Backend>(store: Arc<S>) {
    migrated(&*store).await;
    assert_eq!(store.chain_head().await.unwrap(), None);
    let head = store.chain_start(1_000, &[pool_row("a")]).await.unwrap();
    assert_eq!(
        head,
        ChainHead {
            genesis_ms: 1_000,
            tip: 0
        }
    );
    let mut changed = pool_row("a");
    changed.state = "{\"other\":1}".into();
    let again = store.chain_start(2_000, &[changed, pool_row("b")]).await.unwrap();
    assert_eq!(again, head, "the first genesis stands");
    let pools = store.chain_pools().await.unwrap();
    assert_eq!(pools, vec![pool_row("a"), pool_row("b")]);
}

/// A new signature is stored whole (u128 amounts too); sending it again
/// only counts a rebroadcast, whatever the new send carries.
pub(crate) async fn a_signature_is_stored_once_and_a_rebroadcast_only_counts<S: Backend>(store: Arc<S>) {
    started(&*store).await;
    let mut tx = chain_tx("sig-a", Some(4), 20);
    tx.amount_in = 10u128.pow(30);
    tx.min_amount_out = u128::from(u64::MAX) * 7;
    assert_eq!(store.broadcast(&tx).await.unwrap(), Broadcast::First);
    let mut resend = tx.clone();
    resend.planned_slot = Some(9);
    resend.sent_slot = 3;
    assert_eq!(
        store.broadcast(&resend).await.unwrap(),
        Broadcast::Again(TxState::Pending)
    );
    let stored = store.chain_txs(None).await.unwrap();
    assert_eq!(
        stored,
        vec![ChainTx {
            rebroadcasts: 1,
            ..tx.clone()
        }]
    );
    assert_eq!(store.chain_txs(Some(tx.order_id)).await.unwrap().len(), 1);
    assert!(store.chain_txs(Some(OrderId::new())).await.unwrap().is_empty());
    let statuses = store
        .chain_statuses(&["nope".to_owned(), "sig-a".to_owned()])
        .await
        .unwrap();
    assert_eq!(statuses[0], None);
    assert_eq!(statuses[1].as_ref().map(|t| t.planned_slot), Some(Some(4)));
}

/// A dropped transaction sent again while valid becomes pending at the new
/// send's planned slot; once past its validity it stays dropped.
pub(crate) async fn a_dropped_transaction_gets_a_new_chance_only_while_valid<S: Backend>(store: Arc<S>) {
    started(&*store).await;
    let dropped = chain_tx("sig-d", None, 10);
    assert_eq!(store.broadcast(&dropped).await.unwrap(), Broadcast::First);
    let mut chance = chain_tx("sig-d", Some(6), 10);
    chance.sent_slot = 4;
    assert_eq!(
        store.broadcast(&chance).await.unwrap(),
        Broadcast::Again(TxState::Dropped)
    );
    let now = store.chain_statuses(&["sig-d".to_owned()]).await.unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(
        (now.state, now.planned_slot, now.rebroadcasts),
        (TxState::Pending, Some(6), 1)
    );

    let late = chain_tx("sig-l", None, 3);
    store.broadcast(&late).await.unwrap();
    let mut too_late = chain_tx("sig-l", Some(6), 3);
    too_late.sent_slot = 4;
    assert_eq!(
        store.broadcast(&too_late).await.unwrap(),
        Broadcast::Again(TxState::Dropped)
    );
    let now = store.chain_statuses(&["sig-l".to_owned()]).await.unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!((now.state, now.planned_slot), (TxState::Dropped, None));
}

/// One advance lands what is due (a transaction planned before the old tip
/// lands just after it), fails a slippage with no pool move, moves the
/// pool by exactly the landed swaps, expires what can no longer land, and
/// moves the tip.
pub(crate) async fn an_advance_lands_moves_pools_and_expires_in_one_step<S: Backend>(store: Arc<S>) {
    started(&*store).await;
    let lander = Arc::new(OneToOne::default());
    let mut slippage = chain_tx("d-slip", Some(1), 10);
    slippage.min_amount_out = 11;
    let mut cheap = chain_tx("a-cheap", Some(2), 10);
    cheap.priority_fee = 1;
    let mut rich = chain_tx("b-rich", Some(2), 10);
    rich.priority_fee = 9;
    rich.amount_in = 7;
    for tx in [
        &slippage,
        &cheap,
        &rich,
        &chain_tx("c-later", Some(5), 10),
        &chain_tx("e-never", Some(20), 8),
    ] {
        store.broadcast(tx).await.unwrap();
    }
    let first = store.advance(3, lander.clone()).await.unwrap();
    assert_eq!(first.tip, 3);
    let advanced = first.advanced.unwrap();
    assert_eq!((advanced.from, advanced.to, advanced.expired), (0, 3, 0));
    let landed: Vec<(&str, TxState, Option<u64>)> = advanced
        .landed
        .iter()
        .map(|t| (t.signature.as_str(), t.state, t.landed_slot))
        .collect();
    assert_eq!(
        landed,
        [
            ("d-slip", TxState::Failed, Some(1)),
            ("b-rich", TxState::Landed, Some(2)),
            ("a-cheap", TxState::Landed, Some(2)),
        ],
        "by planned slot, then the higher fee first"
    );
    assert_eq!(store.chain_head().await.unwrap().unwrap().tip, 3);
    let pool = &store.chain_pools().await.unwrap()[0];
    assert_eq!(
        (pool.base_in, pool.quote_out, pool.swaps),
        (17, 17, 2),
        "the failed swap moved nothing"
    );
    assert_eq!(pool.state, "{\"swaps\":2}");
    let slipped = store.chain_statuses(&["d-slip".to_owned()]).await.unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(slipped.error.unwrap().code, "slippage_exceeded");
    assert_eq!(slipped.amount_out, None);

    // Planned before the tip it is sent at: lands in the next slot.
    let mut behind = chain_tx("f-behind", Some(2), 10);
    behind.sent_slot = 3;
    store.broadcast(&behind).await.unwrap();
    let second = store.advance(9, lander).await.unwrap().advanced.unwrap();
    let landed: Vec<(&str, Option<u64>)> = second
        .landed
        .iter()
        .map(|t| (t.signature.as_str(), t.landed_slot))
        .collect();
    assert_eq!(landed, [("f-behind", Some(4)), ("c-later", Some(5))]);
    assert_eq!(second.expired, 1, "e-never is past its last valid slot 8");
    let states: Vec<(String, TxState)> = store
        .chain_txs(None)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.signature, t.state))
        .collect();
    assert!(states.contains(&("e-never".to_owned(), TxState::Expired)), "{states:?}");
    assert_eq!(
        store.landed_fees(0).await.unwrap(),
        vec![5, 1, 9, 5, 5],
        "by landed slot, then signature"
    );
    assert_eq!(store.landed_fees(3).await.unwrap(), vec![5, 5]);
}

/// An advance to a slot the tip has reached changes nothing and calls no
/// lander.
pub(crate) async fn an_advance_to_a_reached_slot_does_nothing<S: Backend>(store: Arc<S>) {
    started(&*store).await;
    let lander = Arc::new(OneToOne::default());
    store.broadcast(&chain_tx("sig", Some(1), 10)).await.unwrap();
    assert!(store.advance(4, lander.clone()).await.unwrap().advanced.is_some());
    for to in [4, 2] {
        assert_eq!(
            store.advance(to, lander.clone()).await.unwrap(),
            Advance { tip: 4, advanced: None }
        );
    }
    assert_eq!(lander.0.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Two handles (two processes) advancing the same chain slot by slot at
/// once: every transaction lands exactly once and the pool moved by
/// exactly the landed swaps.
pub(crate) async fn racing_advancers_land_each_transaction_once<S: Backend>(store: Arc<S>, other: Arc<S>) {
    started(&*store).await;
    let count = 40u64;
    for i in 0..count {
        let mut tx = chain_tx(&format!("sig-{i:03}"), Some(1 + i / 2), 100);
        tx.amount_in = 1 + u128::from(i);
        store.broadcast(&tx).await.unwrap();
    }
    let mut racers = tokio::task::JoinSet::new();
    for handle in [store.clone(), other.clone(), store.clone(), other] {
        racers.spawn(async move {
            let lander = Arc::new(OneToOne::default());
            let mut landed = Vec::new();
            for to in 1..=25 {
                if let Some(advanced) = handle.advance(to, lander.clone()).await.unwrap().advanced {
                    landed.extend(advanced.landed.into_iter().map(|t| t.signature));
                }
            }
            landed
        });
    }
    let mut landed = Vec::new();
    while let Some(part) = racers.join_next().await {
        landed.extend(part.unwrap());
    }
    landed.sort();
    let expected: Vec<String> = (0..count).map(|i| format!("sig-{i:03}")).collect();
    assert_eq!(landed, expected, "each landed once, by exactly one advancer");
    let pool = &store.chain_pools().await.unwrap()[0];
    let sum: u128 = (0..count).map(|i| 1 + u128::from(i)).sum();
    assert_eq!((pool.swaps, pool.base_in), (count, sum));
    let txs = store.chain_txs(None).await.unwrap();
    assert!(txs.iter().all(|t| t.state == TxState::Landed), "{txs:?}");
    assert_eq!(store.chain_head().await.unwrap().unwrap().tip, 25);
}
