#!/usr/bin/env bash
# Reproduces the figures in ops/benchmarks.md: orders/s, latency and CPU per
# order on the bench profile (embedded, then Redis + PostgreSQL), WebSocket
# fan-out and memory per socket; prints each performance target beside its
# figure.
# The strategy call is criterion's (cargo bench -p swapline --bench strategy,
# warm calls only; it builds the bench profile the first time).
# SKIP_FANOUT=1 and SKIP_STRATEGY=1 leave those parts out; COUNT sets the
# orders of the order benchmarks;
# EXTRA_CONFIG is TOML appended to every engine config (say, to run an older
# build with today's bench settings).
# Needs a release build (cargo build --release), Redis on 127.0.0.1:6379 and
# PostgreSQL on 127.0.0.1:5432 (trust auth). Loopback only; bounded runs.
#
# CPU per order is process CPU time (utime + stime from /proc/PID/stat, plus
# the CPU of reaped children, which is how PostgreSQL's finished backends are
# counted) summed over the engine, every postgres process and redis-server,
# divided by the orders of the run; the load generator is not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/swapline}
WORK=$(mktemp -d)
NAME=bench_$$
COUNT=${COUNT:-2000}
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true;
      psql -qh 127.0.0.1 -U postgres -c "DROP SCHEMA IF EXISTS $NAME CASCADE" postgres >/dev/null 2>&1 || true;
      redis-cli -h 127.0.0.1 --scan --pattern "$NAME:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true;
      rm -rf "$WORK"' EXIT
# 10,000 sockets per process: raise the soft limit to the hard one (20,000 here).
ulimit -n "$(ulimit -Hn)"
HZ=$(getconf CLK_TCK)

start() { # start NAME ARGS... : runs the engine, waits for its address
  local log=$WORK/$1.log; shift
  "$BIN" "$@" > "$log.out" 2> "$log" &
  for _ in $(seq 1 200); do grep -q "listening on" "$log.out" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/swapline listening on //p' "$log.out"
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
rss() { awk '/VmRSS/ {printf "%.1f MiB\n", $2/1024}' "/proc/$1/status"; }
ticks() { # ticks PID... : CPU clock ticks used by these processes and their reaped children
  local total=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    # Fields after the ")" of the command name: utime is the 12th, then
    # stime, cutime, cstime.
    total=$((total + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13 + $14 + $15}')))
  done
  echo "$total"
}
service_pids() { pgrep -x postgres || true; pgrep -x redis-server || true; }
# check LABEL VALUE OP TARGET UNIT : prints "LABEL: VALUE UNIT (target OP TARGET: met|MISSED)"
check() {
  local verdict
  verdict=$(awk -v v="$2" -v t="$4" -v op="$3" 'BEGIN { ok = (op == "<=") ? (v <= t) : (v >= t); print ok ? "met" : "MISSED" }')
  printf '%-34s %10s %-8s (target %s %s: %s)\n' "$1:" "$2" "$5" "$3" "$4" "$verdict"
}

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
for config in "$WORK/embedded.toml" "$WORK/production.toml"; do
  printf '%s\n' "${EXTRA_CONFIG:-}" >> "$config"
done

# measure BACKEND PID LOADTEST-ARGS... : one closed-loop run with its CPU per order
measure() {
  local backend=$1 pid=$2; shift 2
  local engine0 services0 engine1 services1 out
  engine0=$(ticks "$pid"); services0=$(ticks $(service_pids))
  out=$("$BIN" loadtest orders --url "$url" "$@")
  engine1=$(ticks "$pid"); services1=$(ticks $(service_pids))
  echo "$out"
  local orders rate errors
  orders=$(awk '/^orders:/ {print $2}' <<<"$out")
  rate=$(awk '/^throughput:/ {print $2}' <<<"$out")
  errors=$(awk '/^sequence errors:/ {print $3}' <<<"$out")
  local engine_ms services_ms total_ms
  engine_ms=$(awk -v d=$((engine1 - engine0)) -v n="$orders" -v hz="$HZ" 'BEGIN {printf "%.3f", d * 1000 / hz / n}')
  services_ms=$(awk -v d=$((services1 - services0)) -v n="$orders" -v hz="$HZ" 'BEGIN {printf "%.3f", d * 1000 / hz / n}')
  total_ms=$(awk -v a="$engine_ms" -v b="$services_ms" 'BEGIN {printf "%.3f", a + b}')
  echo "CPU per order: engine $engine_ms ms, PostgreSQL + Redis $services_ms ms"
  if [ "$backend" = embedded ]; then
    check "CPU per order (embedded)" "$total_ms" "<=" 0.5 ms
    check "throughput (embedded, 64 in flight)" "$rate" ">=" 2500 orders/s
  else
    check "CPU per order (Redis + PostgreSQL)" "$total_ms" "<=" 2 ms
    check "throughput (Redis + PG, 64 in flight)" "$rate" ">=" 1000 orders/s
  fi
  check "sequence errors" "$errors" "<=" 0 ""
}

for backend in embedded production; do
  echo "== orders, bench profile, $backend backends"
  url=$(start "$backend" --profile bench --config "$WORK/$backend.toml" serve)
  pid=$(pgrep -n -f "$WORK/$backend.toml")
  echo "RSS idle: $(rss $pid)"
  measure "$backend" "$pid" --count "$COUNT" --concurrency 64
  echo "-- the same, with an Idempotency-Key on every order"
  measure "$backend" "$pid" --count "$COUNT" --concurrency 64 --idempotency-keys
  echo "-- open loop, 100 orders/s"
  "$BIN" loadtest orders --url "$url" --count 2000 --rate 100 --concurrency 512
  echo "RSS after: $(rss $pid)"
  kill $pid; wait $pid 2>/dev/null || true
done

fanout() { # fanout LAND_SLOTS CLIENTS ORDERS : transactions land LAND_SLOTS slots after sending
  cp "$WORK/embedded.toml" "$WORK/fanout.toml"
  # The blockhash outlives the landing, so the order lands once (it does
  # not expire and retry) and every socket is still open when RSS is read.
  printf '[chain]\nslot_time = "10ms"\nland_slots = %s\nblockhash_validity_slots = %s\n' "$1" "$(($1 * 2))" >> "$WORK/fanout.toml"
  rm -rf "$WORK/data"
  local url pid idle open out p99
  url=$(start "fanout-$3" --profile bench --config "$WORK/fanout.toml" serve)
  pid=$(pgrep -n -f "$WORK/fanout.toml")
  idle=$(rss_kib "$pid")
  echo "== fan-out: $2 clients over $3 orders (transactions land after $1 slots of 10 ms, so events arrive live)"
  echo "RSS idle: $(rss "$pid")"
  ( sleep 8; rss_kib "$pid" > "$WORK/open-rss" ) &
  local sampler=$!
  out=$("$BIN" loadtest fanout --url "$url" --clients "$2" --orders "$3" --connect-concurrency 512 --timeout 180s)
  echo "$out"
  wait "$sampler"
  open=$(cat "$WORK/open-rss")
  echo "RSS with the sockets open: $((open / 1024)) MiB"
  if [ "$3" = 1 ]; then
    p99=$(awk '/^event delivery:/ {for (i = 1; i <= NF; i++) if ($i == "p99") print $(i + 1)}' <<<"$out" | tr -d ,)
    if [ "$2" -le 1000 ]; then
      check "fan-out delivery p99 ($2 clients)" "$p99" "<=" 15 ms
    else
      check "fan-out delivery p99 ($2 clients)" "$p99" "<=" 100 ms
      check "memory per idle WebSocket" "$(awk -v a="$open" -v b="$idle" -v n="$2" 'BEGIN {printf "%.1f", (a - b) / n}')" "<=" 8 KiB
    fi
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
if [ "${SKIP_FANOUT:-0}" != 1 ]; then
  fanout 1500 1000 1
  fanout 1500 10000 1
  fanout 300 10000 1000
fi

# The strategy call: criterion's middle estimate of a warm call, in µs.
if [ "${SKIP_STRATEGY:-0}" = 1 ]; then exit 0; fi
echo "== strategy call: cargo bench -p swapline --bench strategy (warm calls)"
out=$(cargo bench -q -p swapline --bench strategy -- 'route/(best-price/warm/2|split/warm/8)$' 2>&1)
echo "$out" | grep -E "^route/|time:"
micros() { # micros ID : the middle time estimate of benchmark ID, in µs
  awk -v id="$1" '
    index($0, id) == 1 { found = 1 }
    found && /time:/ {
      sub(/.*\[/, ""); v = $3; unit = $4
      if (unit == "ns") v /= 1000; else if (unit == "ms") v *= 1000; else if (unit == "s") v *= 1000000
      printf "%.1f", v; exit
    }' <<<"$out"
}
check "strategy call (best-price, 2 venues)" "$(micros route/best-price/warm/2)" "<=" 20 "µs"
check "strategy call (split, 8 venues)" "$(micros route/split/warm/8)" "<=" 100 "µs"
