//! Integer base units, carried in JSON as decimal strings so that no
//! language's float parsing can round them.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::fmt;

/// An amount in a token's base units (lamports for SOL, 10⁻⁶ USDC, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Units(pub u128);

impl fmt::Display for Units {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Units {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Units {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(de::Error::custom(format!(
                "expected a decimal string of base units, got {text:?}"
            )));
        }
        text.parse()
            .map(Units)
            .map_err(|_| de::Error::custom(format!("amount {text:?} does not fit in 128 bits")))
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Units {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Units".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "Integer amount in the token's base units, as a decimal string."
        })
    }
}
