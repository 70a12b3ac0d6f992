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


def test_decode_many_equals_decode_one_by_one():
    """The batch decoder (one JSON parse) gives decode()'s lists, also for the values that
    send it back to decoding one by one (the old comma format, numbers, broken JSON)."""
    from pipeline.features.recent import decode, decode_many, encode

    ok = [encode(["a", "b,c", 'q"x', "ü"]), None, "", "[]", encode(["z"])]
    assert decode_many(ok) == [decode(v) for v in ok]
    for odd in (["a,b", *ok], ['[1, "2"]', *ok], ["[broken", *ok], ['["a"]]', *ok], [7.0, *ok]):
        assert decode_many(odd) == [decode(v) for v in odd]
    assert decode_many([]) == []
