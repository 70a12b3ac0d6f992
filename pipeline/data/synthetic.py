"""The embedded default data set: a seeded generator of realistic implicit feedback.

Users have a latent taste (a Dirichlet mix over item categories) and an activity level;
items sit in categories with a Zipf-like popularity. A session is either a shop funnel
(view → click → add_to_cart → purchase, each step likelier when the category matches the
user's taste) or a play (watch fraction drawn high on taste, low when exploring; very short
plays are skips; strong plays may be repeated). Users sign up and items launch during the
window, so a model must handle cold starts. Side information carries taste: a user's
country and age band set part of their category mix, an item's brand says how much of a hit
it is in its category and its price follows its category (:func:`attributes`). Everything is vectorised: 10M events take
seconds, and the same seed gives the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.columns import Columns as C
from pipeline.config import SyntheticParams

DAY = 86_400.0
# (click, cart | click, purchase | cart) for on-taste and exploring sessions
_FUNNEL_TASTE = (0.55, 0.40, 0.55)
_FUNNEL_EXPLORE = (0.20, 0.10, 0.20)
_SKIP_BELOW = 0.1  # a play shorter than this is logged as a skip
_REPEAT_P = 0.3  # chance that a play watched ≥ 0.9 is replayed later


@dataclass(frozen=True)
class Catalogue:
    """Items with their category, popularity weight and launch offset (seconds)."""

    category: np.ndarray
    weight: np.ndarray
    launch: np.ndarray
    rank: np.ndarray  # popularity rank inside the category (0 = its hit)


AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
_BRANDS_PER_TIER = 4


def _catalogue(p: SyntheticParams, rng: np.random.Generator) -> Catalogue:
    n = p.n_items
    category = rng.integers(0, p.n_categories, n)
    # popularity rank inside the category: first item of each category is its hit
    rank = np.zeros(n, dtype=np.int64)
    order = np.argsort(category, kind="stable")
    cats_sorted = category[order]
    starts = np.searchsorted(cats_sorted, np.arange(p.n_categories))
    rank[order] = np.arange(n) - starts[cats_sorted]
    weight = 1.0 / (rank + 1.0) ** p.zipf_exponent
    launch = np.where(rng.random(n) < p.new_item_share, rng.uniform(0, p.days * DAY, n), 0.0)
    launch[rank < 3] = 0.0  # every category has hits from the start
    return Catalogue(category, weight, launch, rank)


@dataclass(frozen=True)
class People:
    """User attributes and the category mix they imply (a separate random stream, so the
    attributes can be regenerated without the events)."""

    country: np.ndarray
    age: np.ndarray
    profile: np.ndarray  # (users × categories): the mean taste of the user's country and age


def _people(p: SyntheticParams) -> People:
    rng = np.random.default_rng([p.seed, 7])
    country = rng.integers(0, p.n_countries, p.n_users)
    age = rng.integers(0, len(AGE_BANDS), p.n_users)
    # as focused as a person's own taste, so mixing them in keeps tastes concentrated
    alpha = np.full(p.n_categories, p.taste_concentration)
    by_country = rng.dirichlet(alpha, size=p.n_countries)
    by_age = rng.dirichlet(alpha, size=len(AGE_BANDS))
    return People(country, age, (by_country[country] + by_age[age]) / 2.0)


def attributes(p: SyntheticParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(item attributes: item_id, brand, price; user attributes: user_id, country, age_band),
    the same rows that :func:`generate` drew its events from."""
    cat = _catalogue(p, np.random.default_rng(p.seed))  # the first draw of generate()
    rng = np.random.default_rng([p.seed, 11])
    tier = np.minimum(np.floor(np.log2(cat.rank + 1.0)), 7).astype(np.int64)
    brand = tier * _BRANDS_PER_TIER + rng.integers(0, _BRANDS_PER_TIER, len(tier))
    base = rng.lognormal(3.0, 0.8, p.n_categories)
    price = np.round(base[cat.category] * rng.lognormal(0.0, 0.25, len(tier)), 2)
    items = pd.DataFrame({C.item: [f"i{i:07d}" for i in range(p.n_items)],
                          "brand": [f"b{b:02d}" for b in brand], "price": price})
    ppl = _people(p)
    users = pd.DataFrame({C.user: [f"u{i:07d}" for i in range(p.n_users)],
                          "country": [f"k{c:02d}" for c in ppl.country],
                          "age_band": np.asarray(AGE_BANDS, dtype=object)[ppl.age]})
    return items, users


def _pick_items(
    cats: np.ndarray, times: np.ndarray, cat: Catalogue, rng: np.random.Generator
) -> np.ndarray:
    """An item per session, by popularity inside the session's category, launched in time."""
    out = np.empty(len(cats), dtype=np.int64)
    for c in np.unique(cats):
        rows = np.flatnonzero(cats == c)
        items = np.flatnonzero(cat.category == c)
        if len(items) == 0:  # tiny catalogues: an empty category borrows any item
            items = np.arange(len(cat.category))
        cum = np.cumsum(cat.weight[items])
        chosen = items[np.searchsorted(cum, rng.random(len(rows)) * cum[-1])]
        late = cat.launch[chosen] > times[rows]
        if late.any():
            live = items[cat.launch[items] == 0.0]
            live = live if len(live) else items
            cum0 = np.cumsum(cat.weight[live])
            chosen[late] = live[np.searchsorted(cum0, rng.random(int(late.sum())) * cum0[-1])]
        out[rows] = chosen
    return out


def _taste_categories(
    taste: np.ndarray, users: np.ndarray, rng: np.random.Generator, chunk: int = 1_000_000
) -> np.ndarray:
    """Inverse-CDF draw of a category from each session user's taste, in bounded chunks."""
    out = np.empty(len(users), dtype=np.int64)
    cum = np.cumsum(taste, axis=1)
    for s in range(0, len(users), chunk):
        u = users[s : s + chunk]
        r = rng.random(len(u))[:, None]
        out[s : s + chunk] = np.minimum((cum[u] < r).sum(axis=1), taste.shape[1] - 1)
    return out


def _world(p: SyntheticParams, rng: np.random.Generator) -> tuple[Catalogue, np.ndarray]:
    """The catalogue and every user's category taste (n_users × n_categories, rows sum to 1):
    the first draws of the seed's stream, so :func:`user_taste` gives them again."""
    cat = _catalogue(p, rng)
    taste = rng.dirichlet(np.full(p.n_categories, p.taste_concentration), size=p.n_users)
    # attributes carry taste: a user's country and age band shift their category mix
    return cat, (1.0 - p.attribute_taste) * taste + p.attribute_taste * _people(p).profile


def user_taste(p: SyntheticParams) -> np.ndarray:
    """The latent taste :func:`generate` drew for user ``u{i:07d}`` in row i (the ground truth
    tests measure how much taste information each event type carries)."""
    return _world(p, np.random.default_rng(p.seed))[1]


def generate(p: SyntheticParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (events, items): the canonical event table and item metadata (category)."""
    rng = np.random.default_rng(p.seed)
    span = p.days * DAY
    end = pd.Timestamp(p.end_date, tz="UTC") + pd.Timedelta(days=1)
    start = end - pd.Timedelta(seconds=span)

    cat, taste = _world(p, rng)
    activity = rng.lognormal(0.0, 1.0, p.n_users)
    signup = np.where(
        rng.random(p.n_users) < p.new_user_share, rng.uniform(0, span * 0.95, p.n_users), 0.0
    )

    n_sessions = int(p.n_events / 1.25) + 16  # ~1.3 events per session; cut exactly below
    su = rng.choice(p.n_users, size=n_sessions, p=activity / activity.sum())
    st = signup[su] + rng.random(n_sessions) * (span - signup[su])
    explore = rng.random(n_sessions) < p.explore_rate
    scat = np.where(
        explore, rng.integers(0, p.n_categories, n_sessions), _taste_categories(taste, su, rng)
    )
    on_taste = ~explore
    si = _pick_items(scat, st, cat, rng)
    is_play = rng.random(n_sessions) < p.play_share

    # shop funnel
    pc, pk, pb = (np.where(on_taste, a, b) for a, b in zip(_FUNNEL_TASTE, _FUNNEL_EXPLORE, strict=True))
    r = rng.random((3, n_sessions))
    shop = ~is_play
    click = shop & (r[0] < pc)
    cart = click & (r[1] < pk)
    buy = cart & (r[2] < pb)
    t_click = st + rng.uniform(5, 120, n_sessions)
    t_cart = t_click + rng.uniform(10, 600, n_sessions)
    t_buy = t_cart + rng.uniform(30, 3600, n_sessions)

    # plays
    watch = np.where(on_taste, rng.beta(4.0, 1.2, n_sessions), rng.beta(1.0, 3.0, n_sessions))
    skip = is_play & (watch < _SKIP_BELOW)
    play = is_play & ~skip
    repeat = play & (watch >= 0.9) & (rng.random(n_sessions) < _REPEAT_P)
    t_repeat = st + rng.uniform(3600, 3 * DAY, n_sessions)
    watch2 = rng.beta(4.0, 1.2, n_sessions)

    parts = [  # (mask, type, time, value)
        (shop, "view", st, None),
        (click, "click", t_click, None),
        (cart, "add_to_cart", t_cart, None),
        (buy, "purchase", t_buy, None),
        (play, "play", st, watch),
        (skip, "skip", st, None),
        (repeat, "play", t_repeat, watch2),
    ]
    # cut at a session boundary so the row count is close to n_events and funnels stay whole
    per_session = sum(m.astype(np.int64) for m, *_ in parts)
    keep = np.cumsum(per_session) <= p.n_events
    sess, types, times, values = [], [], [], []
    for mask, name, t, v in parts:
        idx = np.flatnonzero(mask & keep)
        sess.append(idx)
        types.append(np.full(len(idx), name, dtype=object))
        times.append(t[idx])
        values.append(v[idx] if v is not None else np.full(len(idx), np.nan))
    s = np.concatenate(sess)
    t = np.minimum(np.concatenate(times), span - 1.0)
    order = np.lexsort((s, t))
    s, t = s[order], t[order]

    user_names = np.array([f"u{i:07d}" for i in range(p.n_users)], dtype=object)
    item_names = np.array([f"i{i:07d}" for i in range(p.n_items)], dtype=object)
    ts = start + pd.to_timedelta(np.round(t * 1e6).astype(np.int64), unit="us")
    events = pd.DataFrame(
        {
            C.user: user_names[su[s]],
            C.item: item_names[si[s]],
            C.event: np.concatenate(types)[order],
            C.ts: ts.as_unit("us"),
            C.value: np.concatenate(values)[order].astype("float64"),
        }
    )
    items = pd.DataFrame(
        {
            C.item: item_names,
            C.category: np.array([f"c{c:03d}" for c in cat.category], dtype=object),
        }
    )
    return events, items
