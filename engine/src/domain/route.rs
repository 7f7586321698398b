//! Quotes as shown to users, and routes as chosen and executed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use swapline_abi::Units;

/// One venue's quote, as stored on the order and sent in events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteView {
    /// Venue.
    pub dex: String,
    /// Output after fees, whole tokens (decimal string).
    pub amount_out: String,
    /// Output after fees, base units.
    pub amount_out_base_units: Units,
    /// Price after fees, whole `tokenOut` per whole `tokenIn`.
    pub price: String,
    /// Fee, basis points.
    pub fee_bps: u32,
    /// Price impact, basis points.
    pub price_impact_bps: u32,
    /// Quote latency, milliseconds.
    pub latency_ms: u64,
}

/// The route an order takes. Amounts are base units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// 1 for the first routing of the order, +1 per re-route.
    pub version: u32,
    /// The strategy's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The legs, one transaction each.
    pub legs: Vec<RouteLeg>,
}

/// One leg of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteLeg {
    /// Venue.
    pub dex: String,
    /// Input, base units of `tokenIn`.
    pub amount_in: Units,
    /// Output the quote promised, base units of `tokenOut`.
    pub expected_out: Units,
    /// Floor below which the swap fails on chain, base units.
    pub min_amount_out: Units,
    /// The leg's current transaction, recorded before it is sent; replaced
    /// only once its blockhash expired without it landing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<LegTransaction>,
    /// Output received once its transaction landed, base units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filled_out: Option<Units>,
    /// The slot its transaction landed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landed_slot: Option<u64>,
}

/// A leg's signed transaction, as recorded on the order before sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegTransaction {
    /// Base58 signature (64 bytes), derived from the whole transaction.
    pub signature: String,
    /// The recent blockhash it names (base58).
    pub blockhash: String,
    /// The last slot it can land in; past it, it never will.
    pub last_valid_slot: u64,
    /// Priority fee, micro-lamports per compute unit.
    pub priority_fee: u64,
    /// The submission attempt that signed it, from 1.
    pub attempt: u32,
}

impl Route {
    /// Whether any leg already landed (then the route must not change).
    pub fn any_filled(&self) -> bool {
        self.legs.iter().any(|leg| leg.filled_out.is_some())
    }

    /// Whether a leg not landed has a transaction recorded (it may still
    /// land until the chain shows otherwise).
    pub fn outstanding(&self) -> bool {
        self.legs
            .iter()
            .any(|leg| leg.filled_out.is_none() && leg.transaction.is_some())
    }

    /// The venues of the route, `+`-joined.
    pub fn dex(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for leg in &self.legs {
            if !names.contains(&leg.dex.as_str()) {
                names.push(&leg.dex);
            }
        }
        names.join("+")
    }
}
