#!/usr/bin/env bash
# The README's quick start (README.md's first two shell blocks), run as a new user
# would: start the demo with the README's command, then request → confirm → details →
# refund through it with curl; every step must answer returnCode 0000, an unlisted path
# must be refused by the sidecar, and the demo's admin port must count the calls.
set -euo pipefail
cd "$(dirname "$0")/.."
# The command exactly as the README's quick start shows it (tests/it/docs.rs checks that
# the README still does); only the ports differ, so a demo already running cannot clash.
quick_start="cargo run -- demo"
cargo build --quiet   # the first build can take minutes; the start-up wait below cannot
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
base="http://127.0.0.1:$port"
log=$(mktemp)
# Unquoted on purpose: the command's words. `cargo run` replaces itself with the binary
# (exec), so $pid is the demo.
$quick_start --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  grep -q "listening on" "$log" && break
  kill -0 $pid 2>/dev/null || { cat "$log"; echo "demo exited early"; exit 1; }
  sleep 0.1
done
grep -q "listening on" "$log" || { cat "$log"; echo "demo did not start within 10 s"; exit 1; }

return_code() { python3 -c 'import json,sys; print(json.load(sys.stdin)["returnCode"])'; }
expect_0000() {
  local step=$1 answer=$2 code
  code=$(printf '%s' "$answer" | return_code)
  [ "$code" = "0000" ] || { echo "$step answered $code: $answer"; exit 1; }
  echo "$step: 0000"
}

order="smoke-$(date +%s)-$$"
answer=$(curl -sS --max-time 10 "$base/v3/payments/request" -H 'Content-Type: application/json' \
  -d '{"amount":100,"currency":"TWD","orderId":"'"$order"'","packages":[{"id":"p1","amount":100,"products":[{"name":"咖啡","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://shop.example/confirm","cancelUrl":"https://shop.example/cancel"}}')
expect_0000 request "$answer"
tx=$(printf '%s' "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["transactionId"])')
[ ${#tx} -eq 19 ] || { echo "transactionId $tx is not 19 digits"; exit 1; }
expect_0000 confirm "$(curl -sS --max-time 10 "$base/v3/payments/$tx/confirm" -d '{"amount":100,"currency":"TWD"}')"
expect_0000 details "$(curl -sS --max-time 10 "$base/v3/payments?transactionId=$tx")"
expect_0000 refund "$(curl -sS --max-time 10 "$base/v3/payments/$tx/refund" -d '{"refundAmount":40}')"
status=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$base/v3/admin")
[ "$status" = "403" ] || { echo "unlisted path answered $status, not 403"; exit 1; }
echo "unlisted path: 403"
admin=$(sed -n 's|^linepay-sidecar admin on http://\([0-9.:]*\) .*|\1|p' "$log")
[ -n "$admin" ] || { cat "$log"; echo "the demo did not say where its admin port is"; exit 1; }
# Read whole, then searched: `curl | grep -q` fails under pipefail when grep stops
# reading before curl has written everything (curl: (23)).
metrics="$(curl -sS --max-time 10 "http://$admin/metrics")"
grep -q '^linepay_sidecar_requests_total{' <<<"$metrics" ||
  { echo "the admin port's /metrics counts no calls"; exit 1; }
echo "metrics: linepay_sidecar_requests_total"
echo "demo smoke OK: request, confirm, details, refund and a refusal"
