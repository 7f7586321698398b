#!/usr/bin/env bash
# Reproduces the figures in ops/benchmarks.md: orders/s and latency on the
# bench profile (embedded, then Redis + PostgreSQL), WebSocket fan-out, RSS.
# Needs a release build (cargo build --release), Redis on 127.0.0.1:6379 and
# PostgreSQL on 127.0.0.1:5432 (trust auth). Loopback only; bounded runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/swapline}
WORK=$(mktemp -d)
NAME=bench_$$
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true;
      psql -qh 127.0.0.1 -U postgres -c "DROP SCHEMA IF EXISTS $NAME CASCADE" postgres >/dev/null 2>&1 || true;
      redis-cli -h 127.0.0.1 --scan --pattern "$NAME:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true;
      rm -rf "$WORK"' EXIT
# 10,000 sockets per process: raise the soft limit to the hard one (20,000 here).
ulimit -n "$(ulimit -Hn)"

start() { # start NAME ARGS... : runs the engine, waits for its address
  local log=$WORK/$1.log; shift
  "$BIN" "$@" > "$log.out" 2> "$log" &
  for _ in $(seq 1 200); do grep -q "listening on" "$log.out" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/swapline listening on //p' "$log.out"
}
rss() { awk '/VmRSS/ {printf "%.1f MiB\n", $2/1024}' "/proc/$1/status"; }

cat > "$WORK/embedded.toml" <<TOML
data_dir = "$WORK/data"
[server]
bind = "127.0.0.1:0"
TOML
cat > "$WORK/production.toml" <<TOML
data_dir = "$WORK/data-prod"
[server]
bind = "127.0.0.1:0"
[store]
backend = "postgres"
[queue]
backend = "redis"
[bus]
backend = "redis"
[postgres]
schema = "$NAME"
pool_size = 32
[redis]
key_prefix = "$NAME"
pool_size = 32
TOML

for backend in embedded production; do
  echo "== orders, bench profile, $backend backends"
  url=$(start "$backend" --profile bench --config "$WORK/$backend.toml" serve)
  pid=$(pgrep -n -f "$WORK/$backend.toml")
  echo "RSS idle: $(rss $pid)"
  "$BIN" loadtest orders --url "$url" --count 1000 --concurrency 64
  echo "-- the same, with an Idempotency-Key on every order"
  "$BIN" loadtest orders --url "$url" --count 1000 --concurrency 64 --idempotency-keys
  "$BIN" loadtest orders --url "$url" --count 2000 --rate 100 --concurrency 512
  echo "RSS after: $(rss $pid)"
  kill $pid; wait $pid 2>/dev/null || true
done

fanout() { # fanout LATENCY CLIENTS ORDERS
  cp "$WORK/embedded.toml" "$WORK/fanout.toml"
  printf '[venues]\nexecute_latency_min = "%s"\nexecute_latency_max = "%s"\n' "$1" "$1" >> "$WORK/fanout.toml"
  rm -rf "$WORK/data"
  local url pid
  url=$(start "fanout-$3" --profile bench --config "$WORK/fanout.toml" serve)
  pid=$(pgrep -n -f "$WORK/fanout.toml")
  echo "== fan-out: $2 clients over $3 orders (executions take $1, so events arrive live)"
  echo "RSS idle: $(rss "$pid")"
  ( sleep 8; echo "RSS with the sockets open: $(rss "$pid")" ) &
  "$BIN" loadtest fanout --url "$url" --clients "$2" --orders "$3" --connect-concurrency 512 --timeout 180s
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
fanout 15s 10000 1
fanout 3s 10000 1000
