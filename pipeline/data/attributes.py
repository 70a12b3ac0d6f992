"""Item and user attribute tables (side information), loaded by configuration and validated.

A table maps onto ``<id>, <feature>...``: categorical columns are text, numeric columns
floats, multi-valued columns (``genres`` = ``Action|Comedy``) the JSON text of their list, so
Feast stores one string and training and serving split it the same way
(:mod:`pipeline.models.tokens`). The source comes from ``attributes.items`` / ``.users`` in
params.yaml; without a path, the ingest source brings its own: the synthetic generator writes
both tables, MovieLens gives ``movies.csv`` (every genre, the year from the title).

Validation is a Great Expectations suite like the events': the id is non-null and unique,
numbers parse and lie in ``ranges``, no value is longer than ``max_value_length``. A failing
row is quarantined with its reason (every row of a duplicated id: which one is right is not
ours to guess); accepted + quarantined = input rows. A mapping that names a column the file
does not have, or a feature name the behaviour features already use, is a configuration
error (exit 2) naming the key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import AttributeTableParams, Params, Paths
from pipeline.data import synthetic
from pipeline.data.suite import _gx_validate, _rows
from pipeline.errors import ConfigError, DataError

KINDS = {"items": C.item, "users": C.user}
#: in every attribute feature file (one per kind), so a view without a table has a feature
PRESENT = {"items": "has_item_attributes", "users": "has_user_attributes"}
_RESERVED = re.compile(r"^(n_.*|pop_.*|top_category.*|unique_users|purchase_rate|mean_watch|"
                       r"recency_days|conversion_rate|recent_items|event_timestamp|category|"
                       r"has_.*|user_id|item_id|recent_.*)$")
_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass(frozen=True)
class Table:
    """One attribute table, canonical: the id column, then each feature by its kind."""

    kind: str                       # items | users
    frame: pd.DataFrame
    kinds: dict[str, str]           # feature -> categorical | numeric | multi
    ranges: dict[str, tuple[float | None, float | None]]
    source: str                     # the file, or the source that made it


def _key(kind: str, *rest: str) -> str:
    return ".".join(("attributes", kind, *rest))


def _read(path: Path, fmt: str, kind: str) -> pd.DataFrame:
    if not path.exists():
        raise ConfigError(f"params.yaml: key '{_key(kind, 'path')}': {path} not found.")
    name = path.name.lower().removesuffix(".gz")
    fmt = fmt if fmt != "auto" else ("parquet" if name.endswith(".parquet") else
                                     "tsv" if name.endswith((".tsv", ".data")) else "csv")
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str,
                           keep_default_na=False, na_values=[""])
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
        raise DataError(f"{path}: cannot be read ({type(e).__name__}).") from None


def _movielens_items(folder: Path) -> tuple[pd.DataFrame, AttributeTableParams] | None:
    """``movies.csv``: every genre (multi-valued) and the year in the title (numeric)."""
    movies = folder / "movies.csv"
    if not movies.exists():
        return None
    m = pd.read_csv(movies, dtype=str, keep_default_na=False)
    m["year"] = m["title"].str.extract(_YEAR, expand=False)
    return m, AttributeTableParams(id="movieId", multi={"genres": "genres"},
                                   numeric={"year": "year"}, ranges={"year": (1870.0, 2100.0)})


def _own(params: Params, paths: Paths, kind: str
         ) -> tuple[pd.DataFrame, AttributeTableParams, str] | None:
    """The ingest source's own table when ``attributes.<kind>.path`` is null."""
    src = params.ingest
    if src.source == "synthetic":
        items, users = synthetic.attributes(params.synthetic)
        if kind == "items":
            return items, AttributeTableParams(categorical={"brand": "brand"},
                                               numeric={"price": "price"}), "synthetic"
        return users, AttributeTableParams(categorical={"country": "country",
                                                        "age_band": "age_band"}), "synthetic"
    if src.source == "movielens" and kind == "items":
        p = paths.root / src.path
        got = _movielens_items(p if p.is_dir() else p.parent)
        return (got[0], got[1], "movielens movies.csv") if got else None
    return None


def _canonical(raw: pd.DataFrame, spec: AttributeTableParams, kind: str, source: str,
               max_len: int) -> Table:
    key = KINDS[kind]
    id_col = spec.id or key
    groups = {"categorical": spec.categorical, "numeric": spec.numeric, "multi": spec.multi}
    want = [(_key(kind, "id"), id_col)] + [(_key(kind, g, f), c) for g, m in groups.items()
                                           for f, c in m.items()]
    for k, col in want:
        if col not in raw.columns:
            raise ConfigError(f"params.yaml: key '{k}': column {col!r} is not in {source} "
                              f"(columns: {', '.join(map(str, raw.columns[:12]))}).")
    names = [f for m in groups.values() for f in m]
    for g, m in groups.items():
        for f in m:
            if _RESERVED.match(f) or names.count(f) > 1:
                raise ConfigError(f"params.yaml: key '{_key(kind, g, f)}': the feature name "
                                  f"{f!r} is taken (a behaviour feature or another attribute).")
    for f in spec.ranges:
        if f not in spec.numeric:
            raise ConfigError(f"params.yaml: key '{_key(kind, 'ranges', f)}': not a numeric "
                              "attribute of this table.")
    ids = raw[id_col].astype(object).where(raw[id_col].notna(), None)
    out = pd.DataFrame({key: [None if v is None or str(v).strip() == "" else str(v).strip()
                              for v in ids]})
    kinds, problems = {}, np.full(len(raw), None, dtype=object)
    too_long = np.zeros(len(raw), dtype=bool)

    def text(col: str) -> pd.Series:
        s = raw[col].astype(object).where(raw[col].notna(), None)
        s = s.map(lambda v: None if v is None or str(v).strip() == "" else str(v).strip())
        lengths = s.map(lambda v: 0 if v is None else len(v)).to_numpy()
        too_long[:] |= lengths > max_len
        return s

    for f, col in spec.categorical.items():
        out[f], kinds[f] = text(col), "categorical"
    for f, col in spec.numeric.items():
        given = raw[col].notna() & (raw[col].astype(str).str.strip() != "")
        num = pd.to_numeric(raw[col], errors="coerce").astype("float64")
        bad = (given & num.isna()).to_numpy()
        problems[bad & pd.isna(problems)] = f"{f}: not a number"
        out[f], kinds[f] = num, "numeric"
    for f, col in spec.multi.items():
        s = text(col)
        out[f] = s.map(lambda v: None if v is None else json.dumps(
            sorted({x.strip() for x in v.split(spec.separator) if x.strip()}),
            ensure_ascii=False, separators=(",", ":")))
        kinds[f] = "multi"
    out["_unparsed"] = problems
    out["_too_long"] = np.where(too_long, f"a value longer than {max_len}", None)
    return Table(kind, out, kinds, dict(spec.ranges), source)


def load(params: Params, paths: Paths) -> dict[str, Table]:
    """Every configured or source-provided attribute table, canonical but not yet validated."""
    out = {}
    for kind in KINDS:
        spec: AttributeTableParams = getattr(params.attributes, kind)
        if spec.path:
            path = paths.root / spec.path
            raw, source = _read(path, spec.format, kind), str(spec.path)
        else:
            got = _own(params, paths, kind)
            if got is None:
                continue
            raw, spec, source = got
        out[kind] = _canonical(raw, spec, kind, source, params.attributes.max_value_length)
    return out


def _suite(t: Table) -> list:
    import great_expectations.expectations as gxe

    key = KINDS[t.kind]

    def m(check: str, column: str | None = None) -> dict:
        return {"meta": {"recflow": {"check": check, "column": column}}}

    ex: list = [gxe.ExpectColumnValuesToNotBeNull(column=key, **m("not_null", key)),
                gxe.ExpectColumnValuesToBeUnique(column=key, **m("unique", key)),
                gxe.ExpectColumnValuesToBeNull(column="_unparsed", **m("type")),
                gxe.ExpectColumnValuesToBeNull(column="_too_long", **m("length"))]
    for f, (lo, hi) in t.ranges.items():
        ex.append(gxe.ExpectColumnValuesToBeBetween(column=f, min_value=lo, max_value=hi,
                                                    **m("range", f)))
    return ex


def validate(t: Table) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(accepted, quarantined with ``reason``, report) of one table."""
    df = t.frame.reset_index(drop=True)
    reasons = np.full(len(df), None, dtype=object)
    checks = []
    if len(df):
        _, result = _gx_validate(df, _suite(t))
        for r in result.results:
            meta = (r.expectation_config.meta or {}).get("recflow", {})
            res = r.result or {}
            idx = res.get("unexpected_index_list") or []
            rows = _rows(idx) if idx else np.zeros(0, dtype=np.int64)
            n = int(res.get("unexpected_count") or 0)
            checks.append({"check": meta.get("check"), "column": meta.get("column"),
                           "success": bool(r.success), "unexpected_count": n})
            fresh = rows[pd.isna(reasons[rows])]
            if len(fresh):
                check, col = meta.get("check"), meta.get("column")
                why = {"not_null": f"{col}: no id", "unique": f"{col}: duplicate id",
                       "range": f"{col}: outside attributes.{t.kind}.ranges.{col}"}.get(check)
                reasons[fresh] = why or (df["_unparsed"].where(df["_unparsed"].notna(),
                                                               df["_too_long"]).to_numpy()[fresh])
    bad = ~pd.isna(reasons)
    clean = df.drop(columns=["_unparsed", "_too_long"])
    quarantined = clean[bad].assign(**{C.reason: reasons[bad]})
    report = {"source": t.source, "rows": len(df), "accepted": int((~bad).sum()),
              "quarantined": int(bad.sum()), "features": t.kinds, "checks": checks}
    return clean[~bad].reset_index(drop=True), quarantined.reset_index(drop=True), report


def file_name(kind: str) -> str:
    return f"{kind}.parquet"


def write_raw(tables: dict[str, Table], folder: Path) -> None:
    """What ingest keeps (``data/attributes/``): each canonical table + its kinds and ranges."""
    meta = {}
    for kind, t in tables.items():
        t.frame.to_parquet(folder / file_name(kind), index=False)
        meta[kind] = {"kinds": t.kinds, "ranges": t.ranges, "source": t.source}
    (folder / "tables.json").write_text(json.dumps(meta, indent=1))


def read_raw(folder: Path) -> dict[str, Table]:
    """:func:`write_raw` read back (no folder or no table: none)."""
    f = folder / "tables.json"
    if not f.exists():
        return {}
    meta = json.loads(f.read_text())
    return {kind: Table(kind, pd.read_parquet(folder / file_name(kind)), m["kinds"],
                        {k: tuple(v) for k, v in m["ranges"].items()}, m["source"])
            for kind, m in meta.items()}


def feature_frame(validated: pd.DataFrame | None, kind: str) -> pd.DataFrame:
    """The Feast file of a view: every accepted row, valid from the epoch (attributes are
    static side information: any point-in-time lookup finds them), plus its :data:`PRESENT` flag."""
    key = KINDS[kind]
    df = (validated.copy() if validated is not None
          else pd.DataFrame({key: pd.Series(dtype="string")}))
    df[PRESENT[kind]] = np.ones(len(df), dtype=np.int64)
    df.insert(1, C.ts, pd.Series(pd.Timestamp(0, tz="UTC"), index=df.index).dt.as_unit("us"))
    return df

