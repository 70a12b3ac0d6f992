"""What a model keeps of its training data, so that the gate can judge it honestly later.

- :func:`pair_hash`: a seeded md5 of (user, item), the one hash the splits rank pairs by;
- :func:`pair_fingerprint`: the sorted hashes of a model's training pairs, saved beside the
  artifact (:data:`~pipeline.config.TRAINED_PAIRS_FILE`, 8 bytes a pair) and compared with a
  later holdout by :func:`overlap`, whatever split produced either;
- :func:`inputs_sha256`: one hash of everything a fit sees; two models with the same value
  are reruns of each other.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import TRAINED_PAIRS_FILE
from pipeline.io import sql_str
from pipeline.models.base import RecommenderBase, TokenMap


def pair_hash(pairs: pd.DataFrame, salt: str) -> np.ndarray:
    """One uint64 per row of ``pairs``: the first 8 bytes of md5(salt, user_id, item_id).

    A pure function of the ids (standard md5, not an engine's internal hash), so the same pair
    gets the same value on any machine, library version, thread count or row order. The user id
    is length-prefixed, so no two (user, item) pairs share a key string.
    """
    if pairs.empty:
        return np.zeros(0, dtype=np.uint64)
    frame = pd.DataFrame({"n": np.arange(len(pairs)), "u": pairs[C.user].astype(str).to_numpy(),
                          "i": pairs[C.item].astype(str).to_numpy()})
    con = duckdb.connect()
    try:
        con.register("frame", frame)
        hexes = con.execute(f"SELECT left(md5({sql_str(salt + ':')} || length(u) || ':' || u || i),"
                            " 16) FROM frame ORDER BY n").fetchnumpy()
    finally:
        con.close()
    digits = next(iter(hexes.values()))
    return np.frombuffer(bytes.fromhex("".join(digits.tolist())), dtype=">u8").astype(np.uint64)


def pair_fingerprint(pairs: pd.DataFrame) -> np.ndarray:
    """Sorted distinct uint64 hashes of the (user, item) pairs of ``pairs``: what a registered
    model keeps of its training data (8 bytes a pair) so that a later holdout can be checked
    against it, whatever split produced either (the salt does not depend on the split)."""
    return np.unique(pair_hash(pairs, "pair"))


def save_fingerprint(directory: Path, pairs: pd.DataFrame) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / TRAINED_PAIRS_FILE, pair_fingerprint(pairs), allow_pickle=False)


def load_fingerprint(directory: Path) -> np.ndarray | None:
    """The fingerprint saved beside a model, or None (a version registered before they were)."""
    f = directory / TRAINED_PAIRS_FILE
    if not f.exists():
        return None
    try:
        return np.load(f, allow_pickle=False)
    except (OSError, ValueError):
        return None


def overlap(fingerprint: np.ndarray, pairs: pd.DataFrame) -> int:
    """How many distinct (user, item) pairs of ``pairs`` are in ``fingerprint``."""
    if pairs.empty or len(fingerprint) == 0:
        return 0
    return int(np.isin(pair_fingerprint(pairs), fingerprint, assume_unique=True).sum())


def inputs_sha256(config: dict, train: pd.DataFrame, utok: TokenMap, itok: TokenMap) -> str:
    """One hash of everything a fit sees: the configuration, the training pairs with their
    confidence (rounded to 1e-6, below the float noise of a parallel sum) and the tokens. Two
    models with the same value are reruns of one another."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    cols = [c for c in (C.user, C.item, C.confidence) if c in train]
    pairs = train[cols].astype({C.user: str, C.item: str}).sort_values([C.user, C.item])
    if C.confidence in pairs:
        pairs[C.confidence] = pairs[C.confidence].round(6)
    h.update(pairs.to_csv(index=False).encode())
    for tok in (utok, itok):
        h.update(json.dumps(sorted((k, sorted(v)) for k, v in tok.items() if v)).encode())
    return h.hexdigest()


def write_artifact(model: RecommenderBase, directory: Path, train: pd.DataFrame,
                   inputs: str, extra: dict | None = None) -> None:
    """Save ``model`` with what the gate needs later: its training pairs' fingerprints and the
    hash of its inputs."""
    model.save(directory, extra={"inputs_sha256": inputs, **(extra or {})})
    save_fingerprint(directory, train)
