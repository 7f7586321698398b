#!/usr/bin/env bash
# Redis Cluster overhead (issue 13): the same closed-loop run (1,000 orders,
# 64 in flight, bench profile, PostgreSQL store, Redis queue and bus) against
# the standalone Redis on 127.0.0.1:6379 and against a local 6-node cluster
# (3 masters + 3 replicas) this script starts on free ports. Prints orders/s
# from `swapline loadtest orders` and the CPU each run took per order: the
# engine's plus every Redis process's user + system time (from /proc), divided
# by the orders. Needs a release build, redis-server, redis-cli and
# PostgreSQL on 127.0.0.1:5432 (trust auth). Loopback only; bounded runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/swapline}
COUNT=${COUNT:-1000}
WORK=$(mktemp -d)
NAME=benchc_$$
PIDS=()
trap 'kill $(jobs -p) "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true;
      psql -qh 127.0.0.1 -U postgres -c "DROP SCHEMA IF EXISTS ${NAME}_s CASCADE" -c "DROP SCHEMA IF EXISTS ${NAME}_c CASCADE" postgres >/dev/null 2>&1 || true;
      redis-cli -h 127.0.0.1 --scan --pattern "$NAME:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true;
      rm -rf "$WORK"' EXIT
HZ=$(getconf CLK_TCK)

ticks() { # ticks PID...: user + system clock ticks of the processes
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

start() { # start NAME CONFIG: runs the engine, waits for its address
  "$BIN" --profile bench --config "$2" serve > "$WORK/$1.out" 2> "$WORK/$1.log" &
  for _ in $(seq 1 200); do grep -q "listening on" "$WORK/$1.out" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/swapline listening on //p' "$WORK/$1.out"
}

# Six cluster nodes on ports starting at a free-looking base.
BASE=$((20000 + ($$ % 5000)))
PORTS=()
for i in 0 1 2 3 4 5; do
  port=$((BASE + i))
  redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
    --cluster-config-file "$WORK/nodes-$port.conf" --cluster-node-timeout 2000 \
    --repl-diskless-sync-delay 0 --save "" --appendonly no --dir "$WORK" --daemonize no > "$WORK/redis-$port.log" 2>&1 &
  PIDS+=($!)
  PORTS+=("$port")
done
for port in "${PORTS[@]}"; do
  for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${PORTS[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
for port in "${PORTS[@]}"; do
  for _ in $(seq 1 100); do redis-cli -p "$port" cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
done
CLUSTER_PIDS=("${PIDS[@]}")
URLS=$(printf '"redis://127.0.0.1:%s", ' "${PORTS[@]}")

common() { # common SCHEMA PARTITIONS
  cat <<TOML
data_dir = "$WORK/data-$1"
[server]
bind = "127.0.0.1:0"
[store]
backend = "postgres"
[queue]
backend = "redis"
partitions = $2
[bus]
backend = "redis"
[postgres]
schema = "$1"
pool_size = 32
TOML
}
{ common "${NAME}_s" 1; printf '[redis]\nkey_prefix = "%s"\npool_size = 32\n' "$NAME"; } > "$WORK/standalone.toml"
{ common "${NAME}_c" 16
  printf '[redis]\nmode = "cluster"\nurls = [%s]\nkey_prefix = "%s"\npool_size = 32\n' "${URLS%, }" "$NAME"; } > "$WORK/cluster.toml"

STANDALONE_PID=$(pgrep -x redis-server -a | awk '/:6379/ {print $1; exit}')

for mode in standalone cluster; do
  echo "== $mode Redis: $COUNT orders, 64 in flight"
  url=$(start "$mode" "$WORK/$mode.toml")
  engine=$(pgrep -n -f "$WORK/$mode.toml")
  PIDS+=("$engine")   # started in a subshell: the exit trap kills it by pid
  if [ "$mode" = standalone ]; then redis=("$STANDALONE_PID"); else redis=("${CLUSTER_PIDS[@]}"); fi
  before=$(ticks "$engine" "${redis[@]}")
  "$BIN" loadtest orders --url "$url" --count "$COUNT" --concurrency 64
  after=$(ticks "$engine" "${redis[@]}")
  awk -v t=$((after - before)) -v hz="$HZ" -v n="$COUNT" \
    'BEGIN {printf "CPU (engine + Redis): %.2f s, %.2f ms per order\n", t / hz, 1000 * t / hz / n}'
  kill "$engine"; wait "$engine" 2>/dev/null || true
done
