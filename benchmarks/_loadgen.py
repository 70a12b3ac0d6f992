"""A tiny closed-loop HTTP/1.1 load generator on asyncio streams (keep-alive, loopback only).

Python clients such as httpx spend more CPU per request than the servers under test; this
one parses just the status line and Content-Length, so the server stays the bottleneck.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    server_timing: list[dict[str, float]] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else float("nan")


def _parse_timing(v: str) -> dict[str, float]:
    out = {}
    for part in v.split(","):
        name, _, dur = part.strip().partition(";dur=")
        try:
            out[name] = float(dur)
        except ValueError:
            pass
    return out


async def _worker(host: str, port: int, reqs: list[bytes], n: int, res: Result, offset: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in range(n):
            req = reqs[(offset + i) % len(reqs)]
            t0 = time.perf_counter()
            writer.write(req)
            await writer.drain()
            status_line = await reader.readline()
            length, timing = 0, None
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                k, _, v = line.decode("latin-1").partition(":")
                k = k.strip().lower()
                if k == "content-length":
                    length = int(v)
                elif k == "server-timing":
                    timing = v
            if length:
                await reader.readexactly(length)
            res.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            status = int(status_line.split()[1]) if status_line else 0
            res.statuses[status] = res.statuses.get(status, 0) + 1
            if status != 200:
                res.errors += 1
            if timing:
                res.server_timing.append(_parse_timing(timing))
    except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
        res.errors += 1
    finally:
        writer.close()


def get(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def post_json(path: str, body: bytes, host: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def run(host: str, port: int, reqs: list[bytes], concurrency: int, total: int) -> Result:
    """Send ``total`` requests over ``concurrency`` keep-alive connections."""
    res = Result()
    per = max(1, total // concurrency)

    async def main() -> None:
        t0 = time.perf_counter()
        await asyncio.gather(*(_worker(host, port, reqs, per, res, c * 7919) for c in range(concurrency)))
        res.seconds = time.perf_counter() - t0

    asyncio.run(main())
    return res
