"""The champion on the current holdout, judged honestly, and what every model keeps of its
training data so that it can be.

A registered model carries the fingerprints of the (user, item) pairs it was fitted on
(:data:`~pipeline.evaluation.splits.TRAINED_PAIRS_FILE`). Before the champion is scored on
the current holdout, those are checked against it, in order:

1. the served artifact (the promoted configuration refit on all data,
   :mod:`pipeline.evaluation.refit`) when none of its training pairs is held out — new data
   since it was refit, say;
2. else its pre-refit artifact (``judged/``, the one the gate judged), when none of *its*
   training pairs is held out — the usual case: the refit saw the holdout, the judged
   artifact was fitted on the same train part as the challenger;
3. else (another split, a changed seed, data that was forgotten, or no fingerprint) its
   *configuration* refitted on the current train part, whatever its family.

The record says which was done and why.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.evaluation.fingerprint import inputs_sha256, load_fingerprint, overlap, write_artifact
from pipeline.evaluation.holdout import Scored, options, score_users
from pipeline.features import recent
from pipeline.models.artifact import load_model
from pipeline.models.base import (
    FAMILIES,
    ArtifactError,
    RecommenderBase,
    TokenMap,
    read_meta,
)
from pipeline.models.popularity import Popularity
from pipeline.models.tokens import fit_edges, item_tokens, user_tokens
from pipeline.registry import versions

log = logging.getLogger("recflow.evaluate")

AS_REGISTERED = "as registered"
PRE_REFIT = "pre-refit artifact (the one the gate judged)"
REFIT = "configuration refitted on the current train part"


@dataclass(frozen=True)
class Data:
    """The saved training set of this run (``data/trainset/``)."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    user_features: pd.DataFrame
    item_features: pd.DataFrame

    @classmethod
    def load(cls, paths: Paths) -> Data:
        if not paths.holdout_pairs.exists():
            raise DataError(f"{paths.trainset}: no training set. Run 'recflow train' first.")
        itf = (pd.read_parquet(paths.train_item_features) if paths.train_item_features.exists()
               else pd.DataFrame({C.item: []}))
        return cls(pd.read_parquet(paths.train_pairs), pd.read_parquet(paths.holdout_pairs),
                   pd.read_parquet(paths.train_user_features), itf)


def configuration(directory: Path) -> tuple[type[RecommenderBase], dict]:
    """The family and configuration of the artifact in ``directory``, with as many epochs as
    it was trained for (early stopping's best epoch, when it kept one)."""
    meta = read_meta(directory)
    family = FAMILIES.get(meta.get("format"))  # type: ignore[arg-type]
    if family is None:
        raise ArtifactError(f"{directory}: unknown model format {meta.get('format')!r}.")
    config = dict(meta["config"])
    if meta.get("best_epoch") and "epochs" in config:
        config["epochs"] = int(meta["best_epoch"])
    return family, config


def config_edges(config: dict, user_features: pd.DataFrame, item_features: pd.DataFrame
                 ) -> dict:
    """Numeric bucket edges for a configuration's features, from these feature rows."""
    n = int(config.get("buckets", 8))
    return {"user": fit_edges(user_features, tuple(config.get("user_features", ())), C.user, n),
            "item": fit_edges(item_features, tuple(config.get("item_features", ())), C.item, n)}


def config_tokens(config: dict, user_features: pd.DataFrame, item_features: pd.DataFrame,
                  edges: dict | None = None) -> tuple[TokenMap, TokenMap]:
    """The feature tokens a configuration asks for (none for families without features);
    numeric buckets with ``edges`` (the model's), else edges from these rows."""
    edges = edges or config_edges(config, user_features, item_features)
    return (user_tokens(user_features, tuple(config.get("user_features", ())), edges.get("user")),
            item_tokens(item_features, tuple(config.get("item_features", ())), edges.get("item")))


def fit_configuration(directory: Path, pairs: pd.DataFrame, user_features: pd.DataFrame,
                      item_features: pd.DataFrame) -> tuple[RecommenderBase, TokenMap, TokenMap]:
    """A fresh model of the artifact's family and configuration fitted on ``pairs`` with the
    tokens (bucket edges from these rows) and recent items of these features; returns it
    with the tokens it was fitted with."""
    family, config = configuration(directory)
    edges = config_edges(config, user_features, item_features)
    utok, itok = config_tokens(config, user_features, item_features, edges)
    model = family.from_config(config).fit(pairs, utok, itok, history=recent.history_of(user_features))
    model.token_edges = edges
    return model, utok, itok


def judged_artifact(version_dir: Path) -> Path:
    """The artifact the gate scored for a version: ``judged/`` when the version was refit for
    serving, else the version itself (registered before refits, or never refit)."""
    d = version_dir / versions.JUDGED
    return d if (d / "model.npz").is_file() else version_dir


def tokens_for(model: RecommenderBase, data: Data) -> TokenMap:
    """The user tokens ``model`` was configured to read, from this run's features."""
    return config_tokens(model.config(), data.user_features, data.item_features,
                         getattr(model, "token_edges", None) or None)[0]


def refit_configuration(directory: Path, data: Data) -> RecommenderBase:
    """A fresh model of the artifact's family and configuration, fitted on this run's train
    part for as many epochs as the artifact was (early stopping's best epoch)."""
    model = fit_configuration(directory, data.train, data.user_features, data.item_features)[0]
    model.meta = {**read_meta(directory), "refit_on": "current train part"}
    return model


def _overlap(directory: Path, held: pd.DataFrame) -> int | None:
    fp = load_fingerprint(directory)
    return None if fp is None else overlap(fp, held)


def judge(directory: Path, data: Data) -> tuple[RecommenderBase, dict]:
    """The model to score for the champion saved in ``directory`` and the record of why."""
    held = data.holdout[[C.user, C.item]].drop_duplicates()
    n = _overlap(directory, held)
    info: dict = {"holdout_pairs": len(held), "overlap_pairs": n}
    if n == 0:
        return load_model(directory), {**info, "scored": AS_REGISTERED,
                                       "reason": "none of its training pairs is held out"}
    why = ("its card keeps no training-pair fingerprint" if n is None else
           f"{n} of the {len(held)} held-out pairs were in its training data")
    judged = judged_artifact(directory)
    if judged != directory:
        m = _overlap(judged, held)
        info["judged_overlap_pairs"] = m
        if m == 0:
            return load_model(judged), {
                **info, "scored": PRE_REFIT,
                "reason": f"its served refit was fitted on all data ({why}); none of the "
                          "pre-refit artifact's training pairs is held out"}
        why += (f"; and {m} in its pre-refit artifact's" if m is not None
                else "; its pre-refit artifact keeps no fingerprint")
    log.info("champion: %s; refitting its configuration on the current train part", why)
    return refit_configuration(judged, data), {**info, "scored": REFIT, "reason": why}


@dataclass(frozen=True)
class Champion:
    version: str
    scored: Scored
    info: dict            # how it was scored (as registered, pre-refit, refitted) and why
    inputs: str | None    # inputs_sha256 of the champion's judged artifact


def score_champion(params: Params, paths: Paths, data: Data | None = None) -> Champion | None:
    """The current champion on the current holdout (same protocol as the candidate)."""
    version = versions.champion(paths.registry)
    if version is None:
        return None
    data = data or Data.load(paths)
    d = versions.versions_dir(paths.registry) / version
    model, info = judge(d, data)
    scored = score_users(model, data.holdout, data.train, tokens_for(model, data),
                         params.evaluate.k, data.train[C.item].nunique(), **options(params),
                         name="champion")
    # the judged artifact's inputs: an unchanged rerun matches those, not the refit's
    return Champion(version, scored, info, read_meta(judged_artifact(d)).get("inputs_sha256"))


def with_current_champion(ev: dict, per_user: pd.DataFrame, params: Params, paths: Paths
                          ) -> tuple[dict, pd.DataFrame]:
    """``ev`` (the evaluation details) and the per-user table with the champion *as it is now*.

    The champion is state outside DVC's graph (evaluate cannot depend on promote's output), so
    DVC may re-run promote alone — e.g. after a ``gate.*`` change or a rollback — on an
    evaluation that scored another champion, or none. Then the current champion is judged and
    scored here on the same holdout, so the gate never compares against a stale record.
    """
    current = versions.champion(paths.registry)
    if current == ev.get("champion_version"):
        return ev, per_user
    log.info("champion is %s but evaluation scored %s: re-scoring it on the same holdout",
             current, ev.get("champion_version"))
    champ = score_champion(params, paths)
    per_user = per_user.drop(columns=["champion"], errors="ignore")
    if champ is None:
        return {**ev, "champion_version": None, "champion": None, "champion_scoring": None,
                "champion_inputs": None}, per_user
    per_user = per_user.join(champ.scored.per_user.rename("champion"), how="left").fillna(0.0)
    return {**ev, "champion_version": current, "champion": champ.scored.metrics,
            "champion_scoring": champ.info, "champion_inputs": champ.inputs}, per_user


@contextmanager
def promoted_artifact(which: str, paths: Paths) -> Iterator[Path]:
    """The folder to register for the gate's verdict: the candidate, or popularity fitted on
    this run's train part (the floor) in a temp folder removed afterwards."""
    if which == "candidate":
        yield paths.candidate
        return
    if which != "popularity":
        raise ValueError(f"unknown promoted model {which!r}")
    data = Data.load(paths)
    tmp = paths.models / f".popularity.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model = Popularity().fit(data.train)
        write_artifact(model, tmp, data.train,
                       inputs_sha256(model.config(), data.train, {}, {}))
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def per_user_frame(per_user: dict[str, pd.Series]) -> pd.DataFrame:
    """One column per model, one row per holdout user (sorted), zeros where a model had none."""
    frame = pd.DataFrame(per_user).sort_index().fillna(0.0)
    frame.index.name = C.user
    return frame.astype(np.float64)
