#!/usr/bin/env bash
# What trusted intake costs (issue 9's benchmark): closed-loop orders/s and
# engine CPU per order, on the bench profile, each backend, first as the
# README's curl sends orders (no key, no Idempotency-Key), then with
# `auth.required = true`, an API key on every request and upgrade, and a
# fresh Idempotency-Key on every order. CPU per order is the process CPU
# time (utime + stime from /proc) of the engine plus, on Redis + PostgreSQL,
# every postgres and redis-server process, divided by the orders.
# Every run starts on an empty store (its own SQLite file, PostgreSQL
# schema and Redis prefix), so neither mode runs on the other's rows; the
# modes alternate over ROUNDS rounds (plain first in odd rounds, trusted
# first in even ones) and the summary gives each mode's median and the
# trusted run's difference, as one run varies by up to 15 %.
# Needs a release build, Redis on 127.0.0.1:6379 and PostgreSQL on
# 127.0.0.1:5432 (trust auth). Loopback only; bounded runs.
#   bash ops/bench-intake.sh [ORDERS]      (default 2000, 64 in flight)
#   ROUNDS=3 (default); BACKENDS="embedded production" (default) picks
#   the backends to run
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/swapline}
COUNT=${1:-2000}
ROUNDS=${ROUNDS:-3}
BACKENDS=${BACKENDS:-embedded production}
WORK=$(mktemp -d)
NAME=bench_intake_$$
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true;
      for s in $(psql -qAtX -h 127.0.0.1 -U postgres -c "SELECT nspname FROM pg_namespace WHERE nspname LIKE '"'"'${NAME}%'"'"'" postgres 2>/dev/null); do
        psql -qh 127.0.0.1 -U postgres -c "DROP SCHEMA IF EXISTS $s CASCADE" postgres >/dev/null 2>&1 || true; done;
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

# config BACKEND RUN : a fresh store for one run
config() {
  if [ "$1" = embedded ]; then cat <<TOML
data_dir = "$WORK/data-$2"
[server]
bind = "127.0.0.1:0"
[limits]
orders_per_minute = 0
TOML
  else cat <<TOML
data_dir = "$WORK/data-prod-$2"
[server]
bind = "127.0.0.1:0"
[store]
backend = "postgres"
[queue]
backend = "redis"
[bus]
backend = "redis"
[postgres]
schema = "${NAME}_$2"
pool_size = 32
[redis]
key_prefix = "$NAME:$2"
pool_size = 32
[limits]
orders_per_minute = 0
TOML
  fi
}

run() { # run BACKEND MODE ROUND
  local backend=$1 mode=$2 url pid args=() before after orders
  local config="$WORK/$backend-$mode-$3.toml"
  config "$backend" "${mode}_$3" > "$config"
  if [ "$mode" = trusted ]; then
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
  python3 - "$WORK/report.json" "$before" "$after" "$TICKS" "$COUNT" "$backend" "$mode" "$WORK/results" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
before, after, ticks, count = (float(x) for x in sys.argv[2:6])
rate = report["ordersPerSecond"]
cpu = 1000 * (after - before) / ticks / count
clean = not report["errors"] and report["sequenceErrors"] == 0 and report["unfinished"] == 0
print(f"{sys.argv[6]:<10} {sys.argv[7]:<8} orders/s {rate:8.1f}   CPU/order {cpu:6.3f} ms   clean {clean}")
with open(sys.argv[8], "a") as out:
    out.write(f"{sys.argv[6]} {sys.argv[7]} {rate} {cpu} {int(clean)}\n")
PY
}

for backend in $BACKENDS; do
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then modes="plain trusted"; else modes="trusted plain"; fi
    for mode in $modes; do
      run "$backend" "$mode" "$round"
    done
  done
done

echo "== medians over $ROUNDS rounds (trusted against plain; target: within 5 %)"
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for backend in ("embedded", "production"):
    if not any(r[0] == backend for r in rows):
        continue
    med = {}
    for mode in ("plain", "trusted"):
        runs = [r for r in rows if r[0] == backend and r[1] == mode]
        med[mode] = (statistics.median(float(r[2]) for r in runs), statistics.median(float(r[3]) for r in runs))
        print(f"{backend:<10} {mode:<8} orders/s {med[mode][0]:8.1f}   CPU/order {med[mode][1]:6.3f} ms   ({len(runs)} runs)")
    rate = 100 * (med["trusted"][0] / med["plain"][0] - 1)
    cpu = 100 * (med["trusted"][1] / med["plain"][1] - 1)
    verdict = "met" if rate >= -5 and cpu <= 5 else "MISSED"
    print(f"{backend:<10} trusted  orders/s {rate:+.1f} %, CPU/order {cpu:+.1f} %   (within 5 %: {verdict})")
if not all(r[4] == "1" for r in rows):
    print("some runs were not clean (errors, sequence gaps or unfinished orders)")
    sys.exit(1)
PY
