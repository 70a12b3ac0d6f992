"""Stage ``evaluate``: candidate, popularity and the current champion on the same holdout."""

from __future__ import annotations

import pandas as pd

from pipeline import registry
from pipeline.baselines import Popularity
from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.hybrid import user_tokens
from pipeline.io import write_json
from pipeline.metrics import summary
from pipeline.model import LightFMRecommender

PLOT_KS = (1, 3, 5, 10, 20)


def score(model, holdout: pd.DataFrame, train: pd.DataFrame, utok: dict, k: int,
          n_catalogue: int) -> tuple[dict, list[dict]]:
    """Headline metrics at k, and precision/recall at every plot k (train items excluded)."""
    users = sorted(holdout[C.user].unique())
    exclude = train.groupby(C.user)[C.item].agg(set).to_dict()
    kmax = max(k, *PLOT_KS)
    recs = model.recommend(users, kmax, exclude=exclude, user_tokens=utok)
    curve = []
    for kk in PLOT_KS:
        m = summary(recs, holdout, kk, n_catalogue)
        curve.append({"k": kk, "precision": m[f"precision@{kk}"], "recall": m[f"recall@{kk}"]})
    return summary(recs, holdout, k, n_catalogue), curve


def run(params: Params, paths: Paths) -> dict:
    ts = paths.trainset
    if not (paths.candidate / "model.npz").exists():
        raise DataError(f"{paths.candidate}: no candidate model. Run 'recflow train' first.")
    train = pd.read_parquet(ts / "train.parquet")
    holdout = pd.read_parquet(ts / "holdout.parquet")
    if holdout.empty:
        raise DataError(f"{ts / 'holdout.parquet'}: the holdout is empty; widen split.test_days.")
    utok = user_tokens(pd.read_parquet(ts / "user_features.parquet"), params.model.user_features)
    k = params.evaluate.k
    n_cat = train[C.item].nunique()
    models = {"candidate": LightFMRecommender.load(paths.candidate), "popularity": Popularity().fit(train)}
    champ = registry.champion(paths.registry)
    if champ:
        models["champion"] = LightFMRecommender.load(registry.champion_dir(paths.registry))
    result: dict = {"k": k, "holdout_users": int(holdout[C.user].nunique()), "champion_version": champ}
    rows = []
    for name, m in models.items():
        result[name], curve = score(m, holdout, train, utok, k, n_cat)
        rows += [{"model": name, **c} for c in curve]
    write_json(paths.metrics / "evaluation.json", result)
    paths.plots.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(paths.plots / "precision_at_k.csv", index=False)
    return result
