//! The token registry: which symbols exist, their mints and decimals.

use crate::domain::amount::{AmountError, parse_units};

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

/// All tokens, looked up by symbol (case-insensitive) or mint.
#[derive(Debug, Clone, Default)]
pub struct TokenRegistry {
    tokens: Vec<Token>,
}

impl TokenRegistry {
    /// Builds the registry; `max_amount` is given in whole tokens.
    pub fn new(entries: impl IntoIterator<Item = (String, String, u8, String)>) -> Result<Self, String> {
        let mut tokens: Vec<Token> = Vec::new();
        for (symbol, mint, decimals, max_amount) in entries {
            if tokens
                .iter()
                .any(|t| t.symbol.eq_ignore_ascii_case(&symbol) || t.mint == mint)
            {
                return Err(format!("token {symbol} is listed twice"));
            }
            let max_amount = parse_units(&max_amount, decimals)
                .map_err(|e: AmountError| format!("token {symbol}: max_amount {max_amount:?} {e}"))?;
            tokens.push(Token {
                symbol,
                mint,
                decimals,
                max_amount,
            });
        }
        Ok(Self { tokens })
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
        assert!(err.contains("twice"), "{err}");
    }
}
