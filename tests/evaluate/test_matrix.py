"""Forgetting and backward transfer, checked against hand-computed accuracy matrices."""

import numpy as np
import pytest

from perennial.evaluate import backward_transfer, forgetting

nan = np.nan


def test_no_forgetting_when_accuracy_never_drops():
    m = np.array([[0.80, 0.50, 0.40], [0.80, 0.85, 0.45], [0.82, 0.86, 0.90]])
    assert forgetting(m, trained=[0, 1, 2]) == 0.0
    assert backward_transfer(m, trained=[0, 1, 2]) == pytest.approx((0.02 + 0.01) / 2)


def test_hand_computed_three_versions():
    m = np.array([[0.9, 0.2, 0.1], [0.6, 0.95, 0.3], [0.5, 0.7, 0.9]])
    # window 0: best 0.9, final 0.5; window 1: best 0.95, final 0.7.
    assert forgetting(m, trained=[0, 1, 2]) == pytest.approx((0.4 + 0.25) / 2)
    assert backward_transfer(m, trained=[0, 1, 2]) == pytest.approx((-0.4 - 0.25) / 2)


def test_forgetting_measures_from_the_best_bwt_from_just_after_learning():
    m = np.array([[0.7, 0.99], [0.9, 0.8], [0.6, 0.75]])
    # Window 0: best 0.9 (row 1), just-learned 0.7 (row 0), final 0.6.
    # Window 1: row 0 never learned it, so its lucky 0.99 does not count; best 0.8, final 0.75.
    assert forgetting(m, trained=[0, 1, 2]) == pytest.approx((0.3 + 0.05) / 2)
    assert backward_transfer(m, trained=[0, 1, 2]) == pytest.approx((-0.1 - 0.05) / 2)


def test_versions_that_learned_several_windows_at_once():
    # v1 learned windows 0 and 1 in one update (a trigger every two windows), v2 learned window 2.
    m = np.array([[0.9, 0.8, 0.3], [0.7, 0.6, 0.9]])
    assert forgetting(m, trained=[1, 2]) == pytest.approx((0.2 + 0.2) / 2)
    assert backward_transfer(m, trained=[1, 2]) == pytest.approx((-0.2 - 0.2) / 2)


def test_a_single_version_has_nothing_to_forget():
    m = np.array([[0.9, 0.8, 0.7]])
    assert forgetting(m, trained=[2]) == 0.0
    assert backward_transfer(m, trained=[2]) == 0.0


def test_empty_held_out_slices_are_skipped():
    m = np.array([[0.9, 0.2, 0.1], [nan, 0.95, 0.3], [nan, 0.7, 0.9]])
    assert forgetting(m, trained=[0, 1, 2]) == pytest.approx(0.25)
    assert backward_transfer(m, trained=[0, 1, 2]) == pytest.approx(-0.25)
    first_empty = np.array([[nan, 0.2], [0.5, 0.9]])
    assert forgetting(first_empty, trained=[0, 1]) == 0.0
    assert backward_transfer(first_empty, trained=[0, 1]) == 0.0
