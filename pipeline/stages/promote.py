"""Stage ``promote``: the evaluation gate (:mod:`pipeline.registry.gate`), then an atomic
champion switch or a refusal. Every decision is logged, a promotion *before* the pointer
moves, and a switch a crash interrupted is finished first (:func:`versions.recover`)."""

from __future__ import annotations

import logging

from pipeline.config import Params, Paths
from pipeline.evaluation import results
from pipeline.evaluation.champion import promoted_artifact, with_current_champion
from pipeline.io import write_json
from pipeline.models.base import read_meta
from pipeline.registry import versions
from pipeline.registry.gate import decision
from pipeline.registry.lineage import card

log = logging.getLogger("recflow.promote")


def run(params: Params, paths: Paths) -> dict:
    recovered = versions.recover(paths.registry)
    if recovered:
        log.info("registry: %s", recovered)
    ev, per_user = with_current_champion(*results.load(paths), params, paths)
    record = decision(ev, {m: per_user[m].to_numpy() for m in per_user}, params.gate)
    if record["promoted"]:
        with promoted_artifact(record["promoted_model"], paths) as src:
            version = versions.register(paths.registry, src,
                                        card(params, paths, ev, record, read_meta(src)))
        record["version"] = version
        versions.log_decision(paths.registry, record)   # recorded before the pointer moves
        versions.set_champion(paths.registry, version, record["reason"])
        log.info("promoted %s (%s): %s", version, record["promoted_model"], record["reason"])
    else:
        versions.log_decision(paths.registry, record)
        log.info("not promoted: %s (champion stays %s)", record["reason"], ev.get("champion_version"))
    write_json(paths.promotion_report, record)
    return record
