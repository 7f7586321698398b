#!/usr/bin/env bash
# The spec is what the server does: runs schemathesis (`st run
# schemas/openapi.json --checks all`) against a real engine and exits
# non-zero on any failure.
#
# Starts the engine binary ($BIN, default target/debug/swapline) with
# `--profile dev` on 127.0.0.1:0 with its own temporary data directory
# (embedded backends: SQLite, in-memory queue and bus; no Redis or
# PostgreSQL needed), reads the address it prints, runs schemathesis
# against it and stops it. Loopback only. Bounded: at most MAX_EXAMPLES
# generated cases per operation and phase (default 500), one worker, and a
# hard cap of LIMIT seconds (default 600) on the whole run. A run takes
# about a minute on 2 cores. (`st run --max-time` is not used: it is a
# budget that fuzzing repeats until spent, not only a cap.)
#
# Needs `st` (schemathesis 4.x, `python3 -m pip install 'schemathesis==4.32.5'`,
# as .ci/run does) and a built binary (`cargo build`).
#   bash ops/schemathesis.sh [extra `st run` options...]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/debug/swapline}
MAX_EXAMPLES=${MAX_EXAMPLES:-500}
LIMIT=${LIMIT:-600}
ST=${ST:-st}

if ! command -v "$ST" >/dev/null 2>&1; then
  # pip puts `st` beside the interpreter it installed into, which may not
  # be on PATH.
  ST="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)/st"
fi
if ! command -v "$ST" >/dev/null 2>&1; then
  echo "schemathesis: '$ST' not found; install it with python3 -m pip install 'schemathesis==4.32.5'" >&2
  exit 2
fi
if [ ! -x "$BIN" ]; then
  echo "schemathesis: no engine binary at $BIN; run cargo build (or set BIN)" >&2
  exit 2
fi

WORK=$(mktemp -d)
ENGINE_PID=""
cleanup() {
  if [ -n "$ENGINE_PID" ]; then
    kill "$ENGINE_PID" 2>/dev/null || true
    wait "$ENGINE_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

: >"$WORK/out"
SWAPLINE_DATA_DIR="$WORK/data" SWAPLINE_SERVER__BIND=127.0.0.1:0 \
  "$BIN" --profile dev >"$WORK/out" 2>"$WORK/err" &
ENGINE_PID=$!
addr=""
for _ in $(seq 1 300); do
  addr="$(sed -n 's/^swapline listening on //p' "$WORK/out" || true)"
  [ -n "$addr" ] && break
  if ! kill -0 "$ENGINE_PID" 2>/dev/null; then break; fi
  sleep 0.2
done
if [ -z "$addr" ]; then
  echo "schemathesis: the engine did not start; its log:" >&2
  cat "$WORK/err" >&2
  exit 1
fi
# A real order, so the order's own routes answer 200 with real bodies
# (checked against their schemas) instead of 404 for every made-up id.
order="$(curl -fsS -X POST -H 'content-type: application/json' \
  -d '{"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1}' "$addr/api/orders/execute" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["orderId"])')"
# listOrderEvents: since greater than the order's lastSeq is 400
# invalid_since by a rule no schema can state (the bound is per order), so
# there a schema-valid since may get that documented 400.
{
  cat ops/schemathesis.toml
  printf '\n[[operations]]\ninclude-operation-id = "getOrder"\n'
  printf 'parameters = { "path.id" = "%s" }\n' "$order"
  printf '\n[[operations]]\ninclude-operation-id = "listOrderEvents"\n'
  printf 'parameters = { "path.id" = "%s" }\n' "$order"
  printf 'checks.positive_data_acceptance.expected-statuses = [200, 400, 401, 403, 404, 429, 503]\n'
} >"$WORK/schemathesis.toml"

echo "schemathesis: engine on $addr, order $order; st run (at most $MAX_EXAMPLES cases per operation and phase, ${LIMIT}s)"

# Valid and invalid requests alike (the default --mode all). --seed: the
# same cases on every run, so a CI failure reproduces locally. One worker:
# with two, CPython 3.11.7's ast module (used by hypothesis to describe
# its filters) failed with "AST constructor recursion depth mismatch".
status=0
# Run from the temporary directory: nothing lands in the work tree.
root="$PWD"
cd "$WORK"
timeout --signal=TERM --kill-after=10 "$LIMIT" "$ST" --config-file "$WORK/schemathesis.toml" run "$root/schemas/openapi.json" \
  --url "$addr" \
  --checks all \
  --max-examples "$MAX_EXAMPLES" \
  --workers 1 \
  --seed "${SEED:-1}" \
  --request-timeout 10 \
  --report-dir "$WORK/report" \
  "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis: failures above (exit $status); the engine's log:" >&2
  tail -n 50 "$WORK/err" >&2
fi
exit "$status"
