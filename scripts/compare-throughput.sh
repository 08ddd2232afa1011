#!/usr/bin/env bash
# Proxy throughput of two (or more) sidecar binaries, side by side in one session, e.g.
# before and after an allocator change (docs/hardening.md, "Memory under the attack"):
#
#   scripts/compare-throughput.sh 5 /tmp/sidecar-before target/release/linepay-sidecar
#
# An nginx upstream on 127.0.0.1:18099 answers every call with a fixed LINE Pay JSON;
# each binary in turn listens on 127.0.0.1:18098 (admin :18097) and gets
# `wrk -t2 -c64 -d SECONDS` of POST /v3/payments/request (the body of
# scripts/bench-compare.sh); the binaries are alternated twice. Prints req/s and the
# sidecar's peak RSS per run. Needs nginx and wrk (Debian: nginx-light, wrk). Loopback
# only; every run bounded by SECONDS.
set -euo pipefail
dur=$1; shift
work=$(mktemp -d)
trap '[ -s "$work/up.pid" ] && kill "$(cat "$work/up.pid")" 2>/dev/null || true' EXIT
cat > $work/up.conf <<EOF
worker_processes 1;
pid $work/up.pid;
error_log $work/up.err warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $work/b; proxy_temp_path $work/p; fastcgi_temp_path $work/f; uwsgi_temp_path $work/u; scgi_temp_path $work/s;
  access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18099; location / { default_type application/json; return 200 '{"returnCode":"0000","returnMessage":"Success.","info":{"transactionId":2023042201234567890,"paymentAccessToken":"123456789012"}}'; } }
}
EOF
mkdir -p $work/b; nginx -p $work -c $work/up.conf
body='{"amount":100,"currency":"TWD","orderId":"b-0001","packages":[{"id":"p1","amount":100,"products":[{"name":"Coffee","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://a.example/c","cancelUrl":"https://a.example/x"}}'
cat > $work/post.lua <<EOF
wrk.method = "POST"
wrk.path = "/v3/payments/request"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$body'
EOF
for round in 1 2; do
for bin in "$@"; do
  export LINEPAY_SIDECAR_JOURNAL_PATH=$work/j-$round-$(basename $bin).sqlite3
  LINEPAY_CHANNEL_SECRET=bench-channel-secret-not-real LINEPAY_CHANNEL_ID=1234567890 LINEPAY_SIDECAR_UPSTREAM_POOL_MAX_IDLE_PER_HOST=64 \
    $bin --upstream http://127.0.0.1:18099 --listen 127.0.0.1:18098 --admin-listen 127.0.0.1:18097 > $work/out 2> $work/log &
  pid=$!
  sleep 1
  wrk -t2 -c64 -d${dur}s -s $work/post.lua http://127.0.0.1:18098 > $work/wrk.txt 2>&1 || true
  echo "$(basename $bin) round $round: $(grep Requests/sec $work/wrk.txt) $(grep -E 'Non-2xx' $work/wrk.txt) peak $(grep VmHWM /proc/$pid/status | awk '{print $2/1024 " MiB"}')"
  kill $pid; wait $pid 2>/dev/null || true
done
done
