"""Stage ``train``: split, point-in-time features from Feast, LightFM WARP → models/candidate."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import pandas as pd
from tqdm import tqdm

from pipeline import store
from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.hybrid import item_tokens, user_tokens
from pipeline.io import atomic_dir, write_csv, write_json
from pipeline.model import fit_early_stopping
from pipeline.split import carve_validation, make_split

log = logging.getLogger("recflow.train")
USER_VIEW, ITEM_VIEW = "user_activity", "item_stats"


def point_in_time(fs, ids: list[str], key: str, view: str, as_of: datetime) -> pd.DataFrame:
    """Features of ``ids`` as of ``as_of`` (Feast historical retrieval with the training service)."""
    entity_df = pd.DataFrame({key: ids, C.ts: pd.Timestamp(as_of).tz_convert("UTC")})
    out = store.historical_view(fs, entity_df, view)
    return out.sort_values(key).reset_index(drop=True)


def build_trainset(params: Params, paths: Paths) -> dict:
    """Write data/trainset/: train & holdout positives and the features at the cutoff."""
    events = paths.validated / "events.parquet"
    if not events.exists():
        raise DataError(f"{events}: missing. Run 'recflow validate' first.")
    split = make_split(events, params)
    if split.train.empty:
        raise DataError(f"{events}: no positive (user, item) pairs before the split cutoff {split.cutoff}.")
    fs = store.open_store(paths)
    users = sorted(set(split.train[C.user]) | set(split.holdout[C.user]))
    items = sorted(set(split.train[C.item]))
    ufeat = point_in_time(fs, users, C.user, USER_VIEW, split.cutoff)
    ifeat = point_in_time(fs, items, C.item, ITEM_VIEW, split.cutoff)
    meta = {"cutoff": split.cutoff.isoformat(), "strategy": params.split.strategy,
            "train_pairs": len(split.train), "holdout_pairs": len(split.holdout),
            "users": len(users), "items": len(items)}
    with atomic_dir(paths.trainset) as tmp:
        split.train.to_parquet(tmp / "train.parquet", index=False)
        split.holdout.to_parquet(tmp / "holdout.parquet", index=False)
        ufeat.to_parquet(tmp / "user_features.parquet", index=False)
        ifeat.to_parquet(tmp / "item_features.parquet", index=False)
        write_json(tmp / "meta.json", meta)
    return meta


def run(params: Params, paths: Paths) -> dict:
    meta = build_trainset(params, paths)
    ts = paths.trainset
    train = pd.read_parquet(ts / "train.parquet")
    utok = user_tokens(pd.read_parquet(ts / "user_features.parquet"), params.model.user_features)
    itok = item_tokens(pd.read_parquet(ts / "item_features.parquet"), params.model.item_features)
    fit_part, validation = carve_validation(train, params)
    if fit_part.empty or validation.empty:
        raise DataError(f"{ts / 'train.parquet'}: the validation slice or what is left to fit on is "
                        "empty; change model.validation_days / model.validation_n.")
    bar = tqdm(total=params.model.epochs, desc="train", unit="epoch", leave=False)
    t0 = time.perf_counter()
    model, curve, best = fit_early_stopping(params.model, fit_part, validation, utok, itok,
                                            params.evaluate.k, full_train=train,
                                            on_epoch=lambda _row: bar.update(1))
    bar.close()
    secs = time.perf_counter() - t0
    trained = len(curve) + (best if params.model.refit else 0)
    with atomic_dir(paths.candidate) as tmp:
        model.save(tmp, extra={"trained_at": datetime.now(UTC).isoformat(), "cutoff": meta["cutoff"],
                               "train_pairs": meta["train_pairs"], "best_epoch": best})
        write_json(tmp / "curve.json", curve)
    paths.plots.mkdir(parents=True, exist_ok=True)
    write_csv(pd.DataFrame(curve), paths.plots / "validation_curve.csv")
    stats = {"train_pairs": meta["train_pairs"], "validation_pairs": len(validation),
             "users": len(model.user_ids), "items": len(model.item_ids),
             "epochs_run": len(curve), "best_epoch": best, "refit": params.model.refit,
             f"val_precision@{params.evaluate.k}": max(r["val_precision"] for r in curve),
             "seconds": round(secs, 2), "seconds_per_epoch": round(secs / max(1, trained), 3)}
    write_json(paths.metrics / "train.json", stats)
    return stats

