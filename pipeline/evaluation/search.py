"""Model selection on the validation slice (never the holdout): every family of
``model.families`` is tuned there, popularity is measured there, and the family with the best
validation precision@k becomes the candidate the gate judges. Each family's chosen setting is
then refitted on all of train (fit part + validation), the data the holdout is judged against.

- **LightFM** (``model.search``): feature sets first (identity only, + user / item / all
  tokens at each ``token_weight``) at the model's own hyperparameters, so tokens that do not
  help are switched off by validation; then the hyperparameter grid (or a seeded random draw
  from it) with the winning set. Each trial early-stops on the validation slice; no trial
  starts once ``budget_seconds`` (CPU or wall, ``budget_clock``) have passed. On a large data
  set the trials fit on ``sample_users`` users (the scored validation users and a seeded sample
  of the others) and only the winner is fitted on everything.
- **ALS**: the grid ``baselines.als`` factors × regularization × alpha.
- **EASE**: each λ of ``baselines.ease.regularization``, one Gram matrix for all, only when the
  catalogue has at most ``baselines.ease.max_items`` items.
- **blend** (when listed): weights over the families above, chosen on the validation slice
  from their validation fits (:mod:`pipeline.evaluation.blend`); its model is their refits.
- **popularity**: the floor; a learned family must beat it on validation to be the candidate.

A trial that fails (a diverging learning rate, a singular solve) is recorded with its error;
a family whose every trial fails, or a validation slice no fitted user is in, stops the stage
with one line (:class:`~pipeline.errors.DataError`) before anything is written.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import ALSParams, BlendParams, EASEParams, ModelParams, Params
from pipeline.errors import DataError
from pipeline.evaluation import blend
from pipeline.evaluation.fingerprint import inputs_sha256, write_artifact
from pipeline.evaluation.validation import (
    ValidationSlice,
    fit_early_stopping,
    refit_lightfm,
    trial_pairs,
    validation_precision,
)
from pipeline.io import atomic_dir, link_or_copy, write_json
from pipeline.models.als import ALS
from pipeline.models.base import History, RecommenderBase, TokenMap
from pipeline.models.blend import Blend
from pipeline.models.ease import EASE, gram
from pipeline.models.hybrid import LightFMRecommender
from pipeline.models.popularity import Popularity, catalogue

log = logging.getLogger("recflow.search")

POPULARITY = "popularity"
#: the LightFM hyperparameters ``model.search`` may list
HYPER_KEYS = ("no_components", "learning_rate", "max_sampled", "item_alpha", "user_alpha",
              "user_identity", "session_items", "session_weight",
              "short_history_share", "item_identity_dropout")
#: what a failed trial may raise (LightFM: "Not all estimated parameters are finite"; a
#: singular solve; a matrix too large for memory): recorded, the search goes on
TRIAL_ERRORS = (ValueError, ArithmeticError, MemoryError)


@dataclass
class Trial:
    """One configuration scored on the validation slice."""

    family: str
    setting: dict
    val_precision: float | None = None
    seconds: float = 0.0
    best_epoch: int | None = None
    error: str | None = None
    learn_seconds: float | None = None   # LightFM: inside LightFM's own epochs

    def row(self, n: int, k: int) -> dict:
        out = {"trial": n, "family": self.family, "setting": self.setting,
               f"val_precision@{k}": self.val_precision, "best_epoch": self.best_epoch,
               "seconds": round(self.seconds, 2), "error": self.error}
        if self.learn_seconds is not None:
            out["learn_seconds"] = round(self.learn_seconds, 2)
        return out


@dataclass
class Tuned:
    """A family's best trial and the model refitted on all of train with its setting."""

    family: str
    best: Trial
    model: RecommenderBase
    extra: dict = field(default_factory=dict)    # what the artifact keeps (best epoch, curve)
    refit_seconds: float = 0.0
    #: the best trial's model as fitted on the fit part (kept for the blend only, then dropped)
    validation_model: RecommenderBase | None = None


@dataclass
class Selection:
    families: dict[str, Tuned]   # every family tried, popularity included
    chosen: str                  # the family with the best validation precision
    trials: list[Trial]
    k: int
    seconds: float
    skipped: dict[str, str]      # family → why it was not tried (EASE above max_items, budget)
    cpu_seconds: float = 0.0     # this process's CPU time: the cost on a machine shared with others

    def report(self) -> dict:
        """``reports/model_search.json``: every trial, each family's best, the choice."""
        k = self.k
        return {"k": k, "metric": f"val_precision@{k}", "chosen": self.chosen,
                "seconds": round(self.seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2),
                "skipped": self.skipped,
                "best": {f: {"setting": t.best.setting, f"val_precision@{k}": t.best.val_precision,
                             "refit_seconds": round(t.refit_seconds, 2), **t.extra.get("report", {})}
                         for f, t in self.families.items()},
                "trials": [t.row(n, k) for n, t in enumerate(self.trials, 1)]}

    def plot_rows(self) -> pd.DataFrame:
        """``plots/model_search.csv``: one row per trial that ran (a ``dvc plots`` bar chart)."""
        rows = [{"trial": f"{n:02d} {t.family} {_label(t.setting)}", "family": t.family,
                 "val_precision": t.val_precision, "seconds": round(t.seconds, 2)}
                for n, t in enumerate(self.trials, 1) if t.val_precision is not None]
        return pd.DataFrame(rows, columns=["trial", "family", "val_precision", "seconds"])


def _label(setting: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in setting.items())


def _run(trial: Trial, fit: Callable[[], tuple[float, int | None]]) -> Trial:
    """Run one trial, recording its score and time, or its error."""
    t0 = time.perf_counter()
    try:
        trial.val_precision, trial.best_epoch = fit()
    except TRIAL_ERRORS as e:
        trial.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()
        log.warning("%s trial %s failed: %s", trial.family, trial.setting, trial.error)
    trial.seconds = time.perf_counter() - t0
    log.debug("%s %s → validation precision %s (%.1fs)", trial.family, trial.setting,
             trial.val_precision, trial.seconds)
    return trial


def _score(t: Trial) -> float:
    return -1.0 if t.val_precision is None else t.val_precision


def _best(family: str, trials: list[Trial]) -> Trial:
    """The best trial of ``family``; every one failed → one line, nothing written."""
    ok = [t for t in trials if t.error is None]
    if not ok:
        first = trials[0].error if trials else "no trial ran"
        raise DataError(f"model search: every {family} trial failed ({len(trials)} tried; first: "
                        f"{first}); nothing was trained and the champion is unchanged.")
    return max(ok, key=_score)


# ---- LightFM ------------------------------------------------------------------------------
def _with_tokens(m: ModelParams, tokens: str, weight: float) -> ModelParams:
    """``m`` with only the token sides ``tokens`` names (none / users / items / all)."""
    return m.model_copy(update={
        "user_features": m.user_features if tokens in ("users", "all") else (),
        "item_features": m.item_features if tokens in ("items", "all") else (),
        "token_weight": weight if tokens != "none" else m.token_weight})


def _setting(m: ModelParams) -> dict:
    """What distinguishes one LightFM trial from another (the search's own keys)."""
    tokens = {(True, True): "all", (True, False): "users", (False, True): "items",
              (False, False): "none"}[(bool(m.user_features), bool(m.item_features))]
    out: dict[str, Any] = {"tokens": tokens}
    if tokens != "none":
        out["token_weight"] = m.token_weight
    return {**out, **{k: getattr(m, k) for k in HYPER_KEYS}}


def feature_sets(m: ModelParams) -> list[ModelParams]:
    """The first step: every ``search.tokens`` × ``search.token_weight`` at ``m``'s
    hyperparameters (identity only once), duplicates dropped, in the order listed."""
    out: list[ModelParams] = []
    for tokens in m.search.tokens:
        for w in (m.search.token_weight if tokens != "none" else (m.token_weight,)):
            cand = _with_tokens(m, tokens, w)
            if all(_setting(c) != _setting(cand) for c in out):
                out.append(cand)
    return out


def hyper_grid(base: ModelParams) -> list[ModelParams]:
    """The second step: ``base`` (the winning feature set) at every combination of the listed
    hyperparameters (an empty list keeps ``base``'s value), without ``base`` itself; the first
    ``trials`` of them in order (grid) or a seeded draw of ``trials`` (random)."""
    s = base.search
    values = [getattr(s, k) or (getattr(base, k),) for k in HYPER_KEYS]
    combos = [base.model_copy(update=dict(zip(HYPER_KEYS, v, strict=True))) for v in product(*values)]
    combos = [c for c in combos if _setting(c) != _setting(base)]
    if s.strategy == "random" and len(combos) > s.trials:
        pick = np.random.default_rng(s.seed).choice(len(combos), size=s.trials, replace=False)
        return [combos[j] for j in sorted(pick)]
    return combos[:s.trials]


def _lightfm_trial(cfg: ModelParams, fit_part: pd.DataFrame, validation: pd.DataFrame,
                   utok: TokenMap, itok: TokenMap, k: int, history: History | None = None,
                   vs: ValidationSlice | None = None
                   ) -> tuple[Trial, LightFMRecommender | None, list[dict]]:
    """One early-stopped LightFM on the fit part: (trial, the model at its best epoch, its
    per-epoch curve); the model is None when the trial failed."""
    out: dict = {}

    def fit() -> tuple[float, int]:
        model, curve, best = fit_early_stopping(   # no full_train: no refit, the best epoch kept
            cfg, fit_part, validation,
            utok if cfg.user_features else None, itok if cfg.item_features else None, k,
            history=history, vs=vs)
        out.update(model=model, curve=curve)
        return max(r["val_precision"] for r in curve), best

    trial = _run(Trial("lightfm", _setting(cfg)), fit)
    trial.learn_seconds = getattr(out.get("model"), "learn_seconds", None)
    return trial, out.get("model"), out.get("curve", [])


def tune_lightfm(m: ModelParams, fit_part: pd.DataFrame, validation: pd.DataFrame,
                 train: pd.DataFrame, utok: TokenMap, itok: TokenMap, k: int, t0: float,
                 trials: list[Trial], skipped: dict[str, str],
                 on_trial: Callable[[Trial], None] | None = None,
                 history: History | None = None, full_history: History | None = None,
                 vs: ValidationSlice | None = None, keep: bool = False) -> Tuned:
    """Feature sets, then the hyperparameter grid with the winning set; the best trial
    refitted on all of ``train`` for its best epoch count (``model.refit``), else kept as
    fitted on the fit part. ``keep``: also return the best trial's fit-part model (the
    blend's)."""
    mine: list[Trial] = []
    best: tuple[Trial, ModelParams, LightFMRecommender, list[dict]] | None = None
    cpu = m.search.budget_clock == "cpu"
    start = time.process_time() if cpu else t0

    sets = feature_sets(m)
    # one trial alone is fitted on everything; a search fits its trials on a sample of users
    part = (fit_part if vs is None or len(sets) + len(hyper_grid(m)) <= 1 else
            trial_pairs(fit_part, vs.users, m.search.sample_users, m.seed))

    def run(cfgs: list[ModelParams], first_free: bool) -> None:
        nonlocal best
        for n, cfg in enumerate(cfgs):
            spent = (time.process_time() if cpu else time.perf_counter()) - start
            if (n or not first_free) and spent > m.search.budget_seconds:
                skipped["lightfm"] = (f"{len(cfgs) - n} trial(s) not started: "
                                      f"model.search.budget_seconds {m.search.budget_seconds} "
                                      f"({m.search.budget_clock}) passed")
                return
            trial, model, curve = _lightfm_trial(cfg, part, validation, utok, itok, k,
                                                 history, vs)
            mine.append(trial)
            trials.append(trial)
            if on_trial:
                on_trial(trial)
            if model is not None and (best is None or _score(trial) > _score(best[0])):
                best = (trial, cfg, model, curve)

    run(sets, first_free=True)
    if best is not None and "lightfm" not in skipped:
        run(hyper_grid(best[1]), first_free=False)
    _best("lightfm", mine)   # raises when every trial failed
    assert best is not None
    trial, cfg, model, curve = best
    fitted = model
    t1 = time.perf_counter()
    if cfg.refit or part is not fit_part:   # a sampled trial's model never stands for the family
        model = refit_lightfm(cfg, trial.best_epoch or 1, train if cfg.refit else fit_part,
                              utok if cfg.user_features else None,
                              itok if cfg.item_features else None,
                              (full_history or history) if cfg.refit else history)
    report = {"best_epoch": trial.best_epoch, "epochs_run": len(curve), "refit": cfg.refit,
              "trial_users": int(part[C.user].nunique()), "fit_part_users": int(fit_part[C.user].nunique())}
    if model is not fitted:
        report["refit_learn_seconds"] = round(getattr(model, "learn_seconds", 0.0), 2)
    return Tuned("lightfm", trial, model, {"best_epoch": trial.best_epoch, "curve": curve,
                                           "report": report},
                 time.perf_counter() - t1, validation_model=fitted if keep else None)


# ---- the other families -------------------------------------------------------------------
def als_configs(p: ALSParams) -> list[dict]:
    return [{"factors": f, "regularization": r, "alpha": a, "iterations": p.iterations,
             "seed": p.seed, "num_threads": p.num_threads}
            for f, r, a in product(p.factors, p.regularization, p.alpha)]


def _keeping(kept: dict, keep: bool, model: RecommenderBase, vs: ValidationSlice, k: int
             ) -> tuple[float, None]:
    """Validation precision of ``model``; with ``keep``, the best so far stays in ``kept``."""
    prec = validation_precision(model, vs, k)
    if keep and prec > kept.get("precision", -1.0):
        kept.update(precision=prec, model=model)
    return prec, None


def tune_als(p: ALSParams, fit_part: pd.DataFrame, vs: ValidationSlice, train: pd.DataFrame,
             k: int, trials: list[Trial], keep: bool = False) -> Tuned:
    """The ALS grid on the validation slice; the best setting refitted on all of train
    (``keep``: the best trial's model too, for the blend)."""
    mine: list[Trial] = []
    kept: dict = {}
    part = trial_pairs(fit_part, vs.users, p.tune_users, p.seed)   # a sample on large data
    for cfg in als_configs(p):
        shown = {key: cfg[key] for key in ("factors", "regularization", "alpha")}
        mine.append(_run(Trial("als", shown),
                         lambda cfg=cfg: _keeping(kept, keep, ALS(**cfg).fit(part), vs, k)))
    trials.extend(mine)
    best = _best("als", mine)
    t1 = time.perf_counter()
    model = ALS(**als_configs(p)[mine.index(best)]).fit(train)
    return Tuned("als", best, model, refit_seconds=time.perf_counter() - t1,
                 validation_model=kept.get("model"))


def tune_ease(p: EASEParams, fit_part: pd.DataFrame, vs: ValidationSlice, train: pd.DataFrame,
              k: int, trials: list[Trial], keep: bool = False) -> Tuned:
    """Each λ on the validation slice (one Gram matrix of the fit part for all of them); the
    best refitted on all of train (``keep``: the best trial's model too, for the blend — one
    more items × items matrix held)."""
    items = catalogue(fit_part, C.item)
    g = gram(fit_part, items)
    mine: list[Trial] = []
    kept: dict = {}
    for lam in p.regularization:
        mine.append(_run(Trial("ease", {"regularization": lam}), lambda lam=lam, g=g: _keeping(
            kept, keep, EASE(lam).fit(fit_part, gram_matrix=g), vs, k)))
    del g   # before the refit builds the Gram matrix of all of train
    trials.extend(mine)
    best = _best("ease", mine)
    t1 = time.perf_counter()
    model = EASE(best.setting["regularization"]).fit(train)
    return Tuned("ease", best, model, refit_seconds=time.perf_counter() - t1,
                 validation_model=kept.get("model"))


def tune_blend(p: BlendParams, tuned: dict[str, Tuned], vs: ValidationSlice, k: int,
               trials: list[Trial], skipped: dict[str, str], utok: TokenMap,
               history: History | None, memory_mb: int | None) -> Tuned | None:
    """Weights over the tuned families' validation fits (:func:`blend.weigh`), every grid
    point a trial; the model blends their refits (nothing is fitted here). None, with the
    reason in ``skipped``, when fewer than two families were tuned or validation puts all the
    weight on one of them (that family alone is then the same model)."""
    parts = {f: t.validation_model for f, t in tuned.items() if t.validation_model is not None}
    if len(parts) < 2:
        skipped["blend"] = f"needs two tuned families (tuned: {', '.join(sorted(parts)) or 'none'})"
        return None
    reads = any(m.config().get("user_features") for m in parts.values())
    w = blend.weigh(parts, vs, k, p.step, utok if reads else None, history, memory_mb)
    share = w.seconds / len(w.grid)
    mine = [Trial("blend", point, prec, share) for point, prec in zip(w.grid, w.precision,
                                                                      strict=True)]
    trials.extend(mine)
    best = mine[w.best]
    if max(best.setting.values()) >= 1.0:
        alone = max(best.setting, key=best.setting.__getitem__)
        skipped["blend"] = f"validation put all the weight on {alone}"
        return None
    configs = {f: {**tuned[f].model.config(),
                   **({"epochs": tuned[f].extra["best_epoch"]}
                      if tuned[f].extra.get("best_epoch") else {})} for f in parts}
    model = Blend.of({f: tuned[f].model for f in parts}, best.setting, configs)
    return Tuned("blend", best, model, {"report": {"weights": model.weights,
                                                   "similar_from": model.similar_from}})


def select(params: Params, fit_part: pd.DataFrame, validation: pd.DataFrame,
           train: pd.DataFrame, utok: TokenMap, itok: TokenMap,
           on_trial: Callable[[Trial], None] | None = None,
           history: History | None = None, full_history: History | None = None) -> Selection:
    """Tune every family of ``model.families`` and popularity on the validation slice, refit
    each one's best on ``train``, and choose the candidate (see the module docstring).
    ``history`` / ``full_history``: the users' recent items as the fit part / all of train see
    them (LightFM's session tokens)."""
    k = params.evaluate.k
    m = params.model
    vs = ValidationSlice(fit_part, validation, m.validation_users, m.seed, history,
                         m.validation_short_users, m.short_history_n)
    if not vs.users:
        raise DataError(f"model search: none of the {validation[C.user].nunique()} validation "
                        "users has anything left to fit on, so no setting can be chosen; the data "
                        "is too small for validation (lower model.validation_n or "
                        "model.validation_days). The champion is unchanged.")
    t0, cpu0 = time.perf_counter(), time.process_time()
    trials: list[Trial] = []
    tuned: dict[str, Tuned] = {}
    skipped: dict[str, str] = {}
    keep = "blend" in params.model.families   # the blend reuses each family's validation fit
    for family in params.model.families:
        if family == "blend":
            continue
        if family == "lightfm":
            tuned[family] = tune_lightfm(params.model, fit_part, validation, train, utok, itok,
                                         k, t0, trials, skipped, on_trial, history, full_history,
                                         vs, keep)
            continue
        n_items = train[C.item].nunique()
        if family == "ease" and n_items > params.baselines.ease.max_items:
            skipped[family] = (f"{n_items} items > baselines.ease.max_items "
                               f"{params.baselines.ease.max_items}")
            log.info("EASE skipped: %s", skipped[family])
            continue
        before = len(trials)
        tuned[family] = (tune_als(params.baselines.als, fit_part, vs, train, k, trials, keep)
                         if family == "als" else
                         tune_ease(params.baselines.ease, fit_part, vs, train, k, trials, keep))
        for t in trials[before:]:
            if on_trial:
                on_trial(t)
    if keep:
        before = len(trials)
        b = tune_blend(params.baselines.blend, tuned, vs, k, trials, skipped, utok, history,
                       params.evaluate.memory_mb)
        for t in tuned.values():
            t.validation_model = None
        if b is not None:
            tuned["blend"] = b
        for t in trials[before:]:
            if on_trial:
                on_trial(t)
    pop = _run(Trial(POPULARITY, {}), lambda: (validation_precision(Popularity().fit(fit_part),
                                                                    vs, k), None))
    trials.append(pop)
    tuned[POPULARITY] = Tuned(POPULARITY, pop, Popularity().fit(train))
    learned = [t for f, t in tuned.items() if f != POPULARITY]
    top = max(learned, key=lambda t: _score(t.best), default=None)
    chosen = top.family if top is not None and _score(top.best) > _score(pop) else POPULARITY
    log.info("model search: %s chosen on the validation slice (%s)", chosen,
             ", ".join(f"{f} {t.best.val_precision:.4f}" for f, t in tuned.items()))
    return Selection(tuned, chosen, trials, k, time.perf_counter() - t0, skipped,
                     time.process_time() - cpu0)


def save(sel: Selection, families: Path, candidate: Path, train: pd.DataFrame,
         utok: TokenMap, itok: TokenMap, extra: dict) -> None:
    """Every family's model into ``families/<family>/`` (with the fingerprints of ``train``
    and the hash of what it saw), then the chosen one as the candidate (hard links, not a
    second copy); each folder is replaced in one atomic step."""
    k = sel.k
    with atomic_dir(families) as tmp:
        for f, t in sel.families.items():
            cfg = t.model.config()
            seen = (utok if cfg.get("user_features") else {}, itok if cfg.get("item_features") else {})
            meta = {**extra, f"val_precision@{k}": t.best.val_precision,
                    **({"best_epoch": t.extra["best_epoch"]} if "best_epoch" in t.extra else {})}
            write_artifact(t.model, tmp / f, train, inputs_sha256(cfg, train, *seen), extra=meta)
            if "curve" in t.extra:
                write_json(tmp / f / "curve.json", t.extra["curve"])
    with atomic_dir(candidate) as tmp:
        for file in sorted((families / sel.chosen).iterdir()):
            if file.is_dir():   # a blend's components
                shutil.copytree(file, tmp / file.name, copy_function=link_or_copy)
            else:
                link_or_copy(file, tmp / file.name)
