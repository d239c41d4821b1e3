"""Rankers: matrix factorisation finds what each user likes where popularity cannot, keeps what it
learned about earlier users when later windows bring new ones, and resumes from a checkpoint exactly."""

import numpy as np
import pandas as pd
import pytest
import torch

from perennial.data.movielens import rating_grades
from perennial.learn.rankers import MatrixFactorizationRanker, PopularityRanker, Ranker
from perennial.registry import load_tree, save_tree

N_ITEMS = 100


def low_rank_ratings(n_users: int, seed: int, first_user: int = 0, per_user: int = 40, held: int = 10):
    """Ratings 1..5 from a rank-3 taste model (the same items for every seed, new users per seed).

    Every user rates items drawn uniformly, so how often an item is rated says nothing about who likes
    it. Returns (train, held-out) frames; each user has ``held`` held-out ratings.
    """
    items = np.random.default_rng(99).normal(size=(N_ITEMS, 3))
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users, 3))
    taste = users @ items.T
    stars = np.clip(np.round(3 + 1.3 * taste / taste.std()), 1, 5)
    train, test = [], []
    for u in range(n_users):
        for k, item in enumerate(rng.choice(N_ITEMS, per_user, replace=False)):
            (test if k < held else train).append((first_user + u, int(item), float(stars[u, item])))
    frame = lambda rows: pd.DataFrame(rows, columns=["user", "item", "rating"])  # noqa: E731
    return frame(train), frame(test)


def ndcg_at_5(ranker: Ranker, held_out: pd.DataFrame) -> float:
    """Mean NDCG@5 of ranking each user's held-out items, with gains 2^grade - 1."""
    scores = []
    for user, rows in held_out.groupby("user"):
        grade = dict(zip(rows["item"], rating_grades(rows["rating"]), strict=True))
        ranked = ranker.rank(user, list(grade), k=5)
        dcg = sum((2 ** grade[item] - 1) / np.log2(r + 2) for r, item in enumerate(ranked))
        ideal = sum(
            (2**g - 1) / np.log2(r + 2) for r, g in enumerate(sorted(grade.values(), reverse=True)[:5])
        )
        if ideal > 0:
            scores.append(dcg / ideal)
    return float(np.mean(scores))


def mf(**kw) -> MatrixFactorizationRanker:
    return MatrixFactorizationRanker(**{"dim": 8, "epochs": 30, "negatives": 0, "seed": 0, **kw})


def test_matrix_factorisation_beats_popularity_on_low_rank_tastes():
    train, held_out = low_rank_ratings(200, seed=0)
    factorisation, popularity = mf(), PopularityRanker()
    factorisation.update(train)
    popularity.update(train)
    # measured: MF 0.99, popularity 0.50
    assert ndcg_at_5(factorisation, held_out) > 0.9
    assert ndcg_at_5(factorisation, held_out) > ndcg_at_5(popularity, held_out) + 0.3


def test_default_matrix_factorisation_with_sampled_negatives_also_beats_popularity():
    train, held_out = low_rank_ratings(200, seed=0)
    factorisation, popularity = MatrixFactorizationRanker(epochs=20, dim=8, seed=0), PopularityRanker()
    factorisation.update(train)
    popularity.update(train)
    # measured: MF 0.65, popularity 0.50
    assert ndcg_at_5(factorisation, held_out) > ndcg_at_5(popularity, held_out) + 0.1


def test_window_by_window_updates_keep_earlier_users():
    first_train, first_held = low_rank_ratings(100, seed=1)
    second_train, second_held = low_rank_ratings(100, seed=2, first_user=1000)
    ranker = mf()
    ranker.update(first_train)
    before = ndcg_at_5(ranker, first_held)
    ranker.update(second_train)  # only new users
    assert set(ranker.users) == set(first_train["user"]) | set(second_train["user"])
    # measured: 0.95 before, 0.96 after; a ranker trained on the second window alone scores 0.48 there
    assert ndcg_at_5(ranker, first_held) > before - 0.05
    assert ndcg_at_5(ranker, second_held) > 0.9
    fresh = mf()
    fresh.update(second_train)
    assert ndcg_at_5(ranker, first_held) > ndcg_at_5(fresh, first_held) + 0.3


def test_new_items_get_rows_and_old_rows_are_not_moved():
    ranker = mf(epochs=2)
    ranker.update(pd.DataFrame({"user": [1, 2], "item": [10, 11], "rating": [5.0, 3.0]}))
    ranker.update(pd.DataFrame({"user": [3, 1], "item": [12, 10], "rating": [4.0, 4.0]}))
    assert ranker.items.tolist() == [10, 11, 12]
    assert ranker.users.tolist() == [1, 2, 3]
    assert ranker.state_dict()["item_emb"].shape == (3, 8)


@pytest.mark.parametrize("make", [lambda: mf(epochs=3), lambda: PopularityRanker(threshold=4.0)])
def test_a_ranker_restored_from_a_checkpoint_continues_exactly(make, tmp_path):
    first, _ = low_rank_ratings(60, seed=3)
    second, held_out = low_rank_ratings(60, seed=4, first_user=30)  # half the users return
    original = make()
    original.update(first)
    save_tree(tmp_path / "ranker.safetensors", original.state_dict())
    restored = make()
    restored.load_state_dict(load_tree(tmp_path / "ranker.safetensors"))
    for ranker in (original, restored):
        ranker.update(second)
    for name, value in original.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, restored.state_dict()[name]), name
        else:
            assert value == restored.state_dict()[name], name
    for user in held_out["user"].unique()[:20]:
        candidates = held_out.loc[held_out["user"] == user, "item"].tolist()
        assert original.rank(user, candidates) == restored.rank(user, candidates)


def test_popularity_counts_ratings_at_or_above_the_threshold_across_windows():
    ranker = PopularityRanker(threshold=4.0)
    ranker.update(pd.DataFrame({"user": [1, 2, 3], "item": [7, 7, 8], "rating": [4.0, 3.5, 5.0]}))
    ranker.update(pd.DataFrame({"user": [4, 5], "item": [8, 9], "rating": [4.5, 1.0]}))
    assert ranker.counts == {7: 1, 8: 2}
    # 5 and 9 were never liked: they tie at 0, and the smaller id goes first, whatever the order given
    assert ranker.rank(user=1, candidates=[9, 7, 8, 5]) == [8, 7, 5, 9]
    assert ranker.rank(user=1, candidates=[5, 9, 8, 7], k=2) == [8, 7]


def test_unknown_users_and_items_still_get_a_ranking():
    ranker = mf(epochs=2)
    ranker.update(pd.DataFrame({"user": [1, 1, 2], "item": [10, 11, 10], "rating": [5.0, 1.0, 5.0]}))
    assert sorted(ranker.rank(user=99, candidates=[10, 11, 12])) == [10, 11, 12]
    assert len(MatrixFactorizationRanker().rank(user=1, candidates=[3, 4])) == 2


def test_bad_inputs_are_refused_by_name():
    ranker = PopularityRanker()
    with pytest.raises(ValueError, match=r"\['rating'\] not found"):
        ranker.update(pd.DataFrame({"user": [1], "item": [2]}))
    with pytest.raises(ValueError, match="item ids must be integers"):
        ranker.update(pd.DataFrame({"user": [1], "item": ["x"], "rating": [4.0]}))
    with pytest.raises(ValueError, match="rating nan at row 1"):
        ranker.update(pd.DataFrame({"user": [1, 2], "item": [3, 4], "rating": [4.0, np.nan]}))
    with pytest.raises(ValueError, match="candidates hold item 3 more than once"):
        ranker.rank(1, [3, 4, 3])
    with pytest.raises(ValueError, match="k must be a whole number >= 1 or None, got 0"):
        ranker.rank(1, [3, 4], k=0)
    with pytest.raises(ValueError, match="dim must be a whole number >= 1, got 0"):
        MatrixFactorizationRanker(dim=0)
    with pytest.raises(ValueError, match="this ranker has dim=4"):
        MatrixFactorizationRanker(dim=4).load_state_dict(mf().state_dict())
