//! One routing call through the wasm host: `best-price` and `split`, with 2
//! and 8 venues, warm (module loaded, instances from the pooling allocator)
//! and cold (load from the in-memory compiled-module cache, link,
//! pre-instantiate, ABI and params-schema calls, then the call, with
//! on-demand instance allocation), plus instantiation alone.
//!
//! `cargo bench -p swapline --bench strategy`; figures in ops/benchmarks.md.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::{hint::black_box, time::Duration};
use swapline::{
    domain::Dur,
    plugins::{PluginHost, PluginsConfig, resolve},
};
use swapline_abi::{
    Bin, PoolState, RouteInput, Units,
    testing::{QuoteBuilder, RouteInputBuilder},
};

fn limits(pooled_instances: u32) -> PluginsConfig {
    PluginsConfig {
        fuel: 500_000_000,
        deadline: Dur(Duration::from_secs(5)),
        memory_limit_bytes: 32 << 20,
        max_module_bytes: 8 << 20,
        max_output_bytes: 1 << 20,
        log_lines_per_call: 20,
        log_line_max_bytes: 1024,
        log_lines_per_second: 0,
        compile_timeout: Dur(Duration::from_secs(60)),
        cache_compiled: false,
        pooled_instances,
        watch_interval: Dur(Duration::ZERO),
    }
}

/// `venues` quotes for a 20,000 SOL order (large enough for `split` to
/// split), alternating constant-product and 101-bin pools (the default
/// config's shape) of different depths, the bins trimmed to those the order
/// reaches as the pipeline does; with `bins = false`, constant-product pools
/// only.
fn input(venues: usize, bins: bool) -> RouteInput {
    let amount = 20_000_000_000_000u128;
    let quotes = (0..venues)
        .map(|i| {
            let depth = 1 + i as u128 % 3;
            let pool = if i % 2 == 0 || !bins {
                PoolState::ConstantProduct {
                    reserve_in: Units(100_000_000_000_000 * depth),
                    reserve_out: Units(15_000_000_000_000 * depth),
                    fee_bps: 25,
                }
            } else {
                PoolState::Bins {
                    bins: (0..101)
                        .map(|b| Bin {
                            price: 0.1501 * (1.0 - 0.001 * b as f64),
                            liquidity_out: Units(300_000_000_000 * depth),
                        })
                        .collect(),
                    base_fee_bps: 20,
                    variable_fee_bps: 1,
                    max_fee_bps: 200,
                }
            };
            // As the pipeline sends it: only the bins the order can reach.
            let pool = pool.reachable(amount);
            assert!(pool.swap(amount).is_some(), "the pools fill the order");
            QuoteBuilder::new(format!("venue{i}"))
                .pool(pool)
                .quoted_for(amount)
                .latency_ms(3)
                .build()
        })
        .collect::<Vec<_>>();
    RouteInputBuilder::new()
        .id("00000000-0000-4000-8000-000000000000")
        .pair("SOL", "USDC")
        .amount_in(amount)
        .slippage_bps(50)
        .quotes(quotes)
        .build()
}

fn routing(c: &mut Criterion) {
    let pooled = PluginHost::new(limits(128), None).expect("host");
    let on_demand = PluginHost::new(limits(0), None).expect("host");
    let mut group = c.benchmark_group("route");
    for name in ["best-price", "split"] {
        let module = resolve(name).expect("built-in");
        let warm = pooled.load(name, &module.bytes).expect("loads");
        // Prime the in-memory compiled-module cache: cold measures a reload,
        // not Cranelift.
        on_demand.load(name, &module.bytes).expect("loads");
        for venues in [2, 8] {
            let input = input(venues, true);
            let (decision, report) = warm.route_blocking(&input);
            let decision = decision.expect("routes");
            let bytes = warm.encode_input(&input).expect("encodes").len();
            eprintln!(
                "{name} with {venues} venues: {bytes} B of ABI v{} input, {} legs, {} fuel",
                warm.abi(),
                decision.legs.len(),
                report.fuel_used
            );
            let small = self::input(venues, false);
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/warm-cp-only"), venues),
                &small,
                |b, input| b.iter(|| black_box(warm.route_blocking(input).0.expect("routes"))),
            );
            group.bench_with_input(BenchmarkId::new(format!("{name}/warm"), venues), &input, |b, input| {
                b.iter(|| black_box(warm.route_blocking(input).0.expect("routes")))
            });
            group.bench_with_input(BenchmarkId::new(format!("{name}/cold"), venues), &input, |b, input| {
                b.iter(|| {
                    let strategy = on_demand.load(name, &module.bytes).expect("loads");
                    black_box(strategy.route_blocking(input).0.expect("routes"))
                })
            });
        }
        group.bench_function(BenchmarkId::new(format!("{name}/instantiate"), "pooled"), |b| {
            b.iter(|| warm.instantiate().expect("instantiates"))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = routing
}
criterion_main!(benches);
