"""Scores of a model on a labelled array, computed with torchmetrics: accuracy, loss, and for
imbalanced streams, where accuracy hides a model that never predicts the rare class, balanced
accuracy, macro F1, AUROC and precision at a fixed recall.

The gate's paired bootstrap resamples rows thousands of times, so every metric also has a numpy
form (:func:`metric`) that the tests check against torchmetrics.

>>> target = np.array([0] * 98 + [1] * 2)             # 2% positives
>>> never = np.tile([0.99, 0.01], (100, 1))          # a model that never flags one
>>> e = Evaluation.of(target, never)
>>> round(e.accuracy, 2), round(e.value("balanced_accuracy"), 2)
(0.98, 0.5)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_precision_at_fixed_recall,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
    multiclass_precision_at_fixed_recall,
    multiclass_recall,
)
from torchmetrics.functional.regression import mean_absolute_error, mean_squared_error, r2_score

from perennial.learn.module import ClassifierModule

METRICS = ("accuracy", "balanced_accuracy", "f1", "auroc", "precision_at_recall")
# A regressor's scores. MSE and MAE are losses (lower is better); R² on given rows is 1 - MSE / the
# rows' variance, so on the same rows it orders two models as MSE does.
REGRESSION_METRICS = ("mse", "mae", "r2")
RECALL = 0.9  # precision_at_recall: the precision at the best threshold that keeps this recall
# Each task's headline figure: the one windows.csv, summary.json and the gate report first.
HEADLINE = {"classification": "accuracy", "regression": "mse"}
LOWER_IS_BETTER = frozenset({"mse", "mae", "loss"})


def check_metric(name: str, where: str = "metric", task: str = "classification") -> str:
    allowed = REGRESSION_METRICS if task == "regression" else METRICS
    if name not in allowed:
        raise ValueError(f"{where} must be one of {list(allowed)} for a {task} task, got {name!r}")
    return name


@dataclass(frozen=True)
class Evaluation:
    """Scores on one set of examples; ``correct`` keeps the per-example outcome for paired tests,
    ``target`` and ``probs`` (class probabilities) the rest for the other metrics."""

    accuracy: float
    loss: float
    f1: float
    n: int
    correct: np.ndarray
    target: np.ndarray | None = field(default=None, repr=False)
    probs: np.ndarray | None = field(default=None, repr=False)

    task = "classification"

    @classmethod
    def of(cls, target: np.ndarray, probs: np.ndarray) -> Evaluation:
        """Scores from labels and class probabilities (rows summing to 1)."""
        target, probs = np.asarray(target, np.int64), np.asarray(probs, np.float32)
        if len(target) == 0:
            return cls(float("nan"), float("nan"), float("nan"), 0, np.zeros(0, bool), target, probs)
        t, p = torch.from_numpy(target), torch.from_numpy(probs)
        k, preds = probs.shape[1], p.argmax(1)
        return cls(
            accuracy=float(multiclass_accuracy(preds, t, num_classes=k, average="micro")),
            loss=float(F.nll_loss(torch.log(p.clamp_min(1e-12)), t)),
            f1=float(multiclass_f1_score(preds, t, num_classes=k, average="macro")),
            n=len(target),
            correct=(preds == t).numpy(),
            target=target,
            probs=probs,
        )

    def value(self, name: str) -> float:
        """One metric by name (see ``METRICS``); NaN where it is undefined (AUROC of one class)."""
        check_metric(name)
        return float(self._values[name])

    def scores(self) -> dict[str, float]:
        out = {"accuracy": self.accuracy, "loss": self.loss, "f1": self.f1, "n": self.n}
        if self.probs is not None:
            out |= {name: self.value(name) for name in METRICS if name not in out}
        return out

    @cached_property
    def _values(self) -> dict[str, float]:
        values = dict.fromkeys(METRICS, float("nan")) | {"accuracy": self.accuracy, "f1": self.f1}
        if self.probs is None or self.n == 0:
            return values
        with warnings.catch_warnings():  # classes absent from a window are expected, not news
            warnings.simplefilter("ignore", UserWarning)
            return values | self._imbalance_scores()

    def _imbalance_scores(self) -> dict[str, float]:
        values = {}
        t, p = torch.from_numpy(self.target), torch.from_numpy(self.probs)
        k = self.probs.shape[1]
        present = torch.bincount(t, minlength=k) > 0
        recall = multiclass_recall(p.argmax(1), t, num_classes=k, average="none")
        values["balanced_accuracy"] = float(recall[present].mean())
        if int(present.sum()) < 2:  # AUROC and precision at recall need both sides of a split
            return values | {"auroc": float("nan"), "precision_at_recall": float("nan")}
        if k == 2:
            values["auroc"] = float(binary_auroc(p[:, 1], t))
            values["precision_at_recall"] = float(binary_precision_at_fixed_recall(p[:, 1], t, RECALL)[0])
        else:
            per_class = multiclass_auroc(p, t, num_classes=k, average="none")
            values["auroc"] = float(per_class[present].mean())
            precision, _ = multiclass_precision_at_fixed_recall(p, t, num_classes=k, min_recall=RECALL)
            values["precision_at_recall"] = float(precision[present].mean())
        return values


@dataclass(frozen=True)
class RegressionEvaluation:
    """A regressor's scores on one set of rows: MSE, MAE and R² (torchmetrics), with the per-row
    ``target`` and ``predictions`` kept for the paired tests on per-row errors.

    >>> e = RegressionEvaluation.of(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.5, 4.0]))
    >>> round(e.mse, 3), round(e.mae, 3), round(e.r2, 3), e.losses("mse").tolist()
    (0.125, 0.25, 0.9, [0.25, 0.0, 0.25, 0.0])
    """

    mse: float
    mae: float
    r2: float
    n: int
    target: np.ndarray = field(repr=False)
    predictions: np.ndarray = field(repr=False)

    task = "regression"

    @classmethod
    def of(cls, target: np.ndarray, predictions: np.ndarray) -> RegressionEvaluation:
        target = np.asarray(target, np.float64).reshape(-1)
        predictions = np.asarray(predictions, np.float64).reshape(-1)
        if len(target) == 0:
            return cls(float("nan"), float("nan"), float("nan"), 0, target, predictions)
        t, p = torch.from_numpy(target), torch.from_numpy(predictions)
        # R² of fewer than two rows, or of rows that all share one value, is undefined.
        r2 = float(r2_score(p, t)) if len(target) > 1 and np.ptp(target) > 0 else float("nan")
        return cls(
            mse=float(mean_squared_error(p, t)),
            mae=float(mean_absolute_error(p, t)),
            r2=r2,
            n=len(target),
            target=target,
            predictions=predictions,
        )

    @property
    def loss(self) -> float:
        return self.mse

    def losses(self, name: str) -> np.ndarray:
        """Per-row losses whose mean is metric ``name``: squared errors (mse) or absolute ones (mae)."""
        errors = self.predictions - self.target
        if name == "mse":
            return errors**2
        if name == "mae":
            return np.abs(errors)
        raise ValueError(f"per-row losses exist for mse and mae, not {name!r}")

    def value(self, name: str) -> float:
        check_metric(name, task="regression")
        return float(getattr(self, name))

    def scores(self) -> dict[str, float]:
        return {"mse": self.mse, "mae": self.mae, "r2": self.r2, "loss": self.mse, "n": self.n}


# The score columns of a window's row in windows.csv, per task: the served model's, and v1 never
# updated's (static) on the same labelled rows.
SCORE_COLUMNS = {
    "classification": (
        "served_accuracy",
        "static_accuracy",
        "served_balanced_accuracy",
        "served_f1",
        "served_loss",
    ),
    "regression": ("served_mse", "static_mse", "served_mae", "static_mae", "served_r2"),
}


def score_columns(
    served: Evaluation | RegressionEvaluation, static: Evaluation | RegressionEvaluation
) -> dict:
    """Window-row scores of the served model and of v1 never updated (``SCORE_COLUMNS``); a score
    that may be undefined on rows that are there (balanced accuracy, R² of rows of one value) is
    None then."""
    if served.task == "regression":
        values = (served.mse, static.mse, served.mae, static.mae, served.r2)
    else:
        values = (served.accuracy, static.accuracy, served.value("balanced_accuracy"), served.f1, served.loss)
    row = dict(zip(SCORE_COLUMNS[served.task], map(float, values), strict=True))
    for name in ("served_balanced_accuracy", "served_r2"):
        if name in row and not np.isfinite(row[name]):
            row[name] = None
    return row


def evaluate(module: ClassifierModule, x: np.ndarray, y: np.ndarray) -> Evaluation | RegressionEvaluation:
    """Score ``module`` on ``(x, y)``; an empty set scores NaN rather than failing."""
    if module.task == "regression":
        if len(y) == 0:
            return RegressionEvaluation.of(np.zeros(0), np.zeros(0))
        return RegressionEvaluation.of(y, module.predict_values(x))
    if len(y) == 0:
        return Evaluation.of(np.zeros(0, np.int64), np.zeros((0, module.n_classes), np.float32))
    probs = module.predict_logits(x).float().softmax(1).numpy()
    return Evaluation.of(np.require(y, requirements="W"), probs)


# ---- numpy forms, for the bootstrap ---------------------------------------------------------------
def metric(name: str, target: np.ndarray, probs: np.ndarray) -> float:
    """``name`` computed with numpy, equal to ``Evaluation.value`` (the tests check it)."""
    check_metric(name)
    k = probs.shape[1]
    preds = probs.argmax(1)
    if name == "accuracy":
        return float(np.mean(preds == target))
    support = np.bincount(target, minlength=k)
    present = support > 0
    if name == "balanced_accuracy":
        hits = np.bincount(target[preds == target], minlength=k)
        return float(np.mean(hits[present] / support[present]))
    if name == "f1":
        tp = np.bincount(target[preds == target], minlength=k).astype(float)
        predicted = np.bincount(preds, minlength=k)
        denom = support + predicted
        f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
        return float(f1.mean())  # torchmetrics' macro average: every class, absent ones as 0
    if present.sum() < 2:
        return float("nan")
    classes = [1] if k == 2 else np.flatnonzero(present)
    per_class = [_one_vs_rest(name, target == c, probs[:, c]) for c in classes]
    return float(np.mean(per_class))


def _one_vs_rest(name: str, positive: np.ndarray, score: np.ndarray) -> float:
    order = np.argsort(-score, kind="stable")
    score, positive = score[order], positive[order]
    # Cut only between distinct scores: tied rows go in or out together, as a threshold moves.
    last = np.r_[np.flatnonzero(np.diff(score) != 0), len(score) - 1]
    tp = np.cumsum(positive)[last].astype(float)
    fp = (last + 1) - tp
    pos, neg = positive.sum(), (~positive).sum()
    if name == "auroc":
        tpr, fpr = np.r_[0.0, tp / pos], np.r_[0.0, fp / neg]
        return float(np.trapezoid(tpr, fpr))
    recall, precision = tp / pos, tp / (tp + fp)
    ok = recall >= RECALL
    return float(precision[ok].max()) if ok.any() else 0.0
