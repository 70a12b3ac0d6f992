"""``make serve [WORKERS=N]``: uvicorn with N worker processes behind one port.

Workers share nothing but the online store and the registry: each loads the champion and
polls its pointer (so a promotion or ``/admin/reload`` reaches every worker within
``serving.reload_poll_seconds``). prometheus-client's multi-process folder is emptied and
named in the environment *before* any worker imports the client, so ``/metrics`` on any worker
sums every worker's samples. Nothing from the app is imported here for the same reason.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from pipeline.config import load_params
from pipeline.config import paths as project_paths
from pipeline.errors import RecflowError
from pipeline.settings import METRICS_DIR_ENV, ROOT_ENV


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.serving.run", description=__doc__)
    ap.add_argument("--workers", type=int, help="worker processes (default: serving.workers)")
    ap.add_argument("--host", help="default: serving.host")
    ap.add_argument("--port", type=int, help="default: serving.port")
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
    uvicorn.run("pipeline.serving.app:app_from_env", factory=True, workers=workers,
                host=args.host or sp.host, port=args.port or sp.port, log_level="warning",
                access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
