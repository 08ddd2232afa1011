#!/usr/bin/env python3
"""Two measurements scripts/bench-compare.sh runs after the load comparison.

  bench_extra.py relay LISTEN_PORT TARGET_PORT RTT_MS
      A TCP relay on 127.0.0.1 that delays every chunk by RTT/2 in each direction, and a
      new connection's first chunk by one more RTT (the TCP handshake a real client waits
      for before it can send). It stands for an upstream RTT_MS away, on loopback only.
      Runs until killed.

  bench_extra.py tls-client URL CA_FILE CALLS TIME_LIMIT_S
      The legacy PHP client: one POST per call, a NEW connection per call (TLS when URL is
      https://, verified against CA_FILE), sequential. Prints calls, mean and p50 in ms.
      Every answer must be HTTP 200 with returnCode 0000.

  bench_extra.py memory HOST:PORT PID CONNECTIONS
      RSS of process PID (VmRSS): idle, with CONNECTIONS idle keep-alive connections (each
      has made one call), and with CONNECTIONS connections each mid-request (headers and
      half of the body sent). Prints one line per state. Bounded: each state waits at most
      10 s for its connections.

Standard library only; every address is on 127.0.0.1.
"""

import asyncio
import http.client
import resource
import socket
import ssl
import sys
import time
import urllib.parse
import os
import tempfile

# The sidecar's call journal goes to a scratch file, never into the source tree.
SCRATCH_JOURNAL = os.path.join(tempfile.mkdtemp(prefix="linepay-sidecar-"), "journal.sqlite3")
os.environ.setdefault("LINEPAY_SIDECAR_JOURNAL_PATH", SCRATCH_JOURNAL)

BODY = b'{"amount":100,"currency":"TWD","orderId":"b-0001","packages":[{"id":"p1","amount":100,"products":[{"name":"Coffee","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://a.example/c","cancelUrl":"https://a.example/x"}}'
PATH = "/v3/payments/request"


def relay(listen_port, target_port, rtt_ms):
    half = rtt_ms / 2000.0

    async def pump(reader, writer, first_extra):
        queue = asyncio.Queue()

        async def read():
            extra = first_extra
            while True:
                data = await reader.read(65536)
                queue.put_nowait((time.monotonic() + half + extra, data))
                extra = 0.0
                if not data:
                    return

        async def write():
            while True:
                due, data = await queue.get()
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.gather(read(), write())
        except (ConnectionError, OSError):
            writer.close()

    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        for s in (client_writer, up_writer):
            sock = s.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(
            pump(client_reader, up_writer, 2 * half),
            pump(up_reader, client_writer, 0.0),
        )

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        print("relay listening", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def tls_client(url, ca_file, calls, time_limit):
    parsed = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=ca_file) if parsed.scheme == "https" else None
    took = []
    deadline = time.monotonic() + time_limit
    for _ in range(calls):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        if context:
            conn = http.client.HTTPSConnection(parsed.hostname, parsed.port, context=context, timeout=10)
        else:
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        conn.request("POST", PATH, body=BODY, headers={"Content-Type": "application/json", "Connection": "close"})
        answer = conn.getresponse()
        data = answer.read()
        conn.close()
        took.append(time.perf_counter() - started)
        if answer.status != 200 or b'"returnCode":"0000"' not in data:
            sys.exit(f"bad answer from {url}: {answer.status} {data[:200]!r}")
    took.sort()
    mean = sum(took) / len(took)
    print(f"calls={len(took)} mean_ms={mean * 1000:.2f} p50_ms={took[len(took) // 2] * 1000:.2f}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory(address, pid, count):
    host, port = address.rsplit(":", 1)
    port = int(port)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * count + 100)), hard))
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()

    def settle():
        time.sleep(1.0)
        return rss_kib(pid)

    print(f"idle: VmRSS {settle() / 1024:.1f} MiB")

    # 1,000 keep-alive connections, each after one whole call.
    idle = []
    deadline = time.monotonic() + 10
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(request + BODY)
        idle.append(s)
    for s in idle:
        buffer = b""
        while b'"returnCode"' not in buffer and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buffer += chunk
        if b"200 OK" not in buffer:
            sys.exit(f"a keep-alive call did not answer 200: {buffer[:200]!r}")
    print(f"{count} idle keep-alive connections: VmRSS {settle() / 1024:.1f} MiB")
    for s in idle:
        s.close()
    time.sleep(0.5)

    # 1,000 connections each mid-request: headers and half the body, the rest never sent.
    busy = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(request + BODY[: len(BODY) // 2])
        busy.append(s)
    print(f"{count} connections mid-request: VmRSS {settle() / 1024:.1f} MiB")
    for s in busy:
        s.close()
    time.sleep(0.5)
    print(f"after closing them: VmRSS {settle() / 1024:.1f} MiB")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "relay":
        relay(int(args[0]), int(args[1]), float(args[2]))
    elif command == "tls-client":
        tls_client(args[0], args[1], int(args[2]), float(args[3]))
    elif command == "memory":
        memory(args[0], int(args[1]), int(args[2]))
    else:
        sys.exit(f"unknown command {command}")
