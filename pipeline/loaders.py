"""Map outside data onto the canonical event table (see DESIGN.md)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.columns import Columns as C
from pipeline.errors import DataError


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Cast a frame that already has the canonical columns to the canonical dtypes."""
    out = pd.DataFrame(
        {
            C.user: df[C.user].astype("string").astype(object),
            C.item: df[C.item].astype("string").astype(object),
            C.event: df[C.event].astype("string").astype(object),
            C.ts: pd.to_datetime(df[C.ts], utc=True).dt.as_unit("us"),
            C.value: pd.to_numeric(df[C.value], errors="coerce").astype("float64"),
        }
    )
    return out


def load_movielens(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens ``ratings.csv`` (+ ``movies.csv`` beside it): every rating is an implicit
    ``rating`` event whose value is the star rating; the first genre is the category."""
    ratings = path / "ratings.csv" if path.is_dir() else path
    if not ratings.exists():
        raise DataError(f"{ratings}: not found. Point ingest.path at a MovieLens folder.")
    r = pd.read_csv(ratings)
    missing = {"userId", "movieId", "rating", "timestamp"} - set(r.columns)
    if missing:
        raise DataError(f"{ratings}: missing columns {sorted(missing)}; not a MovieLens ratings file.")
    events = canonical(
        pd.DataFrame(
            {
                C.user: r["userId"].astype(str),
                C.item: r["movieId"].astype(str),
                C.event: "rating",
                C.ts: pd.to_datetime(r["timestamp"], unit="s", utc=True),
                C.value: r["rating"].astype(float),
            }
        )
    )
    movies = ratings.with_name("movies.csv")
    if movies.exists():
        m = pd.read_csv(movies)
        items = pd.DataFrame(
            {C.item: m["movieId"].astype(str), C.category: m["genres"].str.split("|").str[0]}
        )
    else:
        items = pd.DataFrame({C.item: events[C.item].unique(), C.category: "unknown"})
    return events, items
