#!/usr/bin/env bash
# The manual's shell blocks, run as a reader would copy them. Every ```sh block of the
# pages below that is marked `<!-- run: scripts/docs-check.sh -->` runs here, as written,
# against the demo; tests/it/docs.rs makes every other block name what runs it or say
# why it cannot run here. Only the ports differ: the manual's proxy (8080), admin port
# (9464) and emulator (9090) become the demo's, so a sidecar already running cannot
# clash. A block fails the check if it exits non-zero, prints a LINE Pay returnCode
# other than 0000, or an error of the sidecar or of the emulator's controls.
#
# Pages: README.md, docs/*.md, examples/README.md, deploy/README.md,
# deploy/compose/README.md, deploy/prometheus/README.md, deploy/grafana/README.md.
#
# Then the demo's journal (docs/money-calls.md): `calls` finds it through
# LINEPAY_SIDECAR_JOURNAL_PATH as the sidecar does, and the demo keeps a journal it was
# given.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cargo build --quiet
export PATH="$repo/target/debug:$PATH"

work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
port=$(free_port)
admin=$(free_port)
export LINEPAY_SIDECAR_JOURNAL_PATH="$work/demo-journal.sqlite3"
log="$work/demo.log"
linepay-sidecar demo --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
fail() { echo "docs check: $*" >&2; echo "--- demo log ---" >&2; cat "$log" >&2; exit 1; }
for _ in $(seq 1 100); do
  grep -q "listening on" "$log" && break
  kill -0 $pid 2>/dev/null || fail "the demo exited early"
  sleep 0.1
done
grep -q "listening on" "$log" || fail "the demo did not start within 10 s"

# What the demo tells a newcomer: where its emulator and its journal are.
emulator=$(sed -n "s|^The emulator (LINE Pay's stand-in) is http://\([0-9.:]*\);.*|\1|p" "$log")
[ -n "$emulator" ] || fail "the demo does not print its emulator's address"
grep -qF "The call journal is $LINEPAY_SIDECAR_JOURNAL_PATH (kept when the demo stops)" "$log" ||
  fail "the demo does not say it keeps the journal LINEPAY_SIDECAR_JOURNAL_PATH names"

# A confirmed payment ($TX), and before each block one waiting for its buyer
# ($TRANSACTION_ID), for the blocks that name one.
request() {
  curl -sS --max-time 10 "http://127.0.0.1:$port/v3/payments/request" -H 'Content-Type: application/json' \
    -d '{"amount":100,"currency":"TWD","orderId":"'"$1"'","packages":[{"id":"p1","amount":100,"products":[{"name":"Coffee","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://shop.example/confirm","cancelUrl":"https://shop.example/cancel"}}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["transactionId"])'
}
order="docs-check-$$"
TX=$(request "$order-1")
confirmed=$(curl -sS --max-time 10 "http://127.0.0.1:$port/v3/payments/$TX/confirm" -d '{"amount":100,"currency":"TWD"}')
case "$confirmed" in *'"returnCode":"0000"'*) ;; *) fail "confirm answered $confirmed" ;; esac
export TX

# The marked blocks, one file each, ports rewritten.
mkdir -p "$work/blocks" "$work/run"
python3 - "$work/blocks" "$port" "$admin" "$emulator" <<'PY'
import glob, os, sys
out, port, admin, emulator = sys.argv[1:5]
pages = ["README.md", *sorted(glob.glob("docs/*.md")), "examples/README.md", "deploy/README.md",
         "deploy/compose/README.md", "deploy/prometheus/README.md", "deploy/grafana/README.md"]
rewrites = [("localhost:8080", f"127.0.0.1:{port}"), ("127.0.0.1:8080", f"127.0.0.1:{port}"),
            ("localhost:9464", f"127.0.0.1:{admin}"), ("127.0.0.1:9464", f"127.0.0.1:{admin}"),
            ("127.0.0.1:9090", emulator)]
count = 0
for page in pages:
    if not os.path.exists(page):
        continue
    lines = open(page, encoding="utf-8").read().splitlines()
    marker = None
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        if line.startswith("```"):
            body = []
            index += 1
            while index < len(lines) and lines[index].strip() != "```":
                body.append(lines[index])
                index += 1
            if line in ("```sh", "```bash") and marker == "<!-- run: scripts/docs-check.sh -->":
                indent = min((len(l) - len(l.lstrip()) for l in body if l.strip()), default=0)
                text = "\n".join(l[indent:] for l in body) + "\n"
                for old, new in rewrites:
                    text = text.replace(old, new)
                count += 1
                name = f"{count:02d}-{page.replace('/', '_')}-{len(body)}"
                with open(os.path.join(out, name + ".sh"), "w", encoding="utf-8") as f:
                    f.write(f"# {page}\n" + text)
            marker = None
        elif line:
            marker = line
        index += 1
print(f"{count} blocks to run")
PY

ran=0
for block in "$work"/blocks/*.sh; do
  [ -e "$block" ] || fail "no block is marked to run here"
  where=$(head -n 1 "$block")
  echo "== ${where#\# } ($(basename "$block"))"
  ran=$((ran + 1))
  TRANSACTION_ID=$(request "$order-block-$ran-buyer-waits")
  if ! (cd "$work/run" && TRANSACTION_ID=$TRANSACTION_ID timeout 60 bash -euo pipefail "$block") >"$work/out" 2>&1; then
    cat "$work/out"
    fail "a block of ${where#\# } failed"
  fi
  # An answer of LINE Pay (or the emulator standing in) other than 0000, or an error of
  # the sidecar or of the emulator's controls. (A fault rule's own "returnCode" is not
  # followed by a returnMessage.)
  if grep -o '"returnCode":"[0-9]*","returnMessage"' "$work/out" | grep -v '"0000"' >/dev/null ||
    grep -q '"error":' "$work/out"; then
    cat "$work/out"
    fail "a block of ${where#\# } got an error"
  fi
done
echo "-- $ran blocks ran"

# docs/money-calls.md's `calls` queries, against the demo's journal: found through
# LINEPAY_SIDECAR_JOURNAL_PATH, the same variable the demo was given.
listed=$(linepay-sidecar calls --transaction-id "$TX")
case "$listed" in *"$TX"*) ;; *) fail "calls --transaction-id $TX listed: $listed" ;; esac
linepay-sidecar calls --order-id "$order-1" >/dev/null
linepay-sidecar calls --pending >/dev/null
echo "calls: the demo's journal, found through LINEPAY_SIDECAR_JOURNAL_PATH"

kill -TERM $pid
wait $pid || fail "the demo did not exit 0 on SIGTERM"
[ -s "$LINEPAY_SIDECAR_JOURNAL_PATH" ] || fail "the demo deleted the journal it was given"
listed=$(linepay-sidecar calls --journal "$LINEPAY_SIDECAR_JOURNAL_PATH" --transaction-id "$TX")
case "$listed" in *"$TX"*) ;; *) fail "the kept journal lists: $listed" ;; esac
echo "docs check OK: $ran shell blocks of the manual ran, and the demo kept its journal"
