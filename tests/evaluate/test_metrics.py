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
    basics = {"accuracy": result.accuracy, "loss": result.loss, "f1": result.f1, "n": 400}
    assert result.scores() == basics | {
        name: result.value(name) for name in ("balanced_accuracy", "auroc", "precision_at_recall")
    }


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


def _probs(rng, target, k, skill):
    logits = rng.normal(size=(len(target), k)) + skill * np.eye(k)[target] * rng.random((len(target), 1))
    p = np.exp(logits)
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(("k", "seed"), [(2, 0), (2, 1), (3, 2), (5, 3)])
def test_the_numpy_metrics_of_the_bootstrap_equal_torchmetrics_and_sklearn(k, seed):
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from perennial.evaluate.metrics import METRICS, Evaluation, metric

    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, 300)
    probs = _probs(rng, target, k, 2.0)
    e = Evaluation.of(target, probs)
    for name in METRICS:
        assert metric(name, target, probs) == pytest.approx(e.value(name), abs=1e-5), name
    assert e.value("balanced_accuracy") == pytest.approx(balanced_accuracy_score(target, probs.argmax(1)))
    ovr = {"multi_class": "ovr"} if k > 2 else {}
    expected = roc_auc_score(target, probs[:, 1] if k == 2 else probs, **ovr)
    assert e.value("auroc") == pytest.approx(expected, abs=1e-5)


def test_accuracy_hides_a_model_that_never_predicts_the_rare_class():
    from perennial.evaluate import PromotionGate
    from perennial.evaluate.metrics import Evaluation

    rng = np.random.default_rng(0)
    target = (rng.random(2000) < 0.02).astype(int)  # 2% positives, as in fraud
    finds_some = np.where(target[:, None] == 1, [0.3, 0.7], [0.9, 0.1])
    finds_some[rng.random(2000) < 0.02] = [0.4, 0.6]  # and a few false alarms
    champion = Evaluation.of(target, finds_some)
    candidate = Evaluation.of(target, np.tile([0.99, 0.01], (2000, 1)))  # always "no fraud"
    assert candidate.accuracy >= champion.accuracy - 0.01  # accuracy sees no harm ...
    assert candidate.value("balanced_accuracy") == pytest.approx(0.5)  # ... the rare class is lost
    assert PromotionGate(tolerance=0.02).decide(candidate, champion).promote
    for name in ("balanced_accuracy", "f1", "auroc", "precision_at_recall"):
        decision = PromotionGate(metric=name, bootstrap_samples=300).decide(candidate, champion)
        assert not decision.promote and decision.numbers["metric"] == name, name
    with pytest.raises(ValueError, match=r"gate\.metric must be one of"):
        PromotionGate(metric="vibes")
