"""Drift detectors: is the newest data different from the reference, or has a stream changed?

- Two-sample tests (``test(reference, current) -> DriftResult``): ``UnivariateDrift`` (per
  feature, KS or chi-square, corrected for many features), ``MMDDrift`` (a kernel test over all
  features or embeddings at once) and ``PredictionShift`` (the mix of predicted classes).
- Streaming detectors (``update(value) -> bool``) on a sequence such as a model's errors:
  ``ADWIN`` and ``PageHinkley``.
"""

from perennial.drift.base import DriftResult, StreamDetector, TwoSampleDetector
from perennial.drift.mmd import MMDDrift
from perennial.drift.predictions import PredictionShift
from perennial.drift.streaming import ADWIN, PageHinkley
from perennial.drift.univariate import UnivariateDrift

__all__ = [
    "ADWIN",
    "DriftResult",
    "MMDDrift",
    "PageHinkley",
    "PredictionShift",
    "StreamDetector",
    "TwoSampleDetector",
    "UnivariateDrift",
]
