"""Refit for serving: the configuration the gate promoted, fitted again on all data.

The gate judges a model fitted on the train part, so that the holdout can measure it. The
served model is the same configuration (family, settings, early stopping's epoch count)
fitted on every positive pair through the end of the data, with the features as of that end
(the newest snapshot per entity: what materialization put in the online store). Users and
items first seen in the holdout period are then warm in production instead of cold.

The version folder keeps both artifacts (:func:`pipeline.registry.versions.register`): the
refit at its root, which serving loads, and the judged artifact in ``judged/``, which a later
gate scores when the refit saw its holdout (:func:`pipeline.evaluation.champion.judge`).
The card keeps both lineages. Any family works the same way: ``FAMILIES[format]
.from_config(config).fit(pairs, user_tokens, item_tokens)``, the model contract.

Nothing here touches the registry. The refit is written to a temp folder and checked; only
then is it registered (temp + rename) and switched to. A refit that fails or is refused
raises :class:`~pipeline.errors.RefitFailed` before anything changes.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import TRAINED_PAIRS_FILE, Params, Paths
from pipeline.errors import DataError, RefitFailed
from pipeline.evaluation.champion import configuration, fit_configuration
from pipeline.evaluation.fingerprint import inputs_sha256, write_artifact
from pipeline.evaluation.splits import all_pairs
from pipeline.evaluation.trainset import catalogue_items, with_attributes
from pipeline.io import sql_path
from pipeline.models.artifact import load_model
from pipeline.models.base import RecommenderBase, TokenMap, read_meta
from pipeline.registry.versions import JUDGED

log = logging.getLogger("recflow.refit")

#: users whose scores are checked for NaN / inf before a refit may serve
_CHECK_USERS = 256
#: a pair whose later events turn it net-negative (a skip after a play) leaves the data, so a
#: few items of the judged model may be missing from the refit; losing more means the data read
#: is not the data the gate judged
_MIN_CATALOGUE_SHARE = 0.99


def serving_features(path: Path, key: str) -> pd.DataFrame:
    """The newest feature row per entity of a feature file: the serving features
    (materialization's ``pull_latest_features`` rule)."""
    if not path.exists():
        raise DataError(f"{path}: missing. Run 'recflow features' first.")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(f"SELECT * FROM read_parquet({sql_path(path)}) QUALIFY row_number() "
                       f"OVER (PARTITION BY {key} ORDER BY {C.ts} DESC) = 1").df()
    finally:
        con.close()


def _features(config: dict, paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """(user, item) serving features for a configuration (empty when it reads none), with the
    attribute tables joined and the catalogue's cold items added as the training set does, and
    the time they are as of."""
    # session tokens read the users' recent items: the file when it exists (a project always
    # has one; the configuration's own user features require it)
    reads_users = bool(config.get("user_features")) or bool(
        config.get("session_items") and paths.user_features.exists())
    uf = (with_attributes(serving_features(paths.user_features, C.user), paths, "users")
          if reads_users else pd.DataFrame({C.user: []}))
    itf = pd.DataFrame({C.item: []})
    if config.get("item_features"):
        itf = serving_features(paths.item_features, C.item)
        if config.get("cold_items"):
            known = set(itf[C.item].astype(str))
            cold = [i for i in catalogue_items(paths) if i not in known]
            itf = pd.concat([itf, pd.DataFrame({C.item: cold})], ignore_index=True)
        itf = with_attributes(itf, paths, "items")
    stamps = [f[C.ts].max() for f in (uf, itf) if C.ts in f and len(f)]
    return uf, itf, (pd.Timestamp(max(stamps)).isoformat() if stamps else None)


def check(served: RecommenderBase, judged: RecommenderBase, users: list[str],
          utok: TokenMap) -> None:
    """Refuse a refit that may not serve: one that lost more than 1% of the judged model's
    items, or whose scores are not finite (a diverged fit) for known users or an unknown one."""
    kept = np.isin(judged.item_ids.astype(str), served.item_ids.astype(str)).sum()
    if kept < _MIN_CATALOGUE_SHARE * len(judged.item_ids):
        raise RefitFailed(f"refit refused: it knows only {kept} of the judged model's "
                          f"{len(judged.item_ids)} items; the champion is unchanged.")
    sample = [*users[:_CHECK_USERS], "\x00unknown user"]
    if not np.isfinite(served.scores(sample, utok)).all():
        raise RefitFailed("refit refused: its scores are not finite (the fit diverged); "
                          "the champion is unchanged.")


@dataclass(frozen=True)
class Refit:
    directory: Path   # the served artifact, in a temp folder until registered
    info: dict        # its lineage, the card's "served"


@contextmanager
def serving_refit(judged: Path, params: Params, paths: Paths) -> Iterator[Refit]:
    """Refit the configuration of the ``judged`` artifact on all data, into a temp folder that
    is removed on exit (register copies it). Raises :class:`RefitFailed` (one line; the
    registry untouched) when the refit fails or :func:`check` refuses it."""
    tmp = paths.models / f".serving.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield Refit(tmp, _refit_into(tmp, judged, params, paths))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _refit_into(tmp: Path, judged: Path, params: Params, paths: Paths) -> dict:
    t0 = time.perf_counter()
    try:
        events = paths.validated_events
        if not events.exists():
            raise DataError(f"{events}: missing. Run 'recflow validate' first.")
        pairs = all_pairs(events, params)
        if pairs.empty:
            raise DataError(f"{events}: no positive (user, item) pairs to refit on.")
        _, config = configuration(judged)
        uf, itf, as_of = _features(config, paths)
        model, utok, itok = fit_configuration(judged, pairs, uf, itf)
        check(model, load_model(judged), sorted(pairs[C.user].astype(str).unique()), utok)
        inputs = inputs_sha256(model.config(), pairs, utok, itok)
        judged_meta = read_meta(judged)
        end = pd.Timestamp(pairs["last_ts"].max()).isoformat() if "last_ts" in pairs else None
        info = {"refit_on": "all data: every positive pair through the end of the data "
                            "(train part + holdout)",
                "pairs": len(pairs), "users": int(pairs[C.user].nunique()),
                "items": int(pairs[C.item].nunique()), "data_end": end,
                "features": ("serving features: the newest snapshot per entity" if as_of
                             else "none (the configuration reads no features)"),
                "features_as_of": as_of, "config": model.config(),
                "inputs_sha256": inputs, "fingerprints": TRAINED_PAIRS_FILE,
                "judged_artifact": f"{JUDGED}/",
                "judged_inputs_sha256": judged_meta.get("inputs_sha256")}
        write_artifact(model, tmp, pairs, inputs,
                       extra={"refit_of": judged_meta.get("inputs_sha256"),
                              "served_refit": True, "data_end": end})
    except RefitFailed:
        raise
    except Exception as e:   # noqa: BLE001 - any failure: the champion stays, one line says why
        log.debug("refit for serving failed", exc_info=True)   # the traceback with -v
        raise RefitFailed(f"refit for serving failed ({type(e).__name__}: {e}); the champion "
                          "is unchanged.") from e
    info["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("refit for serving: %d pairs, %d users, %d items in %.1fs", info["pairs"],
             info["users"], info["items"], info["seconds"])
    return info
