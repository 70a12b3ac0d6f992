"""Stage ``train``: the training set (split, validation slice, training-time features) →
LightFM WARP with early stopping → ``models/candidate/`` (with the fingerprints of its
training pairs and the hash of its inputs, which the gate reads)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pandas as pd
from tqdm import tqdm

from pipeline.config import Params, Paths
from pipeline.evaluation import trainset
from pipeline.evaluation.fingerprint import inputs_sha256, write_artifact
from pipeline.evaluation.validation import fit_early_stopping
from pipeline.io import atomic_dir, write_csv, write_json
from pipeline.models.tokens import item_tokens, user_tokens


def run(params: Params, paths: Paths) -> dict:
    ts = trainset.build(params, paths)
    trainset.save(ts, paths)
    utok = user_tokens(ts.user_features, params.model.user_features)
    itok = item_tokens(ts.item_features, params.model.item_features)
    bar = tqdm(total=params.model.epochs, desc="train", unit="epoch", leave=False, disable=None)
    t0 = time.perf_counter()
    model, curve, best = fit_early_stopping(params.model, ts.fit, ts.validation, utok, itok,
                                            params.evaluate.k, full_train=ts.train,
                                            on_epoch=lambda _row: bar.update(1),
                                            memory_mb=params.evaluate.memory_mb)
    bar.close()
    secs = time.perf_counter() - t0
    trained = len(curve) + (best if params.model.refit else 0)
    with atomic_dir(paths.candidate) as tmp:
        write_artifact(model, tmp, ts.train, inputs_sha256(model.config(), ts.train, utok, itok),
                       extra={"trained_at": datetime.now(UTC).isoformat(),
                              "cutoff": ts.meta["cutoff"], "train_pairs": ts.meta["train_pairs"],
                              "best_epoch": best})
        write_json(tmp / "curve.json", curve)
    write_csv(pd.DataFrame(curve), paths.validation_curve)
    stats = {"train_pairs": ts.meta["train_pairs"], "validation_pairs": len(ts.validation),
             "users": len(model.user_ids), "items": len(model.item_ids),
             "epochs_run": len(curve), "best_epoch": best, "refit": params.model.refit,
             f"val_precision@{params.evaluate.k}": max(r["val_precision"] for r in curve),
             "seconds": round(secs, 2), "seconds_per_epoch": round(secs / max(1, trained), 3),
             "validation_seconds": round(sum(r["validation_seconds"] for r in curve), 2)}
    write_json(paths.train_report, stats)
    return stats
