//! Settings of the chain: the simulated chain's clock, validity and
//! faults, and the engine's side of landing (priority fee estimation,
//! status polling). A leaf: imports nothing of ours but `domain`.

use crate::domain::Dur;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `[chain]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ChainConfig {
    /// Wall time per slot (Solana's target is 400 ms).
    pub slot_time: Dur,
    /// Slots a blockhash stays valid after its own slot (Solana: 150).
    pub blockhash_validity_slots: u64,
    /// Slots from sending to landing when nothing goes wrong (at least 1).
    pub land_slots: u64,
    /// The simulated fee market: the priority fee (micro-lamports per
    /// compute unit) at or above which a transaction lands at the normal
    /// chance and speed; below it, less likely and later.
    pub market_priority_fee: u64,
    /// Fault injection.
    pub faults: ChainFaults,
    /// Priority fee estimate: this percentile (0–100) of the fees landed
    /// in the last `priority_fee_slots` slots.
    pub priority_fee_percentile: u8,
    /// How many recent slots the estimate looks at.
    pub priority_fee_slots: u64,
    /// Fee used when nothing landed recently, micro-lamports per CU.
    pub min_priority_fee: u64,
    /// Cap on any fee the engine pays, micro-lamports per CU.
    pub max_priority_fee: u64,
    /// First wait between status polls; doubles per poll up to
    /// `poll_max`.
    pub poll_initial: Dur,
    /// Longest wait between status polls.
    pub poll_max: Dur,
    /// Rebroadcast a transaction not landed yet at most this often.
    pub rebroadcast_every: Dur,
}

/// How the simulated chain loses transactions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ChainFaults {
    /// Probability (0–1) that a sent transaction is dropped (never lands).
    pub drop_rate: f64,
    /// Probability (0–1) that a transaction lands late: after more than
    /// `late_land_slots` slots, but still before its blockhash expires.
    pub late_land_rate: f64,
    /// What "late" means, slots after sending.
    pub late_land_slots: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            slot_time: Dur(Duration::from_millis(400)),
            blockhash_validity_slots: 150,
            land_slots: 2,
            market_priority_fee: 10_000,
            faults: ChainFaults::default(),
            priority_fee_percentile: 75,
            priority_fee_slots: 150,
            min_priority_fee: 10_000,
            max_priority_fee: 1_000_000,
            poll_initial: Dur(Duration::from_millis(400)),
            poll_max: Dur(Duration::from_secs(2)),
            rebroadcast_every: Dur(Duration::from_secs(2)),
        }
    }
}

impl Default for ChainFaults {
    fn default() -> Self {
        ChainFaults {
            drop_rate: 0.0,
            late_land_rate: 0.0,
            late_land_slots: 10,
        }
    }
}

impl ChainConfig {
    /// Rule problems, each starting with `key` (the section's path).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.slot_time.0.is_zero() {
            problems.push(format!("{key}.slot_time: must be positive"));
        }
        if self.blockhash_validity_slots == 0 {
            problems.push(format!("{key}.blockhash_validity_slots: must be at least 1"));
        }
        if self.land_slots == 0 {
            problems.push(format!("{key}.land_slots: must be at least 1"));
        }
        for (field, rate) in [
            ("drop_rate", self.faults.drop_rate),
            ("late_land_rate", self.faults.late_land_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                problems.push(format!("{key}.faults.{field}: {rate} is outside [0, 1]"));
            }
        }
        if self.faults.late_land_slots >= self.blockhash_validity_slots {
            problems.push(format!(
                "{key}.faults.late_land_slots: must be below {key}.blockhash_validity_slots (a late transaction still lands before expiry)"
            ));
        }
        if self.priority_fee_percentile > 100 {
            problems.push(format!("{key}.priority_fee_percentile: must be within [0, 100]"));
        }
        if self.min_priority_fee > self.max_priority_fee {
            problems.push(format!("{key}.min_priority_fee: must not exceed {key}.max_priority_fee"));
        }
        if self.poll_initial.0.is_zero() || self.poll_initial > self.poll_max {
            problems.push(format!("{key}.poll_initial: must be positive and at most {key}.poll_max"));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_solanas_and_valid() {
        let config = ChainConfig::default();
        assert!(config.problems("chain").is_empty(), "{:?}", config.problems("chain"));
        assert_eq!(config.blockhash_validity_slots, 150);
        assert_eq!(config.slot_time.0, Duration::from_millis(400));
    }

    #[test]
    fn bad_rates_and_orders_are_named() {
        let mut config = ChainConfig::default();
        config.faults.drop_rate = 1.5;
        config.faults.late_land_slots = 200;
        config.min_priority_fee = 2_000_000;
        let problems = config.problems("chain").join("\n");
        assert!(problems.contains("chain.faults.drop_rate: 1.5 is outside [0, 1]"), "{problems}");
        assert!(problems.contains("chain.faults.late_land_slots"), "{problems}");
        assert!(problems.contains("chain.min_priority_fee"), "{problems}");
    }
}
