//! Pure types and rules of the order lifecycle. No I/O, no async, nothing of
//! ours imported (the plugin ABI's value types, `swapline_abi::Units`, are
//! the one outside crate of ours it uses): every other module may depend on
//! this one.
//!
//! May import: nothing of ours.

mod amount;
mod caller;
mod event;
mod key;
mod order;
mod request;
mod route;
mod time;
mod token;

pub use amount::{AmountError, format_price, format_units, parse_units};
pub use caller::{Caller, KeyGrant, KeyId, Scope};
pub use event::{Event, EventData, EventKind, progress};
pub use key::{ApiKey, NewKey, SecretHash, Ticket, parse_scopes, scopes_text};
pub use order::{ErrorInfo, NewOrder, Order, OrderId, OrderPatch, OrderType, Status, StrategyRef};
pub use request::{AmountInput, FieldError, NewIds, OrderRequest, RequestError, slippage_bps, validate_request};
pub use route::{LegTransaction, QuoteView, Route, RouteLeg};
pub use time::{Dur, Timestamp};
pub use token::{Token, TokenConfig, TokenError, TokenRegistry};
