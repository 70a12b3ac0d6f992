"""Model selection on the validation slice (carved out of the training period, never the
holdout): one ``validation_precision`` for early stopping and for every tuning loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import ModelParams
from pipeline.evaluation.metrics import per_user
from pipeline.models.base import History, RecommenderBase, TokenMap
from pipeline.models.hybrid import LightFMRecommender

log = logging.getLogger("recflow.validation")


class ValidationSlice:
    """The validation users (those the fit part knows), their relevant pairs, and what each
    has in the fit part (excluded from their lists, as evaluation excludes train items)."""

    def __init__(self, fit_part: pd.DataFrame, validation: pd.DataFrame) -> None:
        known = set(fit_part[C.user].astype(str))
        self.users = sorted(set(validation[C.user].astype(str)) & known)
        self.relevant = validation[validation[C.user].astype(str).isin(self.users)]
        self.exclude = fit_part.groupby(C.user)[C.item].agg(set).to_dict()


def validation_precision(model: RecommenderBase, vs: ValidationSlice, k: int,
                         user_tokens: TokenMap | None = None,
                         history: History | None = None) -> float:
    """Mean precision@k of ``model`` over the validation users (0 when there are none)."""
    if not vs.users:
        return 0.0
    recs = model.recommend(vs.users, k, vs.exclude, user_tokens, history=history)
    return float(per_user(recs, vs.relevant, k)["precision"].mean())


def fit_early_stopping(params: ModelParams, train: pd.DataFrame, validation: pd.DataFrame,
                       user_tokens: TokenMap | None, item_tokens: TokenMap | None,
                       k: int, full_train: pd.DataFrame | None = None,
                       on_epoch: Callable[[dict], None] | None = None,
                       history: History | None = None, full_history: History | None = None
                       ) -> tuple[LightFMRecommender, list[dict], int]:
    """Fit on ``train`` one epoch at a time, score precision@k on ``validation`` after each,
    stop after ``params.patience`` epochs without improvement and keep the best epoch.

    With ``params.refit`` and ``full_train`` (train + validation), a fresh model is then fitted
    on ``full_train`` for the best epoch count, so the validation interactions are not lost.
    ``history`` (recent items, without the validation slice's) is what the fit part sees;
    ``full_history`` what the refit sees. Returns (model, per-epoch curve rows {epoch, k,
    val_precision, seconds}, best epoch).
    """
    vs = ValidationSlice(train, validation)
    curve: list[dict] = []
    best: dict = {"epoch": 0, "precision": -1.0, "state": None}
    t0 = time.perf_counter()

    def step(epoch: int, model: LightFMRecommender) -> bool:
        prec = validation_precision(model, vs, k, user_tokens, history)
        row = {"epoch": epoch + 1, "k": k, "val_precision": prec,
               "seconds": round(time.perf_counter() - t0, 3)}
        curve.append(row)
        if on_epoch:
            on_epoch(row)
        if prec > best["precision"]:
            best.update(epoch=epoch + 1, precision=prec, state=model.state())
        return epoch + 1 - best["epoch"] >= params.patience

    model = LightFMRecommender(params).fit(train, user_tokens, item_tokens, on_epoch=step,
                                           history=history)
    if params.refit and full_train is not None:
        model = refit_lightfm(params, best["epoch"], full_train, user_tokens, item_tokens,
                              full_history or history)
    else:
        model.restore(best["state"])
    return model, curve, best["epoch"]


def refit_lightfm(params: ModelParams, epochs: int, full_train: pd.DataFrame,
                  user_tokens: TokenMap | None, item_tokens: TokenMap | None,
                  history: History | None = None) -> LightFMRecommender:
    """A fresh LightFM fitted on ``full_train`` for ``epochs`` epochs (early stopping's best),
    so the validation interactions are not lost; it keeps ``params`` as its configuration.
    ``history``: the recent items the refit sees (session tokens)."""
    model = LightFMRecommender(params.model_copy(update={"epochs": epochs})).fit(
        full_train, user_tokens, item_tokens, history=history)
    model.params = params
    return model
