"""The trigger contract: observe each labelled window, say whether to update, checkpoint like a metric."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from perennial.data.window import Window

if TYPE_CHECKING:
    from perennial.learn.module import ClassifierModule


@dataclass(frozen=True)
class Observation:
    """What the loop knows about a window once its labels are in.

    Schedule triggers only count. Performance triggers read ``served`` (the champion's scores on the
    window, measured before its labels were used) against ``champion_metrics`` (the champion's own
    held-out scores when it was registered). Drift triggers compare the window with reference rows:
    ``reference(positions, max_rows)`` returns the training rows of those windows (positions in the
    loop's window list), at most ``max_rows`` of them in a fixed seeded subsample, and
    ``champion_windows`` names the windows of the champion's latest training.
    """

    window: Window
    served: dict[str, float]
    champion_samples: int
    position: int = 0
    champion: ClassifierModule | None = None
    champion_metrics: dict[str, Any] = field(default_factory=dict)
    champion_windows: tuple[int, ...] = ()
    probabilities: np.ndarray | None = None
    reference: Callable[[Sequence[int], int], np.ndarray] | None = None


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
    continues exactly where it stopped. State is what the trigger counted or measured: its public
    attributes, less those named like a constructor argument, which are settings (as in
    scikit-learn). A resumed trigger keeps the settings it was built with, so a changed threshold is
    in force after a resume; settings keys in older checkpoints are ignored. ``last_test()``
    reports the statistic and p-value a trigger computed on the latest window, fired or not, for
    windows.csv.

    >>> from perennial.triggers import VolumeTrigger
    >>> counted = VolumeTrigger(fraction=0.5)
    >>> counted.new_samples, counted.champion_samples = 40, 100
    >>> counted.state_dict()
    {'new_samples': 40, 'champion_samples': 100}
    >>> resumed = VolumeTrigger(fraction=0.3)
    >>> resumed.load_state_dict({**counted.state_dict(), "fraction": 0.5})  # an older checkpoint
    >>> resumed.fraction, resumed.fires().reason
    (0.3, "40 new labelled examples, 40% of the champion's")
    """

    name: str = "trigger"

    @abstractmethod
    def update(self, obs: Observation) -> None: ...

    @abstractmethod
    def fires(self) -> Firing | None: ...

    @abstractmethod
    def reset(self) -> None:
        """Called after an update was made, whatever the gate decided."""

    def last_test(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        settings = self._settings()
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in settings}

    def load_state_dict(self, state: dict) -> None:
        settings = self._settings()
        vars(self).update({k: v for k, v in state.items() if k not in settings})

    @classmethod
    def _settings(cls) -> frozenset[str]:
        """The constructor's argument names: settings, never state."""
        return frozenset(inspect.signature(cls.__init__).parameters) - {"self"}


class Cooldown:
    """A quiet period after each update: for ``windows`` windows after an update (or the first model) a
    trigger that tests every window keeps testing but does not fire, so one drift does not set off an
    update per window while the new model settles. 0 lets it fire on the very next window.

    >>> c = Cooldown(1)
    >>> c.tick(); c.ready()
    False
    >>> c.tick(); c.ready()
    True
    """

    def __init__(self, windows: int = 0) -> None:
        if not isinstance(windows, int) or windows < 0:
            raise ValueError(f"trigger.cooldown must be a whole number of windows >= 0, got {windows!r}")
        self.windows = windows
        self.since_update = 0

    def tick(self) -> None:
        self.since_update += 1

    def ready(self) -> bool:
        return self.windows == 0 or self.since_update > self.windows

    def reset(self) -> None:
        self.since_update = 0

    def state_dict(self) -> dict:
        return {"since_update": self.since_update}

    def load_state_dict(self, state: dict) -> None:
        # ``windows`` is a setting: older checkpoints carry it, and it stays as constructed.
        self.since_update = int(state["since_update"])
