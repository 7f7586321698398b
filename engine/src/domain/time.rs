//! Wall-clock instants, written as RFC 3339 UTC with milliseconds.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::{
    fmt,
    time::{Duration, SystemTime},
};

/// A point in time, shown as `2026-11-23T10:30:00.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Timestamp(SystemTime::now())
    }

    /// Parses RFC 3339 (`Z` offset).
    pub fn parse(text: &str) -> Option<Self> {
        humantime::parse_rfc3339_weak(text).ok().map(Timestamp)
    }

    /// Time elapsed since this instant (zero if it lies in the future).
    pub fn elapsed(&self) -> Duration {
        SystemTime::now().duration_since(self.0).unwrap_or_default()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_millis(self.0).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse(&text).ok_or_else(|| de::Error::custom(format!("not an RFC 3339 timestamp: {text:?}")))
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 UTC, milliseconds."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339() {
        let ts = Timestamp::parse("2026-11-23T10:30:00.123Z").unwrap();
        assert_eq!(ts.to_string(), "2026-11-23T10:30:00.123Z");
    }
}
