"""The serving reader decodes Feast's ValueProto bytes itself: it must agree with protobuf."""

import pytest
from feast.protos.feast.types.Value_pb2 import DoubleList, Null, Value

from pipeline.feature_store.layout import value


def _proto(v: Value):
    kind = v.WhichOneof("val")
    if kind in (None, "null_val"):
        return None
    out = getattr(v, kind)
    return list(out.val) if kind.endswith("_list_val") else out


@pytest.mark.parametrize("v", [
    Value(int64_val=0), Value(int64_val=7), Value(int64_val=300), Value(int64_val=-5),
    Value(int64_val=2**62), Value(int64_val=-(2**63)),
    Value(double_val=0.0), Value(double_val=-0.0), Value(double_val=0.1), Value(double_val=1e308),
    Value(string_val=""), Value(string_val="c012"), Value(string_val="é,ü" * 200),
    Value(bool_val=True), Value(int32_val=-3), Value(float_val=0.5),
    Value(double_list_val=DoubleList(val=[1.0, 2.5])), Value(null_val=Null.NULL), Value(),
])
def test_value_decodes_like_protobuf(v):
    blob = v.SerializeToString()
    assert value(blob) == _proto(v)
    assert type(value(blob)) is type(_proto(v))


def test_missing_value_is_none():
    assert value(None) is None and value(b"") is None
