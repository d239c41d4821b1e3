"""Simulated users: click models that turn the relevance of a shown list into clicked positions.

Relevance is graded 0 (not relevant), 1 (relevant) or 2 (highly relevant);
:func:`perennial.data.movielens.rating_grades` maps MovieLens ratings onto these grades.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

# Hofmann, Whiteson & de Rijke (2011): P(click | grade 0, 1, 2) and P(stop after a click | grade).
PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "perfect": ((0.0, 0.5, 1.0), (0.0, 0.0, 0.0)),
    "navigational": ((0.05, 0.5, 0.95), (0.2, 0.5, 0.9)),
    "informational": ((0.4, 0.7, 0.9), (0.1, 0.3, 0.5)),
}


def _probabilities(values: Sequence[float], name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) < 2:
        raise ValueError(f"{name} needs one probability per relevance grade (at least 2), got {values!r}")
    for grade, value in enumerate(values):
        if not 0.0 <= value <= 1.0:  # also rejects nan
            raise ValueError(f"{name}[{grade}] must be a probability in [0, 1], got {value!r}")
    return values


class ClickModel(ABC):
    """A simulated user: ``clicks(relevances)`` gives the 0-based positions clicked on one shown list.

    ``seed`` is an int, None (fresh entropy) or a numpy Generator to share; draws continue from it,
    and ``state_dict()`` captures the generator so a simulation can resume exactly.
    """

    n_grades: int

    def __init__(self, seed: int | np.random.Generator | None = None) -> None:
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    @abstractmethod
    def clicks(self, relevances: Sequence[int]) -> list[int]:
        """Clicked positions, in order, for a list whose items have these grades (in shown order)."""

    def _grades(self, relevances: Sequence[int]) -> np.ndarray:
        grades = np.asarray(relevances)
        if grades.ndim != 1:
            raise ValueError(f"relevances must be a flat sequence of grades, got shape {grades.shape}")
        if grades.size and (grades.dtype.kind not in "iuf" or not np.all(grades == np.round(grades))):
            raise ValueError(
                f"relevances must be whole-number grades 0..{self.n_grades - 1}, got {relevances!r}"
            )
        bad = np.flatnonzero((grades < 0) | (grades >= self.n_grades))
        if len(bad):
            raise ValueError(
                f"relevance {grades[bad[0]].item()!r} at position {bad[0]} is outside the grades "
                f"0..{self.n_grades - 1}"
            )
        return grades.astype(np.int64)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


class CascadeClickModel(ClickModel):
    """The cascade model with stops: the user reads down the list, clicks an item of grade ``g`` with
    probability ``click_probs[g]``, and after a click leaves with probability ``stop_probs[g]``.

    Presets (Hofmann et al. 2011): ``perfect``, ``navigational`` (looks for one good item and
    leaves) and ``informational`` (clicks more, reads on).

    >>> user = CascadeClickModel.preset("perfect", seed=0)
    >>> user.clicks([2, 0, 1, 2, 0, 1])
    [0, 2, 3]
    """

    def __init__(
        self,
        click_probs: Sequence[float],
        stop_probs: Sequence[float],
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__(seed)
        self.click_probs = _probabilities(click_probs, "click_probs")
        self.stop_probs = _probabilities(stop_probs, "stop_probs")
        if len(self.click_probs) != len(self.stop_probs):
            raise ValueError(
                f"click_probs and stop_probs need one probability per grade each, got "
                f"{len(self.click_probs)} and {len(self.stop_probs)}"
            )
        self.n_grades = len(self.click_probs)

    @classmethod
    def preset(cls, name: str, seed: int | np.random.Generator | None = None) -> CascadeClickModel:
        if name not in PRESETS:
            raise ValueError(f"unknown click model preset {name!r}; accepted: {list(PRESETS)}")
        click_probs, stop_probs = PRESETS[name]
        return cls(click_probs, stop_probs, seed)

    def clicks(self, relevances: Sequence[int]) -> list[int]:
        grades = self._grades(relevances)
        clicked = []
        for position, grade in enumerate(grades):
            if self.rng.random() < self.click_probs[grade]:
                clicked.append(position)
                if self.rng.random() < self.stop_probs[grade]:
                    break
        return clicked


class PositionBasedModel(ClickModel):
    """The position-based model: ``P(click at rank r) = examination[r] * attractiveness[grade]``,
    each position independently (no stop).

    ``examination`` lists the chance that each position (0-based) is looked at; positions past its
    end are never looked at. By default it is ``(1 / (r + 1)) ** eta``. ``attractiveness`` defaults to
    the navigational click probabilities (0.05, 0.5, 0.95).

    >>> user = PositionBasedModel(examination=[1.0, 0.5, 0.0], seed=0)
    >>> user.clicks([2, 2, 2])
    [0, 1]
    """

    def __init__(
        self,
        examination: Sequence[float] | None = None,
        attractiveness: Sequence[float] = PRESETS["navigational"][0],
        seed: int | np.random.Generator | None = None,
        eta: float = 1.0,
    ) -> None:
        super().__init__(seed)
        if not (isinstance(eta, int | float) and math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
        self.eta = float(eta)
        self.examination = None if examination is None else _probabilities(examination, "examination")
        self.attractiveness = _probabilities(attractiveness, "attractiveness")
        self.n_grades = len(self.attractiveness)

    def examination_probs(self, n: int) -> np.ndarray:
        """The chance that each of the first ``n`` positions is looked at."""
        if self.examination is None:
            return (1.0 / np.arange(1, n + 1)) ** self.eta
        given = np.asarray(self.examination[:n])
        return np.pad(given, (0, n - len(given)))

    def clicks(self, relevances: Sequence[int]) -> list[int]:
        grades = self._grades(relevances)
        p = self.examination_probs(len(grades)) * np.asarray(self.attractiveness)[grades]
        return np.flatnonzero(self.rng.random(len(grades)) < p).tolist()
