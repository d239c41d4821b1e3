"""PredictionShift: a changed mix of predicted classes is drift, an unchanged one is not."""

import numpy as np
import pytest
from scipy import stats

from perennial.drift import PredictionShift


def _labels(seed: int, shares: list[float], n: int = 400) -> np.ndarray:
    return np.random.default_rng(seed).choice(len(shares), size=n, p=shares)


def _probabilities(labels: np.ndarray, n_classes: int = 4) -> np.ndarray:
    """Class probabilities whose argmax is ``labels``."""
    noise = np.random.default_rng(0).uniform(0, 0.5, size=(len(labels), n_classes))
    noise[np.arange(len(labels)), labels] = 1.0
    return noise / noise.sum(axis=1, keepdims=True)


def test_a_changed_class_mix_is_drift():
    result = PredictionShift().test(_labels(0, [0.4, 0.3, 0.2, 0.1]), _labels(1, [0.25, 0.25, 0.25, 0.25]))
    assert result.drift is True
    assert result.p_value < 1e-3


@pytest.mark.parametrize("seed", range(3))
def test_an_unchanged_class_mix_is_not(seed):
    shares = [0.4, 0.3, 0.2, 0.1]
    assert PredictionShift().test(_labels(2 * seed, shares), _labels(2 * seed + 1, shares)).drift is False


def test_probabilities_are_compared_by_their_predicted_class():
    reference, current = _labels(0, [0.5, 0.3, 0.1, 0.1]), _labels(1, [0.3, 0.3, 0.3, 0.1])
    from_labels = PredictionShift().test(reference, current)
    from_probabilities = PredictionShift().test(_probabilities(reference), _probabilities(current))
    assert from_probabilities == from_labels


def test_statistic_is_scipys_chi_square_and_details_hold_both_histograms():
    reference, current = _labels(0, [0.5, 0.5, 0.0, 0.0]), _labels(1, [0.3, 0.5, 0.0, 0.2])
    result = PredictionShift().test(reference, current)
    reference_counts, current_counts = np.bincount(reference, minlength=4), np.bincount(current, minlength=4)
    # Class 2 is predicted in neither sample, so it has no column.
    table = np.array([reference_counts[[0, 1, 3]], current_counts[[0, 1, 3]]])
    expected = stats.chi2_contingency(table)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert result.details["classes"] == [0, 1, 3]
    assert result.details["reference_counts"] == table[0].tolist()
    assert result.details["current_counts"] == table[1].tolist()
    shares = table / table.sum(axis=1, keepdims=True)
    assert result.details["total_variation"] == pytest.approx(0.5 * np.abs(shares[0] - shares[1]).sum())


def test_one_class_predicted_everywhere_is_no_drift():
    result = PredictionShift().test(np.zeros(50, int), np.zeros(60, int))
    assert (result.drift, result.p_value, result.details["total_variation"]) == (False, 1.0, 0.0)


def test_too_few_rows_cannot_be_tested():
    probabilities = _probabilities(_labels(0, [0.5, 0.5, 0.0, 0.0], n=30))
    probabilities[:15] = np.nan
    result = PredictionShift().test(probabilities, _labels(1, [0.5, 0.5, 0.0, 0.0]))
    assert result.drift is None
    assert result.reason == "not enough data: 15 reference rows, the test needs 20"
    assert result.details["dropped_reference_rows"] == 15


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"integer class labels, got 0\.5"):
        PredictionShift().test(np.full(30, 0.5), np.zeros(30))
    with pytest.raises(ValueError, match=r"\(30, 3\).*\(30, 4\)"):
        PredictionShift().test(np.ones((30, 3)), np.ones((30, 4)))
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 0"):
        PredictionShift(alpha=0)
