"""Scores on a window agree with scikit-learn, and an empty window scores NaN instead of failing."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, log_loss
from torch import nn

from perennial.evaluate import evaluate
from perennial.learn import ClassifierModule


def _logits_model(k: int) -> ClassifierModule:
    """A model whose input *is* its logits, so a test picks the predictions."""
    return ClassifierModule(nn.Identity(), k)


@pytest.mark.parametrize(("k", "seed"), [(2, 0), (3, 1), (5, 2), (10, 3)])
def test_scores_match_sklearn_on_random_predictions(k, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(400, k)).astype(np.float32)
    y = rng.integers(0, k, size=400)
    result = evaluate(_logits_model(k), logits, y)
    preds = logits.argmax(1)
    assert result.n == 400
    assert result.accuracy == pytest.approx(accuracy_score(y, preds), abs=1e-6)
    assert result.f1 == pytest.approx(f1_score(y, preds, average="macro"), abs=1e-6)
    probs = torch.softmax(torch.as_tensor(logits), 1).numpy()
    assert result.loss == pytest.approx(log_loss(y, probs, labels=range(k)), abs=1e-5)
    np.testing.assert_array_equal(result.correct, preds == y)
    assert result.scores() == {"accuracy": result.accuracy, "loss": result.loss, "f1": result.f1, "n": 400}


def test_macro_f1_ignores_classes_absent_from_the_window():
    y = np.array([0, 0, 1, 1, 0])
    logits = np.eye(4, dtype=np.float32)[[0, 1, 1, 0, 0]]
    result = evaluate(_logits_model(4), logits, y)
    assert result.f1 == pytest.approx(f1_score(y, logits.argmax(1), average="macro"), abs=1e-6)


def test_perfect_predictions_score_one():
    y = np.array([2, 0, 1, 1])
    result = evaluate(_logits_model(3), np.eye(3, dtype=np.float32)[y] * 10, y)
    assert result.accuracy == result.f1 == 1.0 and result.correct.all()


def test_empty_window_scores_nan():
    result = evaluate(_logits_model(3), np.empty((0, 3), np.float32), np.empty(0, np.int64))
    assert result.n == 0 and len(result.correct) == 0
    assert np.isnan(result.accuracy) and np.isnan(result.loss) and np.isnan(result.f1)
