"""Loaders onto the canonical event table, and landing-mode ingestion exactly once."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.stages import ingest
from pipeline.columns import Columns as C
from pipeline.config import LoaderParams, Params, Paths
from pipeline.errors import ConfigError, DataError
from pipeline.data.loaders import load_file, resolve
from tests.conftest import ROOT, deep_update


def params(**over) -> Params:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    return Params.model_validate(deep_update(raw, over))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_movielens_ratings_csv(tmp_path):
    f = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n"
                                        "1,1029,3.0,1260759179\n")
    df = load_file(f, resolve(LoaderParams(), "movielens"), "b")
    assert list(df[C.user]) == ["1", "1"] and list(df[C.item]) == ["31", "1029"]
    assert set(df[C.event]) == {"rating"} and list(df[C.value]) == [2.5, 3.0]
    assert df[C.ts].iloc[0] == pd.Timestamp(1260759144, unit="s", tz="UTC")
    assert df[C.parse_error].isna().all()


def test_movielens_u_data_is_tab_separated_and_headerless(tmp_path):
    f = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    df = load_file(f, resolve(LoaderParams(), "movielens"), "b")
    assert len(df) == 2 and list(df[C.user]) == ["196", "186"] and list(df[C.value]) == [3.0, 3.0]
    assert df[C.ts].iloc[0] == pd.Timestamp(881250949, unit="s", tz="UTC")


@pytest.mark.parametrize("header", [True, False])
def test_ecommerce_events_are_mapped(tmp_path, header):
    rows = "1,100,7,pv,1511544070\n1,100,7,cart,1511544071\n1,100,7,fav,1511544072\n1,100,7,buy,1511544073\n"
    head = "user_id,item_id,category_id,behavior_type,timestamp\n" if header else ""
    f = write(tmp_path / "UserBehavior.csv", head + rows)
    df = load_file(f, resolve(LoaderParams(preset="ecommerce")), "b")
    assert list(df[C.event]) == ["view", "add_to_cart", "favorite", "purchase"]
    assert set(df[C.category]) == {"7"}
    assert set(df[C.event]) <= set(params().event_types)  # every mapped type has a weight


def test_generic_mapping_event_names_and_millis(tmp_path):
    f = write(tmp_path / "log.csv", "uid,sku,what,ms,amount\nu1,s1,seen,1700000000000,\n"
                                    "u2,s2,bought,1700000001500,\n")
    lp = LoaderParams(columns={"user_id": "uid", "item_id": "sku", "event_type": "what",
                               "event_timestamp": "ms", "value": "amount"},
                      events={"seen": "view", "bought": "purchase"}, time_unit="ms")
    df = load_file(f, resolve(lp), "b")
    assert list(df[C.event]) == ["view", "purchase"] and list(df[C.user]) == ["u1", "u2"]
    assert df[C.ts].iloc[1] == pd.Timestamp("2023-11-14T22:13:21.500", tz="UTC")


def test_iso_timestamps_with_offsets_become_utc(tmp_path):
    f = write(tmp_path / "e.csv", "user_id,item_id,event_type,event_timestamp,value\n"
                                  "u,i,view,2026-01-01T02:00:00+02:00,\n")
    df = load_file(f, resolve(LoaderParams()), "b")
    assert df[C.ts].iloc[0] == pd.Timestamp("2026-01-01T00:00:00", tz="UTC")


def test_parquet_and_gzip_give_the_same_rows(tmp_path):
    src = pd.DataFrame({C.user: ["u1", "u2"], C.item: ["i1", "i2"], C.event: ["play", "view"],
                        C.ts: pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
                        C.value: [0.5, None]})
    src.to_parquet(tmp_path / "e.parquet")
    text = src.assign(**{C.ts: src[C.ts].dt.strftime("%Y-%m-%dT%H:%M:%SZ")}).to_csv(index=False)
    (tmp_path / "e.csv.gz").write_bytes(gzip.compress(text.encode()))
    a = load_file(tmp_path / "e.parquet", resolve(LoaderParams()), "b")
    b = load_file(tmp_path / "e.csv.gz", resolve(LoaderParams()), "b")
    cols = list(C.EVENT_TABLE)
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_parquet_missing_column_names_file(tmp_path):
    pd.DataFrame({C.user: ["u"], C.item: ["i"]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"x\.parquet.*event_type"):
        load_file(tmp_path / "x.parquet", resolve(LoaderParams()), "b")


def test_unknown_loader_key_is_a_config_error_naming_it(tmp_path):
    from pipeline.config import load_params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["ingest"]["loader"]["columns"] = {"userid": "x"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="ingest.loader.columns"):
        load_params(tmp_path / "params.yaml")


# --- landing mode: exactly once ---------------------------------------------------------

HEAD = "user_id,item_id,event_type,event_timestamp,value\n"


def landed(p: Paths) -> pd.DataFrame:
    return pd.read_parquet(p.events / "events.parquet")


def test_landing_ingests_each_file_exactly_once(tmp_path):
    p, prm = Paths(tmp_path), params(ingest={"source": "landing"})
    write(p.incoming / "a.csv", HEAD + "u1,i1,view,2026-01-01T00:00:00Z,\nu2,i2,view,2026-01-01T00:00:00Z,\n")
    r1 = ingest.run(prm, p)
    assert r1["new_files"] == 1 and r1["events"] == 2
    stamp = (p.events / "events.parquet").stat().st_mtime_ns

    r2 = ingest.run(prm, p)  # nothing new: nothing added, nothing rewritten
    assert r2["new_files"] == 0 and r2["new_events"] == 0 and len(landed(p)) == 2
    assert (p.events / "events.parquet").stat().st_mtime_ns == stamp

    shutil.copy(p.incoming / "a.csv", p.incoming / "a_copy.csv")  # same bytes, new name
    write(p.incoming / "b.csv", HEAD + "u3,i3,purchase,2026-01-02T00:00:00Z,\n")
    r3 = ingest.run(prm, p)
    assert r3["new_files"] == 1 and r3["already_ingested"] == 2 and r3["new_events"] == 1
    ev = landed(p)
    assert len(ev) == 3 and ev[C.batch].nunique() == 2
    manifest = json.loads((p.events / "manifest.json").read_text())["files"]
    assert sorted(e["file"] for e in manifest.values()) == ["data/incoming/a.csv", "data/incoming/b.csv"]
    assert sum(e["rows"] for e in manifest.values()) == 3


def test_landing_unparseable_file_writes_nothing(tmp_path):
    p, prm = Paths(tmp_path), params(ingest={"source": "landing"})
    write(p.incoming / "a.csv", HEAD + "u1,i1,view,2026-01-01T00:00:00Z,\n")
    ingest.run(prm, p)
    before = (p.events / "manifest.json").read_bytes()
    write(p.incoming / "b.csv", "who,what\nx,y\n")
    with pytest.raises(DataError, match=r"b\.csv.*expect_column_to_exist"):
        ingest.run(prm, p)
    assert (p.events / "manifest.json").read_bytes() == before and len(landed(p)) == 1


def test_landing_with_no_files_is_a_data_error(tmp_path):
    p = Paths(tmp_path)
    p.incoming.mkdir(parents=True)
    (p.incoming / ".gitkeep").touch()
    with pytest.raises(DataError, match="no .csv"):
        ingest.run(params(ingest={"source": "landing"}), p)


def test_file_source_needs_a_path(tmp_path):
    with pytest.raises(ConfigError, match="ingest.path"):
        ingest.run(params(ingest={"source": "file"}), Paths(tmp_path))


def test_movielens_source_on_a_tiny_folder(tmp_path):
    d = tmp_path / "ml"
    write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n2,1,1.0,964982704\n")
    write(d / "movies.csv", "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n")
    p = Paths(tmp_path / "proj")
    out = ingest.run(params(ingest={"source": "movielens", "path": str(d)}), p)
    assert out["events"] == 2
    items = pd.read_parquet(p.events / "items.parquet")
    assert items.set_index(C.item)[C.category]["1"] == "Adventure"


def test_naive_iso_times_are_utc_and_missing_category_is_unknown(tmp_path):
    f = write(tmp_path / "e.csv", "user_id,item_id,event_type,event_timestamp,category\n"
                                  "u,i1,view,2026-01-01 05:00:00,books\nu,i2,view,2026-01-01,\n")
    lp = LoaderParams(columns={"category": "category"})
    df = load_file(f, resolve(lp), "b")
    assert list(df[C.ts]) == [pd.Timestamp("2026-01-01T05:00", tz="UTC"),
                              pd.Timestamp("2026-01-01", tz="UTC")]
    from pipeline.data.loaders import items_of

    assert items_of(df).set_index(C.item)[C.category].to_dict() == {"i1": "books", "i2": "unknown"}


# --- CSV corner cases (issue 12: problems 4, 6, 17) ------------------------------------

def test_malformed_line_never_crashes_ingest_whatever_batches_exist(tmp_path):
    """A malformed line used to make the batch's categories pyarrow strings, and the next
    concat with another batch raised ``TypeError: dtype of categories must be the same``."""
    p, prm = Paths(tmp_path), params(ingest={"source": "landing"})
    write(p.incoming / "a.csv", HEAD + "u1,i1,view,2026-01-01T00:00:00Z,\n")
    ingest.run(prm, p)  # an earlier batch
    write(p.incoming / "b.csv", HEAD + "u2,i2,view,2026-01-01T00:00:00Z,\nu3,i3,vi\n")
    write(p.incoming / "c.csv", HEAD + "u4,i4,view,2026-01-01T00:00:00Z,\n,,\n")  # a second new file
    out = ingest.run(prm, p)
    assert out["new_files"] == 2 and out["events"] == 5
    ev = landed(p)
    assert ev[C.parse_error].notna().sum() == 2 and ev[C.batch].nunique() == 3
    assert isinstance(ev[C.user].dtype, pd.CategoricalDtype)


def test_cr_only_line_endings_keep_every_column(tmp_path):
    """CR-only files used to read as one long header line: ``value`` vanished, so an
    out-of-range watch fraction passed as NaN."""
    text = HEAD + "u1,i1,play,2026-01-01T00:00:00Z,7\nu2,i2,view,2026-01-01T00:00:00Z,\n"
    f = tmp_path / "cr.csv"
    f.write_bytes(text.replace("\n", "\r").encode())
    df = load_file(f, resolve(LoaderParams()), "b")
    assert list(df[C.user]) == ["u1", "u2"] and df[C.value].iloc[0] == 7.0
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    pd.testing.assert_frame_equal(df, load_file(crlf, resolve(LoaderParams()), "b"))


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_line_break_inside_a_quoted_field_stays_in_its_row(tmp_path, monkeypatch, ending):
    """A quoted CR used to split the row where a parse block ended: the first half vanished
    and the second half was accepted under user id ``bob"``. Small blocks put a block edge
    at every offset around the quoted field."""
    from pipeline.data import loaders

    rows = ["u0,i0,view,2026-01-01T00:00:00Z,"] * 30 + ['"alice\rbob",i1,view,2026-01-01T00:00:00Z,'] \
        + ["u0,i9,view,2026-01-01T00:00:00Z,"] * 30
    f = tmp_path / "q.csv"
    f.write_bytes((HEAD + "\n".join(rows) + "\n").replace("\n", ending).encode())
    for block in range(960, 1200, 16):
        monkeypatch.setattr(loaders, "BLOCK_SIZE", block)
        df = load_file(f, resolve(LoaderParams()), "b")
        assert len(df) == 61 and df[C.parse_error].isna().all(), block
        assert list(df.loc[df[C.item] == "i1", C.user]) == ["alice\rbob"], block


def test_only_empty_fields_are_null(tmp_path):
    """The input contract: "NA", "null", "NaN" are strings (an id "NA" is an id); only an
    empty or blank field is null. A value that is not a number is a parse error, not NaN."""
    f = write(tmp_path / "n.csv", HEAD + "NA,null,view,2026-01-01T00:00:00Z,\n"
              "NaN,i1,view,2026-01-01T00:00:00Z,\n ,i2,view,2026-01-01T00:00:00Z,\n"
              'u1,"",view,2026-01-01T00:00:00Z,\nu2,i3,play,2026-01-01T00:00:00Z,NA\n')
    df = load_file(f, resolve(LoaderParams()), "b")
    assert df[C.user].tolist()[:2] == ["NA", "NaN"] and df[C.item].iloc[0] == "null"
    assert df[C.user].isna().tolist() == [False, False, True, False, False]
    assert df[C.item].isna().tolist() == [False, False, False, True, False]
    assert df[C.parse_error].iloc[4] == "value is not a number: NA"


def test_unknown_suffix_is_reported_not_skipped_silently(tmp_path, caplog):
    p, prm = Paths(tmp_path), params(ingest={"source": "landing"})
    write(p.incoming / "a.csv", HEAD + "u1,i1,view,2026-01-01T00:00:00Z,\n")
    write(p.incoming / "ratings.dat", "1::2::5::978300760\n")
    with caplog.at_level("WARNING", logger="recflow"):
        out = ingest.run(prm, p)
    assert out["skipped_unknown_suffix"] == 1 and out["events"] == 1
    (rec,) = [r for r in caplog.records if "unknown suffix" in r.getMessage()]
    assert "data/incoming/ratings.dat" in rec.getMessage() and ".csv" in rec.getMessage()
    (p.incoming / "a.csv").unlink()
    shutil.rmtree(p.events)
    with pytest.raises(DataError, match=r"found only ratings\.dat"):
        ingest.run(prm, p)


def test_the_readme_snippets_are_valid_loaders():
    """Each preset's snippet in the README's input contract is a valid params.yaml fragment
    whose resolved loader maps every required column (the e-commerce one missed two)."""
    import re

    from pipeline.data.loaders import REQUIRED

    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Input contract"):text.index("### Batches")]
    snippets = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    presets = set()
    for snip in snippets:
        prm = params(**snip)
        lp = prm.ingest.loader
        preset = "movielens" if prm.ingest.source == "movielens" else lp.preset
        spec = resolve(lp, preset)
        assert all(c in spec.columns or (c == C.event and spec.constant_event) for c in REQUIRED)
        presets.add(preset)
    assert presets == {"generic", "movielens", "ecommerce"}


LASTFM = {"ingest": {"source": "file",
                     "loader": {"format": "tsv", "event_type": "play", "time_unit": "none",
                                "columns": {"user_id": "userID", "item_id": "artistID",
                                            "value": "weight"}}},
          "signals": {"value_kind": {"play": "count"}},
          "validate": {"value_ranges": {"play": [0, None]}},
          "split": {"strategy": "leave_n_out"}}


def test_count_only_tsv_without_time_loads_by_configuration(tmp_path):
    """last.fm's user_artists.dat: (user, artist, total plays), no event type, no time."""
    from pipeline.data.loaders import TIMELESS

    f = write(tmp_path / "user_artists.dat", "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n"
                                             "3\t51\t7\n")
    p = params(**LASTFM)
    df = load_file(f, resolve(p.ingest.loader), "b")
    assert len(df) == 3 and set(df[C.event]) == {"play"}            # one row per pair: no expansion
    assert list(df[C.value]) == [13883.0, 11690.0, 7.0]
    assert (df[C.ts] == TIMELESS).all() and df[C.parse_error].isna().all()


def test_bad_counts_are_quarantined_with_a_reason_nothing_lost(tmp_path):
    from pipeline.data.suite import check

    f = write(tmp_path / "user_artists.dat", "userID\tartistID\tweight\n1\t10\t5\n1\t11\t-3\n"
                                             "1\t12\tlots\n2\t10\t0\n" + "".join(
                                                 f"{u}\t{i}\t{u + i}\n" for u in range(3, 9)
                                                 for i in range(20, 24)))
    p = params(**LASTFM)
    df = load_file(f, resolve(p.ingest.loader), "b")
    out = check(df, p)
    assert len(out.accepted) + len(out.quarantined) == len(df)
    q = out.quarantined.set_index(C.item)[C.reason]
    assert set(q.index) == {"11", "12"}
    assert "value is not a number" in q["12"]
    assert "expect_column_values_to_be_between" in q["11"] and "min_value=0.0" in q["11"]
    assert out.ok   # 2 of 28 rows: under max_quarantine_fraction
