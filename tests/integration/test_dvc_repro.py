"""The whole stage graph under real DVC, in a throw-away git copy of the project."""

import json

import pytest
import yaml

from tests.conftest import sh

pytestmark = pytest.mark.integration


def test_dvc_repro_end_to_end(built_project):
    project = built_project

    for path in ("data/events/events.parquet", "data/validated/events.parquet",
                 "feature_repo/data/user_features.parquet", "feature_repo/data/item_features.parquet",
                 "feature_repo/data/registry.db", "feature_repo/data/online_store.db",
                 "models/candidate/model.npz", "models/candidate/model.json",
                 "reports/validation.json", "plots/precision_at_k.csv"):
        assert (project / path).exists(), path

    ev = json.loads((project / "reports/evaluation_details.json").read_text())
    k = ev["k"]
    assert ev["candidate"][f"precision@{k}"] > ev["popularity"][f"precision@{k}"]
    champ = json.loads((project / "models/registry/champion.json").read_text())
    assert (project / "models/registry/versions" / champ["version"] / "model.npz").exists()
    assert "als" in ev and f"map@{k}" in ev["candidate"] and "cold" in ev["candidate"]
    search = json.loads((project / "reports/model_search.json").read_text())
    assert {t["family"] for t in search["trials"]} == {"lightfm", "als", "ease", "popularity"}
    assert {t["setting"].get("tokens") for t in search["trials"] if t["family"] == "lightfm"} == {
        "none", "all"}                                  # identity only against + tokens
    assert ev["candidate_family"] == search["chosen"]  # validation chose the candidate
    for fam in ("lightfm", "als", "ease", "popularity"):
        assert ev[fam][f"precision@{k}"] > 0 and (project / "models/families" / fam / "model.npz").exists()
    rows = (project / "plots/model_search.csv").read_text().splitlines()
    assert rows[0].startswith("trial,family,val_precision") and len(rows) == 1 + len(search["trials"])
    head = json.loads((project / "metrics/candidate.json").read_text())
    assert head[f"precision@{k}"] == ev["candidate"][f"precision@{k}"]
    card = json.loads((project / "models/registry/versions" / champ["version"] / "card.json").read_text())
    promoted = json.loads((project / "reports/promotion.json").read_text())
    fam = ev["candidate_family"] if promoted["promoted_model"] == "candidate" else "popularity"
    assert card["model"]["family"] == fam and card["model"]["format"] == f"recflow-{fam}-v1"
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    validated = next(o for o in lock["stages"]["validate"]["outs"] if o["path"] == "data/validated")
    assert card["data"]["md5"] == validated["md5"]     # the DVC hash of the training data
    vdir = project / "models/registry/versions" / champ["version"]
    assert (vdir / "judged/model.npz").exists()        # what the gate judged, beside the refit
    promo = json.loads((project / "reports/promotion.json").read_text())
    assert promo["served"] == card["served"] and card["served"]["seconds"] > 0
    assert card["served"]["pairs"] > card["trained_on"]["pairs"]   # refit on train + holdout
    as_of, cfg = card["served"]["features_as_of"], card["served"]["config"]
    if any(cfg.get(key) for key in ("user_features", "item_features", "session_items")):
        assert as_of > card["cutoff"]                                # with the serving features
    else:
        assert as_of is None                                         # EASE, ALS: none read
    curve = (project / "plots/validation_curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch") and len(curve) > 1
    plots = sh(["dvc", "plots", "show", "-o", "plots_html"], project)
    assert (project / "plots_html" / "index.html").exists(), plots.stdout
    val = json.loads((project / "reports/validation.json").read_text())
    assert val["accepted"] + val["quarantined"] == val["rows"] > 0

    # nothing changed → nothing runs
    status = sh(["dvc", "status"], project)
    assert "up to date" in status.stdout
    again = sh(["dvc", "repro"], project)
    assert "Running stage" not in again.stdout

    shown = sh(["dvc", "metrics", "show"], project)
    assert f"precision@{k}" in shown.stdout

    rec = sh(["recflow", "recommend", "u0000001", "-k", "5"], project)
    assert "features=online" in rec.stdout
    assert len([ln for ln in rec.stdout.splitlines() if ln.strip()[:3].strip(". ").isdigit()]) == 5

    summary = sh(["recflow", "summary"], project)
    for word in ("ingest", "validate", "materialize", "precision@", "popularity", "champion"):
        assert word in summary.stdout


def test_results_fit_a_terminal_and_diff_on_a_fresh_clone(built_project, tmp_path):
    """`dvc metrics show` is one short row per model; after the run is committed, a fresh
    clone's `dvc metrics diff` loads every metric of HEAD (on main a git-ignored metric file,
    reports/materialize.json, made it say "failed to load some metrics for HEAD")."""
    import subprocess

    from tests.conftest import clone_built

    proj = clone_built(built_project, tmp_path / "p")
    shown = sh(["dvc", "metrics", "show"], proj)
    lines = [ln for ln in shown.stdout.splitlines() if ln.strip()]
    models = {"candidate", "lightfm", "als", "ease", "popularity"} | (
        {"champion"} if "champion" in shown.stdout else set())
    assert lines[0].split()[:2] == ["Path", "auc"] and len(lines) == 1 + len(models)
    assert max(map(len, lines)) <= 100, shown.stdout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    sh([*git, "add", "-A", "dvc.lock", "metrics", "plots"], proj)
    sh([*git, "commit", "-qm", "a run"], proj)
    fresh = tmp_path / "fresh"
    subprocess.run(["git", "clone", "-q", str(proj), str(fresh)], check=True)
    diff = sh(["dvc", "metrics", "diff", "--all"], fresh)
    assert "failed to load" not in diff.stdout + diff.stderr, diff.stdout + diff.stderr
    assert "metrics/candidate.json" in diff.stdout


@pytest.mark.parametrize("lib", ["pipeline/models/ranking.py", "pipeline/data/signals.py",
                                 "pipeline/feature_store/writer.py"])
def test_a_library_change_marks_every_stage_that_runs_it(built_project, tmp_path, lib):
    """Edit one library file in a built copy: `dvc status` names every stage whose code (by the
    import graph) includes it, so none of them can keep stale outputs. Deps are subpackage
    folders, so a stage that imports a sibling module of the same folder is marked too."""
    from pipeline.stages.registry import NAMES
    from tests.conftest import clone_built
    from tests.test_dvc_yaml import code_of

    proj = clone_built(built_project, tmp_path / "p")
    f = proj / lib
    f.write_text(f.read_text() + "\n# a change\n")
    status = json.loads(sh(["dvc", "status", "--json"], proj).stdout)
    stale = {s for s, changes in status.items() if any("changed deps" in c for c in changes)}
    runs_it = {s for s in NAMES if lib in code_of(s)}
    assert runs_it and runs_it <= stale
    folder = lib.rsplit("/", 1)[0]
    assert stale == {s for s, st in yaml.safe_load((proj / "dvc.yaml").read_text())["stages"].items()
                     if folder in st["deps"]}
