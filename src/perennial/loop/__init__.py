"""The continuous-deployment loop: settings, its typed checkpoint, the windows it reads, and the loop."""

from perennial.loop.deployment import ContinuousDeployment
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
    "Split",
    "WindowData",
    "load_trusted",
]
