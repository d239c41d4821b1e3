"""The served recommender: the in-session update is the exact prior-centred ridge solution, it learns a
cold user's taste from a few interactions where the global model alone cannot, and nothing a session
does can change the global model."""

import numpy as np
import pytest
import torch

from perennial.learn.rankers import MatrixFactorizationRanker
from perennial.recommend import ColdStartReport, Recommender, cold_users, replay_user
from perennial.registry import Registry, VersionRecord
from tests.recommend.planted import N_ITEMS, planted_ratings


@pytest.fixture(scope="module")
def planted():
    """A matrix factorisation trained on 300 users of the planted problem, and 60 cold users it never saw."""
    train = planted_ratings(300, seed=0)
    ranker = MatrixFactorizationRanker(dim=8, epochs=40, lr=0.02, negatives=1, seed=0)
    ranker.update(train[["user", "item", "rating"]])
    model = Recommender.from_ranker("v1", ranker, train)
    cold = planted_ratings(60, seed=1, first_user=10_000)
    return ranker, model, cold


def test_user_vector_is_the_exact_prior_centred_ridge_solution():
    model = Recommender.synthetic(n_items=40, dim=5, seed=3)
    items, ratings = np.array([3, 17, 29, 8]), np.array([5.0, 1.0, 4.0, 2.5])
    x = model.factors[model.rows(items)].astype(np.float64)
    y = ratings - model.offsets[model.rows(items)]
    # The same problem as ordinary least squares: the prior as extra rows (a Cholesky factor of P).
    chol = np.linalg.cholesky(model.prior_precision)
    a = np.vstack([x / np.sqrt(model.noise), chol.T])
    b = np.concatenate([y / np.sqrt(model.noise), chol.T @ model.prior_mean])
    expected = np.linalg.lstsq(a, b, rcond=None)[0]
    np.testing.assert_allclose(model.user_vector(items, ratings), expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(model.user_vector([], []), model.prior_mean)
    # An item outside the catalogue carries no information, rather than failing the session.
    np.testing.assert_allclose(
        model.user_vector([*items, 999], [*ratings, 5.0]), expected, rtol=1e-6, atol=1e-8
    )


def test_adaptation_beats_no_adaptation_on_planted_tastes(planted):
    _, model, cold = planted
    popularity = np.zeros(len(model))
    report = ColdStartReport()
    users = cold_users(cold, model, steps=(0, 5))
    assert len(users) >= 50
    for user in users:
        report.update(replay_user(model, popularity, user, steps=(0, 5), k=10))
    means = report.compute()
    adapted, static = means["adapted"][5], means["global"][5]
    # Before any interaction the two are the same model; after 5 the adapted one knows the cluster.
    assert means["adapted"][0]["hr"] == means["global"][0]["hr"]
    # measured: HR@10 adapted 1.00 vs global 0.33; NDCG@10 0.70 vs 0.09
    assert adapted["hr"] >= 1.2 * static["hr"]
    assert adapted["ndcg"] >= 2 * static["ndcg"]


def test_recommend_leaves_out_seen_items_and_breaks_ties_by_id():
    model = Recommender(
        "t", np.array([4, 5, 9]), np.ones((3, 2)), np.zeros(3), np.zeros(2), np.eye(2), 1.0, (1, 5)
    )
    assert model.recommend(np.zeros(2), k=3) == [4, 5, 9]
    assert model.recommend(np.zeros(2), k=2, exclude=[4, 77]) == [5, 9]
    assert model.recommend(np.zeros(2), k=5, exclude=[4, 5, 9]) == []
    with pytest.raises(ValueError, match="k must be"):
        model.recommend(np.zeros(2), k=0)


def test_sessions_cannot_change_the_global_model(planted):
    ranker, model, cold = planted
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    params = {name: tensor.clone() for name, tensor in ranker.params.items()}
    for user in cold_users(cold, model, steps=(0, 10)):
        w = model.user_vector(user.items, user.ratings)
        model.recommend(w, 10, exclude=user.items)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    for name, tensor in ranker.params.items():
        assert torch.equal(tensor, params[name]), name
    with pytest.raises(ValueError, match="read-only"):
        model.factors[0, 0] = 1.0


def test_round_trip_through_the_registry(tmp_path, planted):
    _, model, _ = planted
    with Registry(tmp_path) as registry:
        registry.add(VersionRecord("v1", None, "stateless", config={"recommender": {}}), model.state_dict())
        registry.add(VersionRecord("v2", None, "stateless"), {"w": torch.ones(1)})
        loaded = Recommender.from_registry(registry, "v1")
        with pytest.raises(ValueError, match="not a recommender"):
            Recommender.from_registry(registry, "v2")
    w = model.user_vector([1, 2], [5.0, 4.0])
    assert loaded.recommend(w, 10) == model.recommend(w, 10)
    assert loaded.noise == model.noise and len(loaded) == N_ITEMS


def test_bad_arrays_are_refused_with_the_reason():
    good = dict(items=np.arange(3), factors=np.ones((3, 2)), offsets=np.zeros(3), prior_mean=np.zeros(2),
                prior_precision=np.eye(2), noise=1.0, rating_range=(1, 5))  # fmt: skip
    with pytest.raises(ValueError, match="sorted and distinct"):
        Recommender("t", **{**good, "items": np.array([2, 1, 3])})
    with pytest.raises(ValueError, match="offsets must have shape"):
        Recommender("t", **{**good, "offsets": np.zeros(4)})
    with pytest.raises(ValueError, match="noise must be"):
        Recommender("t", **{**good, "noise": 0.0})
    with pytest.raises(ValueError, match="not finite"):
        Recommender("t", **{**good, "factors": np.full((3, 2), np.nan)})
