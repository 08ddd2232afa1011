#!/usr/bin/env python3
"""What sharing the rate limits on Redis adds to a call (benches/README.md, issue 18).

    scripts/bench-redis-limits.py                  # build, 3 x 2000 calls
    scripts/bench-redis-limits.py --no-build --calls 5000

All on 127.0.0.1: a keep-alive upstream answering a fixed LINE Pay JSON (Python, in this
process), a real /usr/bin/redis-server on a free port (no persistence), and three release
sidecars in front of the same upstream:

    none    no limits
    local   limits.global and a route bucket in the process (state.backend: local)
    redis   the same limits shared on Redis (state.backend: redis)

The limits are far above what the client sends, so every call is admitted: what is
measured is the cost of asking, not of being refused. One keep-alive connection per
sidecar, the same 230-byte POST /v3/payments/request; the three are called in turn, call
after call, so a noisy neighbour on this shared machine hits all three alike. Printed:
p50 and p90 per sidecar, the differences (what limits add, what Redis adds), and Redis
round trips per call (Redis's own INFO commandstats: EVALSHA + EVAL calls, divided by
the calls the redis sidecar answered), and the sidecar's own Redis latency histogram.
"""

import argparse
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSWER = json.dumps(
    {
        "returnCode": "0000",
        "returnMessage": "Success.",
        "info": {
            "paymentUrl": {"web": "https://sandbox-web-pay.line.me/web/payment/wait"},
            "transactionId": 2025010112345678901,
            "paymentAccessToken": "187568751124",
        },
    }
).encode()
BODY = json.dumps(
    {
        "amount": 100,
        "currency": "TWD",
        "orderId": "bench-order-000000000001",
        "packages": [
            {
                "id": "package-1",
                "amount": 100,
                "products": [{"name": "bench product", "quantity": 1, "price": 100}],
            }
        ],
        "redirectUrls": {
            "confirmUrl": "https://shop.example/confirm",
            "cancelUrl": "https://shop.example/cancel",
        },
    }
).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(ANSWER)).encode()
    + b"\r\n\r\n"
    + ANSWER
)
LIMITS = """limits:
  global: {rate: 1000000/s, burst: 1000000}
  routes:
    "POST /v3/payments/request": {rate: 1000000/s, burst: 1000000}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        # Head and body in one write: two small writes would meet Nagle's algorithm and
        # the sidecar's delayed ACK (40 ms per call).
        self.wfile.write(RESPONSE)

    def log_message(self, *args):
        pass


def wait_for_line(process, prefix, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line
    raise SystemExit(f"no '{prefix}' line from the sidecar")


def start_sidecar(binary, work, name, upstream_port, yaml):
    config = os.path.join(work, f"{name}.yaml")
    with open(config, "w") as f:
        f.write(yaml)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LINEPAY_CHANNEL_ID": "1657002468",
        "LINEPAY_CHANNEL_SECRET": "bench-secret-0123456789abcdef",
        "LINEPAY_SIDECAR_JOURNAL_PATH": os.path.join(work, f"{name}.sqlite3"),
        "LINEPAY_SIDECAR_LOG_LEVEL": "warn",
    }
    process = subprocess.Popen(
        [
            binary,
            "--config", config,
            "--listen", "127.0.0.1:0",
            "--admin-listen", "127.0.0.1:0",
            "--upstream", f"http://127.0.0.1:{upstream_port}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(os.path.join(work, f"{name}.log"), "w"),
        text=True,
    )
    line = wait_for_line(process, "linepay-sidecar listening on http://")
    port = int(line.split("http://127.0.0.1:")[1].split()[0].rstrip("/"))
    admin = wait_for_line(process, "linepay-sidecar admin on http://")
    admin_port = int(admin.split("http://127.0.0.1:")[1].split()[0].rstrip("/"))
    return process, port, admin_port


def redis_command(port, *args):
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    )
    return out.stdout


def script_calls(port):
    stats = redis_command(port, "INFO", "commandstats")
    total = 0
    for line in stats.splitlines():
        if line.startswith("cmdstat_evalsha:") or line.startswith("cmdstat_eval:"):
            total += int(line.split("calls=")[1].split(",")[0])
    return total


def scrape(admin_port, prefix):
    connection = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    return [line for line in text.splitlines() if line.startswith(prefix)]


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not os.path.exists("/usr/bin/redis-server"):
        raise SystemExit("needs /usr/bin/redis-server (Debian: redis-server)")
    if not args.no_build:
        subprocess.run(
            ["cargo", "build", "--release", "--quiet", "--bin", "linepay-sidecar"],
            cwd=ROOT, check=True,
        )
    binary = os.path.join(ROOT, "target/release/linepay-sidecar")

    work = tempfile.mkdtemp(prefix="bench-redis-")
    processes = []
    try:
        upstream_port = free_port()
        server = http.server.ThreadingHTTPServer(("127.0.0.1", upstream_port), Upstream)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        redis_port = free_port()
        redis = subprocess.Popen(
            ["/usr/bin/redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", work],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        processes.append(redis)
        for _ in range(100):
            try:
                if redis_command(redis_port, "PING").strip() == "PONG":
                    break
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.05)

        redis_yaml = (
            f"state:\n  backend: redis\n  redis:\n    url: redis://127.0.0.1:{redis_port}\n"
            + LIMITS
        )
        targets = {}
        for name, yaml in [("none", ""), ("local", LIMITS), ("redis", redis_yaml)]:
            process, port, admin_port = start_sidecar(binary, work, name, upstream_port, yaml)
            processes.append(process)
            targets[name] = (port, admin_port)

        connections = {
            name: http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            for name, (port, _) in targets.items()
        }
        headers = {"content-type": "application/json"}

        def call(name):
            connection = connections[name]
            started = time.perf_counter()
            connection.request("POST", "/v3/payments/request", BODY, headers)
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise SystemExit(f"{name}: HTTP {response.status}")
            return elapsed

        for _ in range(200):  # warm-up: pools, allocator, the script cached in Redis
            for name in connections:
                call(name)
        before = script_calls(redis_port)
        times = {name: [] for name in connections}
        deadline = time.time() + 300
        names = list(connections)
        for round_number in range(args.calls):
            # Each sidecar goes first in turn: no place in the round is favoured.
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(call(name))
            if time.time() > deadline:
                raise SystemExit("over 300 s: stopped")
        round_trips = (script_calls(redis_port) - before) / args.calls

        us = lambda seconds: seconds * 1e6
        p50 = {name: us(percentile(values, 0.5)) for name, values in times.items()}
        p90 = {name: us(percentile(values, 0.9)) for name, values in times.items()}
        print(f"calls per sidecar: {args.calls} (interleaved, one keep-alive connection each)")
        print("| sidecar | p50 µs | p90 µs |")
        print("| --- | --- | --- |")
        for name in times:
            print(f"| {name} | {p50[name]:.0f} | {p90[name]:.0f} |")
        print(f"limits in the process add (p50 local - none): {p50['local'] - p50['none']:.0f} µs")
        print(f"limits on Redis add (p50 redis - none): {p50['redis'] - p50['none']:.0f} µs")
        print(f"Redis over local (p50 redis - local): {p50['redis'] - p50['local']:.0f} µs"
              f" (ratio redis/local {p50['redis'] / p50['local']:.2f})")
        print(f"Redis round trips per call (EVALSHA + EVAL, Redis INFO commandstats): {round_trips:.2f}")
        for line in scrape(targets["redis"][1], "linepay_sidecar_state_duration_seconds"):
            if "_sum" in line or "_count" in line or 'le="0.0005"' in line or 'le="0.001"' in line:
                print("  " + line)
        for line in scrape(targets["redis"][1], "linepay_sidecar_rate_limit_fallback_total"):
            print("  " + line)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
