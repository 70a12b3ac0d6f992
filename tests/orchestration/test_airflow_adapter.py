"""The Airflow glue that needs no Airflow: failure reasons, the features Asset's change test,
serving notification, and the `make airflow` environment."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

from pipeline.orchestration import airflow_adapter as o


def _write_features(root: Path, payload: bytes) -> None:
    for f in o._feature_files(root):   # the features stage writes all four (attributes too)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(payload)


def test_features_announced_only_when_changed(tmp_path):
    assert o.features_changed(tmp_path) == (False, None)  # nothing built yet
    _write_features(tmp_path, b"v1")
    changed, fp = o.features_changed(tmp_path)
    assert changed and fp
    o.mark_announced(tmp_path, fp)
    assert o.features_changed(tmp_path) == (False, fp)
    _write_features(tmp_path, b"v2")
    changed2, fp2 = o.features_changed(tmp_path)
    assert changed2 and fp2 != fp


def test_promotion_outcome_reads_the_gate_record(tmp_path):
    (tmp_path / "reports").mkdir()
    rec = {"promoted": False, "reason": "precision@10 0.1 < champion 0.2 + min_delta 0.0",
           "version": None, "champion_version": "v0003"}
    (tmp_path / "reports/promotion.json").write_text(json.dumps(rec))
    out = o.promotion_outcome(tmp_path, ran=True)
    assert out["promoted"] is False and out["champion_version"] == "v0003"
    assert "min_delta" in out["reason"]
    (tmp_path / "reports/promotion.json").write_text(json.dumps({**rec, "promoted": True, "version": "v0004"}))
    assert o.promotion_outcome(tmp_path, ran=True)["promoted"] is True
    assert o.promotion_outcome(tmp_path, ran=False)["promoted"] is False  # stale record: no news


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_notify_serving_posts_reload_or_is_a_no_op():
    assert "no-op" in o.notify_serving(None)
    hits: list[str] = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        msg = o.notify_serving(f"http://127.0.0.1:{srv.server_port}/")
    finally:
        srv.shutdown()
        srv.server_close()
    assert hits == ["/admin/reload"] and "reloaded" in msg
    assert "not reachable" in o.notify_serving(f"http://127.0.0.1:{_free_port()}", timeout=2)


def test_reason_lines_one_check_per_line():
    multi = "validation refused 1 batch(es):\n  event_type: 120 rows\n\n  and 2 more checks"
    assert o.reason_lines(multi) == ["validation refused 1 batch(es):", "  event_type: 120 rows",
                                     "  and 2 more checks"]
    one_liner = ("validation refused 2 batch(es): a.csv (batch b1): 121 of 200 rows failed, above "
                 "validate.max_quarantine_fraction=0.1; expect_column_values_to_be_in_set(column="
                 "event_type): 120×, e.g. ['teleport']; expect_column_values_to_not_be_null(column="
                 "user_id): 4× | b.csv (batch b2): the batch is empty. Details in reports/x.json.")
    assert o.reason_lines(one_liner) == [
        "validation refused 2 batch(es): a.csv (batch b1): 121 of 200 rows failed, above "
        "validate.max_quarantine_fraction=0.1",
        "  expect_column_values_to_be_in_set(column=event_type): 120×, e.g. ['teleport']",
        "  expect_column_values_to_not_be_null(column=user_id): 4×",
        "  b.csv (batch b2): the batch is empty. Details in reports/x.json."]
    short = "x.csv: cannot be read; re-run 'recflow ingest'"  # short lines are left as written
    assert o.reason_lines(short) == [short]
