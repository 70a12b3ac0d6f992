"""The blend family's weights, chosen on the validation slice (never the holdout).

The search has already fitted every family on the fit part and scored it on the validation
slice; the blend reuses those fits (no component is fitted again): each validation user's
normalised component scores are computed once per batch, and every weight vector of a simplex
grid (``baselines.blend.step``: step 0.1 over three families is 66 points, the three single
families among them) is scored from them — a weighted sum and a top-k per point, no model call.
The grid is deterministic; ties go to the point listed first, and single families are listed
first, so a blend is only chosen when it beats every family alone on validation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from itertools import combinations_with_replacement

import numpy as np

from pipeline.evaluation.batches import batch_users
from pipeline.evaluation.validation import ValidationSlice
from pipeline.models.base import History, RecommenderBase, TokenMap
from pipeline.models.blend import Blend, combine
from pipeline.models.ranking import in_rows, row_cells, top_k_masked

log = logging.getLogger("recflow.search")


def simplex(names: list[str], step: float) -> list[dict[str, float]]:
    """Every weight vector over ``names`` whose weights are multiples of ``step`` summing to 1,
    fewest components first (the single families, then pairs, ...), e.g. two names at step 0.5:
    {a: 1, b: 0}, {a: 0, b: 1}, {a: 0.5, b: 0.5}."""
    m = max(1, round(1.0 / step))
    points = set()
    for combo in combinations_with_replacement(range(len(names)), m):
        counts = np.bincount(combo, minlength=len(names))
        points.add(tuple(int(c) for c in counts))
    ordered = sorted(points, key=lambda c: (sum(x > 0 for x in c), [-x for x in c]))
    return [{n: round(c / m, 6) for n, c in zip(names, counts, strict=True)} for counts in ordered]


@dataclass
class Weighing:
    """Validation precision@k of each weight vector of the grid, in grid order."""

    grid: list[dict[str, float]]
    precision: list[float]
    seconds: float

    @property
    def best(self) -> int:
        """Index of the best point (the first of equals)."""
        return int(np.argmax(self.precision))


def weigh(models: dict[str, RecommenderBase], vs: ValidationSlice, k: int, step: float,
          user_tokens: TokenMap | None = None, history: History | None = None,
          memory_mb: int | None = None) -> Weighing:
    """Score every grid point of weights over ``models`` (fitted on the fit part) on ``vs``.

    One batch holds each component's normalised scores and one blended matrix, so the batch is
    sized for (components + 2) score matrices within ``memory_mb``."""
    t0 = time.perf_counter()
    names = sorted(models)
    grid = simplex(names, step)
    hits = np.zeros(len(grid), dtype=np.int64)
    users = vs.users
    if not users:
        return Weighing(grid, [0.0] * len(grid), 0.0)
    blend = Blend.of(models, {n: 1.0 for n in names})
    n_items = len(blend.item_ids)
    excluded, relevant = vs.matrices(blend.item_ids)
    step_users = max(1, batch_users(n_items, memory_mb) // (len(names) + 2))
    for start in range(0, len(users), step_users):
        ub = users[start:start + step_users]
        parts = blend.component_scores(ub, user_tokens, history)
        r, c = row_cells(excluded, start, start + len(ub))
        for g, w in enumerate(grid):
            s = combine(parts, w, (len(ub), n_items))
            s[r, c] = -np.inf
            idx, val = top_k_masked(s, k)
            hits[g] += int((in_rows(relevant, start, idx) & np.isfinite(val)).sum())
    precision = (hits / (k * len(users))).tolist()
    out = Weighing(grid, precision, time.perf_counter() - t0)
    log.info("blend: %d weightings of %s on %d validation users in %.1f s; best %s → %.4f",
             len(grid), "+".join(names), len(users), out.seconds, grid[out.best],
             precision[out.best])
    return out
