#!/usr/bin/env python3
"""The memory attack of issue #11, measured: N connections each send a ~60 KB header
block and ~60 KB of a declared 64 KiB body, then stall. Prints the sidecar's RSS
(VmRSS) and peak (VmHWM) before, while the connections are held, and after they close,
and how the connections were answered.

  cargo build --release
  python3 scripts/memory-attack.py                                   # the defaults
  python3 scripts/memory-attack.py --config no-budget.yaml           # e.g. a 1 GiB budget

It starts its own sidecar (release binary, demo channel, an upstream that is never
reached). Loopback only; bounded by --hold seconds.
"""
import argparse
import os
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


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return -1.0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/linepay-sidecar")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--head-bytes", type=int, default=60_000)
    parser.add_argument("--body-bytes", type=int, default=60_000)
    parser.add_argument("--hold", type=float, default=8)
    parser.add_argument("--config")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEPAY_")}

    env["LINEPAY_SIDECAR_JOURNAL_PATH"] = SCRATCH_JOURNAL
    env["LINEPAY_CHANNEL_SECRET"] = "attack-secret-not-a-real-channel"
    command = [args.binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
               "--channel-id", "1234567890", "--upstream", "http://127.0.0.1:9"]
    if args.config:
        command += ["--config", args.config]
    sidecar = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        port = None
        while port is None:
            line = sidecar.stdout.readline()
            if not line:
                sys.exit("the sidecar exited")
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
        threading.Thread(target=sidecar.stdout.read, daemon=True).start()
        time.sleep(0.5)
        pid = sidecar.pid
        print(f"idle:    rss {status(pid, 'VmRSS'):6.1f} MiB")

        pad = b"a" * 4000
        head = b"POST /v3/payments/request HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n"
        index = 0
        while len(head) < args.head_bytes:
            head += b"X-Pad-%d: " % index + pad + b"\r\n"
            index += 1
        payload = head + b"\r\n" + b" " * args.body_bytes

        sockets = []
        for _ in range(args.connections):
            s = socket.create_connection(("127.0.0.1", port))
            s.setblocking(False)
            sockets.append([s, memoryview(payload), b""])
        # Send everything without blocking on any one connection.
        deadline = time.time() + 30
        while time.time() < deadline and any(len(entry[1]) for entry in sockets):
            for entry in sockets:
                if len(entry[1]):
                    try:
                        sent = entry[0].send(entry[1][:65536])
                        entry[1] = entry[1][sent:]
                    except BlockingIOError:
                        pass
                    except OSError:
                        entry[1] = memoryview(b"")
        time.sleep(args.hold)
        answers = {}
        for entry in sockets:
            try:
                data = entry[0].recv(64)
                key = data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else ("closed" if data == b"" else "?")
            except BlockingIOError:
                key = "held, no answer yet"
            except OSError:
                key = "reset"
            answers[key] = answers.get(key, 0) + 1
        print(f"held:    rss {status(pid, 'VmRSS'):6.1f} MiB, peak {status(pid, 'VmHWM'):6.1f} MiB; answers {answers}")
        for entry in sockets:
            entry[0].close()
        time.sleep(3)
        print(f"closed:  rss {status(pid, 'VmRSS'):6.1f} MiB, peak {status(pid, 'VmHWM'):6.1f} MiB")
    finally:
        sidecar.kill()


if __name__ == "__main__":
    main()
