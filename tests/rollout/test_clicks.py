"""Click models behave like the users they stand for: a perfect user clicks exactly by relevance, a
navigational one leaves after a good result more often than an informational one, and under the
position-based model fewer users click further down the list."""

import numpy as np
import pytest

from perennial.rollout.clicks import PRESETS, CascadeClickModel, PositionBasedModel


def test_the_perfect_user_never_clicks_irrelevant_items_and_always_clicks_highly_relevant_ones():
    user = CascadeClickModel.preset("perfect", seed=0)
    rng = np.random.default_rng(1)
    clicked_ones = 0
    for _ in range(2000):
        grades = rng.integers(0, 3, size=10)
        clicked = set(user.clicks(grades))
        assert not any(grades[p] == 0 for p in clicked)
        assert all(p in clicked for p in np.flatnonzero(grades == 2))  # the perfect user never stops
        clicked_ones += sum(grades[p] == 1 for p in clicked)
    assert clicked_ones > 0


def _share_clicking_again(preset: str) -> float:
    """Among impressions with a click on a relevant item, the share with a click after it."""
    user = CascadeClickModel.preset(preset, seed=3)
    again = first = 0
    for _ in range(3000):
        clicked = user.clicks([2] * 10)
        if clicked:
            first += 1
            again += len(clicked) > 1
    return again / first


def test_navigational_users_stop_after_a_relevant_click_more_often_than_informational_ones():
    navigational, informational = (
        _share_clicking_again("navigational"),
        _share_clicking_again("informational"),
    )
    # expected: stop 0.9 vs 0.5 after a highly relevant click
    assert navigational == pytest.approx(0.1, abs=0.03)
    assert informational == pytest.approx(0.5, abs=0.05)


def test_pbm_click_through_falls_with_rank():
    user = PositionBasedModel(seed=0)  # examination 1 / (rank + 1), attractiveness 0.95 at grade 2
    counts = np.zeros(10)
    n = 20_000
    for _ in range(n):
        counts[user.clicks([2] * 10)] += 1
    ctr = counts / n
    expected = 0.95 / np.arange(1, 11)
    np.testing.assert_allclose(ctr, expected, atol=0.015)
    assert np.all(np.diff(ctr[:6]) < 0)


def test_pbm_given_examination_never_clicks_unexamined_positions():
    user = PositionBasedModel(examination=[1.0, 1.0], attractiveness=[0.0, 1.0, 1.0], seed=0)
    assert user.clicks([2, 1, 2, 2]) == [0, 1]


def test_seeded_models_repeat_and_resume_exactly():
    grades = [2, 1, 0, 2, 1, 0, 2, 1]
    one, two = (
        CascadeClickModel.preset("informational", seed=7),
        CascadeClickModel.preset("informational", seed=7),
    )
    assert [one.clicks(grades) for _ in range(20)] == [two.clicks(grades) for _ in range(20)]
    state = one.state_dict()
    expected = [one.clicks(grades) for _ in range(20)]
    resumed = CascadeClickModel.preset("informational", seed=0)
    resumed.load_state_dict(state)
    assert [resumed.clicks(grades) for _ in range(20)] == expected


def test_presets_match_the_reference_table():
    assert PRESETS["navigational"] == ((0.05, 0.5, 0.95), (0.2, 0.5, 0.9))
    model = CascadeClickModel.preset("informational")
    assert (model.click_probs, model.stop_probs) == ((0.4, 0.7, 0.9), (0.1, 0.3, 0.5))


def test_bad_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown click model preset 'nav'; accepted: \['perfect'"):
        CascadeClickModel.preset("nav")
    with pytest.raises(ValueError, match=r"click_probs\[1\] must be a probability in \[0, 1\], got 1.5"):
        CascadeClickModel([0.1, 1.5, 0.9], [0, 0, 0])
    with pytest.raises(ValueError, match="got 3 and 2"):
        CascadeClickModel([0.1, 0.5, 0.9], [0, 0])
    user = CascadeClickModel.preset("perfect", seed=0)
    with pytest.raises(ValueError, match=r"relevance 3 at position 1 is outside the grades 0..2"):
        user.clicks([0, 3])
    with pytest.raises(ValueError, match="whole-number grades"):
        user.clicks([0.5, 1])
    with pytest.raises(ValueError, match="relevance -1 at position 0"):
        PositionBasedModel(seed=0).clicks([-1])
