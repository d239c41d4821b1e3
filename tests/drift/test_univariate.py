"""UnivariateDrift: per-feature KS and chi-square tests agree with scipy, corrections with
statsmodels, a shifted feature is found and named, and bad input never crashes."""

import json

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from perennial.drift import UnivariateDrift
from perennial.stats.corrections import adjust_pvalues


def _normal(seed: int, n: int = 400, d: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_ks_statistic_and_p_value_are_scipys():
    reference, current = _normal(0, d=1), _normal(1, d=1) + 0.2
    feature = UnivariateDrift().test(reference, current).details["features"][0]
    expected = stats.ks_2samp(reference[:, 0], current[:, 0])
    assert feature["test"] == "ks"
    assert feature["statistic"] == expected.statistic
    assert feature["p_value"] == expected.pvalue


def test_chi_square_p_value_is_scipys_on_the_count_table():
    rng = np.random.default_rng(0)
    reference = rng.choice(4, size=300, p=[0.4, 0.3, 0.2, 0.1])
    current = rng.choice(4, size=200, p=[0.3, 0.3, 0.2, 0.2])
    feature = UnivariateDrift().test(reference, current).details["features"][0]
    table = np.array([np.bincount(reference, minlength=4), np.bincount(current, minlength=4)])
    expected = stats.chi2_contingency(table)
    assert feature["test"] == "chi2"
    assert feature["statistic"] == pytest.approx(expected.statistic, rel=1e-12)
    assert feature["p_value"] == pytest.approx(expected.pvalue, rel=1e-12)


@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh"])
def test_corrections_equal_statsmodels(method):
    rng = np.random.default_rng(3)
    p_values = np.r_[rng.uniform(0, 0.05, 6), rng.uniform(0, 1, 14), [0.01, 0.01, 1.0]]
    expected = multipletests(p_values, method=method)[1]
    np.testing.assert_allclose(adjust_pvalues(p_values, method), expected, rtol=1e-12)


@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh"])
def test_the_detector_reports_corrected_p_values(method):
    current = _normal(1)
    current[:, [1, 5]] += [0.15, 0.3]
    result = UnivariateDrift(correction=method).test(_normal(0), current)
    features = result.details["features"]
    expected = multipletests([f["p_value"] for f in features], method=method)[1]
    np.testing.assert_allclose([f["p_adjusted"] for f in features], expected, rtol=1e-12)
    assert result.p_value == min(expected)


def test_a_mean_shift_in_one_of_eight_features_is_detected_and_named():
    current = _normal(1)
    current[:, 4] += 0.5
    result = UnivariateDrift().test(_normal(0), current)
    assert result.drift is True
    assert result.details["drifted_features"] == [4]
    assert result.reason.startswith("1 of 8 features drifted (min Holm-adjusted p ")
    assert result.reason.endswith(", feature 4)")
    assert result.statistic == result.details["features"][4]["statistic"]
    json.dumps(result.to_dict())  # what the registry stores


@pytest.mark.parametrize("seed", range(5))
def test_samples_from_one_distribution_are_not_flagged(seed):
    result = UnivariateDrift(alpha=0.01).test(_normal(2 * seed), _normal(2 * seed + 1))
    assert result.drift is False
    assert result.reason.startswith("no drift in 8 features")


def test_one_hot_columns_are_tested_as_categories():
    rng = np.random.default_rng(0)
    reference = np.eye(3)[rng.choice(3, size=300, p=[0.6, 0.3, 0.1])]
    current = np.eye(3)[rng.choice(3, size=300, p=[0.3, 0.3, 0.4])]
    result = UnivariateDrift().test(reference, current)
    assert [f["test"] for f in result.details["features"]] == ["chi2"] * 3
    assert result.details["drifted_features"] == [0, 2]


def test_categorical_can_be_named_or_switched_off():
    reference = np.random.default_rng(0).integers(0, 3, size=(200, 2))
    current = np.random.default_rng(1).integers(0, 3, size=(200, 2))
    named = UnivariateDrift(categorical=[1]).test(reference, current)
    off = UnivariateDrift(categorical="none").test(reference, current)
    assert [f["test"] for f in named.details["features"]] == ["ks", "chi2"]
    assert [f["test"] for f in off.details["features"]] == ["ks", "ks"]


def test_images_are_flattened_to_one_feature_per_pixel():
    rng = np.random.default_rng(0)
    result = UnivariateDrift().test(rng.normal(size=(100, 1, 4, 4)), rng.normal(size=(100, 1, 4, 4)))
    assert len(result.details["features"]) == 16


def test_a_column_constant_in_both_samples_is_not_drift():
    reference, current = _normal(0, d=2), _normal(1, d=2)
    reference[:, 1] = current[:, 1] = 3.5
    result = UnivariateDrift().test(reference, current)
    constant = result.details["features"][1]
    assert (constant["p_value"], constant["note"]) == (1.0, "constant")
    assert result.drift is False


def test_a_column_constant_in_the_reference_only_is_tested_and_drifts():
    reference, current = _normal(0, d=2), _normal(1, d=2)
    reference[:, 1] = 0.0
    result = UnivariateDrift().test(reference, current)
    assert result.details["drifted_features"] == [1]
    assert result.details["features"][1]["note"].startswith("unseen values: [")


def test_non_finite_values_are_dropped_per_feature_and_counted():
    reference, current = _normal(0, d=2), _normal(1, d=2)
    reference[:3, 0] = np.nan
    current[:2, 0] = np.inf
    feature = UnivariateDrift().test(reference, current).details["features"][0]
    expected = stats.ks_2samp(reference[3:, 0], current[2:, 0])
    assert feature["p_value"] == expected.pvalue
    assert (feature["n_ref"], feature["n_cur"]) == (397, 398)
    assert feature["note"] == "dropped 3 reference and 2 current non-finite values"


def test_a_feature_mostly_missing_is_skipped_and_the_others_still_tested():
    reference, current = _normal(0, d=3), _normal(1, d=3)
    current[5:, 2] = np.nan
    result = UnivariateDrift().test(reference, current)
    skipped = result.details["features"][2]
    assert np.isnan(skipped["p_value"])
    assert "not enough data: 5 current rows, the test needs 20" in skipped["note"]
    assert result.drift is False
    assert result.details["n_tested"] == 2
    assert result.reason.endswith("; 1 skipped (not enough data)")


def test_too_few_rows_cannot_be_tested():
    result = UnivariateDrift().test(_normal(0), _normal(1, n=12))
    assert result.drift is None
    assert result.reason == "not enough data: 12 current rows, the test needs 20"
    assert np.isnan(result.statistic) and np.isnan(result.p_value)


def test_when_no_feature_can_be_tested_the_result_is_not_enough_data():
    current = _normal(1, d=2)
    current[10:] = np.nan
    result = UnivariateDrift().test(_normal(0, d=2), current)
    assert result.drift is None
    assert result.reason.startswith("not enough data: none of the 2 features")


def test_a_category_never_seen_in_the_reference_counts_toward_drift_and_is_named():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 3, size=300)
    current = np.r_[rng.integers(0, 3, size=270), np.full(30, 7)]
    result = UnivariateDrift().test(reference, current)
    assert result.drift is True
    assert result.details["features"][0]["note"] == "unseen values: [7]"


def test_different_feature_counts_raise_naming_both_shapes():
    with pytest.raises(ValueError, match=r"\(400, 8\).*\(400, 7\)"):
        UnivariateDrift().test(_normal(0), _normal(1, d=7))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 1.5}, r"alpha must be in \(0, 1\), got 1.5"),
        (
            {"correction": "sidak"},
            r"correction must be one of \['holm', 'bonferroni', 'fdr_bh'\], got 'sidak'",
        ),
        ({"categorical": "some"}, "categorical must be 'auto', 'none' or a list of column indices"),
        ({"categorical": [0, -1]}, "column indices >= 0"),
        ({"max_categories": 1}, "max_categories must be >= 2, got 1"),
        ({"min_samples": 0}, "min_samples must be >= 1, got 0"),
    ],
)
def test_bad_arguments_raise_naming_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UnivariateDrift(**kwargs)


def test_categorical_columns_out_of_range_raise():
    with pytest.raises(ValueError, match="out of range for 8 features"):
        UnivariateDrift(categorical=[9]).test(_normal(0), _normal(1))


def test_min_effect_ignores_significant_but_small_shifts():
    rng = np.random.default_rng(0)
    reference, current = rng.normal(size=(20_000, 2)), rng.normal(size=(20_000, 2))
    current[:, 0] += 0.08  # significant with 20,000 rows, but a KS gap of only ~0.03
    current[:, 1] += 1.0
    assert UnivariateDrift(alpha=0.01).test(reference, current).details["drifted_features"] == [0, 1]
    result = UnivariateDrift(alpha=0.01, min_effect=0.1).test(reference, current)
    assert result.details["drifted_features"] == [1]
    assert result.details["features"][0]["effect"] < 0.1 < result.details["features"][1]["effect"]
    with pytest.raises(ValueError, match=r"min_effect must be in \[0, 1\), got 1.5"):
        UnivariateDrift(min_effect=1.5)
