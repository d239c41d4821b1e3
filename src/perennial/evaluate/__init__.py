"""Evaluation: metrics on windows, the accuracy matrix and forgetting, the promotion gate, the
screen for poisoned windows, and the freshness study (`perennial.evaluate.freshness`, imported on
its own: it draws plots)."""

from perennial.evaluate.gate import GateDecision, PromotionGate
from perennial.evaluate.matrix import backward_transfer, forgetting
from perennial.evaluate.metrics import Evaluation, evaluate
from perennial.evaluate.screening import ScreenResult, WindowScreen

__all__ = [
    "Evaluation",
    "GateDecision",
    "PromotionGate",
    "ScreenResult",
    "WindowScreen",
    "backward_transfer",
    "evaluate",
    "forgetting",
]
