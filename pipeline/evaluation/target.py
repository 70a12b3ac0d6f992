"""The evaluation target: which held-out (and validation) pairs count as relevant.

Counting every positive pair alike gives a model that learned "a purchase matters more than a
view" no credit for it. ``evaluate.target`` narrows the relevant set, the same way for the
holdout every model is scored on and for the validation slice that early stopping and tuning
read, so what is tuned is tuned for the target that is reported:

- ``types: []`` (default): every positive pair (net signal > 0) — the behaviour before targets;
- ``types: [purchase, play]`` with ``min_value: {play: 0.9}``: pairs with a purchase or a play
  watched at least 90 % (a finished play); ``types: [rating]``, ``min_value: {rating: 4}``:
  pairs rated 4 stars or more. This does not depend on ``signals`` weights, so tuning the
  weights never moves the target;
- ``min_net: x``: pairs whose net signal reaches ``x`` (depends on the weights; combined with
  ``types`` when both are set).

Pairs outside the target stay out of the fit part as before; they are only not relevant.
"""

from __future__ import annotations

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import TargetParams
from pipeline.io import sql_str

#: the per-pair column the split writes: True when the pair meets ``evaluate.target.types``
FLAG = "in_target"


def event_sql(tp: TargetParams) -> str:
    """Per-event SQL boolean: this event makes its pair relevant (``types`` / ``min_value``)."""
    if not tp.types:
        return "TRUE"
    terms = []
    for t in tp.types:
        cond = f"{C.event} = {sql_str(t)}"
        if t in tp.min_value:
            cond += f" AND {C.value} >= {float(tp.min_value[t])}"
        terms.append(f"({cond})")
    return f"({' OR '.join(terms)})"


def flags(tp: TargetParams) -> dict[str, str]:
    """The ``flags`` argument of :func:`pipeline.data.signals.confidence_sql`."""
    return {FLAG: event_sql(tp)}


def relevant(pairs: pd.DataFrame, tp: TargetParams) -> pd.DataFrame:
    """The rows of ``pairs`` (from the split, with :data:`FLAG` and ``net``) in the target."""
    keep = pd.Series(True, index=pairs.index)
    if tp.types:
        if FLAG not in pairs:
            raise ValueError(f"pairs have no {FLAG!r} column: build them with target.flags()")
        keep &= pairs[FLAG].fillna(False).astype(bool)
    if tp.min_net is not None:
        keep &= pairs["net"] >= tp.min_net
    return pairs[keep.to_numpy()].reset_index(drop=True)


def describe(tp: TargetParams) -> str:
    """One line for reports: ``all positives`` or e.g. ``purchase or play >= 0.9``."""
    if not tp.types and tp.min_net is None:
        return "all positives"
    parts = [f"{t} >= {tp.min_value[t]:g}" if t in tp.min_value else t for t in tp.types]
    text = " or ".join(parts)
    if tp.min_net is not None:
        text = f"({text}) and net >= {tp.min_net:g}" if text else f"net >= {tp.min_net:g}"
    return text
