//! The stream of every order's events (`GET /api/stream`): its cursor and
//! its pages.
//!
//! # The cursor is commit-order safe
//! Every stored event has a place in one total order, read back by
//! [`Store::stream_events`](super::Store::stream_events) after a
//! [`StreamCursor`]; a reader that moves its cursor to the last event it
//! read must never skip an event that commits later with a smaller place.
//! A plain sequence number is not enough on PostgreSQL: a sequence value is
//! taken at insert, not at commit (transaction A takes 10, B takes 11, B
//! commits, a reader moves past 11, then A commits 10: lost).
//!
//! - **PostgreSQL** (migration 0008): an event's place is the pair
//!   (`stream_xid`, `position`): `position` a `BIGSERIAL`, and `stream_xid`
//!   the writing transaction's id (`pg_current_xact_id()`, `xid8`), raised
//!   to the previous event's of the same order when that one is larger, so
//!   an order's events keep their `seq` order in the stream. A read returns
//!   only the events whose `stream_xid` is below the `xmin` of its own
//!   snapshot (`pg_snapshot_xmin(pg_current_snapshot())`): every
//!   transaction with a smaller id has ended, so no event with a place at
//!   or before the last one returned can still commit; an event written by
//!   a transaction still running has `stream_xid` ≥ that `xmin` and is held
//!   back until it (and everything older) has ended. The filter is in the
//!   query (the index scan stops at the horizon); a page that is not full
//!   asks with a `LIMIT 1` probe whether committed events wait behind the
//!   horizon (`StreamPage::more`: read again, after a back-off). The price: one
//!   long-running transaction anywhere in the cluster delays the stream
//!   (never the orders) until it ends.
//! - **SQLite** (embedded): one writer commits at a time, and the
//!   `position` a trigger gives each event (the largest so far plus one)
//!   is taken inside that write transaction, so position order is commit
//!   order; `stream_xid` is always 0.
//!
//! Both index the place alone and by the order's owner, so reading "after
//! a cursor" for one key is an index range scan.
//!
//! Imports `domain` only.

use crate::domain::{Event, KeyId};
use std::{fmt, str::FromStr};

/// A place in the stream: `(xid, position)`, compared in that order. Opaque
/// to clients: written as `<xid>-<position>` in decimal (e.g. `"0-42"`),
/// [`StreamCursor::START`] (`"0-0"`) is before every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamCursor {
    /// The writing transaction's id on PostgreSQL (see the module doc); 0
    /// on SQLite.
    pub xid: u64,
    /// The event's position (a sequence value; gaps are normal).
    pub position: u64,
}

impl StreamCursor {
    /// Before every event.
    pub const START: StreamCursor = StreamCursor { xid: 0, position: 0 };
}

impl fmt::Display for StreamCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.xid, self.position)
    }
}

/// Why a cursor string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream cursor: expected the `cursor` of a stream frame, such as \"0-42\"")]
pub struct BadCursor;

impl FromStr for StreamCursor {
    type Err = BadCursor;

    /// Parses `<xid>-<position>` (two decimal `u64`s, digits only).
    fn from_str(text: &str) -> Result<Self, BadCursor> {
        let (xid, position) = text.split_once('-').ok_or(BadCursor)?;
        let number = |part: &str| {
            if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadCursor);
            }
            part.parse::<u64>().map_err(|_| BadCursor)
        };
        Ok(StreamCursor {
            xid: number(xid)?,
            position: number(position)?,
        })
    }
}

/// An event in the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamItem {
    /// Its place.
    pub at: StreamCursor,
    /// The key that owns its order (`None`: created without a key).
    pub owner: Option<KeyId>,
    /// The event.
    pub event: Event,
}

/// One read of the stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamPage {
    /// Events after the cursor asked, in stream order.
    pub events: Vec<StreamItem>,
    /// Whether more may be read now: the page was full, or committed events
    /// were held back because an older transaction was still running (ask
    /// again shortly).
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_prints_and_parses_back() {
        let cursor = StreamCursor { xid: 981, position: 42 };
        assert_eq!(cursor.to_string(), "981-42");
        assert_eq!("981-42".parse(), Ok(cursor));
        assert_eq!("0-0".parse(), Ok(StreamCursor::START));
        assert_eq!(
            format!("{}-{}", u64::MAX, u64::MAX)
                .parse::<StreamCursor>()
                .map(|c| c.xid),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        for text in [
            "",
            "-",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-b",
            "+1-2",
            "1-2-3",
            " 1-2",
            "1-2 ",
            "1.5-2",
            "18446744073709551616-0",
        ] {
            assert_eq!(text.parse::<StreamCursor>(), Err(BadCursor), "{text:?}");
        }
    }

    #[test]
    fn cursors_order_by_xid_then_position() {
        let at = |xid, position| StreamCursor { xid, position };
        assert!(
            at(1, 9) < at(2, 1),
            "a later transaction comes later whatever its position"
        );
        assert!(at(2, 1) < at(2, 3));
        assert!(StreamCursor::START < at(0, 1));
    }
}
