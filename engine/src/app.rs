//! The composition root: builds the engine from a `Config` and runs it. The
//! only module that names concrete adapters (SQLite or PostgreSQL, memory or
//! Redis queue and bus, simulated venues and the simulated chain, the wasm
//! host).
//!
//! May import: anything (it is the composition root).

pub use crate::config::Role;
use crate::{
    api::{self, ApiSettings, ApiState, Hub},
    bus::{self, Bus, BusBackend, MemoryBus, RedisBus, SubscriberHealth},
    chain::ChainRpc,
    config::{Config, ConfigError, Sources, validate_for},
    domain::{TokenError, TokenRegistry},
    monitor::Monitor,
    pipeline::{
        IdempotencySettings, Intake, InvalidBackoff, Keys, Pipeline, PipelineSettings, Recorder, RequeueError,
        RetryPolicy, Stage, Worker, reconcile, requeue_unfinished, sweep_keys,
    },
    plugins::{self, PluginHost, watch::FileWatch},
    queue::{
        self, MemoryQueue, MemoryRateLimit, MemoryRequestLimit, Queue, QueueBackend, RateLimit, RedisConfig, RedisMode,
        RedisQueue, RedisRateLimit, RedisRequestLimit, RequestLimit,
    },
    store::{ChainStore, PostgresStore, SqliteStore, Store, StoreBackend, StoreError},
    strategy::{Chain, PluginError, Strategy},
    telemetry,
    venues::{Clock, PoolError, SimulatedChain, SimulatedVenue, SystemClock, Venue},
};
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    future::Future,
    net::SocketAddr,
    sync::Arc,
};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Why the engine could not start or run.
#[derive(Debug, Error)]
pub enum AppError {
    /// The configuration breaks rules: every problem, each with its key
    /// (the same list `swapline config check` prints).
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
    /// The configuration could not be loaded (a reload).
    #[error(transparent)]
    Load(#[from] ConfigError),
    /// The store has migrations to apply and `store.migrate_on_start` is off.
    #[error("store migrations {0:?} are not applied and store.migrate_on_start is false; run `swapline migrate`")]
    PendingMigrations(Vec<u32>),
    /// `redis.url` (or one of `redis.urls`) is not a Redis URL.
    #[error("redis.url/redis.urls: {0}")]
    RedisUrl(String),
    /// The Redis Cluster of `redis.urls` is not usable: each seed node that
    /// failed and why.
    #[error(transparent)]
    RedisCluster(#[from] queue::pool::ClusterCheckError),
    /// Unfinished orders could not be re-enqueued.
    #[error(transparent)]
    Requeue(#[from] RequeueError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A strategy plugin failed to load.
    #[error("strategy plugin: {0}")]
    Plugin(#[from] PluginError),
    /// Pipelines' strategies could not be loaded: every problem, each naming
    /// its pipeline.
    #[error("strategy plugins:\n  - {}", .0.join("\n  - "))]
    Strategies(Vec<String>),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        error: std::io::Error,
    },
}

impl From<TokenError> for AppError {
    fn from(e: TokenError) -> Self {
        AppError::Invalid(vec![format!("tokens: {e}")])
    }
}

impl From<PoolError> for AppError {
    fn from(e: PoolError) -> Self {
        AppError::Invalid(vec![format!("venues.pools: {e}")])
    }
}

impl From<InvalidBackoff> for AppError {
    fn from(e: InvalidBackoff) -> Self {
        AppError::Invalid(vec![format!("retry: {e}")])
    }
}

/// The assembled engine.
pub struct Engine {
    config: Config,
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    rate_limit: Arc<dyn RateLimit>,
    /// The per-client request limit, shared like the queue.
    request_limit: Arc<dyn RequestLimit>,
    bus: Arc<dyn Bus>,
    /// This node's stream of bus events, for the hub (taken once).
    bus_stream: Option<bus::Stream>,
    /// Stops the bus's background task, once everything has drained.
    bus_stop: CancellationToken,
    tokens: Arc<TokenRegistry>,
    venues: Vec<Arc<dyn Venue>>,
    /// The chain the engine lands transactions on.
    chain: Arc<dyn ChainRpc>,
    /// The same chain as the simulation it is, for its driver.
    simulated_chain: Arc<SimulatedChain>,
    pipeline: Arc<Pipeline>,
    host: PluginHost,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// A store and the chain state it also keeps (one object, two seams).
#[derive(Clone)]
pub struct StoreAndChain {
    /// Orders and events.
    pub store: Arc<dyn Store>,
    /// The simulated chain's durable state.
    pub chain: Arc<dyn ChainStore>,
}

impl std::fmt::Debug for StoreAndChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreAndChain").finish_non_exhaustive()
    }
}

/// Opens the store named by the configuration; the same object keeps the
/// chain's state.
pub fn open_store(config: &Config) -> Result<StoreAndChain, AppError> {
    match config.store.backend {
        StoreBackend::Sqlite => {
            let store = Arc::new(SqliteStore::open(
                &config.sqlite_path(),
                config.store.sqlite_synchronous,
                config.store.busy_timeout.0,
            )?);
            Ok(StoreAndChain {
                store: store.clone(),
                chain: store,
            })
        }
        StoreBackend::Postgres => {
            let store = Arc::new(PostgresStore::connect(&config.postgres)?);
            Ok(StoreAndChain {
                store: store.clone(),
                chain: store,
            })
        }
    }
}

/// The plugin host the configuration describes (with the on-disk module
/// cache under `data_dir` when `plugins.cache_compiled`).
pub fn plugin_host(config: &Config) -> Result<PluginHost, AppError> {
    let cache = config
        .plugins
        .cache_compiled
        .then(|| config.data_dir.join("plugin-cache"));
    Ok(PluginHost::new(config.plugins.clone(), cache)?)
}

/// Loads every pipeline's strategies (checking params against their
/// schemas) into stages. Reports every problem, each naming its pipeline.
pub fn build_stages(config: &Config, host: &PluginHost) -> Result<HashMap<String, Stage>, AppError> {
    let mut stages = HashMap::new();
    let mut problems = Vec::new();
    for (name, pipeline) in &config.pipelines {
        let mut links: Vec<Arc<dyn Strategy>> = Vec::new();
        for setting in &pipeline.strategy.0 {
            match host.load_setting(setting) {
                Ok(strategy) => links.push(Arc::new(strategy)),
                Err(e) => problems.push(format!("pipelines.{name}.strategy: {e}")),
            }
        }
        if links.len() != pipeline.strategy.0.len() {
            continue;
        }
        match Chain::new(links, pipeline.params.clone()) {
            Ok(chain) => {
                for id in chain.strategies() {
                    tracing::info!(pipeline = name, plugin = id.name, sha256 = id.sha256, "strategy loaded");
                    telemetry::event::plugin_loaded(&id.name, &PluginError::REASONS);
                }
                stages.insert(
                    name.clone(),
                    Stage {
                        chain,
                        quote_timeout: pipeline.quote_timeout.0,
                        execute_timeout: pipeline.execute_timeout.0,
                    },
                );
            }
            Err(bad) => problems.extend(bad.into_iter().map(|p| format!("pipelines.{name}.{p}"))),
        }
    }
    if problems.is_empty() {
        Ok(stages)
    } else {
        Err(AppError::Strategies(problems))
    }
}

/// Reloads every pipeline's strategies from `sources`. Everything is
/// loaded and checked first; on any problem nothing changes and the error
/// says why. Orders already running keep the stage they started with.
/// Other changed keys wait for a restart (a changed `[plugins]` is logged).
pub fn reload(sources: &Sources, host: &PluginHost, pipeline: &Pipeline) -> Result<Config, AppError> {
    let config = sources.load()?;
    let stages = build_stages(&config, host)?;
    if &config.plugins != host.limits() {
        tracing::warn!("[plugins] settings changed; they apply at the next restart");
    }
    let loaded: Vec<String> = stages
        .iter()
        .map(|(name, stage)| {
            let chain: Vec<String> = stage
                .chain
                .strategies()
                .map(|id| format!("{}@{}", id.name, &id.sha256[..12]))
                .collect();
            format!("{name}: {}", chain.join(" → "))
        })
        .collect();
    pipeline.replace_stages(stages);
    tracing::info!(pipelines = %loaded.join("; "), "strategies reloaded");
    Ok(config)
}

/// The files whose change triggers a reload: the config files on disk and
/// every module file (with its sidecar schema) the pipelines name.
fn watched_files(sources: &Sources, config: &Config) -> Vec<std::path::PathBuf> {
    let mut files = sources.files_on_disk();
    files.extend(plugins::files_of(
        config
            .pipelines
            .values()
            .flat_map(|p| p.strategy.0.iter().map(String::as_str)),
    ));
    files
}

/// Reloads on SIGHUP and when a watched file changes (debounced), until
/// `shutdown`. A refused reload is logged with its reason; the previous
/// strategies keep serving.
async fn reload_loop(
    sources: Sources,
    host: PluginHost,
    pipeline: Arc<Pipeline>,
    config: Config,
    shutdown: CancellationToken,
) {
    let interval = config.plugins.watch_interval.0;
    let mut watch = FileWatch::new(watched_files(&sources, &config));
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler; reload by file change only");
            None
        }
    };
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<Option<()>>();
        let trigger = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = signalled => "SIGHUP".to_owned(),
            _ = tokio::time::sleep(interval), if !interval.is_zero() => {
                if watch.changed().is_empty() {
                    continue;
                }
                let changed = watch.settle(interval).await;
                let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
                format!("changed {}", names.join(", "))
            }
        };
        tracing::info!(trigger, "reloading strategies");
        let (sources, host, pipeline) = (sources.clone(), host.clone(), pipeline.clone());
        // Loading compiles modules: keep it off the async workers.
        let outcome = tokio::task::spawn_blocking(move || {
            let result = reload(&sources, &host, &pipeline);
            (result, sources)
        })
        .await;
        match outcome {
            Ok((Ok(config), sources)) => {
                telemetry::event::plugin_reload(true);
                watch = FileWatch::new(watched_files(&sources, &config));
            }
            Ok((Err(e), _)) => {
                telemetry::event::plugin_reload(false);
                tracing::error!(trigger, reason = %e, "reload refused; the previous strategies keep serving")
            }
            Err(e) => {
                telemetry::event::plugin_reload(false);
                tracing::error!(trigger, error = %e, "reload task failed; the previous strategies keep serving")
            }
        }
    }
}

/// Applies pending migrations; returns the versions applied. In Redis
/// cluster mode (when the queue or the bus uses Redis) first checks that the
/// cluster is usable ([`queue::pool::check_cluster`]), naming each node that
/// failed.
pub async fn migrate(config: &Config) -> Result<Vec<u32>, AppError> {
    check_redis_cluster(config).await?;
    Ok(open_store(config)?.store.migrate().await?)
}

/// How long `/health` and `/ready` wait for one backend check: the longest
/// a call of a configured backend may take by its own deadlines (a pool
/// checkout, then the command), at least 2 s. A shorter probe would cut
/// healthy calls short under load and report a backend down that is not.
fn probe_timeout(config: &Config) -> std::time::Duration {
    let mut within = std::time::Duration::from_secs(2);
    if config.store.backend == StoreBackend::Postgres {
        let pg = &config.postgres;
        within = within.max(pg.pool_wait_timeout.0 + pg.connect_timeout.0 + pg.query_timeout.0);
    }
    if config.queue.backend == QueueBackend::Redis || config.bus.backend == BusBackend::Redis {
        let redis = &config.redis;
        within = within.max(redis.pool_wait_timeout.0 + redis.connect_timeout.0 + redis.command_timeout.0);
    }
    within
}

/// In Redis cluster mode, when Redis is used: errors when no seed node
/// says the cluster is ok; logs each other node problem as a warning.
async fn check_redis_cluster(config: &Config) -> Result<(), AppError> {
    let uses_redis = config.queue.backend == QueueBackend::Redis || config.bus.backend == BusBackend::Redis;
    if !uses_redis || config.redis.mode != RedisMode::Cluster {
        return Ok(());
    }
    for warning in queue::pool::check_cluster(&config.redis).await? {
        tracing::warn!(%warning, "Redis Cluster");
    }
    Ok(())
}

/// The simulated chain of `[chain]` and `[venues]` over `store`, on
/// `clock` (the system clock in the engine; tests may pass another). Its
/// state is written to the store on its first call.
pub fn simulated_chain(
    config: &Config,
    store: Arc<dyn ChainStore>,
    clock: Arc<dyn Clock>,
) -> Result<Arc<SimulatedChain>, AppError> {
    let tokens = config.token_registry()?;
    Ok(Arc::new(SimulatedChain::new(
        &config.chain,
        &config.venues,
        &tokens,
        store,
        clock,
    )?))
}

/// The chain's durable state in the configured store, for `swapline chain
/// …`: migrates first when `store.migrate_on_start` (as `serve` would).
pub async fn chain_store(config: &Config) -> Result<Arc<dyn ChainStore>, AppError> {
    let opened = open_store(config)?;
    if config.store.migrate_on_start {
        opened.store.migrate().await?;
    }
    Ok(opened.chain)
}

/// API keys in the configured store, for `swapline keys …`: migrates first
/// when `store.migrate_on_start` (as `serve` would), so keys can be created
/// before the first start.
pub async fn keys(config: &Config) -> Result<Keys, AppError> {
    let store = open_store(config)?.store;
    if config.store.migrate_on_start {
        store.migrate().await?;
    }
    Ok(Keys::new(store).with_cache(config.auth.key_cache_ttl.0))
}

fn redis_pool(config: &RedisConfig) -> Result<queue::redis::Pool, AppError> {
    queue::redis::pool(config).map_err(|e| AppError::RedisUrl(e.to_string()))
}

/// The standalone bus publisher's pool.
fn deadpool_redis_pool(config: &RedisConfig) -> Result<deadpool_redis::Pool, AppError> {
    match redis_pool(config)? {
        queue::redis::Pool::Standalone(pool) => Ok(pool),
        queue::redis::Pool::Cluster(_) => Err(AppError::RedisUrl("a cluster pool for a standalone bus".into())),
    }
}

/// A name for this process in the Redis consumer group.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into());
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &nonce[..8])
}

impl Engine {
    /// Builds every part; migrates when `store.migrate_on_start`. The
    /// configuration must have passed [`crate::config::validate`].
    pub async fn build(config: Config) -> Result<Self, AppError> {
        let tokens = Arc::new(config.token_registry()?);
        let StoreAndChain {
            store,
            chain: chain_state,
        } = open_store(&config)?;
        if config.store.migrate_on_start {
            let applied = store.migrate().await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "store migrated");
            }
        } else {
            let pending = store.pending_migrations().await?;
            if !pending.is_empty() {
                return Err(AppError::PendingMigrations(pending));
            }
        }

        check_redis_cluster(&config).await?;
        let redis = &config.redis;
        let uses_redis = config.queue.backend == QueueBackend::Redis || config.bus.backend == BusBackend::Redis;
        // The queue (with the rate limit) and the publisher use pools of their
        // own, so a burst of publishes never waits behind blocking reads.
        let queue_pool = uses_redis.then(|| redis_pool(redis)).transpose()?;
        type Limits = (Arc<dyn Queue>, Arc<dyn RateLimit>, Arc<dyn RequestLimit>);
        let (queue, rate_limit, request_limit): Limits = match (config.queue.backend, &queue_pool) {
            (QueueBackend::Redis, Some(pool)) => {
                let queue = RedisQueue::partitioned(
                    pool.clone(),
                    &redis.key_prefix,
                    consumer_name(),
                    config.worker.lease.0,
                    config.queue.partitions,
                );
                if let Err(e) = queue.ensure_group().await {
                    tracing::warn!(error = %e, "Redis is not reachable yet; the queue connects when it is");
                }
                let limit = RedisRateLimit::new(pool.clone(), &redis.key_prefix, config.worker.rate_limit_per_minute);
                let requests = RedisRequestLimit::new(pool.clone(), &redis.key_prefix);
                (Arc::new(queue), Arc::new(limit), Arc::new(requests))
            }
            _ => (
                Arc::new(MemoryQueue::new(config.worker.lease.0)),
                Arc::new(MemoryRateLimit::new(config.worker.rate_limit_per_minute)),
                Arc::new(MemoryRequestLimit::new()),
            ),
        };
        let bus_stop = CancellationToken::new();
        let (bus, bus_stream): (Arc<dyn Bus>, bus::Stream) = match config.bus.backend {
            BusBackend::Memory => {
                let (bus, stream) = MemoryBus::new(config.bus.buffer);
                (Arc::new(bus), stream)
            }
            BusBackend::Redis => {
                let health = SubscriberHealth {
                    interval: config.bus.health_interval.0,
                    timeout: config.bus.health_timeout.0,
                };
                let (bus, stream) = match redis.mode {
                    RedisMode::Standalone => {
                        let info =
                            queue::redis::connection_info(redis).map_err(|e| AppError::RedisUrl(e.to_string()))?;
                        let client =
                            deadpool_redis::redis::Client::open(info).map_err(|e| AppError::RedisUrl(e.to_string()))?;
                        RedisBus::new(
                            client,
                            deadpool_redis_pool(redis)?,
                            &redis.key_prefix,
                            config.bus.buffer,
                            health,
                            bus_stop.clone(),
                        )
                    }
                    RedisMode::Cluster => {
                        let publisher = queue::pool::cluster_client(redis, None).map_err(AppError::RedisUrl)?;
                        let settings = redis.clone();
                        let subscriber: bus::PushClient =
                            Box::new(move |pushes| queue::pool::cluster_client(&settings, Some(pushes)));
                        RedisBus::cluster(
                            subscriber,
                            publisher,
                            redis.connect_timeout.0,
                            &redis.key_prefix,
                            config.bus.buffer,
                            health,
                            bus_stop.clone(),
                        )
                    }
                };
                (Arc::new(bus), stream)
            }
        };

        let simulated_chain = simulated_chain(&config, chain_state, Arc::new(SystemClock))?;
        let names: BTreeSet<&str> = config.venues.pools.iter().map(|p| p.venue()).collect();
        let mut venues: Vec<Arc<dyn Venue>> = Vec::new();
        for name in names {
            let venue = SimulatedVenue::from_config(name, &config.venues, &tokens)?.on_chain(simulated_chain.clone());
            venues.push(Arc::new(venue));
        }

        let host = plugin_host(&config)?;
        let stages = build_stages(&config, &host)?;
        let settings = PipelineSettings {
            retry: RetryPolicy::from_config(&config.retry)?,
            requote_after: config.retry.requote_after.0,
            landing: config.chain.clone(),
        };
        let recorder = Recorder::new(store.clone(), bus.clone());
        let chain: Arc<dyn ChainRpc> = simulated_chain.clone();
        let pipeline = Pipeline::new(
            settings,
            recorder,
            venues.clone(),
            chain.clone(),
            stages,
            tokens.clone(),
        );
        Ok(Engine {
            config,
            store,
            queue,
            rate_limit,
            request_limit,
            bus,
            bus_stream: Some(bus_stream),
            bus_stop,
            tokens,
            venues,
            chain,
            simulated_chain,
            pipeline: Arc::new(pipeline),
            host,
        })
    }

    /// The chain the engine lands transactions on.
    pub fn chain(&self) -> Arc<dyn ChainRpc> {
        self.chain.clone()
    }

    /// Re-enqueues every unfinished order: nothing acknowledged is lost
    /// across a restart. Returns how many.
    pub async fn recover(&self) -> Result<usize, AppError> {
        Ok(requeue_unfinished(self.store.as_ref(), self.queue.as_ref(), "recovered").await?)
    }

    fn pairs(&self) -> HashSet<(String, String)> {
        let mut pairs = HashSet::new();
        for a in self.tokens.iter() {
            for b in self.tokens.iter() {
                if a.symbol != b.symbol && self.venues.iter().any(|v| v.supports(&a.symbol, &b.symbol)) {
                    pairs.insert((a.symbol.clone(), b.symbol.clone()));
                }
            }
        }
        pairs
    }
}

/// Runs the engine in `role` until `shutdown` resolves, then drains.
pub async fn run(config: Config, role: Role, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
    run_with_reload(config, role, shutdown, None).await
}

/// [`run`], and with `reload` (where `config` came from) the pipelines'
/// strategies reload on SIGHUP and when a config or plugin file changes.
pub async fn run_with_reload(
    config: Config,
    role: Role,
    shutdown: impl Future<Output = ()>,
    reload: Option<Sources>,
) -> Result<(), AppError> {
    // The same check `swapline config check` runs, so both refuse alike.
    validate_for(&config, role).map_err(AppError::Invalid)?;
    if config.metrics.enabled {
        telemetry::metrics();
    }
    let mut engine = Engine::build(config).await?;
    let config = engine.config.clone();
    let grace = config.server.shutdown_grace.0;
    let token = CancellationToken::new();
    let tasks = TaskTracker::new();

    let monitor = Monitor {
        store: engine.store.clone(),
        queue: engine.queue.clone(),
        bus: engine.bus.clone(),
        interval: config.monitor.interval.0,
        stuck_after: config.monitor.stuck_after.0,
    };
    tasks.spawn(monitor.run(token.clone()));
    // Every process that runs the chain drives it: its tip follows the
    // wall clock, and what is due lands, whether or not anyone asks.
    tasks.spawn(engine.simulated_chain.clone().drive(token.clone()));
    if config.metrics.enabled && !config.metrics.listen.is_empty() {
        let addr: SocketAddr = config
            .metrics
            .listen
            .parse()
            .map_err(|e| AppError::Invalid(vec![format!("metrics.listen: {e}")]))?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| AppError::Bind { addr, error })?;
        tracing::info!(%addr, "metrics listening");
        tasks.spawn(api::serve_metrics(listener, token.clone()));
    }

    let with_worker = match role {
        Role::Serve { with_worker } => with_worker,
        Role::Worker => true,
    };
    if with_worker {
        match engine.recover().await {
            Ok(0) => {}
            Ok(recovered) => tracing::info!(recovered, "re-enqueued unfinished orders"),
            // The reconciler tries again when the queue is back.
            Err(e) => tracing::warn!(error = %e, "could not re-enqueue unfinished orders at start"),
        }
        if config.reconciler.enabled {
            tasks.spawn(reconcile(
                engine.store.clone(),
                engine.queue.clone(),
                config.reconciler.interval.0,
                token.clone(),
            ));
        }
        if let Some(sources) = reload {
            tasks.spawn(reload_loop(
                sources,
                engine.host.clone(),
                engine.pipeline.clone(),
                config.clone(),
                token.clone(),
            ));
        }
        let worker = Worker {
            pipeline: engine.pipeline.clone(),
            queue: engine.queue.clone(),
            rate_limit: engine.rate_limit.clone(),
            concurrency: config.worker.concurrency,
            lease: config.worker.lease.0,
            stall_timeout: config.worker.stall_timeout.0,
        };
        tasks.spawn(worker.run(token.clone(), grace));
        if role == Role::Worker {
            // The machine-readable readiness line of a worker-only process.
            println!("swapline worker started");
        }
    }

    if let Role::Serve { .. } = role {
        let listener = TcpListener::bind(config.server.bind)
            .await
            .map_err(|error| AppError::Bind {
                addr: config.server.bind,
                error,
            })?;
        let addr = listener.local_addr().map_err(|error| AppError::Bind {
            addr: config.server.bind,
            error,
        })?;
        let hub = Hub::new(engine.bus.clone());
        if let Some(stream) = engine.bus_stream.take() {
            tasks.spawn(hub.clone().run(stream, token.clone()));
        }
        let stream_hub = api::StreamHub::new(engine.store.clone());
        tasks.spawn(stream_hub.clone().run(engine.bus.firehose(), token.clone()));
        let default_slippage_bps = config
            .orders
            .default_slippage_bps("orders")
            .map_err(|problem| AppError::Invalid(vec![problem]))?;
        let intake = Intake::new(
            Recorder::new(engine.store.clone(), engine.bus.clone()),
            engine.queue.clone(),
            engine.tokens.clone(),
            engine.pairs(),
            default_slippage_bps,
        )
        .with_default_ttl(config.orders.default_ttl.0)
        .with_idempotency(IdempotencySettings {
            ttl: config.orders.idempotency_ttl.0,
            wait: config.orders.idempotency_wait.0,
        })
        .with_request_limit(engine.request_limit.clone(), config.limits.orders_per_minute);
        // Keys expire by themselves (an expired key is free again); the
        // sweep only keeps the table small.
        let sweep_every = config
            .orders
            .idempotency_ttl
            .0
            .clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(60));
        tasks.spawn(sweep_keys(engine.store.clone(), sweep_every, token.clone()));
        let state = Arc::new(ApiState {
            store: engine.store.clone(),
            intake,
            keys: Keys::new(engine.store.clone()).with_cache(config.auth.key_cache_ttl.0),
            hub,
            stream: stream_hub,
            bus: engine.bus.clone(),
            tokens: engine.tokens.clone(),
            settings: ApiSettings {
                public_url: config.server.public_url.clone(),
                body_limit: config.server.body_limit_bytes,
                max_page_size: config.orders.max_page_size,
                ping_interval: config.websocket.ping_interval.0,
                ping_timeout: config.websocket.ping_timeout.0,
                client_buffer: config.websocket.client_buffer,
                subscribe_timeout: config.websocket.subscribe_timeout.0,
                metrics: config.metrics.enabled,
                header_read_timeout: config.server.header_read_timeout.0,
                keep_alive_timeout: config.server.keep_alive_timeout.0,
                max_connections: config.server.max_connections,
                ws_max_per_ip: config.websocket.max_per_ip,
                auth_required: config.auth.required,
                ticket_ttl: config.auth.ticket_ttl.0,
                allowed_origins: config.server.allowed_origins.clone(),
                require_idempotency_key: config.orders.require_idempotency_key,
                probe_timeout: probe_timeout(&config),
            },
            shutdown: token.clone(),
            sessions: TaskTracker::new(),
        });
        tracing::info!(%addr, worker = with_worker, "swapline listening");
        // One machine-readable line on stdout, for scripts and tests.
        println!("swapline listening on http://{addr}");
        tasks.spawn(api::serve(listener, state, grace));
    }

    shutdown.await;
    tracing::info!("shutting down");
    token.cancel();
    tasks.close();
    tasks.wait().await;
    engine.bus_stop.cancel();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::Dur, venues::PoolConfig};
    use std::time::Duration;

    fn dev(dir: &std::path::Path) -> Config {
        let mut config = Sources {
            profile: "dev".into(),
            config_dir: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs").into()),
            files: vec![],
            env: false,
        }
        .load()
        .expect("the dev profile loads");
        config.data_dir = dir.to_path_buf();
        config
    }

    /// A refused configuration: what is wrong, the role, the change.
    type Case = (&'static str, Role, fn(&mut Config));

    /// Every rule start-up enforces before it builds anything, as a config
    /// change and the role it is started in.
    fn refused_at_start() -> Vec<Case> {
        let serve = Role::Serve { with_worker: true };
        vec![
            ("a worker needs a shared queue", Role::Worker, |_| {}),
            (
                "serve without a worker needs a shared queue",
                Role::Serve { with_worker: false },
                |_| {},
            ),
            ("a DLMM pool with no price", serve, |c| {
                for pool in &mut c.venues.pools {
                    if let PoolConfig::Dlmm { price, .. } = pool {
                        *price = 0.0;
                    }
                }
            }),
            ("a reserve finer than its token", serve, |c| {
                for pool in &mut c.venues.pools {
                    if let PoolConfig::ConstantProduct { reserve_base, .. } = pool {
                        *reserve_base = "1.0000000000001".into();
                    }
                }
            }),
            ("a pool of an unlisted token", serve, |c| {
                c.tokens.retain(|t| t.symbol != "USDT")
            }),
            ("a backoff that starts above its ceiling", serve, |c| {
                c.retry.initial = Dur(Duration::from_secs(60));
                c.retry.max_delay = Dur(Duration::from_secs(1));
            }),
            ("too few instance slots", serve, |c| {
                c.worker.concurrency = 8;
                c.plugins.pooled_instances = 8;
            }),
            ("a default slippage finer than a basis point", serve, |c| {
                c.orders.default_slippage = 0.125
            }),
            ("a metrics address that is not one", serve, |c| {
                c.metrics.listen = "localhost".into()
            }),
            ("no market pipeline", serve, |c| c.pipelines.clear()),
            ("a WebSocket ticket that never lives", serve, |c| {
                c.auth.ticket_ttl = Dur(Duration::ZERO)
            }),
            ("an allowed origin with a path", serve, |c| {
                c.server.allowed_origins = vec!["https://app.example.com/".into()]
            }),
        ]
    }

    #[tokio::test]
    async fn config_check_refuses_what_start_up_refuses_with_the_same_words() {
        for (case, role, change) in refused_at_start() {
            let dir = tempfile::tempdir().unwrap();
            let mut config = dev(dir.path());
            change(&mut config);
            // `swapline config check` runs exactly this.
            let problems = validate_for(&config, role).expect_err(case);
            let checked = AppError::Invalid(problems).to_string();
            let started = run(config, role, std::future::ready(()))
                .await
                .expect_err(case)
                .to_string();
            assert_eq!(started, checked, "{case}");
            assert!(
                !dir.path().join("swapline.db").exists(),
                "{case}: start-up refused before touching the store"
            );
        }
    }

    #[test]
    fn a_valid_configuration_passes_for_the_roles_it_suits() {
        let dir = tempfile::tempdir().unwrap();
        let config = dev(dir.path());
        assert_eq!(validate_for(&config, Role::Serve { with_worker: true }), Ok(()));
        assert!(
            validate_for(&config, Role::Worker).is_err(),
            "dev has an in-process queue"
        );
    }
}
