#!/usr/bin/env python3
"""Allocator churn load for Rookery (loopback only, bounded, no dependencies).

Opens many WebSocket connections to a running server, each handshaking with a
large client_data and subscribing to an observable room with history, lets
them publish large messages, drains everything the server sends, then closes
all of them. Reads the server's resident memory from /proc/<pid>/status at each
step and prints one JSON line:

  {"cycle": [{"peak_mib", "attack_mib", "closed_2s_mib", "closed_15s_mib", "closed_30s_mib"}, ...]}

Run by bench/alloc_churn.sh, which starts and stops the server.
"""

import argparse
import asyncio
import base64
import json
import os
import struct
import time


def rss_mib(pid: int, key: str = "VmRSS:") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {key} for {pid}")


def frame(text: str) -> bytes:
    """A masked text frame. The mask is zero (valid on the wire) so that no
    byte-wise XOR in Python limits the load."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return header + b"\0\0\0\0" + payload


class Conn:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.received = 0
        self.drain_task = None

    async def drain(self):
        try:
            while True:
                chunk = await self.reader.read(1 << 16)
                if not chunk:
                    return
                self.received += len(chunk)
        except (ConnectionError, asyncio.CancelledError):
            return


async def open_conn(args, index: int, limiter: asyncio.Semaphore) -> Conn:
    async with limiter:
        reader, writer = await asyncio.open_connection(args.host, args.port, limit=1 << 20)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /v3/websocket HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head[:80]!r}")
        conn = Conn(reader, writer)
        conn.drain_task = asyncio.create_task(conn.drain())
        room = f"observable-churn-{index % args.rooms}"
        client_data = {"name": f"user-{index}", "bio": "x" * args.client_data}
        writer.write(frame(json.dumps({"type": "handshake", "channel": args.channel, "client_data": client_data, "callback": 0})))
        writer.write(frame(json.dumps({"type": "subscribe", "room": room, "history_count": args.history, "callback": 1})))
        body = "m" * args.message
        for n in range(args.messages):
            writer.write(frame(json.dumps({"type": "publish", "room": room, "message": {"n": n, "body": body}})))
        await writer.drain()
        return conn


async def settle(conns, seconds: float):
    """Waits until nothing more arrives for a second (or `seconds` pass)."""
    deadline = time.monotonic() + seconds
    last = -1
    while time.monotonic() < deadline:
        total = sum(c.received for c in conns)
        if total == last:
            return
        last = total
        await asyncio.sleep(1.0)


async def cycle(args) -> dict:
    limiter = asyncio.Semaphore(200)
    conns = await asyncio.gather(*(open_conn(args, i, limiter) for i in range(args.conns)))
    await settle(conns, args.settle)
    result = {
        "received_mib": round(sum(c.received for c in conns) / (1 << 20), 1),
        "attack_mib": rss_mib(args.pid),
    }
    for conn in conns:
        conn.drain_task.cancel()
        conn.writer.close()
    await asyncio.gather(*(c.drain_task for c in conns), return_exceptions=True)
    started = time.monotonic()
    for mark in (2, 15, 30):
        await asyncio.sleep(max(0.0, started + mark - time.monotonic()))
        result[f"closed_{mark}s_mib"] = rss_mib(args.pid)
    result["peak_mib"] = rss_mib(args.pid, "VmHWM:")
    return result


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the server's pid, for its RSS")
    parser.add_argument("--channel", default="churn")
    parser.add_argument("--conns", type=int, default=3000)
    parser.add_argument("--rooms", type=int, default=12)
    parser.add_argument("--client-data", type=int, default=900, help="bytes of client_data per connection")
    parser.add_argument("--history", type=int, default=50, help="history_count asked on subscribe")
    parser.add_argument("--messages", type=int, default=4, help="messages each connection publishes")
    parser.add_argument("--message", type=int, default=8000, help="bytes per message")
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--settle", type=float, default=60.0, help="longest wait for the traffic to end")
    args = parser.parse_args()
    result = {"idle_mib": rss_mib(args.pid), "cycles": []}
    for _ in range(args.cycles):
        result["cycles"].append(await cycle(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
