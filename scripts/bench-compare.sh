#!/usr/bin/env bash
# The sidecar against nginx `proxy_pass`, side by side in one run, same load generator.
#
#   scripts/bench-compare.sh                 # build, then c=1 and c=64, 10 s each
#   scripts/bench-compare.sh --duration 5    # shorter steps
#   scripts/bench-compare.sh --no-build      # use target/release/linepay-sidecar as it is
#
# What runs, all on loopback (127.0.0.1), each step bounded by wrk's --duration:
# - upstream: nginx answering every call with a fixed LINE Pay JSON (`return 200`);
# - nginx: `proxy_pass` to it, upstream keepalive 64, access log on (to a file);
# - sidecar: the release binary with everything a deployment has on: allowlist, JSON
#   check, signing, metrics and the per-call INFO log line, written to stderr, which
#   this script redirects to a file (a real deployment's stderr goes to the runtime's
#   log collector; a file costs the same write(2) per line);
# - wrk drives `direct` (the upstream alone), `nginx` and `sidecar` with the same Lua
#   script: POST /v3/payments/request with a 230-byte LINE Pay request body;
# - bare: the floor, benches/floor/bare_proxy.rs (`--example bare-proxy`), the sidecar's
#   HTTP stack (hyper server and client, a runtime per core) with none of its work: what
#   the sidecar's CPU per call would be if signing, checks, log line, metrics and journal
#   cost nothing. Skipped with a notice when its binary is missing under --no-build.
# For each proxy: req/s, p50, p99 (wrk --latency), CPU seconds per 1,000 calls from
# /proc/PID/stat (utime+stime before/after, all of nginx's processes), peak RSS (VmHWM,
# summed over nginx's processes), and the sidecar/nginx ratio.
#
# Then the correctness run: the sidecar in front of the LINE Pay emulator, which checks
# every signature as LINE Pay does; wrk sends a fresh orderId per call and counts every
# answer that is not HTTP 200 with returnCode 0000. Any such answer fails the script.
#
# Needs: nginx and wrk (Debian: nginx-light, wrk; installed with apt-get when missing and
# run as root, else the nginx rows are skipped with a notice), python3 (free ports), cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
# The sidecar's call journal goes to a scratch file, never into the source tree.
export LINEPAY_SIDECAR_JOURNAL_PATH="${LINEPAY_SIDECAR_JOURNAL_PATH:-$(mktemp -d)/journal.sqlite3}"

duration=10
build=1
correctness_duration=5
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --correctness-duration) correctness_duration=$2; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

# --- tools -----------------------------------------------------------------------------
install_missing() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} with apt-get ..."
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; } ||
      echo "NOTICE: apt-get could not install ${missing[*]}"
  else
    echo "NOTICE: ${missing[*]} missing and cannot be installed here (not root or no apt-get)"
  fi
}
install_missing
PATH="$PATH:/usr/sbin"
command -v wrk >/dev/null 2>&1 || { echo "wrk is required (Debian package wrk); stopping." >&2; exit 1; }
have_nginx=1
command -v nginx >/dev/null 2>&1 || { have_nginx=0; echo "NOTICE: no nginx: the upstream is the emulator and the nginx rows are skipped"; }

if [ "$build" = 1 ]; then
  cargo build --release --quiet --bin linepay-sidecar --example bare-proxy
fi
binary=target/release/linepay-sidecar
bare_binary=target/release/examples/bare-proxy
have_bare=1
[ -x "$bare_binary" ] || { have_bare=0; echo "NOTICE: $bare_binary missing (cargo build --release --example bare-proxy): the bare row is skipped"; }
[ -x "$binary" ] || { echo "$binary missing: run without --no-build" >&2; exit 1; }

# --- scratch space and clean-up ----------------------------------------------------------
work=$(mktemp -d /tmp/bench-compare.XXXXXX)
pids=()
cleanup() {
  # Every nginx this script started (start_nginx may run in a subshell: read the pid files).
  for pidfile in "$work"/*.pid; do [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# A 230-byte LINE Pay /v3/payments/request body (checked below).
body='{"amount":100,"currency":"TWD","orderId":"b-0001","packages":[{"id":"p1","amount":100,"products":[{"name":"Coffee","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://a.example/c","cancelUrl":"https://a.example/x"}}'
[ ${#body} -eq 230 ] || { echo "bench body is ${#body} bytes, not 230" >&2; exit 1; }
answer='{"returnCode":"0000","returnMessage":"Success.","info":{"paymentUrl":{"web":"https://sandbox-web-pay.line.me/web/payment/wait?transactionReserveId=cGJ1eExaT1ZMNkd4","app":"line://pay/payment/cGJ1eExaT1ZMNkd4"},"transactionId":2025010112345678901,"paymentAccessToken":"187568751124"}}'

cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.path = "/v3/payments/request"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$body'
EOF

# Correctness: a fresh orderId per call; counts answers that are not 200 + 0000.
cat >"$work/check.lua" <<'EOF'
local threads = {}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end
function init(args)
  ok, bad, n = 0, 0, 0
  run = os.time()
end
function request()
  n = n + 1
  local body = string.format('{"amount":100,"currency":"TWD","orderId":"chk-%d-%d-%d","packages":[{"id":"p1","amount":100,"products":[{"name":"Coffee","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://a.example/c","cancelUrl":"https://a.example/x"}}', run, id, n)
  return wrk.format("POST", "/v3/payments/request", {["Content-Type"] = "application/json"}, body)
end
function response(status, headers, body)
  if status == 200 and string.find(body, '"returnCode":"0000"', 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
    if bad <= 3 then io.stderr:write("bad answer: " .. status .. " " .. string.sub(body, 1, 200) .. "\n") end
  end
end
function done(summary, latency, requests)
  local tok, tbad = 0, 0
  for _, t in ipairs(threads) do tok = tok + t:get("ok"); tbad = tbad + t:get("bad") end
  io.write(string.format("CHECK ok=%d bad=%d errors=%d\n", tok, tbad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
EOF

# --- processes ---------------------------------------------------------------------------
start_nginx() { # name conf-body → prints the master pid
  local name=$1 conf="$work/$1.conf"
  cat >"$conf" <<EOF
worker_processes auto;
pid $work/$name.pid;
error_log $work/$name.error.log warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $work/$name.body; proxy_temp_path $work/$name.proxy;
  fastcgi_temp_path $work/$name.fcgi; uwsgi_temp_path $work/$name.uwsgi; scgi_temp_path $work/$name.scgi;
  keepalive_requests 1000000;
$2
}
EOF
  mkdir -p "$work/$name.body"
  nginx -p "$work" -c "$conf"
  for _ in $(seq 50); do [ -s "$work/$name.pid" ] && break; sleep 0.1; done
  cat "$work/$name.pid"
}

wait_announce() { # file pattern → the URL after it
  for _ in $(seq 100); do
    if grep -q "$2" "$1" 2>/dev/null; then grep -o "$2[0-9.:]*" "$1" | head -1 | sed "s|$2||"; return 0; fi
    sleep 0.1
  done
  echo "no '$2' line in $1:" >&2; cat "$1" >&2; return 1
}

start_sidecar() { # name upstream-url → sets sidecar_pid, sidecar_addr
  local name=$1
  # Defaults only: the default upstream pool (64 idle connections per worker) matches
  # nginx's `keepalive 64` per worker process below, so nothing is tuned for the bench.
  LINEPAY_CHANNEL_SECRET=bench-channel-secret-not-real LINEPAY_CHANNEL_ID=1234567890 \
    "$binary" --upstream "$2" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    >"$work/$name.out" 2>"$work/$name.log" &
  sidecar_pid=$!
  pids+=("$sidecar_pid")
  sidecar_addr=$(wait_announce "$work/$name.out" "linepay-sidecar listening on http://")
  sidecar_admin=$(wait_announce "$work/$name.out" "linepay-sidecar admin on http://")
}

process_tree() { # pid → the pid and its children
  echo "$1"; pgrep -P "$1" || true
}
cpu_ticks() { # pids… → utime+stime in clock ticks, summed
  local total=0 pid fields
  for pid in "$@"; do
    fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    total=$((total + $(echo "$fields" | awk '{print $12 + $13}')))
  done
  echo $total
}
peak_rss_kib() { # pids… → VmHWM summed, KiB
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
  done
  echo $total
}
to_us() { # wrk's "1.06ms" → microseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) f = 1; else if (v ~ /ms$/) f = 1000; else if (v ~ /s$/) f = 1000000; else f = 1; printf "%.0f", n * f }'
}

hz=$(getconf CLK_TCK)
results="$work/results"
: >"$results"
run_step() { # target url concurrency pid-list…
  local target=$1 url=$2 c=$3; shift 3
  local pids_now=("$@") threads before after out
  threads=$(( c > 1 ? 2 : 1 ))
  before=$(cpu_ticks "${pids_now[@]}")
  out=$(wrk -t"$threads" -c"$c" -d"${duration}s" --latency -s "$work/post.lua" "$url/v3/payments/request")
  after=$(cpu_ticks "${pids_now[@]}")
  local rps p50 p99 requests non2xx errors
  rps=$(echo "$out" | awk '/^Requests\/sec:/ {printf "%.0f", $2}')
  p50=$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')")
  p99=$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')")
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}'); non2xx=${non2xx:-0}
  errors=$(echo "$out" | awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}'); errors=${errors:-0}
  if [ "$non2xx" != 0 ] || [ "$errors" != 0 ]; then
    echo "$target c=$c: $non2xx non-2xx answers, $errors socket errors" >&2
    echo "$out" >&2
    exit 1
  fi
  local cpu_per_1k="-" rss="-"
  if [ ${#pids_now[@]} -gt 0 ]; then
    cpu_per_1k=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" 'BEGIN { printf "%.3f", t / hz / n * 1000 }')
    rss=$(awk -v k="$(peak_rss_kib "${pids_now[@]}")" 'BEGIN { printf "%.1f", k / 1024 }')
  fi
  echo "$target $c $rps $p50 $p99 $cpu_per_1k $rss" >>"$results"
  printf '  %-8s c=%-3s %8s req/s  p50 %6s µs  p99 %6s µs  CPU %s s/1k calls  peak RSS %s MiB\n' \
    "$target" "$c" "$rps" "$p50" "$p99" "$cpu_per_1k" "$rss"
}

# --- the comparison ----------------------------------------------------------------------
echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); $(uname -sr)"
echo "sidecar: $($binary --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

if [ "$have_nginx" = 1 ]; then
  upstream_port=$(free_port)
  start_nginx upstream "
  access_log off;
  server {
    listen 127.0.0.1:$upstream_port;
    location / { default_type application/json; return 200 '$answer'; }
  }" >/dev/null
  upstream_url="http://127.0.0.1:$upstream_port"
  nginx_port=$(free_port)
  nginx_pid=$(start_nginx proxy "
  access_log $work/proxy.access.log;
  upstream backend { server 127.0.0.1:$upstream_port; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }")
  nginx_url="http://127.0.0.1:$nginx_port"
else
  # Without nginx the emulator is the upstream (it does more work per call than nginx).
  "$binary" emulator --listen 127.0.0.1:0 >"$work/upstream-emu.out" 2>/dev/null &
  pids+=($!)
  upstream_url="http://$(wait_announce "$work/upstream-emu.out" "linepay emulator listening on http://")"
fi
start_sidecar sidecar "$upstream_url"
sidecar_url="http://$sidecar_addr"
if [ "$have_bare" = 1 ]; then
  bare_port=$(free_port)
  "$bare_binary" "127.0.0.1:$bare_port" "${upstream_url#http://}" >"$work/bare.out" 2>&1 &
  bare_pid=$!
  pids+=("$bare_pid")
  bare_url="http://$(wait_announce "$work/bare.out" "bare-proxy listening on http://")"
fi
# One call each, so a broken set-up fails before the timed steps.
for url in "$upstream_url" ${nginx_url:-} "$sidecar_url" ${bare_url:-}; do
  curl -sS --max-time 5 -H 'Content-Type: application/json' -d "$body" "$url/v3/payments/request" |
    grep -q '"returnCode":"0000"' || { echo "no 0000 answer from $url" >&2; exit 1; }
done

echo "load: wrk, POST of a 230-byte body, ${duration}s per step, loopback"
for c in 1 64; do
  run_step direct "$upstream_url" "$c"
  [ "$have_nginx" = 1 ] && run_step nginx "$nginx_url" "$c" $(process_tree "$nginx_pid")
  run_step sidecar "$sidecar_url" "$c" "$sidecar_pid"
  [ "$have_bare" = 1 ] && run_step bare "$bare_url" "$c" "$bare_pid"
done
# Metrics were on: the sidecar counted every call it answered.
counted=$(curl -sS --max-time 5 "http://$sidecar_admin/metrics" |
  awk '/^linepay_sidecar_requests_total\{.*status="200"/ {s += $NF} END {printf "%.0f", s}')
logged=$(grep -c 'call forwarded' "$work/sidecar.log" || true)
echo "sidecar metrics: $counted calls counted with status 200; log: $logged 'call forwarded' lines"

echo
echo "| target | c | req/s | p50 µs | p99 µs | CPU s / 1k calls | peak RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
awk '{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 }' "$results"
echo
if [ "$have_nginx" = 1 ]; then
  awk '
    { rps[$1 " " $2] = $3; p50[$1 " " $2] = $4; cpu[$1 " " $2] = $6 }
    END {
      printf "sidecar/nginx req/s:  c=1 %.2f   c=64 %.2f\n", rps["sidecar 1"] / rps["nginx 1"], rps["sidecar 64"] / rps["nginx 64"]
      printf "added p50 at c=1 over direct: nginx %d µs, sidecar %d µs\n", p50["nginx 1"] - p50["direct 1"], p50["sidecar 1"] - p50["direct 1"]
      printf "CPU per call, sidecar/nginx:  c=1 %.2f   c=64 %.2f\n", cpu["sidecar 1"] / cpu["nginx 1"], cpu["sidecar 64"] / cpu["nginx 64"]
      if (("bare 64") in cpu) {
        printf "floor (bare hyper proxy)/nginx: req/s c=1 %.2f   c=64 %.2f;  CPU per call c=1 %.2f   c=64 %.2f\n", rps["bare 1"] / rps["nginx 1"], rps["bare 64"] / rps["nginx 64"], cpu["bare 1"] / cpu["nginx 1"], cpu["bare 64"] / cpu["nginx 64"]
        printf "sidecar work over the floor at c=64: %.3f s / 1k calls above the floor, which is %.3f\n", cpu["sidecar 64"] - cpu["bare 64"], cpu["bare 64"]
      }
    }' "$results"
fi

# --- correctness: every answer 0000 from the emulator --------------------------------------
echo
echo "correctness: sidecar → emulator, ${correctness_duration}s at c=64, every answer checked"
LINEPAY_CHANNEL_SECRET=bench-channel-secret-not-real LINEPAY_CHANNEL_ID=1234567890 \
  "$binary" emulator --listen 127.0.0.1:0 >"$work/emulator.out" 2>/dev/null &
pids+=($!)
emulator_addr=$(wait_announce "$work/emulator.out" "linepay emulator listening on http://")
start_sidecar checked "http://$emulator_addr"
check=$(wrk -t2 -c64 -d"${correctness_duration}s" -s "$work/check.lua" "http://$sidecar_addr/v3/payments/request" 2>&1)
line=$(echo "$check" | grep '^CHECK' || true)
echo "  $line"
if ! echo "$line" | grep -Eq '^CHECK ok=[1-9][0-9]* bad=0 errors=0$'; then
  echo "$check" >&2
  echo "FAILED: not every call answered 0000" >&2
  exit 1
fi
echo "  every call answered 0000"

# --- the legacy-PHP win: a new TLS connection per call, upstream 20 ms away ---------------
echo
if [ "$have_nginx" = 1 ]; then
  rtt_ms=20
  echo "legacy PHP client: one new connection per call, sequential; upstream ${rtt_ms} ms RTT away (relay on loopback)"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/ca.key" -out "$work/ca.pem" -days 2 \
    -subj /CN=bench-test-ca -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$work/tls.key" -out "$work/tls.csr" -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$work/tls.ext"
  openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -out "$work/tls.pem" -days 2 -extfile "$work/tls.ext" 2>/dev/null
  tls_port=$(free_port)
  start_nginx tls "
  access_log off;
  server {
    listen 127.0.0.1:$tls_port ssl;
    ssl_certificate $work/tls.pem; ssl_certificate_key $work/tls.key;
    location / { default_type application/json; return 200 '$answer'; }
  }" >/dev/null
  relay_port=$(free_port)
  python3 scripts/bench_extra.py relay "$relay_port" "$tls_port" "$rtt_ms" >"$work/relay.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do grep -q "relay listening" "$work/relay.out" && break; sleep 0.1; done
  direct_tls=$(python3 scripts/bench_extra.py tls-client "https://127.0.0.1:$relay_port" "$work/ca.pem" 100 30)
  echo "  PHP → LINE Pay directly, new TLS connection per call:   $direct_tls"
  # Defaults only, as above (the default upstream pool is 64 idle connections per worker).
  LINEPAY_CHANNEL_SECRET=bench-channel-secret-not-real LINEPAY_CHANNEL_ID=1234567890 \
    "$binary" --upstream "https://127.0.0.1:$relay_port" --upstream-ca-file "$work/ca.pem" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$work/tls-sidecar.out" 2>"$work/tls-sidecar.log" &
  pids+=($!)
  tls_sidecar=$(wait_announce "$work/tls-sidecar.out" "linepay-sidecar listening on http://")
  # One warm-up call: the sidecar opens its TLS connection once and keeps it.
  python3 scripts/bench_extra.py tls-client "http://$tls_sidecar" - 1 10 >/dev/null
  via_sidecar=$(python3 scripts/bench_extra.py tls-client "http://$tls_sidecar" - 100 30)
  echo "  PHP → sidecar (new plain connection per call) → warm TLS: $via_sidecar"
  awk -v a="$direct_tls" -v b="$via_sidecar" 'BEGIN {
    split(a, x, "mean_ms="); split(b, y, "mean_ms="); printf "  sidecar path faster by %.2fx (mean time per call)\n", (x[2] + 0) / (y[2] + 0) }'
else
  echo "NOTICE: no nginx: the TLS new-connection-per-call comparison is skipped"
fi

# --- memory under connection load -------------------------------------------------------
echo
echo "memory: sidecar RSS idle, with 1000 idle keep-alive connections, with 1000 mid-request"
start_sidecar memory "$upstream_url"
python3 scripts/bench_extra.py memory "$sidecar_addr" "$sidecar_pid" 1000 | sed 's/^/  /'
