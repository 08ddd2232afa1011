#!/usr/bin/env python3
"""/calls on a large journal: lookup latency, memory under a burst, and the proxy beside it.

  cargo build --release && python3 scripts/calls-load.py [--rows 1000000]

1. Starts the sidecar once so that it creates the journal (its schema and indexes), stops
   it, and adds --rows finished calls in one transaction (sqlite3, bulk INSERT).
2. Starts the emulator and the sidecar on that journal (127.0.0.1 only), adds --pending
   calls without an outcome while it runs (so that start-up reconciliation leaves them).
3. Sequential lookups, --lookups of each: by transactionId, orderId, request_id, and
   pending=true; prints p50 and p95 in ms.
4. --bursts bursts of 64 concurrent GET /calls?pending=true (8 loopback peers
   127.0.0.11-18, 8 connections each: the admin port's per-peer cap), sampling the
   sidecar's VmRSS every 5 ms; prints RSS before, the peak (VmHWM), and 2 s after, and how
   many lookups were answered 200 and 429 calls_busy.
5. The proxy's p50 for POST /v3/payments/request (--calls sequential calls), alone and
   while bursts of /calls run beside it.

Standard library only; every address is on 127.0.0.0/8; every loop is bounded in count.
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SECRET = "calls-load-secret-not-a-real-linepay-channel"
CHANNEL = "1234567890"


def request_body():
    """A /payments/request body with an orderId of its own (the emulator refuses repeats)."""
    return json.dumps({"amount": 100, "currency": "TWD", "orderId": f"load-{random.getrandbits(64)}",
                       "packages": [{"id": "p", "amount": 100, "products": [
                           {"name": "tea", "quantity": 1, "price": 100}]}],
                       "redirectUrls": {"confirmUrl": "https://shop.example/c",
                                        "cancelUrl": "https://shop.example/x"}})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, args, journal, until):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEPAY_")}
    env["LINEPAY_CHANNEL_SECRET"] = SECRET
    env["LINEPAY_SIDECAR_JOURNAL_PATH"] = journal
    proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, text=True)
    lines = []
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if until in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, lines
    proc.kill()
    sys.exit(f"{binary} {' '.join(args)} did not start: {''.join(lines)}")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def add_finished(journal, rows):
    now = int(time.time() * 1000)
    db = sqlite3.connect(journal, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    started = time.time()
    with db:
        db.executemany(
            "INSERT INTO calls (request_id, started_at, route, method, operation, channel_id, "
            "order_id, transaction_id, amount, currency, body_hash, finished_at, outcome, status, "
            "return_code) VALUES (?, ?, '/v3/payments/{transactionId}/confirm', 'POST', 'confirm', "
            "?, ?, ?, '100', 'TWD', 'h', ?, 'answered', 200, '0000')",
            ((f"req-{n}", now - rows + n, CHANNEL, f"order-{n}", str(2021121600000000000 + n),
              now - rows + n + 50) for n in range(rows)))
    db.close()
    return time.time() - started


def add_pending(journal, rows, first):
    now = int(time.time() * 1000)
    db = sqlite3.connect(journal, timeout=30)
    with db:
        db.executemany(
            "INSERT INTO calls (request_id, started_at, route, method, operation, channel_id, "
            "order_id, transaction_id, amount, currency, body_hash) VALUES (?, ?, "
            "'/v3/payments/{transactionId}/refund', 'POST', 'refund', ?, ?, ?, '100', 'TWD', 'h')",
            ((f"req-{first + n}", now, CHANNEL, f"order-{first + n}",
              str(2021121600000000000 + first + n)) for n in range(rows)))
    db.close()


def get(port, target, source="127.0.0.1"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                      source_address=(source, 0))
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        body = response.read()
        return response.status, body
    finally:
        conn.close()


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return (time.perf_counter() - started) * 1000, result


def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * fraction))]


def burst(port, statuses):
    """64 concurrent /calls?pending=true from 8 loopback peers; statuses collects codes."""
    def one(n):
        try:
            status, _ = get(port, "/calls?pending=true", source=f"127.0.0.{11 + n % 8}")
        except OSError as error:
            status = type(error).__name__
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
    lock = threading.Lock()
    threads = [threading.Thread(target=one, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/linepay-sidecar")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} is missing: cargo build --release")

    scratch = tempfile.mkdtemp(prefix="linepay-sidecar-calls-")
    journal = os.path.join(scratch, "journal.sqlite3")
    emulator = sidecar = None
    try:
        emulator_port = free_port()
        emulator, _ = start(args.binary, ["emulator", "--listen", f"127.0.0.1:{emulator_port}",
                                          "--channel-id", CHANNEL], journal, "listening on")
        sidecar_args = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                        "--channel-id", CHANNEL, "--upstream", f"http://127.0.0.1:{emulator_port}"]
        first, _ = start(args.binary, sidecar_args, journal, "admin on")
        stop(first)
        seconds = add_finished(journal, args.rows - args.pending)
        print(f"journal: {args.rows - args.pending} finished calls added in {seconds:.1f} s, "
              f"{os.path.getsize(journal) / 2**20:.0f} MiB")

        sidecar, lines = start(args.binary, sidecar_args, journal, "admin on")
        admin = proxy = None
        for line in lines:
            if m := re.search(r"admin on http://127\.0\.0\.1:(\d+)", line):
                admin = int(m.group(1))
            if m := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                proxy = int(m.group(1))
        add_pending(journal, args.pending, args.rows - args.pending)
        pid = sidecar.pid
        print(f"sidecar pid {pid}, RSS {status_kib(pid, 'VmRSS') / 1024:.1f} MiB after start")

        finished = args.rows - args.pending
        for name, target in [
            ("transactionId", lambda: f"/calls?transactionId={2021121600000000000 + random.randrange(finished)}"),
            ("orderId", lambda: f"/calls?orderId=order-{random.randrange(finished)}"),
            ("request_id", lambda: f"/calls?request_id=req-{random.randrange(finished)}"),
            ("pending=true", lambda: "/calls?pending=true"),
        ]:
            times = []
            for _ in range(args.lookups):
                ms, (status, body) = timed(lambda: get(admin, target()))
                assert status == 200, (status, body[:200])
                times.append(ms)
            rows = len(json.loads(body)["calls"])
            print(f"lookup {name:14} p50 {statistics.median(times):6.2f} ms  "
                  f"p95 {percentile(times, 0.95):6.2f} ms  ({args.lookups} sequential, last {rows} rows)")

        before = status_kib(pid, "VmRSS")
        peak = [before]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak[0] = max(peak[0], status_kib(pid, "VmRSS"))
                time.sleep(0.005)
        sampler = threading.Thread(target=sample)
        sampler.start()
        statuses = {}
        started = time.time()
        for _ in range(args.bursts):
            burst(admin, statuses)
        elapsed = time.time() - started
        sampling.set()
        sampler.join()
        time.sleep(2)
        after = status_kib(pid, "VmRSS")
        print(f"burst: {args.bursts} x 64 concurrent /calls?pending=true in {elapsed:.1f} s, "
              f"answers {statuses}")
        print(f"RSS: before {before / 1024:.1f} MiB, peak sampled {peak[0] / 1024:.1f} MiB, "
              f"VmHWM {status_kib(pid, 'VmHWM') / 1024:.1f} MiB, 2 s after {after / 1024:.1f} MiB")

        def proxy_p50(label):
            times = []
            for _ in range(args.calls):
                conn = http.client.HTTPConnection("127.0.0.1", proxy, timeout=30)
                started = time.perf_counter()
                conn.request("POST", "/v3/payments/request", request_body(),
                             {"Content-Type": "application/json"})
                answer = json.loads(conn.getresponse().read())
                times.append((time.perf_counter() - started) * 1000)
                conn.close()
                assert answer["returnCode"] == "0000", answer
            print(f"proxy POST /v3/payments/request {label:28} p50 {statistics.median(times):6.2f} ms"
                  f"  p95 {percentile(times, 0.95):6.2f} ms  ({args.calls} sequential)")
        proxy_p50("alone")
        stop_bursts = threading.Event()
        beside = {}

        def keep_bursting():
            for _ in range(1000):
                if stop_bursts.is_set():
                    return
                burst(admin, beside)
        burster = threading.Thread(target=keep_bursting)
        burster.start()
        proxy_p50("beside /calls bursts of 64")
        stop_bursts.set()
        burster.join(timeout=120)
        print(f"  (the bursts beside it were answered {beside})")
    finally:
        for proc in (sidecar, emulator):
            if proc is not None:
                stop(proc)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
