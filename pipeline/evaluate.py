"""Stage ``evaluate``: candidate, baselines and the current champion on the same holdout.

Every model is scored the same way: a (users × items) score matrix per batch, train items
masked out, top-k and AUC from that matrix — no Python loop over (user, item) pairs.
Baselines (popularity, ALS tuned on the validation slice of the training period) are refitted
here on the same train set, so every evaluation reports them beside the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipeline import registry
from pipeline.baselines import ALS, Popularity, tune_als
from pipeline.columns import Columns as C
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.hybrid import user_tokens
from pipeline.io import write_csv, write_json
from pipeline.metrics import auc, summary
from pipeline.model import LightFMRecommender
from pipeline.ranking import top_k
from pipeline.split import carve_validation

PLOT_KS = (1, 3, 5, 10, 20)


def _mask(pairs: pd.DataFrame, users: list[str], items: np.ndarray) -> sp.csr_matrix:
    """Boolean (users × items) sparse mask of the (user, item) pairs that fall inside both."""
    ui = {u: j for j, u in enumerate(users)}
    ii = {it: j for j, it in enumerate(items)}
    r = pairs[C.user].map(ui)
    c = pairs[C.item].map(ii)
    ok = r.notna() & c.notna()
    return sp.csr_matrix((np.ones(int(ok.sum()), dtype=bool),
                          (r[ok].astype(int).to_numpy(), c[ok].astype(int).to_numpy())),
                         shape=(len(users), len(items)))


def score(model, holdout: pd.DataFrame, train: pd.DataFrame, utok: dict, k: int,
          n_catalogue: int, batch: int = 1024) -> tuple[dict, list[dict]]:
    """Headline metrics at k (overall, cold, warm), and precision/recall at every plot k."""
    users = sorted(holdout[C.user].astype(str).unique())
    items = np.asarray(model.item_ids, dtype=object)
    kmax = max(k, *PLOT_KS)
    seen = train[[C.user, C.item]].astype(str)
    rel = holdout[[C.user, C.item]].astype(str)
    recs, aucs = [], []
    for s in range(0, len(users), batch):
        ub = users[s:s + batch]
        exc = _mask(seen, ub, items).toarray()
        scores = np.array(model.scores(ub, utok), dtype=np.float32, copy=True)
        aucs.append(auc(scores, exc, _mask(rel, ub, items).toarray()))
        scores[exc] = -np.inf
        recs.append(top_k(ub, items, scores, kmax))
    recs_df = pd.concat(recs, ignore_index=True) if recs else top_k([], items, np.zeros((0, 0)), kmax)
    auc_by_user = pd.Series(np.concatenate(aucs) if aucs else [], index=users, dtype=float)
    warm = set(seen[C.user])
    curve = []
    for kk in PLOT_KS:
        m = summary(recs_df, holdout, kk, n_catalogue)
        curve.append({"k": kk, "precision": m[f"precision@{kk}"], "recall": m[f"recall@{kk}"]})
    return summary(recs_df, holdout, k, n_catalogue, auc_by_user, warm), curve


def score_champion(params: Params, paths: Paths) -> dict | None:
    """The current champion's metrics on the current holdout (same protocol as ``run``)."""
    d = registry.champion_dir(paths.registry)
    if d is None:
        return None
    ts = paths.trainset
    train = pd.read_parquet(ts / "train.parquet")
    holdout = pd.read_parquet(ts / "holdout.parquet")
    utok = user_tokens(pd.read_parquet(ts / "user_features.parquet"), params.model.user_features)
    metrics, _ = score(LightFMRecommender.load(d), holdout, train, utok, params.evaluate.k,
                       train[C.item].nunique())
    return metrics


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
    fit_part, validation = carve_validation(train, params)
    als_cfg, grid = tune_als(params.baselines.als, fit_part, validation, k)
    write_json(paths.reports / "als_tuning.json", {"best": als_cfg, "grid": grid})
    models = {"candidate": LightFMRecommender.load(paths.candidate),
              "popularity": Popularity().fit(train), "als": ALS(**als_cfg).fit(train)}
    champ = registry.champion(paths.registry)
    if champ:
        models["champion"] = LightFMRecommender.load(registry.champion_dir(paths.registry))
    result: dict = {"k": k, "holdout_users": int(holdout[C.user].nunique()),
                    "champion_version": champ, "als_params": als_cfg}
    curves: dict[str, list[dict]] = {}
    for name, m in models.items():
        result[name], curves[name] = score(m, holdout, train, utok, k, n_cat)
    write_json(paths.metrics / "evaluation.json", result)
    # Wide table: one precision column per model, so `dvc plots show` draws one line each.
    wide = pd.DataFrame({"k": list(PLOT_KS)})
    for name, rows in curves.items():
        wide[name] = [r["precision"] for r in rows]
    write_csv(wide, paths.plots / "precision_at_k.csv")
    return result
