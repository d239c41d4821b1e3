"""Power and sample sizes of the fixed-horizon two-sample z-test: how many units a rollout needs to
detect a given change, and the chance it detects it with a given number."""

from __future__ import annotations

import math
from numbers import Real

from scipy import optimize, stats

from perennial.stats._checks import check_alpha, check_choice, check_positive
from perennial.stats.tests import ALTERNATIVES


def _normal_power(effect_size: float, n_a: float, alpha: float, ratio: float, alternative: str) -> float:
    """Power of a two-sample z-test with standardised effect ``effect_size``, ``n_a`` control and
    ``ratio * n_a`` treatment units: statsmodels' ``NormalIndPower().power``, term for term."""
    scale = effect_size * math.sqrt(n_a * ratio / (1 + ratio))
    tail = alpha / 2 if alternative == "two-sided" else alpha
    power = 0.0
    if alternative in ("two-sided", "larger"):
        power += stats.norm.sf(stats.norm.isf(tail) - scale)
    if alternative in ("two-sided", "smaller"):
        power += stats.norm.cdf(stats.norm.ppf(tail) - scale)
    return float(power)


def _check_design(alpha: float, power: float, ratio: float, alternative: str) -> None:
    alpha = check_alpha(alpha)
    check_alpha(power, "power")
    if power <= alpha:
        raise ValueError(f"power must be greater than alpha = {alpha}, got {power!r}")
    check_positive(ratio, "ratio")
    check_choice(alternative, "alternative", ALTERNATIVES)


def _check_min_effect(min_effect: float, alternative: str) -> float:
    if not (isinstance(min_effect, Real) and math.isfinite(min_effect)) or min_effect == 0:
        raise ValueError(f"min_effect must be a finite non-zero number, got {min_effect!r}")
    if (alternative == "larger" and min_effect < 0) or (alternative == "smaller" and min_effect > 0):
        sign = ">" if alternative == "larger" else "<"
        raise ValueError(f"min_effect must be {sign} 0 for alternative={alternative!r}, got {min_effect!r}")
    return float(min_effect)


def _sample_size(effect_size: float, alpha: float, power: float, ratio: float, alternative: str) -> int:
    tail = alpha / 2 if alternative == "two-sided" else alpha
    d = abs(effect_size)
    # Closed form for the near tail; a two-sided test also rejects in the far tail, which only adds
    # power, so the exact root (what statsmodels solves for) lies just below this one.
    n_near = ((stats.norm.isf(tail) + stats.norm.isf(1 - power)) / d) ** 2 * (1 + 1 / ratio)
    if alternative != "two-sided":
        return math.ceil(n_near - 1e-9)
    n_exact = optimize.brentq(
        lambda n: _normal_power(d, n, alpha, ratio, alternative) - power, 1e-12 * n_near, n_near, xtol=1e-10
    )
    return math.ceil(n_exact - 1e-9)


def _cohens_h(p_control: float, effect: float) -> float:
    if not (isinstance(p_control, Real) and 0 < p_control < 1):
        raise ValueError(f"p_control must be in (0, 1), got {p_control!r}")
    p_treatment = p_control + effect
    if not 0 <= p_treatment <= 1:
        raise ValueError(
            f"p_control + effect must be a rate in [0, 1], got {p_control} + {effect} = {p_treatment}"
        )
    return 2 * math.asin(math.sqrt(p_treatment)) - 2 * math.asin(math.sqrt(p_control))


def sample_size_proportions(
    p_control: float,
    min_effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    alternative: str = "two-sided",
) -> int:
    """Control-arm units needed to detect a change of conversion rate from ``p_control`` to
    ``p_control + min_effect`` with a fixed-horizon z-test; the treatment arm needs
    ``ceil(ratio * n)``. Rounded up.

    The effect is measured as Cohen's h, ``2 asin(sqrt(p_b)) - 2 asin(sqrt(p_a))`` (the arcsine
    transform makes the variance independent of the rate), so the answer equals statsmodels'
    ``NormalIndPower().solve_power(proportion_effectsize(p_b, p_a), ...)`` rounded up. It is within
    about 1% of the plain normal approximation with unpooled variances.

    >>> sample_size_proportions(0.10, 0.02)
    3835
    >>> sample_size_proportions(0.10, -0.01, alternative="smaller")
    10624
    """
    _check_design(alpha, power, ratio, alternative)
    min_effect = _check_min_effect(min_effect, alternative)
    return _sample_size(_cohens_h(p_control, min_effect), alpha, power, ratio, alternative)


def sample_size_means(
    sd: float,
    min_effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    alternative: str = "two-sided",
) -> int:
    """Control-arm units needed to detect a shift of ``min_effect`` in a metric with standard
    deviation ``sd`` (the treatment arm needs ``ceil(ratio * n)``), rounded up:
    ``n = (1 + 1/ratio) sd² (z_{1-alpha/2} + z_{power})² / min_effect²`` (about ``16 sd² / d²`` at 5% and
    80%), solved exactly as statsmodels' ``NormalIndPower().solve_power(min_effect / sd, ...)``.

    >>> sample_size_means(sd=1.0, min_effect=0.1)
    1570
    """
    _check_design(alpha, power, ratio, alternative)
    sd = check_positive(sd, "sd")
    min_effect = _check_min_effect(min_effect, alternative)
    return _sample_size(min_effect / sd, alpha, power, ratio, alternative)


def power_proportions(
    p_control: float,
    effect: float,
    n_per_arm: float,
    alpha: float = 0.05,
    ratio: float = 1.0,
    alternative: str = "two-sided",
) -> float:
    """Power of the fixed-horizon z-test with ``n_per_arm`` control units (and ``ratio`` times as
    many treatment units) when the rate moves from ``p_control`` to ``p_control + effect``; Cohen's
    h as in ``sample_size_proportions``, equal to statsmodels' ``NormalIndPower().power``.
    With no effect the power is ``alpha``.

    >>> round(power_proportions(0.10, 0.02, 3835), 3)
    0.8
    """
    alpha = check_alpha(alpha)
    check_positive(n_per_arm, "n_per_arm")
    check_positive(ratio, "ratio")
    check_choice(alternative, "alternative", ALTERNATIVES)
    if not (isinstance(effect, Real) and math.isfinite(effect)):
        raise ValueError(f"effect must be a finite number, got {effect!r}")
    return _normal_power(_cohens_h(p_control, effect), n_per_arm, alpha, ratio, alternative)
