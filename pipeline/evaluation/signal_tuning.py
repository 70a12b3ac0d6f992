"""Tune the signal weights on the validation slice, then show what they are worth on the holdout.

What is searched: the per-event weights of the types present in the data, the watch rules
(when a type carries a watch fraction), the rating rule (stars), ``repeat_bonus``,
``half_life_days`` (time split), ``alpha``, and how confidence steers LightFM
(``model.confidence`` / ``model.confidence_power``). The search is a seeded local search:
trial 0 is the configured defaults, trial 1 binary confidence, trials 2-3 the defaults with a
wider confidence range and with positives sampled by confidence, then each trial perturbs a
few knobs of the best setting so far; it stops at a trial or time budget. LightFM runs on one
thread during the search, so a trial's score does not depend on thread scheduling.

Honesty: the holdout and the validation slice are carved once, with the configured signals,
and stay fixed for every trial (so a trial cannot move pairs between them, and the target —
``evaluate.target``, applied to both — is the same throughout); a trial only changes the
confidence (and the positive set) of the training pairs. Trials are scored on the validation
slice only: LightFM by its best early-stopping epoch, ALS (its configuration tuned once on the
defaults) by one fit. The holdout is read once, after the search, for the report table.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import Params, SignalParams
from pipeline.data.signals import confidence_sql
from pipeline.evaluation import target
from pipeline.evaluation.holdout import score
from pipeline.evaluation.search import als_configs
from pipeline.evaluation.splits import Split, carve_validation, make_split
from pipeline.evaluation.validation import ValidationSlice, fit_early_stopping, validation_precision
from pipeline.io import sql_path, sql_str
from pipeline.models.als import ALS
from pipeline.models.base import TokenMap

log = logging.getLogger("recflow.tune_signals")

#: ``signals.alpha`` that makes every confidence ≈ 1: the binary baseline
BINARY_ALPHA = 1e-6
#: model keys the search also sets (how confidence reaches LightFM)
MODEL_KEYS = ("confidence", "confidence_power")


@dataclass(frozen=True)
class Frames:
    """The fixed carve every trial shares (built once, with the configured signals)."""

    events: Path
    params: Params
    split: Split
    holdout: pd.DataFrame         # the target's held-out pairs (scored once, at the end)
    held: pd.DataFrame            # every held-out pair (user, item): never trained on
    validation: pd.DataFrame      # the target's validation pairs
    val_pairs: pd.DataFrame       # every validation pair (user, item): kept out of the fit part
    types: tuple[str, ...]        # event types present before the cutoff
    span_days: float              # the training period's length (for half-life choices)


@dataclass(frozen=True)
class Candidate:
    """One setting of the searched knobs: the signals section and the two model keys."""

    signals: SignalParams
    confidence: str = "weight"
    confidence_power: float = 1.0

    def params(self, base: Params) -> Params:
        model = base.model.model_copy(update={"confidence": self.confidence,
                                              "confidence_power": self.confidence_power})
        return base.model_copy(update={"signals": self.signals, "model": model})

    def patch(self) -> dict:
        """The params patch: the keys of params.yaml this candidate sets."""
        return {"signals": self.signals.model_dump(mode="json"),
                "model": {"confidence": self.confidence,
                          "confidence_power": round(self.confidence_power, 4)}}


@dataclass
class Trial:
    n: int
    candidate: Candidate
    lightfm: float                # validation precision@k
    als: float
    objective: float = 0.0
    seconds: float = 0.0
    note: str = ""


@dataclass
class Search:
    trials: list[Trial] = field(default_factory=list)
    als_config: dict = field(default_factory=dict)

    @property
    def best(self) -> Trial:
        return max(self.trials, key=lambda t: t.objective)


def _anti(frame: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``frame`` whose (user, item) is not in ``pairs``."""
    key = pairs[[C.user, C.item]].drop_duplicates().assign(_x=True)
    out = frame.merge(key, on=[C.user, C.item], how="left")
    return out[out["_x"].isna()].drop(columns="_x").reset_index(drop=True)


def prepare(events: Path, params: Params) -> Frames:
    """The split and validation carve of the configured signals, kept for every trial."""
    split = make_split(events, params)
    fit, val = carve_validation(split.train, params)
    tg = params.evaluate.target
    con = duckdb.connect()
    src = f"read_parquet({sql_path(events)})"
    where = (f"WHERE {C.ts} < TIMESTAMPTZ {sql_str(split.cutoff.isoformat())}"
             if params.split.strategy == "time" else "")
    types = tuple(r[0] for r in con.execute(
        f"SELECT DISTINCT {C.event} FROM {src} {where} ORDER BY 1").fetchall())
    lo, hi = con.execute(f"SELECT min({C.ts}), max({C.ts}) FROM {src} {where}").fetchall()[0]
    con.close()
    span = max(1.0, (hi - lo).total_seconds() / 86400.0) if lo is not None else 1.0
    return Frames(events, params, split, target.relevant(split.holdout, tg),
                  split.holdout[[C.user, C.item]], target.relevant(val, tg),
                  val[[C.user, C.item]], types, span)


def train_pairs(fr: Frames, sp: SignalParams) -> pd.DataFrame:
    """Training positives under the signals ``sp``: the same events as the fixed split's
    training part, their confidence (and which pairs are positive) recomputed."""
    con = duckdb.connect()
    src = f"read_parquet({sql_path(fr.events)})"
    if fr.params.split.strategy == "time":
        c = f"TIMESTAMPTZ {sql_str(fr.split.cutoff.isoformat())}"
        pairs = con.sql(confidence_sql(sp, f"(SELECT * FROM {src} WHERE {C.ts} < {c})",
                                       fr.split.cutoff)).df()
    else:
        pairs = _anti(con.sql(confidence_sql(sp, src, fr.split.cutoff)).df(), fr.held)
    con.close()
    return pairs.sort_values([C.user, C.item]).reset_index(drop=True)


def _objective(t: Trial, ref: Trial | None, which: str) -> float:
    """Relative validation gain over the defaults (trial 0): LightFM, ALS or their mean."""
    if ref is None:
        return 1.0
    lf = t.lightfm / ref.lightfm if ref.lightfm > 0 else t.lightfm
    al = t.als / ref.als if ref.als > 0 else t.als
    return {"lightfm": lf, "als": al}.get(which, (lf + al) / 2.0)


def evaluate_candidate(fr: Frames, cand: Candidate, als_config: dict,
                       tokens: tuple[TokenMap | None, TokenMap | None] = (None, None)
                       ) -> tuple[float, float]:
    """(LightFM, ALS) validation precision@k of ``cand`` (fit part → validation slice)."""
    p = cand.params(fr.params)
    k = p.evaluate.k
    fit = _anti(train_pairs(fr, cand.signals), fr.val_pairs)
    if fit.empty:
        return 0.0, 0.0
    no_refit = p.model.model_copy(update={"refit": False})
    _, curve, _ = fit_early_stopping(no_refit, fit, fr.validation, tokens[0], tokens[1], k)
    als = validation_precision(ALS(**als_config).fit(fit), ValidationSlice(fit, fr.validation), k)
    return max(r["val_precision"] for r in curve), als


def defaults(params: Params) -> Candidate:
    return Candidate(params.signals, params.model.confidence, params.model.confidence_power)


def binary(params: Params) -> Candidate:
    """The configured signals with confidence flattened to ≈ 1 (same positive pairs)."""
    return Candidate(params.signals.model_copy(update={"alpha": BINARY_ALPHA}), "weight", 1.0)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _knobs(fr: Frames, base: Candidate) -> dict[str, Callable[[np.random.Generator, Candidate], Candidate]]:
    """name → a move that changes one knob of a candidate (only knobs the data can use)."""
    sp0 = base.signals
    kinds = {t: sp0.value_kind.get(t) for t in fr.types}

    def sig(c: Candidate, **upd) -> Candidate:
        return Candidate(c.signals.model_copy(update=upd), c.confidence, c.confidence_power)

    def weight(t: str) -> Callable[[np.random.Generator, Candidate], Candidate]:
        def move(rng: np.random.Generator, c: Candidate) -> Candidate:
            w = dict(c.signals.weights)
            w[t] = (-_log_uniform(rng, 0.1, 5.0) if sp0.weights[t] < 0
                    else _log_uniform(rng, 0.1, 10.0))
            return sig(c, weights=w)
        return move

    def watch(key: str, lo: float, hi: float) -> Callable[[np.random.Generator, Candidate], Candidate]:
        def move(rng: np.random.Generator, c: Candidate) -> Candidate:
            return sig(c, watch=c.signals.watch.model_copy(update={key: float(rng.uniform(lo, hi))}))
        return move

    moves: dict = {f"weights.{t}": weight(t) for t in fr.types if t in sp0.weights}
    if "fraction" in kinds.values():
        moves.update({"watch.strong_threshold": watch("strong_threshold", 0.5, 0.98),
                      "watch.strong_bonus": watch("strong_bonus", 0.0, 8.0),
                      "watch.abandon_threshold": watch("abandon_threshold", 0.02, 0.45),
                      "watch.abandon_penalty": watch("abandon_penalty", -4.0, 0.0)})
    if "stars" in kinds.values():
        moves["rating.per_star"] = lambda rng, c: sig(c, rating=c.signals.rating.model_copy(
            update={"per_star": float(rng.uniform(0.0, 3.0))}))
    if {"play", "purchase"} & set(fr.types):   # the types whose repeats count
        moves["repeat_bonus"] = lambda rng, c: sig(c, repeat_bonus=float(rng.uniform(0.0, 3.0)))
    moves["alpha"] = lambda rng, c: sig(c, alpha=_log_uniform(rng, 0.3, 6.0))
    if fr.params.split.strategy == "time":
        choices = [None, *(round(fr.span_days * f, 2) for f in (0.25, 0.5, 1.0, 2.0))]
        moves["half_life_days"] = lambda rng, c: sig(
            c, half_life_days=choices[int(rng.integers(len(choices)))])
    moves["model.confidence"] = lambda rng, c: Candidate(
        c.signals, "sample" if c.confidence == "weight" else "weight", c.confidence_power)
    moves["model.confidence_power"] = lambda rng, c: Candidate(
        c.signals, c.confidence, float(rng.uniform(0.5, 3.0)))
    return moves


def _best_als(p: Params, fit_part: pd.DataFrame, validation: pd.DataFrame) -> dict:
    """The ALS grid's best setting on the validation slice at the configured signals; every
    signal trial then refits that one setting."""
    vs = ValidationSlice(fit_part, validation)
    scored = [(validation_precision(ALS(**cfg).fit(fit_part), vs, p.evaluate.k), i, cfg)
              for i, cfg in enumerate(als_configs(p.baselines.als))]
    return max(scored, key=lambda t: (t[0], -t[1]))[2]


def search(fr: Frames, trials: int = 20, minutes: float = 10.0, seed: int = 42,
           objective: str = "both", tokens: tuple[TokenMap | None, TokenMap | None] = (None, None),
           on_trial: Callable[[Trial], None] | None = None) -> Search:
    """Local search on the validation slice (see the module doc); at least trials 0 and 1."""
    # one LightFM thread: the same candidate scores the same, so a trial wins on its merits
    p = fr.params.model_copy(update={"model": fr.params.model.model_copy(update={"num_threads": 1})})
    fr = replace(fr, params=p)
    rng = np.random.default_rng(seed)
    base = defaults(p)
    ref_fit = _anti(train_pairs(fr, base.signals), fr.val_pairs)
    als_config = _best_als(p, ref_fit, fr.validation)
    out = Search(als_config=als_config)
    moves = _knobs(fr, base)
    names = sorted(moves)
    t_end = time.monotonic() + minutes * 60.0
    queue = [(base, "configured defaults"), (binary(p), "binary confidence"),
             (Candidate(base.signals, "weight", 2.0), "confidence_power 2"),
             (Candidate(base.signals, "sample", base.confidence_power), "confidence sample")]
    n = 0
    while n < max(2, trials) and (n < 2 or time.monotonic() < t_end):
        if queue:
            cand, note = queue.pop(0)
        else:
            cand, picked = out.best.candidate, []
            for name in rng.choice(names, size=min(len(names), int(rng.integers(1, 4))),
                                   replace=False):
                cand = moves[str(name)](rng, cand)
                picked.append(str(name))
            note = "changed " + ", ".join(picked)
        t0 = time.perf_counter()
        lf, al = evaluate_candidate(fr, cand, als_config, tokens)
        tr = Trial(n, cand, lf, al, seconds=round(time.perf_counter() - t0, 1), note=note)
        tr.objective = _objective(tr, out.trials[0] if out.trials else None, objective)
        out.trials.append(tr)
        log.info("trial %d: lightfm %.4f als %.4f objective %.4f (%s)", n, lf, al,
                 tr.objective, note)
        if on_trial:
            on_trial(tr)
        n += 1
    return out


def holdout_table(fr: Frames, rows: dict[str, Candidate], als_config: dict,
                  tokens: tuple[TokenMap | None, TokenMap | None] = (None, None),
                  seeds: int = 1) -> list[dict]:
    """Each candidate on the holdout: LightFM (early stopping on validation, then refit on the
    whole training part) and ALS, fitted on its training pairs; precision@k and the ratio to
    the first row (binary). With ``seeds`` > 1 every figure is the mean over that many model
    seeds (one LightFM thread each, so each is reproducible): a LightFM fit alone moves
    precision@10 by several percent, as much as the signals do."""
    k = fr.params.evaluate.k
    out: list[dict] = []
    for name, cand in rows.items():
        p = cand.params(fr.params)
        train = train_pairs(fr, cand.signals)
        fit = _anti(train, fr.val_pairs)
        n_cat = train[C.item].nunique()
        lf, al, epochs = [], [], []
        for j in range(seeds):
            mp = p.model.model_copy(update={"seed": p.model.seed + j,
                                            **({"num_threads": 1} if seeds > 1 else {})})
            lfm, _, best = fit_early_stopping(mp, fit, fr.validation, tokens[0], tokens[1], k,
                                              full_train=train)
            lf.append(score(lfm, fr.holdout, train, tokens[0] or {}, k, n_cat)[0][f"precision@{k}"])
            als = ALS(**{**als_config, "seed": als_config.get("seed", 42) + j}).fit(train)
            al.append(score(als, fr.holdout, train, {}, k, n_cat)[0][f"precision@{k}"])
            epochs.append(best)
        out.append({"signals": name, "lightfm": float(np.mean(lf)), "als": float(np.mean(al)),
                    "lightfm_runs": lf, "als_runs": al, "best_epoch": epochs})
    for r in out:
        r["lightfm_x"] = r["lightfm"] / out[0]["lightfm"] if out[0]["lightfm"] else float("nan")
        r["als_x"] = r["als"] / out[0]["als"] if out[0]["als"] else float("nan")
    return out


def format_table(rows: list[dict], k: int, title: str = "") -> str:
    """The holdout table as markdown (binary first: the ratios are to it)."""
    lines = ([title, ""] if title else []) + [
        f"| signals | LightFM p@{k} | × binary | ALS p@{k} | × binary |", "|---|---|---|---|---|"]
    lines += [f"| {r['signals']} | {r['lightfm']:.4f} | {r['lightfm_x']:.3f} | {r['als']:.4f} "
              f"| {r['als_x']:.3f} |" for r in rows]
    return "\n".join(lines)


def search_table(s: Search) -> str:
    """Every trial's validation figures (what chose the tuned row)."""
    lines = ["| trial | LightFM val p | ALS val p | objective | s | what |", "|---|---|---|---|---|---|"]
    lines += [f"| {t.n} | {t.lightfm:.4f} | {t.als:.4f} | {t.objective:.3f} | {t.seconds:.0f} "
              f"| {t.note} |" for t in s.trials]
    return "\n".join(lines)


def patch_text(best: Trial, baseline: Trial, k: int, target_text: str) -> str:
    """The params patch as YAML, with a header saying where the values came from."""
    import yaml

    head = (f"# recflow tune-signals: chosen on the validation slice (target: {target_text}),\n"
            f"# trial {best.n}: LightFM val p@{k} {best.lightfm:.4f} (defaults {baseline.lightfm:.4f}),"
            f" ALS {best.als:.4f} (defaults {baseline.als:.4f}).\n"
            "# Apply: copy these keys over the same keys of params.yaml, then `dvc repro`.\n")
    return head + yaml.safe_dump(best.candidate.patch(), sort_keys=False)


def run(params: Params, paths, trials: int, minutes: float, objective: str = "both",
        seed: int = 42, out: Callable[[str], None] = print) -> dict:
    """``recflow tune-signals``: search, write the patch and the report, print the tables."""
    from pipeline.errors import DataError
    from pipeline.io import write_json, write_text

    events = paths.validated_events
    if not events.exists():
        raise DataError(f"{events}: missing. Run 'recflow validate' first.")
    fr = prepare(events, params)
    if fr.validation.empty or fr.holdout.empty:
        raise DataError(f"{events}: the validation slice or the holdout has no pair in "
                        f"evaluate.target ({target.describe(params.evaluate.target)}).")
    k = params.evaluate.k
    out(f"tune-signals: target {target.describe(params.evaluate.target)}, "
        f"{len(fr.validation)} validation / {len(fr.holdout)} holdout pairs in it; "
        f"budget {trials} trials or {minutes:g} min")
    s = search(fr, trials, minutes, seed, objective,
               on_trial=lambda t: out(f"  trial {t.n}: LightFM val p@{k} {t.lightfm:.4f}, ALS "
                                      f"{t.als:.4f}, objective {t.objective:.3f} ({t.note})"))
    best, base = s.best, s.trials[0]
    write_text(paths.signals_patch, patch_text(best, base, k, target.describe(params.evaluate.target)))
    rows = holdout_table(fr, {"binary": binary(params), "configured defaults": defaults(params),
                              f"tuned (trial {best.n})": best.candidate}, s.als_config)
    write_json(paths.signal_tuning, {
        "target": target.describe(params.evaluate.target), "k": k, "objective": objective,
        "als_config": s.als_config, "best_trial": best.n, "patch": best.candidate.patch(),
        "trials": [{"n": t.n, "lightfm_val": t.lightfm, "als_val": t.als,
                    "objective": t.objective, "seconds": t.seconds, "note": t.note}
                   for t in s.trials],
        "holdout": rows})
    out("")
    out(format_table(rows, k, f"holdout precision@{k} (scored once, after the search; "
                              "LightFM identity-only)"))
    out(f"\npatch: {paths.signals_patch}")
    return {"best_trial": best.n, "trials": len(s.trials), "patch": str(paths.signals_patch)}
