#!/usr/bin/env bash
# Where each proxy's CPU per call goes: user and system time and context switches per
# call, for nginx `proxy_pass`, the bare hyper proxy (benches/floor/bare_proxy.rs) and the
# sidecar, each under the same wrk load in turn (issue 20).
#
#   scripts/bench-cpu-split.sh                      # build, 5 s per step, 2 rounds, c=64
#   scripts/bench-cpu-split.sh --no-build --duration 5 --rounds 2 --connections 64
#   scripts/bench-cpu-split.sh --no-build --threads   # also each sidecar thread's share
#
# All on 127.0.0.1, each step bounded by wrk's --duration: an nginx upstream answering a
# fixed LINE Pay JSON, and the three proxies in front of it (nginx with its access log on,
# to a file; the sidecar on its defaults with its INFO line to a file). For each step:
# utime and stime of every thread of the proxy (all of nginx's processes), from
# /proc/PID/task/*/stat, and its voluntary and involuntary context switches, before and
# after, divided by the calls wrk completed. With --threads, the sidecar's steps also print
# each of its threads (by name and id) that used CPU or switched: the proxy workers, the
# journal's batch writes on the blocking pool, the main runtime, jemalloc's background
# threads. Needs nginx and wrk (Debian: nginx-light, wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=5 rounds=2 connections=64 build=1 threads=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --threads) threads=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
PATH="$PATH:/usr/sbin"
for tool in nginx wrk python3; do
  command -v $tool >/dev/null 2>&1 || { echo "$tool is required (Debian: nginx-light, wrk)" >&2; exit 1; }
done
[ "$build" = 1 ] && cargo build --release --quiet --bin linepay-sidecar --example bare-proxy
sidecar=target/release/linepay-sidecar bare=target/release/examples/bare-proxy

work=$(mktemp -d /tmp/bench-cpu-split.XXXXXX)
pids=()
cleanup() {
  for pidfile in "$work"/*.pid; do [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

answer='{"returnCode":"0000","returnMessage":"Success.","info":{"paymentUrl":{"web":"https://sandbox-web-pay.line.me/web/payment/wait?transactionReserveId=cGJ1eExaT1ZMNkd4","app":"line://pay/payment/cGJ1eExaT1ZMNkd4"},"transactionId":2025010112345678901,"paymentAccessToken":"187568751124"}}'
body='{"amount":100,"currency":"TWD","orderId":"b-0001","packages":[{"id":"p1","amount":100,"products":[{"name":"Coffee","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://a.example/c","cancelUrl":"https://a.example/x"}}'
printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = %s\n' "'$body'" >"$work/post.lua"

start_nginx() { # name body → the master pid
  local name=$1
  mkdir -p "$work/$name.body"
  cat >"$work/$name.conf" <<C
worker_processes auto; pid $work/$name.pid; error_log $work/$name.err warn;
events { worker_connections 4096; }
http { client_body_temp_path $work/$name.body; proxy_temp_path $work/$name.p; fastcgi_temp_path $work/$name.f;
  uwsgi_temp_path $work/$name.u; scgi_temp_path $work/$name.s; keepalive_requests 1000000;
$2
}
C
  nginx -p "$work" -c "$work/$name.conf"
  for _ in $(seq 50); do [ -s "$work/$name.pid" ] && break; sleep 0.1; done
  cat "$work/$name.pid"
}
up=$(free_port) px=$(free_port) sc=$(free_port) bp=$(free_port)
start_nginx upstream "access_log off; server { listen 127.0.0.1:$up; location / { default_type application/json; return 200 '$answer'; } }" >/dev/null
nginx_pid=$(start_nginx proxy "access_log $work/access.log;
  upstream backend { server 127.0.0.1:$up; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$px; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }")
LINEPAY_SIDECAR_JOURNAL_PATH=$work/journal.sqlite3 LINEPAY_CHANNEL_SECRET=bench-channel-secret-not-real \
  LINEPAY_CHANNEL_ID=1234567890 "$sidecar" --upstream "http://127.0.0.1:$up" --listen "127.0.0.1:$sc" \
  --admin-listen 127.0.0.1:0 >"$work/sidecar.out" 2>"$work/sidecar.log" &
sidecar_pid=$!; pids+=("$sidecar_pid")
"$bare" "127.0.0.1:$bp" "127.0.0.1:$up" >"$work/bare.out" 2>&1 &
bare_pid=$!; pids+=("$bare_pid")
for port in $px $sc $bp; do
  for _ in $(seq 100); do curl -s -o /dev/null -d "$body" "http://127.0.0.1:$port/v3/payments/request" && break; sleep 0.1; done
done

counters() { # pids… → "utime stime voluntary involuntary", summed over every thread
  local ut=0 st=0 v=0 i=0 pid task a b
  for pid in "$@"; do
    for task in /proc/"$pid"/task/*; do
      read -r a b < <(sed 's/^.*) //' "$task/stat" | awk '{print $12, $13}')
      ut=$((ut + a)); st=$((st + b))
      v=$((v + $(awk '/^voluntary_ctxt/ {print $2}' "$task/status")))
      i=$((i + $(awk '/^nonvoluntary_ctxt/ {print $2}' "$task/status")))
    done
  done
  echo "$ut $st $v $i"
}
hz=$(getconf CLK_TCK)
per_thread() { # pid → "tid name utime stime voluntary involuntary", a line per thread
  local task
  for task in /proc/"$1"/task/*; do
    echo "${task##*/} $(tr ' ' _ <"$task/comm") $(sed 's/^.*) //' "$task/stat" | awk '{print $12, $13}') \
$(awk '/^voluntary_ctxt/ {print $2}' "$task/status") $(awk '/^nonvoluntary_ctxt/ {print $2}' "$task/status")"
  done 2>/dev/null
}
step() { # name port pids…
  local name=$1 port=$2; shift 2
  local before after out calls
  before=($(counters "$@"))
  out=$(wrk -t"$(( connections > 1 ? 2 : 1 ))" -c"$connections" -d"${duration}s" -s "$work/post.lua" "http://127.0.0.1:$port/v3/payments/request")
  echo "$out" >"$work/wrk.last"
  after=($(counters "$@"))
  calls=$(echo "$out" | awk '/requests in/ {print $1}')
  awk -v n="$calls" -v d="$duration" -v hz="$hz" -v name="$name" \
    -v ut=$((after[0] - before[0])) -v st=$((after[1] - before[1])) \
    -v v=$((after[2] - before[2])) -v i=$((after[3] - before[3])) 'BEGIN {
      printf "| %s | %d | %.1f | %.1f | %.3f | %.3f |\n", name, n / d, ut / hz / n * 1e6, st / hz / n * 1e6, v / n, i / n }'
}
echo "machine: $(nproc) CPUs; sidecar $($sidecar --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); wrk -c$connections, ${duration}s per step"
echo
echo "| proxy | req/s | user µs / call | system µs / call | voluntary cs / call | involuntary cs / call |"
echo "| --- | --- | --- | --- | --- | --- |"
for _ in $(seq "$rounds"); do
  step nginx "$px" "$nginx_pid" $(pgrep -P "$nginx_pid")
  step bare "$bp" "$bare_pid"
  [ "$threads" = 1 ] && per_thread "$sidecar_pid" >"$work/threads.before"
  step sidecar "$sc" "$sidecar_pid"
  if [ "$threads" = 1 ]; then
    per_thread "$sidecar_pid" >"$work/threads.after"
    calls=$(awk '/requests in/ {print $1}' "$work/wrk.last")
    # Threads are matched by id; one born during the step counts from zero.
    awk -v n="$calls" -v hz="$hz" 'NR == FNR { ut[$1] = $3; st[$1] = $4; v[$1] = $5; i[$1] = $6; next }
      { du = $3 - ut[$1]; ds = $4 - st[$1]; dv = $5 - v[$1]; di = $6 - i[$1]
        if (du + ds + dv + di > 0)
          printf "|   %s (%s) | | %.1f | %.1f | %.3f | %.3f |\n", $2, $1, du / hz / n * 1e6, ds / hz / n * 1e6, dv / n, di / n }' \
      "$work/threads.before" "$work/threads.after"
  fi
done
