"""The training set of a run, built once and saved in ``data/trainset/``: train / holdout
positives (a pure function of the data and params), the validation slice carved out of the
training period, and the features of every user and item as of the split cutoff — attributes
included, and with ``model.cold_items`` every catalogue item, interactions or not.

Time split: Feast's point-in-time join over the ``training`` service (the snapshot at the
cutoff holds only events before it). Leave-N-out has no such time: the only snapshot is at the
end of the data and would count the held-out interactions, so the training features are
computed here with the same snapshot SQL over the validated events *minus every event of a
held-out pair*, as of one microsecond past the last of them: a held-out interaction changes
no training feature."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.columns import Feast
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.evaluation import target
from pipeline.evaluation.splits import carve_validation, make_split
from pipeline.feature_store import store
from pipeline.features import snapshots
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


def _on_ids(frame: pd.DataFrame, ids: list[str], key: str, as_of: datetime) -> pd.DataFrame:
    """One row per id (nulls for an id without events), key and time first, as Feast returns."""
    frame = frame.drop(columns=[C.ts]).assign(**{key: frame[key].astype(str)})
    out = pd.DataFrame({key: ids}).merge(frame, on=key, how="left")
    out.insert(1, C.ts, pd.Timestamp(as_of).tz_convert("UTC"))
    out[C.ts] = out[C.ts].dt.as_unit("us")
    return out.sort_values(key).reset_index(drop=True)


def features_without_holdout(params: Params, paths: Paths, holdout: pd.DataFrame,
                             users: list[str], items: list[str]
                             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(user, item) features from every validated event except those of a held-out pair, as
    of one microsecond past the last remaining event (the stage's own snapshot SQL)."""
    con = snapshots.connect(params)
    try:
        snapshots.open_events(con, paths.validated)
        con.register("held_out", holdout[[C.user, C.item]].astype(str))
        con.sql(f"CREATE OR REPLACE TEMP VIEW ev_train AS SELECT * FROM ev ANTI JOIN held_out "
                f"ON ev.{C.user}::VARCHAR = held_out.{C.user} "
                f"AND ev.{C.item}::VARCHAR = held_out.{C.item}")
        (last,) = con.execute(f"SELECT max({C.ts}) FROM ev_train").fetchall()[0]
        if last is None:
            raise DataError(f"{paths.validated_events}: every event belongs to a held-out pair; "
                            "lower split.n_out.")
        as_of = pd.Timestamp(last).tz_convert("UTC") + timedelta(microseconds=1)
        wide = snapshots.make_pairs(con, "ev_train", [as_of], "train_pairs")
        u = con.sql(snapshots.user_features_sql("ev_train", params, [as_of], "train_pairs", wide)).df()
        i = con.sql(snapshots.item_features_sql("ev_train", params, [as_of], "train_pairs")).df()
    finally:
        con.close()
    return _on_ids(u, users, C.user, as_of), _on_ids(i, items, C.item, as_of)


def catalogue_items(paths: Paths) -> list[str]:
    """Items known before any interaction: the item attribute table and the items table
    (category) ingest kept. Static side information; a cold item can be scored from it."""
    ids: set[str] = set()
    for f in (paths.validated_attributes("items"), paths.validated_items):
        if f.exists():
            ids |= set(pd.read_parquet(f, columns=[C.item])[C.item].dropna().astype(str))
    return sorted(ids)


def with_attributes(frame: pd.DataFrame, paths: Paths, kind: str, fs=None,
                    as_of: datetime | None = None) -> pd.DataFrame:
    """``frame`` (one row per id) + the attribute view's features: through Feast's training
    service when ``fs`` is given (point-in-time at ``as_of``), else the feature file (static
    rows). Items without a behaviour row get their catalogue category."""
    key = C.item if kind == "items" else C.user
    view = Feast.item_attr_view if kind == "items" else Feast.user_attr_view
    ids = frame[key].astype(str).tolist()
    if fs is not None and as_of is not None:
        attrs = point_in_time(fs, ids, key, view, as_of).drop(columns=[C.ts])
    elif paths.attribute_features(kind).exists():
        attrs = pd.read_parquet(paths.attribute_features(kind)).drop(columns=[C.ts])
    else:
        attrs = pd.DataFrame({key: []})
    attrs = attrs.assign(**{key: attrs[key].astype(str)})
    out = frame.merge(attrs[[c for c in attrs.columns if c not in frame.columns or c == key]],
                      on=key, how="left")
    if kind == "items" and C.category in out and paths.validated_items.exists():
        cats = pd.read_parquet(paths.validated_items).drop_duplicates(C.item, keep="last")
        fill = out[key].map(dict(zip(cats[C.item].astype(str), cats[C.category].astype(str),
                                     strict=True)))
        out[C.category] = out[C.category].where(out[C.category].notna(), fill)
    return out


def attribute_columns(paths: Paths, kind: str) -> list[str]:
    """The feature columns of the ``items`` / ``users`` attribute view (none when absent)."""
    import pyarrow.parquet as pq

    f = paths.attribute_features(kind)
    if not f.exists():
        return []
    key = C.item if kind == "items" else C.user
    return [c for c in pq.read_schema(f).names if c not in (key, C.ts) and not c.startswith("has_")]


def with_attribute_features(params: Params, paths: Paths) -> Params:
    """``model.attribute_features``: the configured feature lists plus every attribute column
    the source's tables provide, so the defaults fit any source and the model's own config
    names what it read (serving and refits tokenise from that)."""
    m = params.model
    if not m.attribute_features:
        return params
    users = tuple(dict.fromkeys([*m.user_features, *attribute_columns(paths, "users")]))
    items = tuple(dict.fromkeys([*m.item_features, *attribute_columns(paths, "items")]))
    model = m.model_copy(update={"user_features": users, "item_features": items})
    return params.model_copy(update={"model": model})


def build(params: Params, paths: Paths) -> Trainset:
    events = paths.validated_events
    if not events.exists():
        raise DataError(f"{events}: missing. Run 'recflow validate' first.")
    split = make_split(events, params)
    if split.train.empty:
        raise DataError(f"{events}: no positive (user, item) pairs before the split cutoff {split.cutoff}.")
    fit, validation = carve_validation(split.train, params)
    tg = params.evaluate.target
    # the holdout and the validation slice keep only the target's pairs: what is tuned on
    # validation is tuned for what evaluate scores (the other pairs stay out of the fit part)
    holdout, val_target = target.relevant(split.holdout, tg), target.relevant(validation, tg)
    if fit.empty or val_target.empty:
        raise DataError(f"{events}: the validation slice (in evaluate.target: "
                        f"{target.describe(tg)}) or what is left to fit on is empty; "
                        "change model.validation_days / model.validation_n or evaluate.target.")
    users = sorted(set(split.train[C.user]) | set(holdout[C.user]))
    items = sorted(set(split.train[C.item]) | (set(catalogue_items(paths))
                                               if params.model.cold_items else set()))
    meta = {"cutoff": split.cutoff.isoformat(), "strategy": params.split.strategy,
            "target": target.describe(tg),
            "train_pairs": len(split.train), "holdout_pairs": len(holdout),
            "holdout_positive_pairs": len(split.holdout),
            "fit_pairs": len(fit), "validation_pairs": len(val_target),
            "validation_positive_pairs": len(validation),
            "users": len(users), "items": len(items)}
    if params.split.strategy == "leave_n_out":
        # every held-out positive is left out of the features, in the target or not
        uf, itf = features_without_holdout(params, paths, split.holdout, users, items)
        uf, itf = with_attributes(uf, paths, "users"), with_attributes(itf, paths, "items")
        meta["features"] = "validated events minus the held-out pairs"
    else:
        fs = store.open_store(paths)
        uf = point_in_time(fs, users, C.user, Feast.user_view, split.cutoff)
        itf = point_in_time(fs, items, C.item, Feast.item_view, split.cutoff)
        uf = with_attributes(uf, paths, "users", fs, split.cutoff)
        itf = with_attributes(itf, paths, "items", fs, split.cutoff)
        meta["features"] = "Feast point-in-time at the cutoff"
    # the flag is about relevance, not training data: train/fit stay as without a target
    # (same columns, so the same inputs hash for an unchanged run)
    def bare(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.drop(columns=[target.FLAG], errors="ignore")

    return Trainset(bare(split.train), bare(fit), val_target, holdout, uf, itf, meta)


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
