"""The trigger contract: observe each labelled window, say whether to update, checkpoint like a metric."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import numpy as np

from perennial.data.window import Window


@dataclass(frozen=True)
class Observation:
    """What the loop knows about a window once its labels are in.

    Drift and performance triggers read ``window.x`` and ``served``; schedule triggers only count.
    """

    window: Window
    served: dict[str, float]
    champion_samples: int
    predictions: np.ndarray | None = None


@dataclass(frozen=True)
class Firing:
    """Why a trigger fired; stored with the version it caused and in windows.csv."""

    name: str
    reason: str
    statistic: float | None = None
    p_value: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Trigger(ABC):
    """``update(obs)`` after each labelled window, ``fires()`` to ask, ``reset()`` after an update.

    State travels through ``state_dict`` / ``load_state_dict`` (JSON-able), so a resumed run
    continues exactly where it stopped.
    """

    name: str = "trigger"

    @abstractmethod
    def update(self, obs: Observation) -> None: ...

    @abstractmethod
    def fires(self) -> Firing | None: ...

    @abstractmethod
    def reset(self) -> None:
        """Called after an update was made, whatever the gate decided."""

    def state_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)
