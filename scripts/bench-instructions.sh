#!/usr/bin/env bash
# Instructions per proxied call, counted by valgrind's callgrind: deterministic, so it does
# not move with whatever else the machine runs (wall-clock benches do), and two builds can
# be compared on a busy machine.
#
#   scripts/bench-instructions.sh                 # build, 2000 calls, print Ir per call
#   scripts/bench-instructions.sh --no-build --calls 5000 --keep /tmp/cg   # keep the profile
#   scripts/bench-instructions.sh --floor        # the same count for benches/floor/bare_proxy.rs
#
# What it runs, all on 127.0.0.1: an nginx answering every call with a fixed LINE Pay JSON
# (the same upstream as bench-compare.sh; needs nginx), the release sidecar under
# `valgrind --tool=callgrind` (INFO log to a file, metrics on, as in bench-compare.sh), and a
# Python keep-alive client on one connection sending the same 230-byte
# POST /v3/payments/request. 200 warm-up calls (pool, allocator and lazy statics settle),
# then `callgrind_control --dump` zeroes the counters, then N counted calls, then a second
# dump: that dump holds only the N calls. Prints instructions (Ir) per call, and with
# --keep leaves the profile for `callgrind_annotate --inclusive=yes <file>`.
# The sidecar's user-space instructions only: the kernel's work (system calls, wake-ups) is
# not counted (this VM has no hardware counters for `perf stat -e instructions`).
set -euo pipefail
cd "$(dirname "$0")/.."
# The sidecar's call journal goes to a scratch file, never into the source tree.
export LINEPAY_SIDECAR_JOURNAL_PATH="${LINEPAY_SIDECAR_JOURNAL_PATH:-$(mktemp -d)/journal.sqlite3}"

calls=2000
build=1
keep=""
floor=0
while [ $# -gt 0 ]; do
  case $1 in
    --calls) calls=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep) keep=$2; shift 2 ;;
    # The floor (a bare hyper proxy, see benches/floor/bare_proxy.rs) instead of the
    # sidecar: what the HTTP stack alone costs per call, to subtract from the sidecar's.
    --floor) floor=1; shift ;;
    *) echo "usage: $0 [--calls N] [--no-build] [--keep DIR] [--floor]" >&2; exit 2 ;;
  esac
done
for tool in valgrind callgrind_control nginx python3; do
  command -v $tool >/dev/null 2>&1 || { echo "$tool is required (Debian: valgrind, nginx-light, python3)" >&2; exit 1; }
done
if [ "$build" = 1 ]; then
  if [ "$floor" = 1 ]; then
    cargo build --release --quiet --example bare-proxy
  else
    cargo build --release --quiet --bin linepay-sidecar
  fi
fi
binary=target/release/linepay-sidecar
[ "$floor" = 1 ] && binary=target/release/examples/bare-proxy

work=$(mktemp -d /tmp/bench-instr.XXXXXX)
pids=()
cleanup() {
  [ -s "$work/upstream.pid" ] && kill "$(cat "$work/upstream.pid")" 2>/dev/null || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$keep" ]; then mkdir -p "$keep"; cp "$work"/callgrind.out.* "$keep"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
answer='{"returnCode":"0000","returnMessage":"Success.","info":{"paymentUrl":{"web":"https://sandbox-web-pay.line.me/web/payment/wait?transactionReserveId=cGJ1eExaT1ZMNkd4","app":"line://pay/payment/cGJ1eExaT1ZMNkd4"},"transactionId":2025010112345678901,"paymentAccessToken":"187568751124"}}'
upstream_port=$(free_port)
mkdir -p "$work/body"
cat >"$work/upstream.conf" <<EOF
worker_processes 1;
pid $work/upstream.pid;
error_log $work/upstream.error.log warn;
events { worker_connections 1024; }
http {
  client_body_temp_path $work/body; proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fcgi; uwsgi_temp_path $work/uwsgi; scgi_temp_path $work/scgi;
  keepalive_requests 1000000;
  access_log off;
  server {
    listen 127.0.0.1:$upstream_port;
    location / { default_type application/json; return 200 '$answer'; }
  }
}
EOF
nginx -p "$work" -c "$work/upstream.conf"

if [ "$floor" = 1 ]; then
  # One worker: the client's one connection lands on it either way.
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out.%p" \
    "$binary" "127.0.0.1:$(free_port)" "127.0.0.1:$upstream_port" 1 \
    >"$work/sidecar.out" 2>"$work/sidecar.log" &
else
  LINEPAY_CHANNEL_SECRET=bench-channel-secret-not-real LINEPAY_CHANNEL_ID=1234567890 \
    valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out.%p" \
    "$binary" --upstream "http://127.0.0.1:$upstream_port" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    >"$work/sidecar.out" 2>"$work/sidecar.log" &
fi
vg_pid=$!
pids+=("$vg_pid")
for _ in $(seq 600); do grep -q "listening on http://" "$work/sidecar.out" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o 'listening on http://[0-9.:]*' "$work/sidecar.out" | head -1 | sed 's|listening on http://||')
[ -n "$addr" ] || { echo "sidecar did not start:" >&2; cat "$work/sidecar.log" >&2; exit 1; }

client() { # calls
  python3 - "$addr" "$1" <<'EOF'
import http.client, sys
host, port = sys.argv[1].rsplit(":", 1)
body = b'{"amount":100,"currency":"TWD","orderId":"b-0001","packages":[{"id":"p1","amount":100,"products":[{"name":"Coffee","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://a.example/c","cancelUrl":"https://a.example/x"}}'
assert len(body) == 230
conn = http.client.HTTPConnection(host, int(port), timeout=30)
for _ in range(int(sys.argv[2])):
    conn.request("POST", "/v3/payments/request", body, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    data = answer.read()
    if answer.status != 200 or b'"returnCode":"0000"' not in data:
        sys.exit(f"bad answer {answer.status}: {data[:200]!r}")
EOF
}

client 200
callgrind_control --dump=warmup "$vg_pid" >/dev/null
client "$calls"
callgrind_control --dump=measured "$vg_pid" >/dev/null
measured=$(grep -l '^desc: Trigger: dump measured' "$work"/callgrind.out.* | head -1)
total=$(awk '/^summary:/ {print $2}' "$measured")
if [ "$floor" = 1 ]; then
  echo "floor (bare-proxy), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "calls counted: $calls"
else
  lines=$(grep -c 'call forwarded' "$work/sidecar.log" || true)
  echo "sidecar $($binary --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "calls counted: $calls (log lines: $lines of $((calls + 200)) calls incl. warm-up)"
fi
awk -v t="$total" -v n="$calls" 'BEGIN { printf "instructions per call: %.0f (Ir %d over %d calls)\n", t / n, t, n }'
if [ "$floor" = 0 ] && command -v callgrind_annotate >/dev/null 2>&1; then
  # The total moves with the journal's orderId batches: they are written every 10 ms on
  # the journal's thread, so how many calls share a batch (and its commit) depends on
  # how fast valgrind runs the calls, and under real load a batch holds hundreds. The
  # proxy workers' share (`run_worker` or, where it is inlined, `Runtime::block_on`) is what
  # a call costs on its own thread.
  callgrind_annotate --inclusive=yes "$measured" 2>/dev/null | sed 's/,//g' | awk -v n="$calls" '
    /runtime::workers::run_worker|tokio::runtime::runtime::Runtime::block_on/ && !w { w = $1 }
    /journal::orders::Orders::write_queued/ && !j { j = $1 }
    END {
      printf "on the proxy workers: %.0f per call\n", w / n
      printf "journal orderId batches (journal thread): %.0f per call\n", j / n
    }'
fi
if [ -n "$keep" ]; then echo "profile: $keep/$(basename "$measured")"; fi
