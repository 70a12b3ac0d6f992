"""Stage ``promote``: the evaluation gate (:mod:`pipeline.registry.gate`), then the promoted
configuration refit on all data for serving (:mod:`pipeline.evaluation.refit`), then an atomic
champion switch — or a refusal. Every decision is logged, a promotion *before* the pointer
moves; a switch a crash interrupted is finished first (:func:`versions.recover`); a refit that
fails or is refused is logged and leaves the champion as it was."""

from __future__ import annotations

import logging

from pipeline.config import Params, Paths
from pipeline.errors import RefitFailed
from pipeline.evaluation import results
from pipeline.evaluation.champion import promoted_artifact, with_current_champion
from pipeline.evaluation.refit import serving_refit
from pipeline.io import remove_stale, write_json
from pipeline.models.base import read_meta
from pipeline.registry import versions
from pipeline.registry.gate import decision
from pipeline.registry.lineage import card

log = logging.getLogger("recflow.promote")


def run(params: Params, paths: Paths) -> dict:
    recovered = versions.recover(paths.registry)
    remove_stale(paths.models)   # temp folders (refit, popularity) of a promote a kill stopped
    if recovered:
        log.info("registry: %s", recovered)
    ev, per_user = with_current_champion(*results.load(paths), params, paths)
    record = decision(ev, {m: per_user[m].to_numpy() for m in per_user}, params.gate)
    if record["promoted"]:
        try:
            with promoted_artifact(record["promoted_model"], paths) as judged, \
                    serving_refit(judged, params, paths) as served:
                c = card(params, paths, ev, record, read_meta(judged), served.info)
                record["served"] = served.info
                version = versions.register(paths.registry, served.directory, c, judged=judged)
        except RefitFailed as e:
            record.update(promoted=False, verdict="refit failed",
                          reason=f"the gate passed ({record['reason']}) but {e}")
            versions.log_decision(paths.registry, record)
            write_json(paths.promotion_report, record)
            raise
        record["version"] = version
        versions.log_decision(paths.registry, record)   # recorded before the pointer moves
        versions.set_champion(paths.registry, version, record["reason"])
        log.info("promoted %s (%s): %s", version, record["promoted_model"], record["reason"])
    else:
        versions.log_decision(paths.registry, record)
        log.info("not promoted: %s (champion stays %s)", record["reason"], ev.get("champion_version"))
    write_json(paths.promotion_report, record)
    return record
