"""The training set of a run, built once and saved in ``data/trainset/``: train / holdout
positives (a pure function of the data and params), the validation slice carved out of the
training period, and the features of every user and item as of the split cutoff (Feast's
point-in-time join over the ``training`` service)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.columns import Feast
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.evaluation.splits import carve_validation, make_split
from pipeline.feature_store import store
from pipeline.io import atomic_dir, write_json


@dataclass(frozen=True)
class Trainset:
    train: pd.DataFrame        # every positive before the cutoff (the served model's data)
    fit: pd.DataFrame          # train minus the validation slice
    validation: pd.DataFrame   # carved out of the training period, never the holdout
    holdout: pd.DataFrame
    user_features: pd.DataFrame
    item_features: pd.DataFrame
    meta: dict


def point_in_time(fs, ids: list[str], key: str, view: str, as_of: datetime) -> pd.DataFrame:
    """Features of ``ids`` as of ``as_of`` (Feast historical retrieval with the training service)."""
    entity_df = pd.DataFrame({key: ids, C.ts: pd.Timestamp(as_of).tz_convert("UTC")})
    out = store.historical_view(fs, entity_df, view)
    return out.sort_values(key).reset_index(drop=True)


def build(params: Params, paths: Paths) -> Trainset:
    events = paths.validated_events
    if not events.exists():
        raise DataError(f"{events}: missing. Run 'recflow validate' first.")
    split = make_split(events, params)
    if split.train.empty:
        raise DataError(f"{events}: no positive (user, item) pairs before the split cutoff {split.cutoff}.")
    fit, validation = carve_validation(split.train, params)
    if fit.empty or validation.empty:
        raise DataError(f"{events}: the validation slice or what is left to fit on is empty; "
                        "change model.validation_days / model.validation_n.")
    fs = store.open_store(paths)
    users = sorted(set(split.train[C.user]) | set(split.holdout[C.user]))
    items = sorted(set(split.train[C.item]))
    meta = {"cutoff": split.cutoff.isoformat(), "strategy": params.split.strategy,
            "train_pairs": len(split.train), "holdout_pairs": len(split.holdout),
            "fit_pairs": len(fit), "validation_pairs": len(validation),
            "users": len(users), "items": len(items)}
    return Trainset(split.train, fit, validation, split.holdout,
                    point_in_time(fs, users, C.user, Feast.user_view, split.cutoff),
                    point_in_time(fs, items, C.item, Feast.item_view, split.cutoff), meta)


def save(ts: Trainset, paths: Paths) -> None:
    """All files of ``data/trainset/`` in one atomic swap."""
    with atomic_dir(paths.trainset) as tmp:
        for frame, target in ((ts.train, paths.train_pairs), (ts.fit, paths.fit_pairs),
                              (ts.validation, paths.validation_pairs),
                              (ts.holdout, paths.holdout_pairs),
                              (ts.user_features, paths.train_user_features),
                              (ts.item_features, paths.train_item_features)):
            frame.to_parquet(tmp / target.name, index=False)
        write_json(tmp / paths.trainset_meta.name, ts.meta)
