"""The continuous-deployment loop: settings, its typed checkpoint, the windows it reads, the loop and
what a run returns."""

from perennial.loop.deployment import ContinuousDeployment
from perennial.loop.result import RunResult
from perennial.loop.settings import GUARDS, Challenger, LoopSettings
from perennial.loop.state import CHECKPOINT_KEY, LoopState
from perennial.loop.windows import Split, WindowData, load_trusted

__all__ = [
    "CHECKPOINT_KEY",
    "GUARDS",
    "Challenger",
    "ContinuousDeployment",
    "LoopSettings",
    "LoopState",
    "RunResult",
    "Split",
    "WindowData",
    "load_trusted",
]
