"""Score many users in batches sized from a memory budget, train items masked from a CSR
matrix: the one loop behind validation and holdout scoring, so no (users × items) matrix
beyond ``evaluate.memory_mb`` is ever held, and a long scoring shows progress (a tqdm bar on
a terminal, one log line per scoring)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from pipeline.config import EvaluateParams
from pipeline.models.base import History, RecommenderBase, TokenMap
from pipeline.models.ranking import row_cells

log = logging.getLogger("recflow.scoring")

#: bytes per (user, item) cell at the peak of a batch: the model's float32 product and its
#: bias sum, our float32 copy or mask, and top-k / AUC temporaries
BYTES_PER_CELL = 16
DEFAULT_MEMORY_MB = EvaluateParams().memory_mb


def batch_users(n_items: int, memory_mb: int | None = None) -> int:
    """Users per batch so that a batch's score matrix stays within ``memory_mb``."""
    budget = (memory_mb or DEFAULT_MEMORY_MB) * 2 ** 20
    return max(1, budget // (max(1, n_items) * BYTES_PER_CELL))


def masked_scores(model: RecommenderBase, users: list[str], user_tokens: TokenMap | None,
                  excluded: sp.csr_matrix, memory_mb: int | None = None, desc: str = "scoring",
                  batch: int | None = None, history: History | None = None
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """(first row, float32 scores, shared row) per batch of ``users``, the cells stored in
    ``excluded`` (users × model items) set to -inf; the arrays are the caller's to modify.
    The shared row is the one row every user got (a broadcast, e.g. popularity), else None."""
    n = len(model.item_ids)
    step = batch or batch_users(n, memory_mb)
    t0 = time.perf_counter()
    with tqdm(total=len(users), desc=desc, unit="user", leave=False, disable=None) as bar:
        for start in range(0, len(users), step):
            ub = users[start:start + step]
            s = np.asarray(model.scores(ub, user_tokens, history), dtype=np.float32)
            shared = s[0] if len(s) and s.strides[0] == 0 else None
            if not (s.flags.owndata and s.flags.writeable and s.flags.c_contiguous):
                s = np.array(s, dtype=np.float32, order="C")   # e.g. popularity's broadcast view
            r, c = row_cells(excluded, start, start + len(ub))
            s[r, c] = -np.inf
            yield start, s, shared
            bar.update(len(ub))
    log.debug("%s: %d users × %d items in %.1f s", desc, len(users), n, time.perf_counter() - t0)
