//! The token registry: which symbols exist, their mints and decimals.

use crate::domain::amount::{AmountError, parse_units};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A tradable token.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Ticker, e.g. `SOL`.
    pub symbol: String,
    /// Mint address.
    pub mint: String,
    /// Decimal places of the base unit (SOL: 9, USDC: 6).
    pub decimals: u8,
    /// Largest order amount, whole tokens, as a decimal string.
    pub max_amount: String,
}

/// A token Swapline can trade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Ticker, canonical case (`SOL`).
    pub symbol: String,
    /// Mint address.
    pub mint: String,
    /// Decimal places of one base unit.
    pub decimals: u8,
    /// Largest order amount accepted, base units.
    pub max_amount: u128,
}

/// Why a token list cannot become a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Two entries share a symbol (any case) or a mint.
    #[error("token {0} is listed twice")]
    Duplicate(String),
    /// `max_amount` does not parse with the token's decimals.
    #[error("token {symbol}: max_amount {text:?} {error}")]
    MaxAmount {
        /// The token.
        symbol: String,
        /// The text as configured.
        text: String,
        /// Why it does not parse.
        error: AmountError,
    },
}

/// All tokens, looked up by symbol (case-insensitive) or mint.
#[derive(Debug, Clone, Default)]
pub struct TokenRegistry {
    tokens: Vec<Token>,
}

impl TokenRegistry {
    /// Builds the registry; `max_amount` is given in whole tokens.
    ///
    /// # Errors
    /// [`TokenError`] for a symbol or mint listed twice, or a `max_amount`
    /// that is not a decimal with at most the token's decimals.
    pub fn new(entries: impl IntoIterator<Item = (String, String, u8, String)>) -> Result<Self, TokenError> {
        let mut tokens: Vec<Token> = Vec::new();
        for (symbol, mint, decimals, max_amount) in entries {
            if tokens
                .iter()
                .any(|t| t.symbol.eq_ignore_ascii_case(&symbol) || t.mint == mint)
            {
                return Err(TokenError::Duplicate(symbol));
            }
            let max_amount = parse_units(&max_amount, decimals).map_err(|error| TokenError::MaxAmount {
                symbol: symbol.clone(),
                text: max_amount.clone(),
                error,
            })?;
            tokens.push(Token {
                symbol,
                mint,
                decimals,
                max_amount,
            });
        }
        Ok(Self { tokens })
    }

    /// The registry `[[tokens]]` describes.
    ///
    /// # Errors
    /// As [`TokenRegistry::new`].
    pub fn from_config(tokens: &[TokenConfig]) -> Result<Self, TokenError> {
        Self::new(
            tokens
                .iter()
                .map(|t| (t.symbol.clone(), t.mint.clone(), t.decimals, t.max_amount.clone())),
        )
    }

    /// Finds a token by symbol (any case) or mint address.
    pub fn get(&self, key: &str) -> Option<&Token> {
        self.tokens
            .iter()
            .find(|t| t.symbol.eq_ignore_ascii_case(key) || t.mint == key)
    }

    /// Every token, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Token> {
        self.tokens.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_symbol_any_case_and_by_mint() {
        let registry = TokenRegistry::new([("SOL".into(), "So1".into(), 9, "1000".into())]).unwrap();
        assert_eq!(registry.get("sol").unwrap().symbol, "SOL");
        assert_eq!(registry.get("So1").unwrap().max_amount, 1_000_000_000_000);
        assert!(registry.get("BTC").is_none());
    }

    #[test]
    fn duplicate_symbols_are_refused() {
        let err = TokenRegistry::new([
            ("SOL".into(), "a".into(), 9, "1".into()),
            ("sol".into(), "b".into(), 9, "1".into()),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
