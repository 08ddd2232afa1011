#!/usr/bin/env python3
"""Bounded soak of linepay-sidecar against the LINE Pay emulator on loopback.

Mixed clients for --duration seconds (default 120; not run in CI):
  valid    request -> confirm -> details, each answer checked for returnCode 0000;
  invalid  unlisted paths, garbage bytes, bad JSON, oversized bodies and heads;
  stalled  partial heads, partial bodies and pipelined calls that are never read,
           held until the sidecar cuts them (and reopened), at most --stalled at once.
Every --interval seconds it records the sidecar's RSS (VmRSS) and open descriptors
(/proc/PID/fd), and at the end prints the series and whether both stayed flat.

  cargo build --release && python3 scripts/soak.py --duration 300

Loopback only; every loop is bounded by the deadline.
"""
import argparse
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import tempfile

# The sidecar's call journal goes to a scratch file, never into the source tree.
SCRATCH_JOURNAL = os.path.join(tempfile.mkdtemp(prefix="linepay-sidecar-"), "journal.sqlite3")
os.environ.setdefault("LINEPAY_SIDECAR_JOURNAL_PATH", SCRATCH_JOURNAL)

SECRET = "soak-secret-not-a-real-linepay-channel"
CHANNEL = "1234567890"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, args, env_extra, until):
    """Starts `binary args` and returns it with its stdout lines up to the one holding `until`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEPAY_")}
    env["LINEPAY_SIDECAR_JOURNAL_PATH"] = SCRATCH_JOURNAL
    env.update(env_extra)
    proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, text=True)
    lines = []
    deadline = time.time() + 20
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


def port_in(lines, prefix):
    for line in lines:
        match = re.search(re.escape(prefix) + r" http://127\.0\.0\.1:(\d+)", line)
        if match:
            return int(match.group(1))
    sys.exit(f"no '{prefix}' line in {lines}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}

    def add(self, key):
        with self.lock:
            self.values[key] = self.values.get(key, 0) + 1


def valid_client(port, deadline, counts):
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            order = f"soak-{random.getrandbits(48)}"
            body = json.dumps({"amount": 100, "currency": "TWD", "orderId": order,
                               "packages": [{"id": "p", "amount": 100, "products": [
                                   {"name": "tea", "quantity": 1, "price": 100}]}],
                               "redirectUrls": {"confirmUrl": "https://shop.example/c",
                                                "cancelUrl": "https://shop.example/x"}})
            conn.request("POST", "/v3/payments/request", body, {"Content-Type": "application/json"})
            answer = json.loads(conn.getresponse().read())
            tx = answer["info"]["transactionId"]
            conn.request("POST", f"/v3/payments/{tx}/confirm", json.dumps({"amount": 100, "currency": "TWD"}))
            confirm = json.loads(conn.getresponse().read())
            conn.request("GET", f"/v3/payments?transactionId={tx}")
            details = json.loads(conn.getresponse().read())
            ok = answer["returnCode"] == confirm["returnCode"] == details["returnCode"] == "0000"
            counts.add("valid ok" if ok else "valid wrong answer")
            conn.close()
        except Exception as error:  # noqa: BLE001 - counted, the soak goes on
            counts.add(f"valid error {type(error).__name__}")


INVALID = [
    b"GET /v3/admin HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /v3/payments/request HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nnotjs",
    b"POST /v3/payments/request HTTP/1.1\r\nHost: a\r\nContent-Length: 999999\r\n\r\n",
    b"GET /v3/payments/../x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
    b"POST /v3/payments/request HTTP/1.1\r\nHost: a\r\n" + b"X-Pad: " + b"a" * 70000 + b"\r\n\r\n",
]


def invalid_client(port, deadline, counts):
    while time.time() < deadline:
        payload = random.choice(INVALID + [os.urandom(random.randint(1, 200))])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                data = s.recv(64)
                counts.add("invalid " + (data[9:12].decode(errors="replace") if data.startswith(b"HTTP/1.1 ") else "closed"))
        except Exception as error:  # noqa: BLE001
            counts.add(f"invalid error {type(error).__name__}")


def _peer_closed(s):
    """Whether the peer has closed: TCP_INFO's state is CLOSE_WAIT (8) once its FIN came."""
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return info[0] == 8


def stalled_client(port, deadline, counts, slots):
    kinds = [
        b"POST /v3/payments/request HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 30000,
        b"POST /v3/payments/request HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\n" + b" " * 40000,
        b"GET /v3/payments?orderId=x HTTP/1.1\r\nHost: a\r\n\r\n" * 200,
    ]
    while time.time() < deadline:
        if not slots.acquire(timeout=1):
            continue
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(30)
            s.connect(("127.0.0.1", port))
            s.sendall(random.choice(kinds))
            # Hold without reading for 5-30 s, then go away and come back: the sidecar
            # must cut it first (header, body or write timeout) or free it after.
            until = min(deadline, time.time() + random.uniform(5, 30))
            cut = False
            s.settimeout(0.5)
            while time.time() < until and not cut:
                try:
                    waiting = s.recv(65536, socket.MSG_PEEK)
                    # An answer is waiting (never read): closed when the peer sent FIN too.
                    cut = waiting == b"" or (len(waiting) < 65536 and _peer_closed(s))
                except socket.timeout:
                    pass
                except OSError:
                    cut = True
                time.sleep(0.5)
            held = cut
            counts.add("stalled cut by the sidecar" if held else "stalled let go by the client")
            s.close()
        except Exception as error:  # noqa: BLE001
            counts.add(f"stalled error {type(error).__name__}")
        finally:
            slots.release()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/linepay-sidecar")
    parser.add_argument("--duration", type=float, default=120)
    parser.add_argument("--interval", type=float, default=10)
    parser.add_argument("--valid", type=int, default=4)
    parser.add_argument("--invalid", type=int, default=2)
    parser.add_argument("--stalled", type=int, default=200)
    parser.add_argument("--config", help="a sidecar config file (--config)")
    args = parser.parse_args()

    env = {"LINEPAY_CHANNEL_SECRET": SECRET, "LINEPAY_CHANNEL_ID": CHANNEL}
    emulator_port = free_port()
    emulator, _ = start(args.binary, ["emulator", "--listen", f"127.0.0.1:{emulator_port}"], env,
                        "listening on")
    sidecar_args = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                    "--upstream", f"http://127.0.0.1:{emulator_port}"]
    if args.config:
        sidecar_args += ["--config", args.config]
    sidecar, lines = start(args.binary, sidecar_args, env, "admin on")
    port = port_in(lines, "linepay-sidecar listening on")
    try:
        deadline = time.time() + args.duration
        counts = Counts()
        slots = threading.BoundedSemaphore(args.stalled)
        threads = [threading.Thread(target=valid_client, args=(port, deadline, counts)) for _ in range(args.valid)]
        threads += [threading.Thread(target=invalid_client, args=(port, deadline, counts)) for _ in range(args.invalid)]
        threads += [threading.Thread(target=stalled_client, args=(port, deadline, counts, slots))
                    for _ in range(args.stalled)]
        for thread in threads:
            thread.daemon = True
            thread.start()
        samples = []
        started = time.time()
        while time.time() < deadline:
            samples.append((time.time() - started, rss_kib(sidecar.pid), fds(sidecar.pid)))
            print(f"t={samples[-1][0]:6.0f}s rss={samples[-1][1] / 1024:6.1f} MiB fds={samples[-1][2]}", flush=True)
            time.sleep(min(args.interval, max(0.0, deadline - time.time())))
        for thread in threads:
            thread.join(timeout=40)
        time.sleep(12)  # header and write timeouts: whatever was stalled is cut by now
        samples.append((time.time() - started, rss_kib(sidecar.pid), fds(sidecar.pid)))
        print(f"after  rss={samples[-1][1] / 1024:6.1f} MiB fds={samples[-1][2]} (clients gone)")
        print("outcomes:", json.dumps(dict(sorted(counts.values.items())), indent=1))
        steady = samples[len(samples) // 4: -1] or samples
        rss = [s[1] for s in steady]
        fd = [s[2] for s in steady]
        print(f"steady state (last 3/4): rss {min(rss) / 1024:.1f}-{max(rss) / 1024:.1f} MiB, fds {min(fd)}-{max(fd)}")
        alive = sidecar.poll() is None
        print("sidecar alive:", alive)
        return 0 if alive else 1
    finally:
        sidecar.kill()
        emulator.kill()


if __name__ == "__main__":
    sys.exit(main())
