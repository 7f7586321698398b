#!/usr/bin/env bash
# What trusted intake costs (issue 9's benchmark): closed-loop orders/s and
# engine CPU per order, on the bench profile, each backend, first as the
# README's curl sends orders (no key, no Idempotency-Key), then with
# `auth.required = true`, an API key on every request and upgrade, and a
# fresh Idempotency-Key on every order. CPU per order is the process CPU
# time (utime + stime from /proc) of the engine plus, on Redis + PostgreSQL,
# every postgres and redis-server process, divided by the orders.
# Needs a release build, Redis on 127.0.0.1:6379 and PostgreSQL on
# 127.0.0.1:5432 (trust auth). Loopback only; bounded runs.
#   bash ops/bench-intake.sh [ORDERS]      (default 2000, 64 in flight)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/swapline}
COUNT=${1:-2000}
WORK=$(mktemp -d)
NAME=bench_intake_$$
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true;
      psql -qh 127.0.0.1 -U postgres -c "DROP SCHEMA IF EXISTS $NAME CASCADE" postgres >/dev/null 2>&1 || true;
      redis-cli -h 127.0.0.1 --scan --pattern "$NAME:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true;
      rm -rf "$WORK"' EXIT
TICKS=$(getconf CLK_TCK)

# cpu PIDS...: their utime + stime, in clock ticks.
cpu() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0; done | awk '{s += $1} END {print s + 0}'; }
services() { pgrep -x postgres || true; pgrep -x redis-server || true; }

start() { # start NAME ARGS... : runs the engine, prints its address
  local log=$WORK/$1.log; shift
  "$BIN" "$@" > "$log.out" 2> "$log" &
  for _ in $(seq 1 200); do grep -q "listening on" "$log.out" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/swapline listening on //p' "$log.out"
}

cat > "$WORK/embedded.toml" <<TOML
data_dir = "$WORK/data"
[server]
bind = "127.0.0.1:0"
[limits]
orders_per_minute = 0
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
[limits]
orders_per_minute = 0
TOML

run() { # run BACKEND MODE
  local backend=$1 mode=$2 url pid args=() before after orders
  local config="$WORK/$backend.toml"
  if [ "$mode" = trusted ]; then
    cp "$config" "$WORK/$backend-trusted.toml"; config="$WORK/$backend-trusted.toml"
    printf '[auth]\nrequired = true\n' >> "$config"
    local secret
    secret=$("$BIN" --profile bench --config "$config" keys create --name bench --scopes trade,read --json |
      sed -n 's/.*"secret": *"\([^"]*\)".*/\1/p')
    args=(--api-key "$secret" --idempotency-keys)
  fi
  url=$(start "$backend-$mode" --profile bench --config "$config" serve)
  pid=$(pgrep -n -f "$config")
  # Warm up (plugin instances, pools, caches), then measure.
  "$BIN" loadtest orders --url "$url" --count 200 --concurrency 64 "${args[@]}" > /dev/null
  if [ "$backend" = production ]; then before=$(cpu "$pid" $(services)); else before=$(cpu "$pid"); fi
  "$BIN" loadtest orders --url "$url" --count "$COUNT" --concurrency 64 "${args[@]}" --json > "$WORK/report.json"
  if [ "$backend" = production ]; then after=$(cpu "$pid" $(services)); else after=$(cpu "$pid"); fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$WORK/report.json" "$before" "$after" "$TICKS" "$COUNT" "$backend" "$mode" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
before, after, ticks, count = (float(x) for x in sys.argv[2:6])
rate = report["ordersPerSecond"]
clean = not report["errors"] and report["sequenceErrors"] == 0 and report["unfinished"] == 0
print(f"{sys.argv[6]:<10} {sys.argv[7]:<8} orders/s {rate:8.1f}   CPU/order {1000 * (after - before) / ticks / count:6.3f} ms"
      f"   clean {clean}")
PY
}

for backend in embedded production; do
  for mode in plain trusted; do
    run "$backend" "$mode"
  done
done
