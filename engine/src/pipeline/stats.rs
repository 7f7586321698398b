//! Each venue's recent record, as the pipeline saw it: the latency of its
//! latest successful quotes and the outcome of its latest attempts (failed
//! quotes and every leg decided on the chain: landed, failed or expired). Strategies receive it as
//! `quotes[].stats`; `reliability-weighted` routes by it.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};
use swapline_abi::VenueStats;

/// Samples kept per venue and kind.
const WINDOW: usize = 100;

#[derive(Default)]
struct Record {
    latencies_ms: VecDeque<u64>,
    failures: VecDeque<bool>,
}

fn push<T>(window: &mut VecDeque<T>, value: T) {
    if window.len() == WINDOW {
        window.pop_front();
    }
    window.push_back(value);
}

/// Sliding windows of per-venue latency and outcomes; cheap to update from
/// many tasks at once.
#[derive(Default)]
pub struct VenueTracker {
    venues: Mutex<HashMap<String, Record>>,
}

impl std::fmt::Debug for VenueTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VenueTracker").finish_non_exhaustive()
    }
}

impl VenueTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    fn with(&self, venue: &str, update: impl FnOnce(&mut Record)) {
        // A poisoned lock only means another task panicked mid-update of
        // plain counters: the data is still usable.
        let mut venues = self.venues.lock().unwrap_or_else(|e| e.into_inner());
        update(venues.entry(venue.to_owned()).or_default());
    }

    /// A quote answered after `latency`.
    pub fn quote_answered(&self, venue: &str, latency: Duration) {
        self.with(venue, |r| push(&mut r.latencies_ms, latency.as_millis() as u64));
    }

    /// A quote failed or timed out.
    pub fn quote_failed(&self, venue: &str) {
        self.with(venue, |r| push(&mut r.failures, true));
    }

    /// A leg's transaction was decided: landed with its swap, or failed or
    /// expired on the chain.
    pub fn settled(&self, venue: &str, landed: bool) {
        self.with(venue, |r| push(&mut r.failures, !landed));
    }

    /// The venue's record; `None` before its first sample.
    pub fn stats(&self, venue: &str) -> Option<VenueStats> {
        let venues = self.venues.lock().unwrap_or_else(|e| e.into_inner());
        let record = venues.get(venue)?;
        let latency = match record.latencies_ms.len() as u64 {
            0 => 0,
            n => record.latencies_ms.iter().sum::<u64>() / n,
        };
        let samples = record.failures.len();
        let failed = record.failures.iter().filter(|f| **f).count();
        Some(VenueStats {
            recent_latency_ms: latency,
            failure_rate: if samples == 0 {
                0.0
            } else {
                failed as f64 / samples as f64
            },
            samples: samples as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unseen_venue_has_no_record() {
        assert_eq!(VenueTracker::new().stats("raydium"), None);
    }

    #[test]
    fn latency_is_the_mean_and_failures_count_quotes_and_landings() {
        let tracker = VenueTracker::new();
        tracker.quote_answered("raydium", Duration::from_millis(10));
        tracker.quote_answered("raydium", Duration::from_millis(30));
        tracker.settled("raydium", true);
        tracker.settled("raydium", false);
        tracker.quote_failed("raydium");
        tracker.settled("raydium", true);
        let stats = tracker.stats("raydium").unwrap();
        assert_eq!(stats.recent_latency_ms, 20);
        assert_eq!(stats.samples, 4);
        assert!((stats.failure_rate - 0.5).abs() < 1e-9, "{stats:?}");
        assert_eq!(tracker.stats("meteora"), None);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let tracker = VenueTracker::new();
        for _ in 0..WINDOW {
            tracker.settled("meteora", false);
        }
        for _ in 0..WINDOW {
            tracker.settled("meteora", true);
        }
        let stats = tracker.stats("meteora").unwrap();
        assert_eq!(stats.samples, WINDOW as u32);
        assert_eq!(stats.failure_rate, 0.0);
    }
}
