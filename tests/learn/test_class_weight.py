"""update.class_weight=balanced: a rare class's rows weigh as much in the loss as a common class's."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from perennial.evaluate.metrics import evaluate
from perennial.learn import StatelessUpdate
from tests.conftest import build_mlp


def rare_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes, the second 3% of the rows."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.03).astype(np.int64)
    x = (rng.normal(size=(n, 4)) + y[:, None] * 1.5).astype(np.float32)
    return x, y


def test_balanced_class_weights_find_the_rare_class_that_plain_training_misses():
    x, y = rare_data(3000, seed=0)
    test_x, test_y = rare_data(3000, seed=1)
    build = partial(build_mlp, (4,), 2, hidden=(16,))
    scores = {}
    for weighting in ("none", "balanced"):
        update = StatelessUpdate(epochs=10, class_weight=weighting)
        trained = update.run(build, None, {0: (x, y)}, [0], None, seed=0).module
        assert trained.class_weights is None  # the weights belong to the update, not the version
        scores[weighting] = evaluate(trained, test_x, test_y).value("balanced_accuracy")
    assert scores["balanced"] > scores["none"] + 0.15, scores


def test_an_unknown_class_weight_is_named():
    with pytest.raises(
        ValueError, match=r"update\.class_weight must be one of \['none', 'balanced'\], got 'inverse'"
    ):
        StatelessUpdate(class_weight="inverse")
