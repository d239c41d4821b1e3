"""Accuracy, loss and F1 of a model on a labelled array, computed with torchmetrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from perennial.learn.module import ClassifierModule


@dataclass(frozen=True)
class Evaluation:
    """Scores on one set of examples; ``correct`` keeps the per-example outcome for paired tests."""

    accuracy: float
    loss: float
    f1: float
    n: int
    correct: np.ndarray

    def scores(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "loss": self.loss, "f1": self.f1, "n": self.n}


def evaluate(module: ClassifierModule, x: np.ndarray, y: np.ndarray) -> Evaluation:
    """Score ``module`` on ``(x, y)``; an empty set scores NaN rather than failing."""
    if len(y) == 0:
        return Evaluation(float("nan"), float("nan"), float("nan"), 0, np.zeros(0, bool))
    logits = module.predict_logits(x)
    target = torch.as_tensor(np.require(y, requirements="W"))  # a read-only view would warn
    k = module.n_classes
    preds = logits.argmax(1)
    return Evaluation(
        accuracy=float(multiclass_accuracy(preds, target, num_classes=k, average="micro")),
        loss=float(F.cross_entropy(logits, target)),
        f1=float(multiclass_f1_score(preds, target, num_classes=k, average="macro")),
        n=len(y),
        correct=(preds == target).numpy(),
    )
