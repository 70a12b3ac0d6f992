"""``make serve [WORKERS=N]``: uvicorn with N worker processes behind one port.

Workers share nothing but the online store and the registry: each loads the champion and
polls its pointer (so a promotion or ``/admin/reload`` reaches every worker within
``serving.reload_poll_seconds``). prometheus-client's multi-process folder is emptied and
named in the environment *before* any worker imports the client, so ``/metrics`` on any worker
sums every worker's samples. Nothing from the app is imported here for the same reason.

With N > 1 this module supervises the workers itself (not uvicorn's ``--workers``) for two
reasons: ``serving.worker_sessions`` (each worker ``setsid``s, see :func:`supervise`: on this
busy 2-core box two workers in one session got 19% + 17% of a core against one worker's 36%,
1.2x its throughput; in their own sessions 2.0x), and workers that die with the supervisor
(``PR_SET_PDEATHSIG``), even when it is SIGKILLed. Each worker listens on its own socket on the
same port (``SO_REUSEPORT``: the kernel spreads connections; a burst of 32 split 19/13, 20/12,
17/15, as uvicorn's shared socket did, 16/16, 23/9, 17/15); the sockets stay open here, so a
worker that dies is replaced on its socket and the connections queued on it wait.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sys
import time

from pipeline.config import load_params
from pipeline.config import paths as project_paths
from pipeline.errors import RecflowError
from pipeline.settings import METRICS_DIR_ENV, ROOT_ENV


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.serving.run", description=__doc__)
    ap.add_argument("--workers", type=int, help="worker processes (default: serving.workers)")
    ap.add_argument("--host", help="default: serving.host")
    ap.add_argument("--port", type=int, help="default: serving.port")
    ap.add_argument("--worker-sessions", action="store_true", default=None,
                    help="each worker in a session of its own (default: serving.worker_sessions)")
    args = ap.parse_args(argv)
    p = project_paths()
    try:
        sp = load_params(p.params).serving
    except RecflowError as e:
        sys.stderr.write(f"serve: {e}\n")
        return e.exit_code
    workers = sp.workers if args.workers is None else args.workers
    if workers < 1:
        sys.stderr.write(f"serve: --workers {workers}: must be at least 1\n")
        return 2
    shutil.rmtree(p.serving_metrics, ignore_errors=True)  # samples of an earlier server
    p.serving_metrics.mkdir(parents=True)
    os.environ[METRICS_DIR_ENV] = str(p.serving_metrics)
    os.environ[ROOT_ENV] = str(p.root)
    import uvicorn

    from pipeline import logs

    logs.setup(p.logs)
    host, port = args.host or sp.host, args.port or sp.port
    if workers == 1:
        uvicorn.run(APP, factory=True, host=host, port=port, log_level="warning", access_log=False)
        return 0
    own = sp.worker_sessions if args.worker_sessions is None else args.worker_sessions
    return supervise(workers, host, port, own)


APP = "pipeline.serving.app:app_from_env"
log = logging.getLogger("recflow.serving")


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket of its own for one worker, sharing the port (``SO_REUSEPORT``)."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.listen(2048)
    return s


def _worker(sock: socket.socket, own_session: bool) -> None:  # in a spawned child
    import ctypes

    import uvicorn

    from pipeline import logs
    from pipeline.config import paths as project_paths

    if own_session:
        os.setsid()
    try:  # die with the supervisor, even when it is killed with SIGKILL (Linux)
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    logs.setup(project_paths().logs)
    config = uvicorn.Config(APP, factory=True, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def supervise(workers: int, host: str, port: int, own_session: bool = False) -> int:
    """Start ``workers`` uvicorn processes, one socket each; replace one that dies; stop them
    all on SIGINT / SIGTERM (each finishes its requests: uvicorn's graceful shutdown).

    ``own_session``: each worker calls ``setsid``. Linux's autogroup scheduler
    (``/proc/sys/kernel/sched_autogroup_enabled``) shares the CPU per session, so on a busy
    machine N workers of one session get one session's share, as one worker would; in their
    own sessions each gets a share, as separate replicas would. On a machine with nothing
    else running the two are the same."""
    try:
        socks = [_listen(host, port) for _ in range(workers)]
    except OSError as e:
        sys.stderr.write(f"serve: cannot listen on {host}:{port} ({e.strerror})\n")
        return 1
    ctx = mp.get_context("spawn")
    procs: list = [None] * workers
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))

    started = [0.0] * workers

    def start(i: int) -> None:
        procs[i] = ctx.Process(target=_worker, args=(socks[i], own_session),
                               name=f"recflow-worker-{i}")
        procs[i].start()
        started[i] = time.monotonic()

    for i in range(workers):
        start(i)
    while not stopping:
        time.sleep(0.2)
        for i, pr in enumerate(procs):
            # a worker that cannot start (bad config) is retried at most every 5 s
            if not stopping and not pr.is_alive() and time.monotonic() - started[i] > 5:
                log.warning("worker %d (pid %s) exited with %s; starting another", i, pr.pid,
                            pr.exitcode)
                start(i)
    for pr in procs:
        if pr.is_alive():
            os.kill(pr.pid, signal.SIGTERM)
    deadline = time.time() + 15
    for pr in procs:
        pr.join(max(0.1, deadline - time.time()))
        if pr.is_alive():
            pr.kill()
            pr.join(5)
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
