#!/usr/bin/env python3
"""The memory attack of issues #11 and #17: N connections each send a ~60 KB header
block and ~60 KB of a declared 64 KiB body, then stall; held --hold seconds, then all
closed. Repeated --rounds times against one sidecar (the review ran six). Prints the
sidecar's RSS when idle, and for each round its peak RSS while the connections came and
were held (VmHWM, reset at the start of each round), how they were answered, and the RSS
--settle seconds after they all closed; then the worst round.

  cargo build --release -p linepay-sidecar --no-default-features   # as the Dockerfile
  python3 scripts/memory-attack.py                                   # the defaults
  python3 scripts/memory-attack.py --rounds 1 --config no-budget.yaml
  python3 scripts/memory-attack.py --small-heads   # what one open connection costs

It starts its own sidecar (release binary, an upstream that is never reached). Loopback
only; every round is bounded (30 s to send, --hold, --settle).
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


def reset_peak(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where that is refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def attack_payload(head_bytes, body_bytes):
    pad = b"a" * 4000
    head = b"POST /v3/payments/request HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n"
    index = 0
    while len(head) < head_bytes:
        head += b"X-Pad-%d: " % index + pad + b"\r\n"
        index += 1
    return head + b"\r\n" + b" " * body_bytes


def one_round(port, pid, args, payload):
    """Returns (peak MiB, answers, RSS MiB after close)."""
    peak_reset = reset_peak(pid)
    sockets = []
    for _ in range(args.connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        sockets.append([s, memoryview(payload)])
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
            key = "held"
        except OSError:
            key = "reset"
        answers[key] = answers.get(key, 0) + 1
    peak = status(pid, "VmHWM") if peak_reset else float("nan")
    for entry in sockets:
        entry[0].close()
    time.sleep(args.settle)
    return peak, answers, status(pid, "VmRSS")


def small_heads(port, pid, count):
    """What every open connection holds whatever it sends: `count` connections that
    each sent the start of a small head, held 2 s."""
    idle = status(pid, "VmRSS")
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v3/payments/request HTTP/1.1\r\nHost: a\r\n")
        sockets.append(s)
    time.sleep(2)
    held = status(pid, "VmRSS")
    print(f"{count} connections with part of a small head: rss {idle:.1f} -> {held:.1f} MiB, "
          f"{(held - idle) * 1024 / count:.1f} KiB each")
    for s in sockets:
        s.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/linepay-sidecar")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--head-bytes", type=int, default=60_000)
    parser.add_argument("--body-bytes", type=int, default=60_000)
    parser.add_argument("--hold", type=float, default=8)
    parser.add_argument("--settle", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--config")
    parser.add_argument("--small-heads", action="store_true",
                        help="instead of the attack: the RSS of --connections small, unfinished heads")
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
        idle = status(pid, "VmRSS")
        print(f"idle:     rss {idle:6.1f} MiB")
        if args.small_heads:
            small_heads(port, pid, args.connections)
            return
        payload = attack_payload(args.head_bytes, args.body_bytes)
        peaks, afters = [], []
        for number in range(1, args.rounds + 1):
            peak, answers, after = one_round(port, pid, args, payload)
            peaks.append(peak)
            afters.append(after)
            answered = ", ".join(f"{count} {key}" for key, count in sorted(answers.items()))
            print(f"round {number}:  peak {peak:6.1f} MiB; {answered}; after close rss {after:6.1f} MiB", flush=True)
        print(f"worst:    peak {max(peaks):6.1f} MiB, after close {max(afters):6.1f} MiB "
              f"({max(afters) / idle:.1f} x idle {idle:.1f} MiB)")
    finally:
        sidecar.kill()


if __name__ == "__main__":
    main()
