"""MMDDrift: a shifted distribution is found, the same one is not, results repeat exactly, and
constant or broken input does not crash."""

import json

import numpy as np
import pytest

from perennial.drift import MMDDrift


def _normal(seed: int, n: int = 200, d: int = 8, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, 1.0, size=(n, d))


def _mmd2_biased(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """The V-statistic written out, in float64."""

    def kernel(a, b):
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * bandwidth**2))

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def test_a_shifted_distribution_is_detected():
    result = MMDDrift(n_permutations=200, device="cpu").test(_normal(0), _normal(1, shift=0.4))
    assert result.drift is True
    assert result.p_value < 0.05
    json.dumps(result.to_dict())  # what the registry stores


def test_the_same_distribution_is_not():
    result = MMDDrift(n_permutations=200, device="cpu").test(_normal(0), _normal(1))
    assert result.drift is False
    assert result.p_value > 0.05


def test_a_result_repeats_exactly_with_the_same_seed():
    reference, current = _normal(0), _normal(1, shift=0.1)
    first = MMDDrift(n_permutations=100, seed=3, device="cpu").test(reference, current)
    again = MMDDrift(n_permutations=100, seed=3, device="cpu").test(reference, current)
    assert first == again


def test_statistic_is_the_biased_mmd2_and_p_value_counts_permutations():
    reference, current = _normal(0, n=60, d=3), _normal(1, n=40, d=3, shift=0.3)
    result = MMDDrift(n_permutations=19, bandwidth=1.5, device="cpu").test(reference, current)
    assert result.statistic == pytest.approx(_mmd2_biased(reference, current, 1.5), rel=1e-4)
    assert (result.p_value * 20) == pytest.approx(round(result.p_value * 20))


def test_median_bandwidth_is_the_median_pairwise_distance():
    reference, current = _normal(0, n=50, d=3), _normal(1, n=50, d=3)
    pooled = np.r_[reference, current]
    distances = np.sqrt(((pooled[:, None] - pooled[None]) ** 2).sum(-1))[np.triu_indices(100, k=1)]
    result = MMDDrift(n_permutations=10, device="cpu").test(reference, current)
    # torch's median takes the lower of the two middle values.
    assert result.details["bandwidth"] == pytest.approx(np.sort(distances)[len(distances) // 2 - 1], rel=1e-4)


def test_constant_data_does_not_crash_and_is_not_drift():
    result = MMDDrift(n_permutations=50, device="cpu").test(np.full((30, 4), 2.5), np.full((40, 4), 2.5))
    assert (result.drift, result.statistic, result.p_value) == (False, 0.0, 1.0)
    assert result.details["note"] == "all rows are identical"


def test_mostly_repeated_rows_take_the_bandwidth_from_the_distinct_pairs():
    reference = np.zeros((40, 3))
    current = np.zeros((40, 3))
    current[:10] = 3.0
    result = MMDDrift(n_permutations=50, device="cpu").test(reference, current)
    assert result.details["bandwidth"] == pytest.approx(np.sqrt(27), rel=1e-4)
    assert result.details["note"] == "median distance is 0; bandwidth from the non-zero distances"


def test_non_finite_rows_are_dropped_and_too_few_rows_cannot_be_tested():
    current = _normal(1, n=30)
    current[:25, 2] = np.nan
    result = MMDDrift(device="cpu").test(_normal(0), current)
    assert result.drift is None
    assert result.reason == "not enough data: 5 current rows, the test needs 10"
    assert result.details["dropped_current_rows"] == 25


def test_max_samples_subsamples_each_side():
    result = MMDDrift(n_permutations=20, max_samples=50, device="cpu").test(_normal(0), _normal(1, n=120))
    assert (result.details["n_reference"], result.details["n_current"]) == (50, 50)


def test_embeddings_of_any_shape_are_flattened_and_shapes_must_match():
    rng = np.random.default_rng(0)
    result = MMDDrift(n_permutations=20, device="cpu").test(
        rng.normal(size=(40, 2, 3)), rng.normal(size=(40, 6))
    )
    assert result.drift is not None
    with pytest.raises(ValueError, match=r"\(40, 5\).*\(40, 6\)"):
        MMDDrift(device="cpu").test(rng.normal(size=(40, 5)), rng.normal(size=(40, 6)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": -0.1}, r"alpha must be in \(0, 1\), got -0.1"),
        ({"n_permutations": 0}, "n_permutations must be >= 1, got 0"),
        ({"bandwidth": "scott"}, "bandwidth must be 'median' or a number > 0, got 'scott'"),
        ({"max_samples": 5}, "max_samples must be None or >= 10, got 5"),
        ({"device": "gpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    ],
)
def test_bad_arguments_raise_naming_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MMDDrift(**kwargs)
