"""Stage ``promote``: the evaluation gate (:mod:`pipeline.registry.gate`), then an atomic
champion switch or a refusal; every decision is logged."""

from __future__ import annotations

import logging

from pipeline.config import Params, Paths
from pipeline.evaluation.holdout import with_current_champion
from pipeline.io import read_json, write_json
from pipeline.registry import versions
from pipeline.registry.gate import decision
from pipeline.registry.lineage import data_hash, git_rev

log = logging.getLogger("recflow.promote")


def run(params: Params, paths: Paths) -> dict:
    ev = with_current_champion(read_json(paths.evaluation_metrics), params, paths)
    record = decision(ev, params.gate)
    if record["promoted"]:
        card = {
            "metrics": ev["candidate"],
            "baselines": {"popularity": ev["popularity"], "als": ev.get("als")},
            "params": params.model.model_dump(mode="json"),
            "data": data_hash(paths.root, paths.validated, paths.dvc_lock),
            "git_rev": git_rev(paths.root),
            "cutoff": read_json(paths.trainset_meta)["cutoff"],
            "registered_at": record["at"],
        }
        version = versions.register(paths.registry, paths.candidate, card)
        versions.set_champion(paths.registry, version, record["reason"])
        record["version"] = version
        log.info("promoted %s: %s", version, record["reason"])
    else:
        log.info("not promoted: %s (champion stays %s)", record["reason"], ev.get("champion_version"))
    versions.log_decision(paths.registry, record)
    write_json(paths.promotion_report, record)
    return record
