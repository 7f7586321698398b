//! The JSON Schemas in `schemas/`, generated from the types that produce
//! the JSON, so documents and code cannot drift: a test fails when a
//! committed file differs (run it with `UPDATE_SCHEMAS=1` to rewrite them).
//!
//! May import: `api`, `config`, `domain`.

use crate::{
    api::views::{Created, EventList, OrderList, OrderResponse, SocketMessage, StreamMessage, TicketView},
    config::Config,
    domain::OrderRequest,
};
use schemars::{JsonSchema, generate::SchemaSettings};
use serde_json::Value;

fn schema<T: JsonSchema>(id: &str) -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = serde_json::to_value(generator.into_root_schema_for::<T>()).expect("schemas serialise");
    schema["$id"] = Value::String(format!("https://swapline.dev/schemas/{id}"));
    schema
}

/// Writes every schema into `dir` (created if missing), as the files of
/// `schemas/` are written; returns the file names. `swapline schemas --out
/// DIR` calls it, so a client can take the schemas of the binary it talks to.
///
/// # Errors
/// The I/O error of the first file that could not be written.
pub fn write_all(dir: &std::path::Path) -> std::io::Result<Vec<&'static str>> {
    std::fs::create_dir_all(dir)?;
    all()
        .into_iter()
        .map(|(file, schema)| std::fs::write(dir.join(file), render(&schema)).map(|()| file))
        .collect()
}

/// A schema as committed: pretty JSON and a final newline.
pub fn render(schema: &Value) -> String {
    serde_json::to_string_pretty(schema).expect("schemas serialise") + "\n"
}

/// Every schema: (file name under `schemas/`, schema).
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("config.schema.json", schema::<Config>("config.schema.json")),
        (
            "order-request.schema.json",
            schema::<OrderRequest>("order-request.schema.json"),
        ),
        (
            "order-created.schema.json",
            schema::<Created>("order-created.schema.json"),
        ),
        ("order.schema.json", schema::<OrderResponse>("order.schema.json")),
        ("order-list.schema.json", schema::<OrderList>("order-list.schema.json")),
        (
            "order-events.schema.json",
            schema::<EventList>("order-events.schema.json"),
        ),
        ("ws-ticket.schema.json", schema::<TicketView>("ws-ticket.schema.json")),
        (
            "ws-message.schema.json",
            schema::<SocketMessage>("ws-message.schema.json"),
        ),
        (
            "stream-message.schema.json",
            schema::<StreamMessage>("stream-message.schema.json"),
        ),
        (
            "plugin-input.schema.json",
            schema::<swapline_abi::RouteInput>("plugin-input.schema.json"),
        ),
        (
            "plugin-output.schema.json",
            schema::<swapline_abi::PluginAnswer>("plugin-output.schema.json"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn committed_schemas_match_the_code() {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas"));
        let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
        let mut stale = Vec::new();
        for (file, schema) in all() {
            let text = render(&schema);
            let path = dir.join(file);
            if update {
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(file);
            }
            jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{file} does not compile: {e}"));
        }
        assert!(
            stale.is_empty(),
            "schemas/ differs from the code for {stale:?}; run `UPDATE_SCHEMAS=1 cargo test -p swapline schemas` and commit"
        );
    }

    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn api_descriptions_cover_every_route_and_point_at_real_schemas() {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas"));
        let openapi: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("openapi.json")).unwrap()).unwrap();
        let mut paths: Vec<&str> = openapi["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "/api/orders",
                "/api/orders/execute",
                "/api/orders/status/{id}",
                "/api/orders/{id}/cancel",
                "/api/orders/{id}/events",
                "/api/orders/{id}/retry",
                "/api/stream",
                "/api/ws-tickets",
                "/console",
                "/console/{asset}",
                "/health",
                "/metrics",
                "/ready"
            ]
        );
        for file in ["openapi.json", "asyncapi.json"] {
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
            let mut found = Vec::new();
            refs(&doc, &mut found);
            for r in found.iter().filter(|r| !r.starts_with('#')) {
                let target = r.split('#').next().unwrap();
                assert!(dir.join(target).is_file(), "{file}: $ref {r} names no file in schemas/");
            }
        }
    }

    #[test]
    fn every_profile_passes_the_committed_config_schema() {
        for profile in ["dev", "staging", "production", "bench"] {
            let config = crate::config::Sources {
                profile: profile.into(),
                config_dir: Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs"))),
                files: vec![],
                env: false,
            }
            .load()
            .unwrap();
            assert_eq!(crate::config::schema_errors(&config), Vec::<String>::new(), "{profile}");
        }
    }
}
