"""The batched writer's encodings are byte-identical to Feast's (ValueProto, value_text, keys)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from pipeline.feature_store import layout, writer

COLUMNS = [
    (pa.array([0.0, -0.0, 1.5, None, float("nan"), float("inf"), -1e-300, 1e16, 0.1]),
     ValueType.DOUBLE),
    (pa.array([0.8, None, -3.25, 1e-7], pa.float32()), ValueType.FLOAT),
    (pa.array([0, -1, 5, None, 2**40, -(2**62), 127, 128]), ValueType.INT64),
    (pa.array([0, 3, 5, 7, 300, -2], pa.int64()), ValueType.INT64),
    (pa.array([1, None, -7], pa.int32()), ValueType.INT32),
    (pa.array(["", None, "a", "é中", "x" * 200, "i1,i2,i3"]), ValueType.STRING),
    (pa.array([True, None, False]), ValueType.BOOL),
    (pa.array([None, None], pa.float64()), ValueType.DOUBLE),
    (pa.array([None, None], pa.string()), ValueType.STRING),
]


@pytest.mark.parametrize(("arr", "vtype"), COLUMNS, ids=[f"{v.name}{i}" for i, (_, v) in
                                                         enumerate(COLUMNS)])
def test_values_encode_like_feast(arr, vtype):
    values = arr.to_numpy(zero_copy_only=False)  # what Feast's materialization converts
    want = python_values_to_proto_values(values, vtype)
    vb, vt = layout.encode_column(values, vtype)
    assert vb == [p.SerializeToString() for p in want]
    assert vt == [extract_text_and_num(p, False)[0] for p in want]


@pytest.mark.parametrize(("arr", "vtype"), [
    (pa.array(["u0000001", "", "é", "k" * 300]), ValueType.STRING),
    (pa.array([1, -5, 2**50]), ValueType.INT64),
])
def test_entity_keys_serialize_like_feast(arr, vtype):
    values = arr.to_numpy(zero_copy_only=False)
    want = [serialize_entity_key(EntityKey(join_keys=["user_id"], entity_values=[p]), 3)
            for p in python_values_to_proto_values(values, vtype)]
    assert layout.encode_keys(values, "user_id", vtype) == want


def test_sqlite_statement_writes_features_in_primary_key_order():
    """One statement per entity; the rows it inserts are (key, name)-sorted, like Feast's."""
    import sqlite3

    b = writer.Batch(keys=[b"a", b"b"], names=["z", "it's"],
                           values=[[b"1", b""], [b"3", b"4"]], texts=[["1", None], ["3", "4"]],
                           ts=[writer._EPOCH] * 2, created=[None, None])
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (entity_key BLOB, feature_name TEXT, value BLOB, value_text TEXT,"
                " vector_value BLOB, event_ts timestamp, created_ts timestamp,"
                " PRIMARY KEY(entity_key, feature_name))")
    sql = writer._sqlite_sql("t", b.names)
    con.executemany(sql, writer._sqlite_params(b, lambda t: 7))
    assert con.execute("SELECT entity_key, feature_name, value, value_text, event_ts, created_ts"
                       " FROM t ORDER BY rowid").fetchall() == [
        (b"a", "it's", b"3", "3", 7, None), (b"a", "z", b"1", "1", 7, None),
        (b"b", "it's", b"4", "4", 7, None), (b"b", "z", b"", None, 7, None)]
    con.executemany(sql, writer._sqlite_params(b, lambda t: 8))  # upsert, no duplicates
    assert con.execute("SELECT count(*), min(event_ts) FROM t").fetchone() == (4, 8)


def test_sqlite_upsert_never_puts_an_older_row_over_a_newer_one():
    """A stored row with a later event_ts (pushed since) stays; the same time is rewritten
    (a content change at the same snapshot)."""
    import sqlite3

    b = writer.Batch(keys=[b"a"], names=["z"], values=[[b"new"]], texts=[["new"]],
                     ts=[writer._EPOCH], created=[None])
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (entity_key BLOB, feature_name TEXT, value BLOB, value_text TEXT,"
                " vector_value BLOB, event_ts timestamp, created_ts timestamp,"
                " PRIMARY KEY(entity_key, feature_name))")
    con.execute("INSERT INTO t VALUES (?, 'z', ?, 'pushed', NULL, 9, NULL)", (b"a", b"pushed"))
    sql = writer._sqlite_sql("t", b.names)
    con.executemany(sql, writer._sqlite_params(b, lambda t: 8))
    assert con.execute("SELECT value_text, event_ts FROM t").fetchall() == [("pushed", 9)]
    con.executemany(sql, writer._sqlite_params(b, lambda t: 9))
    assert con.execute("SELECT value_text, event_ts FROM t").fetchall() == [("new", 9)]
