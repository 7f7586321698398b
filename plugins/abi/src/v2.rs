//! ABI v2 input: a flat little-endian layout of [`RouteInput`] that a guest
//! reads with bounds-checked slice reads instead of a JSON parser.
//!
//! # Why this layout
//! Under ABI v1 a warm `best-price` call with 2 venues spent almost all its
//! ~96 µs in the guest's `serde_json` parse of ~800 bytes (fuel-metered
//! wasm: decimal `u128` strings, floats of every bin, a map per object). The
//! input is small, written once by the host and read once, front to back,
//! by the guest into the owned [`RouteInput`] the strategy function takes.
//! A sequential length-prefixed layout does exactly that with a handful of
//! `from_le_bytes` per field, needs no dependency, no alignment and no
//! schema compiler, and its decoder is a few hundred lines anyone can audit.
//! A zero-copy format (rkyv, FlatBuffers) would save the copy into owned
//! strings but not the API: the SDK promises the same `fn(RouteInput)`, so
//! the guest builds owned values either way; those formats would add a
//! dependency on both sides and an alignment contract for ~1 µs at most.
//!
//! # Layout
//! All integers are little-endian and unaligned; there is no padding.
//!
//! ```text
//! input   = magic order quotes params [ignored trailing bytes]
//! magic   = "SWL2"                       4 bytes
//! order   = section { id: str, token_in: str, token_out: str,
//!                     amount_in: u128, slippage_bps: u32 }
//! quotes  = count: u32, count × section { venue: str, amount_out: u128,
//!                     fee_bps: u32, price_impact_bps: u32, latency_ms: u64,
//!                     stats, pool }
//! stats   = 0u8 (none) | 1u8 recent_latency_ms: u64, failure_rate: f64, samples: u32
//! pool    = 0u8 reserve_in: u128, reserve_out: u128, fee_bps: u32         (constant_product)
//!         | 1u8 base_fee_bps: u32, variable_fee_bps: u32, max_fee_bps: u32,
//!               count: u32, count × (price: f64, liquidity_out: u128)     (bins)
//! params  = bytes: the UTF-8 JSON text of the params object; length 0 = {}
//! section = len: u32, then len bytes
//! str     = len: u32, then len bytes of UTF-8
//! bytes   = len: u32, then len bytes
//! ```
//!
//! A decoder reads the fields it knows from a section and skips the rest of
//! it, and ignores bytes after `params`: a later engine appends fields to a
//! section (as v1's JSON gained `stats`) and older plugins keep working,
//! like v1's input types that accept unknown fields. A known field that runs
//! past its section, a count larger than the bytes left, a string that is
//! not UTF-8 or an unknown pool kind is an error, never a panic or an
//! allocation sized by the input's say-so.
//!
//! `params` stays JSON: it is the free-form `[pipelines.<name>.params]`
//! table, checked by the host against the plugin's schema, usually empty
//! (length 0, no parse at all) and a few bytes otherwise.
//!
//! The answer of a v2 `route` is the same UTF-8 JSON [`PluginAnswer`] as in
//! v1: it is a few dozen bytes, the whole guest side of a warm v2
//! `best-price` call (decode, strategy, answer) is ~10k fuel and about 13 %
//! of the call's time (ops/benchmarks.md), so a binary answer would save
//! little, and one strict parser on the host keeps the answer checks
//! identical for both versions.
//!
//! [`PluginAnswer`]: crate::PluginAnswer

use crate::{Bin, OrderInfo, PoolState, RouteInput, Units, VenueQuote, VenueStats};
use std::fmt;

/// The first four bytes of every v2 input.
pub const MAGIC: [u8; 4] = *b"SWL2";

/// Why a v2 input could not be decoded: what was being read and the byte
/// offset where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The field or structure being read, e.g. `quotes[1].pool.kind`.
    pub what: String,
    /// Offset from the start of the input, bytes.
    pub at: usize,
    /// What was wrong with it.
    pub problem: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ABI v2 input: {} at byte {}: {}", self.what, self.at, self.problem)
    }
}

impl std::error::Error for DecodeError {}

/// Encodes `input` in the v2 layout (see the module docs).
///
/// # Panics
/// Never for real inputs; a string, list or params text longer than
/// `u32::MAX` bytes (impossible within a wasm32 guest's memory anyway)
/// makes the length saturate, which the guest then refuses.
pub fn encode_input(input: &RouteInput) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len_hint(input));
    out.extend_from_slice(&MAGIC);
    section(&mut out, |out| {
        put_str(out, &input.order.id);
        put_str(out, &input.order.token_in);
        put_str(out, &input.order.token_out);
        out.extend_from_slice(&input.order.amount_in.0.to_le_bytes());
        out.extend_from_slice(&input.order.slippage_bps.to_le_bytes());
    });
    put_u32(&mut out, input.quotes.len());
    for quote in &input.quotes {
        section(&mut out, |out| {
            put_str(out, &quote.venue);
            out.extend_from_slice(&quote.amount_out.0.to_le_bytes());
            out.extend_from_slice(&quote.fee_bps.to_le_bytes());
            out.extend_from_slice(&quote.price_impact_bps.to_le_bytes());
            out.extend_from_slice(&quote.latency_ms.to_le_bytes());
            match &quote.stats {
                None => out.push(0),
                Some(stats) => {
                    out.push(1);
                    out.extend_from_slice(&stats.recent_latency_ms.to_le_bytes());
                    out.extend_from_slice(&stats.failure_rate.to_le_bytes());
                    out.extend_from_slice(&stats.samples.to_le_bytes());
                }
            }
            match &quote.pool {
                PoolState::ConstantProduct {
                    reserve_in,
                    reserve_out,
                    fee_bps,
                } => {
                    out.push(0);
                    out.extend_from_slice(&reserve_in.0.to_le_bytes());
                    out.extend_from_slice(&reserve_out.0.to_le_bytes());
                    out.extend_from_slice(&fee_bps.to_le_bytes());
                }
                PoolState::Bins {
                    bins,
                    base_fee_bps,
                    variable_fee_bps,
                    max_fee_bps,
                } => {
                    out.push(1);
                    out.extend_from_slice(&base_fee_bps.to_le_bytes());
                    out.extend_from_slice(&variable_fee_bps.to_le_bytes());
                    out.extend_from_slice(&max_fee_bps.to_le_bytes());
                    put_u32(out, bins.len());
                    for bin in bins {
                        out.extend_from_slice(&bin.price.to_le_bytes());
                        out.extend_from_slice(&bin.liquidity_out.0.to_le_bytes());
                    }
                }
            }
        });
    }
    if input.params.is_empty() {
        put_u32(&mut out, 0);
    } else {
        // A map of JSON values with string keys always serialises.
        let text = serde_json::to_vec(&input.params).unwrap_or_default();
        put_u32(&mut out, text.len());
        out.extend_from_slice(&text);
    }
    out
}

/// Bytes of one bin in the layout.
const BIN_BYTES: usize = 8 + 16;

fn encoded_len_hint(input: &RouteInput) -> usize {
    let strings = input.order.id.len() + input.order.token_in.len() + input.order.token_out.len();
    let quotes: usize = input
        .quotes
        .iter()
        .map(|q| {
            let bins = match &q.pool {
                PoolState::ConstantProduct { .. } => 36,
                PoolState::Bins { bins, .. } => 16 + bins.len() * BIN_BYTES,
            };
            4 + 4 + q.venue.len() + 16 + 4 + 4 + 8 + 21 + 1 + bins
        })
        .sum();
    4 + 4 + 12 + strings + 20 + 4 + quotes + 4 + 64
}

fn put_u32(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_u32(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// Writes a `len: u32` placeholder, the body, then patches the length.
fn section(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let len = out.len() - at - 4;
    out[at..at + 4].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

/// Decodes a v2 input (see the module docs). Every read is bounds-checked:
/// a hostile or truncated buffer is a [`DecodeError`], never a panic, and no
/// allocation is sized by a count the remaining bytes could not hold.
///
/// # Errors
/// [`DecodeError`] naming the field and byte offset.
pub fn decode_input(bytes: &[u8]) -> Result<RouteInput, DecodeError> {
    let mut reader = Reader { bytes, at: 0 };
    let magic = reader.take(4, "magic")?;
    if magic != MAGIC {
        return Err(DecodeError {
            what: "magic".into(),
            at: 0,
            problem: "not \"SWL2\": this is not an ABI v2 input",
        });
    }
    let mut order = reader.section("order")?;
    let order = OrderInfo {
        id: order.str("order.id")?,
        token_in: order.str("order.tokenIn")?,
        token_out: order.str("order.tokenOut")?,
        amount_in: Units(order.u128("order.amountIn")?),
        slippage_bps: order.u32("order.slippageBps")?,
    };
    // Each quote takes at least its 4-byte section length.
    let count = reader.count("quotes", 4)?;
    let mut quotes = Vec::with_capacity(count);
    for index in 0..count {
        let mut quote = reader.section_indexed("quotes", index)?;
        quotes.push(read_quote(&mut quote, index)?);
    }
    let params_at = reader.at;
    let params = reader.bytes_field("params")?;
    let params = if params.is_empty() {
        serde_json::Map::new()
    } else {
        serde_json::from_slice(params).map_err(|_| DecodeError {
            what: "params".into(),
            at: params_at,
            problem: "not a JSON object",
        })?
    };
    Ok(RouteInput { order, quotes, params })
}

fn read_quote(quote: &mut Reader<'_>, index: usize) -> Result<VenueQuote, DecodeError> {
    let field = |name: &str| format!("quotes[{index}].{name}");
    // Field names are only formatted on the error path.
    let venue = quote.str("").map_err(|e| e.rename(field("venue")))?;
    let amount_out = Units(quote.u128("").map_err(|e| e.rename(field("amountOut")))?);
    let fee_bps = quote.u32("").map_err(|e| e.rename(field("feeBps")))?;
    let price_impact_bps = quote.u32("").map_err(|e| e.rename(field("priceImpactBps")))?;
    let latency_ms = quote.u64("").map_err(|e| e.rename(field("latencyMs")))?;
    let stats = match quote.u8("").map_err(|e| e.rename(field("stats")))? {
        0 => None,
        1 => Some(VenueStats {
            recent_latency_ms: quote.u64("").map_err(|e| e.rename(field("stats.recentLatencyMs")))?,
            failure_rate: quote.f64("").map_err(|e| e.rename(field("stats.failureRate")))?,
            samples: quote.u32("").map_err(|e| e.rename(field("stats.samples")))?,
        }),
        _ => return Err(quote.error(field("stats"), 1, "flag is neither 0 nor 1")),
    };
    let pool = match quote.u8("").map_err(|e| e.rename(field("pool.kind")))? {
        0 => PoolState::ConstantProduct {
            reserve_in: Units(quote.u128("").map_err(|e| e.rename(field("pool.reserveIn")))?),
            reserve_out: Units(quote.u128("").map_err(|e| e.rename(field("pool.reserveOut")))?),
            fee_bps: quote.u32("").map_err(|e| e.rename(field("pool.feeBps")))?,
        },
        1 => {
            let base_fee_bps = quote.u32("").map_err(|e| e.rename(field("pool.baseFeeBps")))?;
            let variable_fee_bps = quote.u32("").map_err(|e| e.rename(field("pool.variableFeeBps")))?;
            let max_fee_bps = quote.u32("").map_err(|e| e.rename(field("pool.maxFeeBps")))?;
            let count = quote.count("", BIN_BYTES).map_err(|e| e.rename(field("pool.bins")))?;
            let mut bins = Vec::with_capacity(count);
            for _ in 0..count {
                // `count` fits in the section, so these reads cannot fail;
                // they are checked all the same.
                let price = quote.f64("").map_err(|e| e.rename(field("pool.bins[].price")))?;
                let liquidity_out = quote
                    .u128("")
                    .map_err(|e| e.rename(field("pool.bins[].liquidityOut")))?;
                bins.push(Bin {
                    price,
                    liquidity_out: Units(liquidity_out),
                });
            }
            PoolState::Bins {
                bins,
                base_fee_bps,
                variable_fee_bps,
                max_fee_bps,
            }
        }
        _ => return Err(quote.error(field("pool.kind"), 1, "unknown pool kind (0 constant_product, 1 bins)")),
    };
    Ok(VenueQuote {
        venue,
        amount_out,
        fee_bps,
        price_impact_bps,
        latency_ms,
        pool,
        stats,
    })
}

/// A cursor over the input (or over the input up to a section's end), so
/// that every offset, in errors too, counts from the input's first byte.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl DecodeError {
    fn rename(mut self, what: String) -> Self {
        self.what = what;
        self
    }
}

impl<'a> Reader<'a> {
    fn error(&self, what: impl Into<String>, back: usize, problem: &'static str) -> DecodeError {
        DecodeError {
            what: what.into(),
            at: self.at.saturating_sub(back),
            problem,
        }
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.error(what, 0, "runs past the end of its section"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N, what)?;
        let mut array = [0; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn u128(&mut self, what: &str) -> Result<u128, DecodeError> {
        self.array(what).map(u128::from_le_bytes)
    }

    fn f64(&mut self, what: &str) -> Result<f64, DecodeError> {
        self.array(what).map(f64::from_le_bytes)
    }

    /// A `len: u32` then that many bytes.
    fn bytes_field(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    fn str(&mut self, what: &str) -> Result<String, DecodeError> {
        let bytes = self.bytes_field(what)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err(self.error(what, bytes.len(), "not UTF-8")),
        }
    }

    /// A count of items of at least `min_item` bytes each: refused when the
    /// bytes left cannot hold that many, so no allocation trusts it.
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize, DecodeError> {
        let count = self.u32(what)? as usize;
        let left = self.bytes.len() - self.at;
        if count.saturating_mul(min_item) > left {
            return Err(self.error(what, 4, "count larger than the bytes that follow"));
        }
        Ok(count)
    }

    /// A section as its own reader; offsets stay relative to the input.
    fn section(&mut self, what: &str) -> Result<Reader<'a>, DecodeError> {
        let len = self.u32(what)? as usize;
        let start = self.at;
        self.take(len, what)?;
        Ok(Reader {
            bytes: &self.bytes[..start + len],
            at: start,
        })
    }

    fn section_indexed(&mut self, what: &str, index: usize) -> Result<Reader<'a>, DecodeError> {
        self.section(what).map_err(|e| e.rename(format!("{what}[{index}]")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RouteInput {
        let cp = VenueQuote {
            venue: "raydium".into(),
            amount_out: Units(1_496_220_150),
            fee_bps: 25,
            price_impact_bps: 3,
            latency_ms: 212,
            pool: PoolState::ConstantProduct {
                reserve_in: Units(500_000_000_000_000),
                reserve_out: Units(u128::MAX),
                fee_bps: 25,
            },
            stats: None,
        };
        let bins = VenueQuote {
            venue: "météora".into(),
            amount_out: Units(1_497_998_000),
            fee_bps: 20,
            price_impact_bps: 0,
            latency_ms: u64::MAX,
            pool: PoolState::Bins {
                bins: vec![
                    Bin {
                        price: 0.1501,
                        liquidity_out: Units(300_200_000_000),
                    },
                    Bin {
                        price: f64::MIN_POSITIVE,
                        liquidity_out: Units(0),
                    },
                ],
                base_fee_bps: 20,
                variable_fee_bps: 1,
                max_fee_bps: 200,
            },
            stats: Some(VenueStats {
                recent_latency_ms: 180,
                failure_rate: 0.05,
                samples: 40,
            }),
        };
        let mut params = serde_json::Map::new();
        params.insert("steps".into(), 30.into());
        RouteInput {
            order: OrderInfo {
                id: "550e8400-e29b-41d4-a716-446655440000".into(),
                token_in: "SOL".into(),
                token_out: "USDC".into(),
                amount_in: Units(10_000_000_000),
                slippage_bps: 50,
            },
            quotes: vec![cp, bins],
            params,
        }
    }

    #[test]
    fn round_trips_every_field() {
        let input = sample();
        let bytes = encode_input(&input);
        assert_eq!(&bytes[..4], b"SWL2");
        assert_eq!(decode_input(&bytes).unwrap(), input);

        let mut empty = input.clone();
        empty.quotes.clear();
        empty.params.clear();
        let bytes = encode_input(&empty);
        // Empty params travel as a zero length: no JSON at all.
        assert_eq!(&bytes[bytes.len() - 8..], &[0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_input(&bytes).unwrap(), empty);
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let mut input = sample();
        input.quotes.truncate(1);
        input.params.clear();
        input.order.id = "o".into();
        let bytes = encode_input(&input);
        let mut expected = b"SWL2".to_vec();
        // order section: 5 + 7 + 8 + 16 + 4 = 40 bytes
        expected.extend_from_slice(&40u32.to_le_bytes());
        expected.extend_from_slice(&[1, 0, 0, 0, b'o', 3, 0, 0, 0, b'S', b'O', b'L', 4, 0, 0, 0]);
        expected.extend_from_slice(b"USDC");
        expected.extend_from_slice(&10_000_000_000u128.to_le_bytes());
        expected.extend_from_slice(&50u32.to_le_bytes());
        expected.extend_from_slice(&1u32.to_le_bytes());
        assert_eq!(&bytes[..expected.len()], &expected[..]);
        // quote section: venue 11, amounts 16+4+4+8, stats 1, pool 1+16+16+4
        let quote_len = u32::from_le_bytes(bytes[expected.len()..expected.len() + 4].try_into().unwrap());
        assert_eq!(quote_len, 11 + 32 + 1 + 37);
        assert_eq!(bytes.len(), expected.len() + 4 + quote_len as usize + 4);
    }

    #[test]
    fn the_worked_example_of_plugins_readme_is_exact() {
        let input = RouteInput {
            order: OrderInfo {
                id: "o".into(),
                token_in: "SOL".into(),
                token_out: "USDC".into(),
                amount_in: Units(1000),
                slippage_bps: 50,
            },
            quotes: vec![VenueQuote {
                venue: "ray".into(),
                amount_out: Units(990),
                fee_bps: 25,
                price_impact_bps: 0,
                latency_ms: 3,
                pool: PoolState::ConstantProduct {
                    reserve_in: Units(1_000_000),
                    reserve_out: Units(1_000_000),
                    fee_bps: 25,
                },
                stats: None,
            }],
            params: serde_json::Map::new(),
        };
        let bytes = encode_input(&input);
        assert_eq!(bytes.len(), 137);
        assert_eq!(&bytes[..13], &[0x53, 0x57, 0x4C, 0x32, 0x28, 0, 0, 0, 1, 0, 0, 0, 0x6F]);
        assert_eq!(&bytes[48..52], &[1, 0, 0, 0]);
        assert_eq!(&bytes[52..63], &[0x4D, 0, 0, 0, 3, 0, 0, 0, b'r', b'a', b'y']);
        assert_eq!(&bytes[bytes.len() - 4..], &[0, 0, 0, 0]);
        assert_eq!(decode_input(&bytes).unwrap(), input);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode_input(&sample());
        for len in 0..bytes.len() {
            let error = decode_input(&bytes[..len]).unwrap_err();
            assert!(error.at <= len, "{error} for {len} bytes");
        }
    }

    #[test]
    fn hostile_lengths_and_counts_are_refused() {
        let bytes = encode_input(&sample());
        // Order section length far past the end.
        let mut bad = bytes.clone();
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = decode_input(&bad).unwrap_err();
        assert_eq!(error.what, "order");
        // The order id's length past its section (but within the input).
        let mut bad = bytes.clone();
        bad[8..12].copy_from_slice(&200u32.to_le_bytes());
        assert_eq!(decode_input(&bad).unwrap_err().what, "order.id");
        // A quote count of 4 billion: refused before any allocation.
        let order_len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        let count_at = 8 + order_len;
        let mut bad = bytes.clone();
        bad[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = decode_input(&bad).unwrap_err();
        assert_eq!((error.what.as_str(), error.at), ("quotes", count_at));
        assert!(error.to_string().contains("count larger"), "{error}");
    }

    #[test]
    fn bad_magic_flags_and_kinds_are_refused() {
        let input = sample();
        let mut bad = encode_input(&input);
        bad[3] = b'1';
        assert!(
            decode_input(&bad)
                .unwrap_err()
                .to_string()
                .contains("not an ABI v2 input")
        );
        // JSON (a v1 input) is not a v2 input.
        let json = serde_json::to_vec(&input).unwrap();
        assert_eq!(decode_input(&json).unwrap_err().what, "magic");

        let mut one = input.clone();
        one.quotes.truncate(1);
        one.params.clear();
        let bytes = encode_input(&one);
        let quote_at = 8 + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize + 4 + 4;
        let stats_at = quote_at + 4 + "raydium".len() + 32;
        let mut bad = bytes.clone();
        bad[stats_at] = 7;
        assert_eq!(decode_input(&bad).unwrap_err().what, "quotes[0].stats");
        let mut bad = bytes.clone();
        bad[stats_at + 1] = 9;
        let error = decode_input(&bad).unwrap_err();
        assert_eq!((error.what.as_str(), error.at), ("quotes[0].pool.kind", stats_at + 1));
        // A venue that is not UTF-8.
        let mut bad = bytes;
        bad[quote_at + 4] = 0xff;
        assert_eq!(decode_input(&bad).unwrap_err().what, "quotes[0].venue");
    }

    #[test]
    fn a_later_engine_may_append_fields() {
        let input = sample();
        let bytes = encode_input(&input);
        // Append 3 unknown bytes to the order section and 5 at the end.
        let order_len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        let mut longer = bytes[..4].to_vec();
        longer.extend_from_slice(&(order_len as u32 + 3).to_le_bytes());
        longer.extend_from_slice(&bytes[8..8 + order_len]);
        longer.extend_from_slice(&[9, 9, 9]);
        longer.extend_from_slice(&bytes[8 + order_len..]);
        longer.extend_from_slice(&[1, 2, 3, 4, 5]);
        assert_eq!(decode_input(&longer).unwrap(), input);
    }

    #[test]
    fn params_that_are_not_a_json_object_are_refused() {
        let mut input = sample();
        input.params.clear();
        let mut bytes = encode_input(&input);
        bytes.truncate(bytes.len() - 4);
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(b"[1]");
        assert_eq!(decode_input(&bytes).unwrap_err().what, "params");
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small deterministic generator (xorshift) over mutations of a
        // real input and over pure noise.
        let base = encode_input(&sample());
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut bytes = if round % 4 == 0 {
                (0..(next() % 256)).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                base.clone()
            };
            if round % 4 != 0 {
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
            }
            let _ = decode_input(&bytes);
        }
    }
}
