"""Stage ``evaluate``: candidate, baselines and the current champion on the same holdout.

Baselines (popularity, ALS tuned on the validation slice that ``train`` carved) are refitted
here on the same train set, so every evaluation reports them beside the model.
"""

from __future__ import annotations

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.evaluation.holdout import PLOT_KS, score
from pipeline.evaluation.validation import tune_als
from pipeline.io import write_csv, write_json
from pipeline.models.als import ALS
from pipeline.models.artifact import load_model
from pipeline.models.base import ARRAYS_FILE
from pipeline.models.popularity import Popularity
from pipeline.models.tokens import user_tokens
from pipeline.registry import versions


def run(params: Params, paths: Paths) -> dict:
    if not (paths.candidate / ARRAYS_FILE).exists():
        raise DataError(f"{paths.candidate}: no candidate model. Run 'recflow train' first.")
    train = pd.read_parquet(paths.train_pairs)
    holdout = pd.read_parquet(paths.holdout_pairs)
    if holdout.empty:
        raise DataError(f"{paths.holdout_pairs}: the holdout is empty; widen split.test_days.")
    utok = user_tokens(pd.read_parquet(paths.train_user_features), params.model.user_features)
    k = params.evaluate.k
    n_cat = train[C.item].nunique()
    als_cfg, grid = tune_als(params.baselines.als, pd.read_parquet(paths.fit_pairs),
                             pd.read_parquet(paths.validation_pairs), k)
    write_json(paths.als_tuning, {"best": als_cfg, "grid": grid})
    models = {"candidate": load_model(paths.candidate),
              "popularity": Popularity().fit(train), "als": ALS(**als_cfg).fit(train)}
    champ = versions.champion(paths.registry)
    if champ:
        models["champion"] = load_model(versions.champion_dir(paths.registry))
    result: dict = {"k": k, "holdout_users": int(holdout[C.user].nunique()),
                    "champion_version": champ, "als_params": als_cfg}
    curves: dict[str, list[dict]] = {}
    for name, m in models.items():
        result[name], curves[name] = score(m, holdout, train, utok, k, n_cat)
    write_json(paths.evaluation_metrics, result)
    # Wide table: one precision column per model, so `dvc plots show` draws one line each.
    wide = pd.DataFrame({"k": list(PLOT_KS)})
    for name, rows in curves.items():
        wide[name] = [r["precision"] for r in rows]
    write_csv(wide, paths.precision_plot)
    return result
