"""Atomic writes (a reader sees the old artifact or the new one, never half of either) and
content hashes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale(parent: Path) -> list[str]:
    """Remove the ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` leftovers of writers that were
    killed (their pid is gone) from ``parent``; returns their names.

    An ``.old`` copy whose target is missing (killed between the two renames of
    :func:`atomic_dir`) is the last complete version: it is moved back instead.
    """
    removed: list[str] = []
    if not parent.is_dir():
        return removed
    for p in sorted(parent.iterdir()):
        m = _STALE.match(p.name)
        if not m or _alive(int(m["pid"])):
            continue
        target = parent / m["name"]
        if m["kind"] == "old" and not target.exists():
            os.replace(p, target)
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh temp dir beside ``target``; on success it replaces ``target`` whole.

    On any exception the temp dir is removed and ``target`` is untouched. Leftovers of a
    killed earlier writer of the same folder are removed first (:func:`remove_stale`).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (no second copy of a large file), or a copy where the
    file system has no hard links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_text(path: Path, text: str) -> None:
    """Write a text file via temp file + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON via temp file + rename."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write a parquet file via temp file + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write a CSV file via temp file + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sql_str(value: str) -> str:
    """``value`` as a SQL string literal (DuckDB / SQLite): single quotes doubled, so any text —
    a path with ``'``, an id with a comma — survives. Use it for every literal and path put
    into SQL text; bind parameters where the API allows."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_path(path: Path) -> str:
    """A file path as a SQL string literal (``read_parquet(sql_path(p))``)."""
    return sql_str(str(path))
