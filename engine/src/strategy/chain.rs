//! A pipeline's routing: one strategy or a fallback chain
//! (`strategy = ["split", "best-price"]`), the params they share, and the
//! host's check of every answer. The next strategy is tried when one fails:
//! a plugin error (trap, timeout, bad output, a declined order) or a route
//! the host refuses. The order records which strategy actually routed it.
//! Imports `domain`, `telemetry` and the ABI types only; never wasmtime.

use super::{
    PluginError, Strategy,
    validate::{CheckedLeg, validate},
};
use crate::domain::StrategyRef;
use std::{collections::BTreeSet, fmt, sync::Arc};
use swapline_abi::RouteInput;

/// Strategies tried in order, with the params handed to each.
pub struct Chain {
    links: Vec<Arc<dyn Strategy>>,
    params: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.strategies().map(|id| id.name.as_str()).collect();
        f.debug_struct("Chain")
            .field("strategies", &names)
            .field("params", &self.params)
            .finish()
    }
}

/// A route that passed the host's checks, and who made it.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The checked legs.
    pub legs: Vec<CheckedLeg>,
    /// The strategy's reason.
    pub reason: Option<String>,
    /// The strategy that answered.
    pub by: StrategyRef,
    /// Strategies tried before it, and why each failed.
    pub failed: Vec<(StrategyRef, PluginError)>,
}

/// Every strategy of the chain failed.
#[derive(Debug, Clone)]
pub struct ChainFailed {
    /// Each strategy with its error, in the order tried.
    pub errors: Vec<(StrategyRef, PluginError)>,
}

impl ChainFailed {
    /// The last error: the one the order fails with.
    pub fn last(&self) -> &PluginError {
        &self.errors.last().expect("a chain has at least one strategy").1
    }
}

impl fmt::Display for ChainFailed {
    /// `<last error>`, then `(after <name>: <error>; …)` for a longer chain.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.last())?;
        if self.errors.len() > 1 {
            let earlier: Vec<String> = self.errors[..self.errors.len() - 1]
                .iter()
                .map(|(id, e)| format!("{}: {e}", id.name))
                .collect();
            write!(f, " (after {})", earlier.join("; "))?;
        }
        Ok(())
    }
}

/// One way a pipeline's params break its strategies' schemas. Shown with
/// the key relative to the pipeline's table (`params.steps: …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamsProblem {
    /// No strategy of the chain declares the key.
    Unknown {
        /// The key, e.g. `params.stpes`.
        key: String,
        /// What each strategy takes, e.g. `split takes steps`.
        accepted: Vec<String>,
    },
    /// A value breaks a strategy's schema.
    Invalid {
        /// Where, e.g. `params.steps` (or `params` for the whole table).
        key: String,
        /// The schema's complaint.
        message: String,
        /// The strategy whose schema complains.
        strategy: String,
    },
    /// A strategy declares a schema that does not compile.
    BadSchema {
        /// The strategy.
        strategy: String,
        /// The compiler's complaint.
        message: String,
    },
}

impl fmt::Display for ParamsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamsProblem::Unknown { key, accepted } => {
                write!(f, "{key}: unknown parameter ({})", accepted.join("; "))
            }
            ParamsProblem::Invalid { key, message, strategy } => {
                write!(f, "{key}: {message} ({strategy}'s params schema)")
            }
            ParamsProblem::BadSchema { strategy, message } => {
                write!(f, "params: {strategy}'s schema does not compile: {message}")
            }
        }
    }
}

/// Why [`Chain::new`] refused: every problem with the params, each naming
/// its key. Iterate it to report the problems one by one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ChainError {
    /// The problems, at least one.
    pub problems: Vec<ParamsProblem>,
}

impl IntoIterator for ChainError {
    type Item = ParamsProblem;
    type IntoIter = std::vec::IntoIter<ParamsProblem>;

    fn into_iter(self) -> Self::IntoIter {
        self.problems.into_iter()
    }
}

impl Chain {
    /// Builds a chain after checking `params` against every schema the
    /// strategies declare.
    ///
    /// # Errors
    /// [`ChainError`] with every problem, each naming its key relative to
    /// the pipeline's table (`params.steps: …`).
    ///
    /// # Panics
    /// When `links` is empty (config validation requires a strategy).
    pub fn new(
        links: Vec<Arc<dyn Strategy>>,
        params: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, ChainError> {
        assert!(!links.is_empty(), "config validation requires at least one strategy");
        let problems = check_params(&links, &params);
        if !problems.is_empty() {
            return Err(ChainError { problems });
        }
        Ok(Chain { links, params })
    }

    /// The strategies, in the order they are tried.
    pub fn strategies(&self) -> impl Iterator<Item = &StrategyRef> {
        self.links.iter().map(|link| link.id())
    }

    /// The params handed to every strategy.
    pub fn params(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.params
    }

    /// Asks each strategy in turn until one answers with a valid route.
    /// `input.params` is replaced by the chain's params.
    pub async fn route(&self, mut input: RouteInput) -> Result<Routed, ChainFailed> {
        input.params = self.params.clone();
        let mut failed = Vec::new();
        for link in &self.links {
            let started = std::time::Instant::now();
            let answer = link
                .route(&input)
                .await
                .and_then(|decision| validate(&input, &decision).map(|legs| (legs, decision.reason)));
            let failure = answer.as_ref().err().map(PluginError::reason);
            crate::telemetry::event::plugin_call(&link.id().name, started.elapsed(), None, failure);
            match answer {
                Ok((legs, reason)) => {
                    return Ok(Routed {
                        legs,
                        reason,
                        by: link.id().clone(),
                        failed,
                    });
                }
                Err(error) => {
                    if self.links.len() > 1 {
                        tracing::warn!(order_id = input.order.id, strategy = link.id().name, %error, "strategy failed; trying the next");
                    }
                    failed.push((link.id().clone(), error));
                }
            }
        }
        Err(ChainFailed { errors: failed })
    }
}

/// Keys no declared schema knows are refused (when every strategy declares
/// one), and each strategy's schema is checked against the keys it declares
/// (all keys when it is alone, so its own `required` and
/// `additionalProperties` apply).
fn check_params(
    links: &[Arc<dyn Strategy>],
    params: &serde_json::Map<String, serde_json::Value>,
) -> Vec<ParamsProblem> {
    let mut problems = Vec::new();
    let declared = |schema: &serde_json::Value| -> BTreeSet<String> {
        schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    if links.iter().all(|link| link.params_schema().is_some()) {
        for key in params.keys() {
            let known = links
                .iter()
                .any(|link| link.params_schema().is_some_and(|s| declared(s).contains(key)));
            if !known {
                let accepted: Vec<String> = links
                    .iter()
                    .map(|link| {
                        let keys = declared(link.params_schema().expect("checked above"));
                        let keys: Vec<String> = keys.into_iter().collect();
                        match keys.is_empty() {
                            true => format!("{} takes none", link.id().name),
                            false => format!("{} takes {}", link.id().name, keys.join(", ")),
                        }
                    })
                    .collect();
                problems.push(ParamsProblem::Unknown {
                    key: format!("params.{key}"),
                    accepted,
                });
            }
        }
    }
    for link in links {
        let Some(schema) = link.params_schema() else {
            continue;
        };
        let instance: serde_json::Map<String, serde_json::Value> = if links.len() == 1 {
            params.clone()
        } else {
            let keys = declared(schema);
            params
                .iter()
                .filter(|(key, _)| keys.contains(*key))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let validator = match jsonschema::validator_for(schema) {
            Ok(validator) => validator,
            Err(e) => {
                problems.push(ParamsProblem::BadSchema {
                    strategy: link.id().name.clone(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let instance = serde_json::Value::Object(instance);
        for error in validator.iter_errors(&instance) {
            let path = error.instance_path().as_str().trim_start_matches('/').replace('/', ".");
            let key = if path.is_empty() {
                "params".to_owned()
            } else {
                format!("params.{path}")
            };
            // Unknown keys were reported above, once, with what each
            // strategy takes.
            let duplicate_unknown = links.iter().all(|l| l.params_schema().is_some())
                && matches!(
                    error.kind(),
                    jsonschema::error::ValidationErrorKind::AdditionalProperties { .. }
                );
            if !duplicate_unknown {
                problems.push(ParamsProblem::Invalid {
                    key,
                    message: error.to_string(),
                    strategy: link.id().name.clone(),
                });
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use swapline_abi::{
        Leg, RouteDecision, Units,
        testing::{QuoteBuilder, RouteInputBuilder},
    };

    /// A scripted strategy: answers with `legs` of (venue, amount) or fails.
    struct Scripted {
        id: StrategyRef,
        answer: Result<Vec<(&'static str, u128)>, PluginError>,
        schema: Option<serde_json::Value>,
    }

    #[async_trait]
    impl Strategy for Scripted {
        fn id(&self) -> &StrategyRef {
            &self.id
        }

        fn params_schema(&self) -> Option<&serde_json::Value> {
            self.schema.as_ref()
        }

        async fn route(&self, _input: &RouteInput) -> Result<RouteDecision, PluginError> {
            self.answer.clone().map(|legs| RouteDecision {
                legs: legs
                    .into_iter()
                    .map(|(venue, amount)| Leg {
                        venue: venue.into(),
                        amount_in: Units(amount),
                        min_amount_out: None,
                    })
                    .collect(),
                reason: None,
            })
        }
    }

    fn scripted(
        name: &str,
        answer: Result<Vec<(&'static str, u128)>, PluginError>,
        schema: Option<serde_json::Value>,
    ) -> Arc<dyn Strategy> {
        Arc::new(Scripted {
            id: StrategyRef {
                name: name.into(),
                sha256: format!("{name}-digest"),
            },
            answer,
            schema,
        })
    }

    /// Order `o`: 1,000 of A for B at 100 bps, quoted by raydium only.
    fn input() -> RouteInput {
        RouteInputBuilder::new()
            .quote(QuoteBuilder::new("raydium").amount_out(990).build())
            .build()
    }

    fn texts(error: ChainError) -> Vec<String> {
        error.into_iter().map(|problem| problem.to_string()).collect()
    }

    fn params(json: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        json.as_object().unwrap().clone()
    }

    #[tokio::test]
    async fn the_next_strategy_runs_when_one_errs_or_answers_an_invalid_route() {
        let chain = Chain::new(
            vec![
                scripted("trapper", Err(PluginError::Trap("unreachable".into())), None),
                scripted("greedy", Ok(vec![("raydium", 5_000)]), None),
                scripted("best-price", Ok(vec![("raydium", 1_000)]), None),
            ],
            Default::default(),
        )
        .unwrap();
        let routed = chain.route(input()).await.unwrap();
        assert_eq!(routed.by.name, "best-price");
        assert_eq!(routed.by.sha256, "best-price-digest");
        let reasons: Vec<&str> = routed.failed.iter().map(|(_, e)| e.reason()).collect();
        assert_eq!(reasons, ["trap", "invalid_route"]);
    }

    #[tokio::test]
    async fn when_every_strategy_fails_the_last_error_leads() {
        let chain = Chain::new(
            vec![
                scripted("a", Err(PluginError::Timeout("fuel".into())), None),
                scripted("b", Ok(vec![("orca", 1_000)]), None),
            ],
            Default::default(),
        )
        .unwrap();
        let failed = chain.route(input()).await.unwrap_err();
        assert_eq!(failed.last().reason(), "invalid_route");
        let text = failed.to_string();
        assert!(text.starts_with("invalid_route: unknown_venue"), "{text}");
        assert!(text.contains("(after a: timeout: fuel)"), "{text}");
    }

    #[test]
    fn params_are_checked_against_each_declared_schema_naming_the_key() {
        let split = serde_json::json!({"type": "object", "additionalProperties": false,
            "properties": {"steps": {"type": "integer", "minimum": 1}}});
        let none = serde_json::json!({"type": "object", "additionalProperties": false});
        let chain = |p: serde_json::Value| {
            Chain::new(
                vec![
                    scripted("split", Ok(vec![]), Some(split.clone())),
                    scripted("best-price", Ok(vec![]), Some(none.clone())),
                ],
                params(p),
            )
        };
        assert!(chain(serde_json::json!({"steps": 10})).is_ok());

        let problems = texts(chain(serde_json::json!({"steps": 0})).err().unwrap());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("params.steps: 0 is less than the minimum of 1"),
            "{problems:?}"
        );

        let problems = texts(chain(serde_json::json!({"stpes": 10})).err().unwrap());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("params.stpes: unknown parameter"),
            "{problems:?}"
        );
        assert!(problems[0].contains("split takes steps"), "{problems:?}");
        assert!(problems[0].contains("best-price takes none"), "{problems:?}");
    }

    #[test]
    fn without_declared_schemas_any_params_pass() {
        let chain = Chain::new(
            vec![scripted("custom", Ok(vec![]), None)],
            params(serde_json::json!({"anything": [1, 2]})),
        );
        assert!(chain.is_ok());
    }
}
