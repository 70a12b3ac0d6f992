"""How ``recent_items`` is stored: a JSON array of item ids, so any id round-trips.

The feature was a comma-joined string, and an item id containing a comma could never be
excluded at serving. It is now the JSON text of the list, newest first (``["i3","i1,x"]``;
``[]`` when ``features.recent_items`` is 0). :func:`sql` builds it in the feature SQL (stage and
push alike); :func:`decode` is the one reader (serving, tests). A value that is not a JSON
array was written before this format; it is read as comma-separated until the next
``recflow features`` + ``recflow materialize`` rewrites it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def sql(list_expr: str) -> str:
    """DuckDB expression: the VARCHAR[] ``list_expr`` as a JSON array string (NULL → ``[]``)."""
    return f"coalesce(to_json({list_expr})::VARCHAR, '[]')"


def encode(items: list[str]) -> str:
    """The stored text of ``items`` (what :func:`sql` gives for the same list)."""
    return json.dumps(list(items), ensure_ascii=False, separators=(",", ":"))


def decode(value: Any) -> list[str]:
    """The item ids of a stored ``recent_items`` value; None or empty → []."""
    if value is None or value == "":
        return []
    text = str(value)
    if text.startswith("["):
        try:
            out = json.loads(text)
        except ValueError:
            out = None
        if isinstance(out, list):
            return [str(x) for x in out]
    return text.split(",")  # the comma-joined format of older feature files


def decode_many(values: Sequence[Any]) -> list[list[str]]:
    """:func:`decode` of each value, for a batch (the export): the JSON arrays are parsed as
    one array of arrays, one ``json.loads`` instead of one per user; any value that is not
    JSON array text (or None / empty) sends the batch through :func:`decode` one by one."""
    if not all(v is None or (type(v) is str and (v == "" or v.startswith("["))) for v in values):
        return [decode(v) for v in values]
    try:
        out = json.loads("[" + ",".join(v or "[]" for v in values) + "]")
    except ValueError:
        return [decode(v) for v in values]
    if len(out) != len(values) or not all(type(x) is list for x in out):
        return [decode(v) for v in values]
    if not {type(x) for xs in out for x in xs} <= {str}:   # numbers in hand-written JSON
        out = [[str(x) for x in xs] for xs in out]
    return out


def history(users, values) -> dict[str, list[str]]:
    """User → recent items (newest first) from a user id column and its ``recent_items``
    values (a feature frame's columns, or the online lookup's); users without any are left out."""
    out = {}
    for u, v in zip(users, values, strict=True):
        items = decode(v) if isinstance(v, str) or v is None else []
        if items:
            out[str(u)] = items
    return out


def history_of(frame) -> dict[str, list[str]]:
    """:func:`history` of a user feature frame (user id + ``recent_items`` columns); {} when
    the frame has no ``recent_items``."""
    from pipeline.columns import Columns as C
    from pipeline.columns import Features as F

    if F.recent_items not in frame.columns:
        return {}
    return history(frame[C.user], frame[F.recent_items])
