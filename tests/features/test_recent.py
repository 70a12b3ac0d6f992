"""recent_items round-trips any item id: the SQL encoding, the Python encoding and the decoder
agree, and values written in the old comma-joined format are still read."""

import duckdb
import pytest

from pipeline.features import recent

IDS = [["i1", "i2"], ["a,b", "c"], ['q"x', "back\\slash", "é中", "[", ""], [], ["x" * 300]]


@pytest.mark.parametrize("ids", IDS)
def test_sql_and_python_encode_alike_and_decode_back(ids):
    con = duckdb.connect()
    got = con.execute(f"SELECT {recent.sql('$l::VARCHAR[]')}", {"l": ids}).fetchone()[0]
    assert got == recent.encode(ids)
    assert recent.decode(got) == ids


def test_null_list_and_empty_values():
    con = duckdb.connect()
    assert con.execute(f"SELECT {recent.sql('NULL::VARCHAR[]')}").fetchone()[0] == "[]"
    assert recent.decode(None) == [] and recent.decode("") == [] and recent.decode("[]") == []


def test_values_in_the_old_comma_joined_format_are_still_read():
    assert recent.decode("i3,i2,i1") == ["i3", "i2", "i1"]
    assert recent.decode("[not json") == ["[not json"]
