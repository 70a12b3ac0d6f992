"""Stage ``train``: the training set (split, validation slice, training-time features) → every
family of ``model.families`` tuned on the validation slice (:mod:`pipeline.evaluation.search`)
→ each one's model refitted on all of train in ``models/families/``, the best on validation in
``models/candidate/`` (with the fingerprints of its training pairs and the hash of its inputs,
which the gate reads). Every trial: ``reports/model_search.json``, ``plots/model_search.csv``."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from tqdm import tqdm

from pipeline.config import Params, Paths
from pipeline.evaluation import search, trainset
from pipeline.evaluation.replay import training_tokens
from pipeline.io import write_csv, write_json

CURVE_COLUMNS = ["epoch", "k", "val_precision", "seconds"]


def run(params: Params, paths: Paths) -> dict:
    params = trainset.with_attribute_features(params, paths)
    ts = trainset.build(params, paths)
    tt = training_tokens(params.model, ts)   # bucket edges from the training rows only
    utok, itok = tt.user, tt.item
    bar = tqdm(desc="search", unit="trial", leave=False)
    sel = search.select(params, ts.fit, ts.validation, ts.train, utok, itok,
                        on_trial=lambda _t: bar.update(1),
                        history=tt.fit_history, full_history=tt.history)
    bar.close()
    for t in sel.families.values():   # the artifact carries the edges serving buckets with
        t.model.token_edges = tt.edges
    trainset.save(ts, paths)
    search.save(sel, paths.families, paths.candidate, ts.train, utok, itok,
                {"trained_at": datetime.now(UTC).isoformat(), "cutoff": ts.meta["cutoff"],
                 "train_pairs": ts.meta["train_pairs"]})
    report = sel.report()
    write_json(paths.model_search, report)
    write_csv(sel.plot_rows(), paths.search_plot)
    lightfm = sel.families.get("lightfm")
    write_csv(pd.DataFrame(lightfm.extra["curve"] if lightfm else [], columns=CURVE_COLUMNS),
              paths.validation_curve)
    k = params.evaluate.k
    stats = {"chosen": sel.chosen, **{f: t.best.val_precision for f, t in sel.families.items()},
             "trials": len(sel.trials), "train_pairs": ts.meta["train_pairs"],
             "validation_pairs": len(ts.validation), "users": ts.meta["users"],
             "items": ts.meta["items"], "seconds": report["seconds"],
             "metric": f"val_precision@{k}", "skipped": sel.skipped}
    if lightfm:   # the time inside LightFM itself (trials and refit): the benchmark's "bare" share
        stats["lightfm_learn_seconds"] = round(
            sum(t.learn_seconds or 0.0 for t in sel.trials if t.family == "lightfm")
            + lightfm.extra["report"].get("refit_learn_seconds", 0.0), 2)
    write_json(paths.train_report, stats)
    return stats
