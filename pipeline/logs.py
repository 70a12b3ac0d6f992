"""One package logger for people, library noise into logs/recflow.log."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

log = logging.getLogger("recflow")

_NOISY = ("great_expectations", "feast", "dvc", "airflow", "urllib3", "numba", "py.warnings",
          "implicit", "matplotlib", "asyncio", "filelock", "fsspec", "sqlalchemy")


def setup(log_dir: Path, verbose: bool = False) -> Path:
    """Console gets recflow's own INFO lines; everything (libraries at INFO) goes to a file."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "recflow.log"
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_recflow", False):
            root.removeHandler(h)
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    fh.setLevel(logging.INFO)
    fh._recflow = True  # type: ignore[attr-defined]
    root.addHandler(fh)
    root.setLevel(logging.INFO)
    ch = logging.StreamHandler(sys.stderr)
    ch.setFormatter(logging.Formatter("%(message)s"))
    ch.setLevel(logging.DEBUG if verbose else logging.INFO)
    ch.addFilter(lambda r: r.name.startswith("recflow"))
    ch._recflow = True  # type: ignore[attr-defined]
    root.addHandler(ch)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    logging.captureWarnings(True)
    warnings.simplefilter("ignore")
    os.environ.setdefault("TQDM_DISABLE", "0")
    return path
