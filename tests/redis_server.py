"""A real ``redis-server`` on a free loopback port, stopped by its own pid (tests only)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Yield ``redis://127.0.0.1:PORT/0``; the server is killed on exit, even on failure.

    No persistence (``--save ''``, no AOF), so nothing is written outside ``workdir``.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server not on PATH: run 'make redis' (apt-get install redis-server)")
    import redis

    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "redis.log").open("w")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.RedisError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {(workdir / 'redis.log').read_text()}") from None
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not answer within 5 s")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
