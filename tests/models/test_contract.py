"""One contract suite run against every model: LightFM hybrid, ALS, EASE, popularity, a blend.

The fixture is a checkerboard: even users like even items, odd users like odd items, so the
right recommendations are obvious and a personalised model must find them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import Columns as C
from pipeline.models.als import ALS
from pipeline.models.blend import Blend
from pipeline.models.ease import EASE, ease_weights
from pipeline.config import ModelParams
from pipeline.evaluation.validation import fit_early_stopping
from pipeline.models.hybrid import LightFMRecommender
from pipeline.models.popularity import Popularity

N_USERS, N_ITEMS = 40, 20
TINY_LFM = ModelParams(no_components=8, epochs=30, num_threads=1, learning_rate=0.05)

MODELS = {
    "lightfm": lambda: LightFMRecommender(TINY_LFM),
    "als": lambda: ALS(factors=4, regularization=0.01, iterations=10, num_threads=1),
    "ease": lambda: EASE(regularization=1.0),
    "popularity": lambda: Popularity(),
    "blend": lambda: Blend({"als": {"format": ALS.FORMAT, "config": ALS(
                               factors=4, regularization=0.01, iterations=10, num_threads=1).config()},
                            "ease": {"format": EASE.FORMAT, "config": EASE(1.0).config()}},
                           {"als": 0.4, "ease": 0.6}),
}
PERSONALISED = ("lightfm", "als", "ease", "blend")


def checkerboard() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout): each user has 6 train items of its parity; the rest of that parity is
    the holdout. Item popularity is skewed so popularity alone can't be right."""
    rng = np.random.default_rng(0)
    train, hold = [], []
    for u in range(N_USERS):
        own = np.arange(u % 2, N_ITEMS, 2)
        picked = set(rng.choice(own, 6, replace=False, p=_skew(len(own))).tolist())
        for it in own:
            (train if it in picked else hold).append((f"u{u:02d}", f"i{it:02d}", 1.0 + (it % 3)))
    cols = [C.user, C.item, C.confidence]
    return pd.DataFrame(train, columns=cols), pd.DataFrame(hold, columns=cols)


def _skew(n: int) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1)
    return w / w.sum()


@pytest.fixture(scope="module")
def board():
    return checkerboard()


@pytest.fixture(scope="module", params=list(MODELS))
def fitted(request, board):
    train, _ = board
    model = MODELS[request.param]()
    assert model.fit(train) is model            # fit returns self
    return request.param, model


def _exclude(train: pd.DataFrame) -> dict[str, set[str]]:
    return train.groupby(C.user)[C.item].agg(set).to_dict()


def test_recommend_shape_ranks_and_exclusion(fitted, board):
    _, model = fitted
    train, _ = board
    users = sorted(train[C.user].unique())
    recs = model.recommend(users, 3, exclude=_exclude(train))
    assert set(recs.columns) >= {C.user, C.item, C.score, C.rank}
    assert (recs.groupby(C.user).size() == 3).all() and recs[C.user].nunique() == len(users)
    assert recs.groupby(C.user)[C.rank].apply(list).map(lambda r: r == [1, 2, 3]).all()
    scores_desc = recs.groupby(C.user)[C.score].apply(lambda s: bool((np.diff(s.to_numpy()) <= 0).all()))
    assert scores_desc.all()
    seen = set(zip(train[C.user], train[C.item], strict=True))
    assert not any((u, i) in seen for u, i in zip(recs[C.user], recs[C.item], strict=True))


def test_scores_are_a_users_by_items_matrix(fitted):
    _, model = fitted
    s = model.scores(["u00", "u01", "u02"])
    assert s.shape == (3, len(model.item_ids)) and np.isfinite(s).all()


def test_unknown_user_still_gets_a_list(fitted):
    _, model = fitted
    recs = model.recommend(["nobody"], 5)
    assert len(recs) == 5 and recs[C.item].is_unique


def test_save_load_round_trip_without_pickle(fitted, tmp_path):
    _, model = fitted
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["format"]
    with np.load(tmp_path / "m" / "model.npz", allow_pickle=False) as arrays:   # no object arrays
        assert all(arrays[k].dtype != object for k in arrays.files)
    loaded = type(model).load(tmp_path / "m")
    users = ["u00", "u01", "nobody"]
    np.testing.assert_allclose(loaded.scores(users), model.scores(users), rtol=1e-6)
    assert list(loaded.item_ids) == list(model.item_ids)


def test_every_family_follows_one_contract(fitted, tmp_path):
    """fit → _fit, recommend written once, config round-trips, any artifact loads by format."""
    from pipeline.models.artifact import load_model
    from pipeline.models.base import RecommenderBase

    _, model = fitted
    assert isinstance(model, RecommenderBase) and model.is_fitted
    assert type(model).recommend is RecommenderBase.recommend
    assert type(model).save is RecommenderBase.save and type(model).fit is RecommenderBase.fit
    assert type(model).from_config(model.config()).config() == model.config()
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.is_fitted
    users = ["u00", "nobody"]
    np.testing.assert_allclose(loaded.scores(users), model.scores(users), rtol=1e-6)


def test_load_model_refuses_an_unknown_or_broken_artifact(tmp_path):
    from pipeline.models.artifact import load_model
    from pipeline.models.base import ArtifactError

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.json").write_text('{"format": "someone-else-v9"}')
    with pytest.raises(ArtifactError, match="unknown model format"):
        load_model(tmp_path / "a")
    (tmp_path / "a" / "model.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not a readable model artifact"):
        load_model(tmp_path / "a")


def test_load_refuses_another_models_artifact(fitted, tmp_path):
    name, model = fitted
    other = MODELS["popularity" if name != "popularity" else "als"]()
    other.fit(checkerboard()[0]).save(tmp_path / "other")
    with pytest.raises(ValueError, match="not a"):
        type(model).load(tmp_path / "other")


@pytest.mark.parametrize("name", PERSONALISED)
def test_personalised_models_find_the_checkerboard(name, board):
    train, hold = board
    model = MODELS[name]().fit(train)
    users = sorted(train[C.user].unique())
    recs = model.recommend(users, 3, exclude=_exclude(train))
    parity_ok = recs[C.item].str[1:].astype(int) % 2 == recs[C.user].str[1:].astype(int) % 2
    assert parity_ok.mean() > 0.9
    pop = Popularity().fit(train).recommend(users, 3, exclude=_exclude(train))
    pop_ok = pop[C.item].str[1:].astype(int) % 2 == pop[C.user].str[1:].astype(int) % 2
    assert parity_ok.mean() > pop_ok.mean()


def test_lightfm_single_thread_is_deterministic(board):
    train, _ = board
    a = LightFMRecommender(TINY_LFM).fit(train).scores(["u00", "u05"])
    b = LightFMRecommender(TINY_LFM).fit(train).scores(["u00", "u05"])
    np.testing.assert_array_equal(a, b)


def test_lightfm_hybrid_tokens_reach_a_user_without_history(board):
    train, _ = board
    utok = {f"u{u:02d}": [f"side={u % 2}"] for u in range(N_USERS)}
    model = LightFMRecommender(TINY_LFM).fit(train, utok, {})
    recs = model.recommend(["new-even", "new-odd"], 3,
                           user_tokens={"new-even": ["side=0"], "new-odd": ["side=1"]})
    parity = recs.set_index(C.user)[C.item].str[1:].astype(int) % 2
    assert (parity.loc["new-even"] == 0).mean() > (parity.loc["new-odd"] == 0).mean()


def test_early_stopping_keeps_the_best_epoch_and_stops_on_patience(board):
    train, hold = board
    params = TINY_LFM.model_copy(update={"epochs": 60, "patience": 3, "refit": False})
    model, curve, best = fit_early_stopping(params, train, hold, None, None, k=3)
    vals = [r["val_precision"] for r in curve]
    assert best == int(np.argmax(vals)) + 1
    assert len(curve) < 60 and len(curve) - best == 3          # stopped by patience
    users = sorted(hold[C.user].unique())
    from pipeline.evaluation.metrics import per_user
    recs = model.recommend(users, 3, exclude=_exclude(train))
    assert per_user(recs, hold, 3)["precision"].mean() == pytest.approx(max(vals))


def test_early_stopping_refit_trains_best_epochs_on_full_train(board):
    train, hold = board
    params = TINY_LFM.model_copy(update={"epochs": 40, "patience": 2, "refit": True})
    fit_part, val = train.iloc[::2], train.iloc[1::2]
    model, curve, best = fit_early_stopping(params, fit_part, val, None, None, k=3, full_train=train)
    assert model.epochs_trained == best
    assert set(model.item_ids) == set(train[C.item])


def test_lightfm_serving_gather_equals_batch_matrix_path(board):
    """The per-request path (≤ 64 users, a gather) and the batch path (sparse matrix) agree."""
    train, _ = board
    utok = {f"u{u:02d}": [f"side={u % 2}", "all=1"] for u in range(N_USERS)}
    params = TINY_LFM.model_copy(update={"token_weight": 0.25})
    model = LightFMRecommender(params).fit(train, utok, {})
    users = [f"u{u:02d}" for u in range(N_USERS)] + ["stranger", "new-even"]
    tokens = {**utok, "new-even": ["side=0"]}
    many = users * 40  # > 64 users: sparse path
    big, big_has = model.user_vectors(many, tokens)
    small, small_has = model.user_vectors(users, tokens)
    np.testing.assert_allclose(small, big[: len(users)], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(small_has, big_has[: len(users)])
    assert not small_has[users.index("stranger")] and small_has[users.index("new-even")]


def test_lightfm_ensemble_scores_are_the_mean_of_its_members(board, tmp_path):
    """An ensemble of N seeds is one factor model whose scores are its members' mean, for known
    users and for a features-only (new) user alike, and survives save/load unchanged."""
    train, _ = board
    utok = {f"u{u:02d}": [f"side={u % 2}"] for u in range(N_USERS)}
    itok = {f"i{i:02d}": [f"kind={i % 3}"] for i in range(N_ITEMS)}
    params = TINY_LFM.model_copy(update={"epochs": 5, "token_weight": 0.5})
    ens = LightFMRecommender(params.model_copy(update={"ensemble": 3})).fit(train, utok, itok)
    members = [LightFMRecommender(params.model_copy(update={"seed": params.seed + j}))
               .fit(train, utok, itok) for j in range(3)]
    users = ["u00", "u07", "new-even"]
    tokens = {**utok, "new-even": ["side=0"]}
    mean = np.mean([m.scores(users, tokens) for m in members], axis=0)
    np.testing.assert_allclose(ens.scores(users, tokens), mean, rtol=1e-4, atol=1e-5)
    assert ens.item_repr.shape[1] == ens.user_emb.shape[1] == 3 * params.no_components
    assert not np.allclose(members[0].scores(users, tokens), members[1].scores(users, tokens))
    ens.save(tmp_path / "ens")
    np.testing.assert_allclose(LightFMRecommender.load(tmp_path / "ens").scores(users, tokens),
                               ens.scores(users, tokens), rtol=1e-6)


def test_ensemble_of_one_is_a_plain_lightfm(board):
    """ensemble 1 (the default) keeps the single model: same scores as lightfm.LightFM itself."""
    import scipy.sparse as sp
    from lightfm import LightFM

    train, _ = board
    model = LightFMRecommender(TINY_LFM.model_copy(update={"ensemble": 1})).fit(train)
    uidx = {u: j for j, u in enumerate(model.user_ids)}
    iidx = {i: j for j, i in enumerate(model.item_ids)}
    r, c = train[C.user].map(uidx).to_numpy(), train[C.item].map(iidx).to_numpy()
    shape = (len(uidx), len(iidx))
    w = train[C.confidence].to_numpy(dtype=np.float32)
    p = TINY_LFM
    plain = LightFM(no_components=p.no_components, loss=p.loss, learning_rate=p.learning_rate,
                    max_sampled=p.max_sampled, random_state=p.seed)
    plain.fit(sp.coo_matrix((np.ones_like(w), (r, c)), shape=shape),
              sample_weight=sp.coo_matrix((w, (r, c)), shape=shape), epochs=p.epochs)
    u = np.repeat([uidx["u00"], uidx["u05"]], len(iidx)).astype(np.int32)
    i = np.tile(np.arange(len(iidx)), 2).astype(np.int32)
    # the project drops the user bias: constant per user, it cannot change a ranking
    expected = plain.predict(u, i).reshape(2, -1) - plain.user_biases[[uidx["u00"], uidx["u05"]], None]
    np.testing.assert_allclose(model.scores(["u00", "u05"]), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -1, 17])
def test_ensemble_knob_is_validated(bad):
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="ensemble"):
        ModelParams(ensemble=bad)


def _parity_share(recs: pd.DataFrame, user_parity: dict[str, int]) -> float:
    items = recs[C.item].str[1:].astype(int) % 2
    return float((items.to_numpy() == recs[C.user].map(user_parity).to_numpy()).mean())


def test_ease_weights_are_the_closed_form():
    """B = I − P·diag(1/diag P), P = (XᵀX + λI)⁻¹, diag(B) = 0 (Steck 2019), in float32."""
    rng = np.random.default_rng(0)
    x = (rng.random((60, 1500)) < 0.05).astype(np.float32)   # > one 1024 block: the mirror
    g = x.T @ x
    b = ease_weights(g, 10.0)
    p = np.linalg.inv(g.astype(np.float64) + 10.0 * np.eye(len(g)))
    want = p / -np.diag(p)[None, :]
    np.fill_diagonal(want, 0.0)
    np.testing.assert_allclose(b, want, atol=1e-5)
    assert b.flags["C_CONTIGUOUS"] and np.all(np.diag(b) == 0)


@pytest.mark.parametrize("name", ["als", "ease"])
def test_a_new_user_is_scored_from_their_history(name, board):
    """Serving passes a user's recent items (the online store): ALS folds the user in, EASE
    sums their items' rows, so a user the model never saw gets their parity, not popularity."""
    train, _ = board
    model = MODELS[name]().fit(train)
    history = {"new-even": ["i00", "i02", "i04"], "new-odd": ["i01", "i03", "i05"]}
    recs = model.recommend(list(history), 3, exclude={u: set(h) for u, h in history.items()},
                           history=history)
    assert _parity_share(recs, {"new-even": 0, "new-odd": 1}) > 0.9
    assert not model.known("new-even")
    pop = model.scores(["new-even"])                         # no history: popularity
    np.testing.assert_array_equal(pop[0], model.popularity)


def test_als_fold_in_is_implicits_recalculate_user(board):
    from implicit.cpu.als import AlternatingLeastSquares

    train, _ = board
    for alpha in (1.0, 10.0):
        model = ALS(factors=4, regularization=0.05, alpha=alpha, iterations=5).fit(train)
        ref = AlternatingLeastSquares(factors=4, regularization=0.05, alpha=alpha)
        ref.item_factors = model.item_factors.copy()     # what the artifact stores
        items = ["i00", "i04", "i08"]
        row = sp_rows([[model.item_index[i] for i in items]], len(model.item_ids))
        np.testing.assert_allclose(model.fold_in(items), ref.recalculate_user(0, row),
                                   rtol=1e-4, atol=1e-5)


def sp_rows(cols: list[list[int]], n_items: int):
    """A binary CSR matrix with one row per list of item columns."""
    import scipy.sparse as sp

    r = [j for j, cs in enumerate(cols) for _ in cs]
    c = [x for cs in cols for x in cs]
    return sp.csr_matrix((np.ones(len(c), dtype=np.float32), (r, c)), shape=(len(cols), n_items))


def test_ease_known_user_adds_history_to_their_training_items(board):
    """A known user is scored from training items ∪ history: new items move the scores."""
    train, _ = board
    model = EASE(regularization=1.0).fit(train)
    before = model.scores(["u00"])
    after = model.scores(["u00"], history={"u00": ["i01", "i03"]})
    assert not np.allclose(before, after)
    assert model.scores(["u00"], history={"u00": ["not-an-item"]}).tolist() == before.tolist()


def test_item_vectors_align_with_items_or_say_unsupported(fitted):
    """Item similarity reads ``item_vectors()``: one row per item for factor models; popularity
    has none and says so with a clear error, never a crash."""
    from pipeline.models.base import Unsupported

    name, m = fitted
    if name == "popularity":
        with pytest.raises(Unsupported, match="item similarity"):
            m.item_vectors()
        return
    v = m.item_vectors()
    assert v.shape[0] == len(m.item_ids) and v.ndim == 2 and np.isfinite(v).all()


def test_checkerboard_items_are_most_similar_to_their_own_parity(board):
    train, _ = board
    m = ALS(factors=4, regularization=0.01, iterations=10, num_threads=1).fit(train)
    v = m.item_vectors() / np.linalg.norm(m.item_vectors(), axis=1, keepdims=True)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    best = sim.argmax(axis=1)
    parity = np.array([int(i[1:]) % 2 for i in m.item_ids])
    assert (parity[best] == parity).mean() >= 0.9


def test_lightfm_places_a_new_item_by_its_tokens(board, tmp_path):
    """A catalogued item the model never saw gets the mean of its tokens' embeddings; the
    token embeddings survive save/load, and an item without a known token gets zeros."""
    train, _ = board
    tokens = {i: [f"parity={int(i[1:]) % 2}"] for i in train[C.item].unique()}
    m = LightFMRecommender(TINY_LFM).fit(train, item_tokens=tokens)
    m.save(tmp_path / "m")
    m2 = LightFMRecommender.load(tmp_path / "m")
    v = m2.token_item_vectors({"new": ["parity=0"], "blank": ["nope=1"]}, ["new", "blank"])
    assert v.shape == (2, m.item_repr.shape[1])
    np.testing.assert_allclose(v[0], m.item_token_emb[m.item_vocab.index("parity=0")], rtol=1e-6)
    assert not v[1].any()


@pytest.mark.parametrize("identity,token_weight,session_weight",
                         [(False, 1.0, 1.0), (True, 0.25, 2.0), (True, 1.0, 0.5)])
def test_lightfm_batch_user_vectors_equal_the_feature_matrix(board, identity, token_weight,
                                                             session_weight):
    """The array-built batch path (export, evaluation) gives bit for bit ``_features``'s
    vectors and, to float32 rounding, the per-request gather's, on random tokens: unknown and
    repeated tokens, session tokens from histories (unknown items, repeats, longer than
    ``session_items``), users with nothing, identity on and off."""
    from pipeline.models.hybrid import _features

    train, _ = board
    rng = np.random.default_rng(7)
    utok = {f"u{u:02d}": [f"side={u % 2}", f"band={u % 5}"] for u in range(N_USERS)}
    itok = {f"i{i:02d}": [f"kind={i % 3}", f"popularity={i % 2}"] for i in range(N_ITEMS)}
    items = sorted(train[C.item].unique())
    hist = {u: list(rng.choice(items, 4)) for u in utok}
    params = TINY_LFM.model_copy(update={"epochs": 3, "session_items": 3, "user_identity": identity,
                                         "token_weight": token_weight,
                                         "session_weight": session_weight})
    model = LightFMRecommender(params).fit(train, utok, itok, history=hist)
    assert model.uses_identity == identity and any(t.startswith("recent_") for t in model.user_vocab)
    names = [*{t for v in utok.values() for t in v}, "side=9", "recent_kind=1"]
    users = [f"u{u:02d}" for u in rng.integers(0, N_USERS, 90)] + ["stranger", "new-1", "new-2"]
    tokens = {u: list(rng.choice(names, int(rng.integers(0, 5)))) for u in users if u != "stranger"}
    history = {u: list(rng.choice([*items, "i99", "unknown"], int(rng.integers(0, 6))))
               for u in users[::2] if u != "stranger"}
    merged = model._with_session(tokens, history)
    f = _features(users, model._uidx, merged, model._utok, model.uses_identity,
                  token_weight, session_weight)
    big, big_has = model._user_vectors_batch(users, tokens, history)
    np.testing.assert_array_equal(big, np.asarray(f @ model.user_emb, dtype=np.float32))
    np.testing.assert_array_equal(big_has, f.getnnz(axis=1) > 0)
    small, small_has = model._user_vectors_small(users, merged)
    np.testing.assert_allclose(big, small, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(big_has, small_has)
    assert not big_has[users.index("stranger")]
    # scores of the batch (> 64 users) and of requests of one user agree, top-k included
    s = model.scores(users, tokens, history)
    one = np.vstack([model.scores([u], tokens, history) for u in users])
    np.testing.assert_allclose(s, one, rtol=1e-5, atol=1e-5)
