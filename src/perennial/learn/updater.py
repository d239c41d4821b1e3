"""The kinds of update: stateless retraining from scratch, stateful fine-tuning with replay, and a
hybrid of the two on a schedule."""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import lightning as L
import numpy as np
import torch

from perennial.data.window import present_features
from perennial.learn.fit import fit
from perennial.learn.module import ClassifierModule, RegressorModule
from perennial.learn.replay import ReplayBuffer
from perennial.learn.strategies import Regularizer

# update.class_weight: "balanced" weighs each class's loss by n / (classes * n_class) in the data an
# update trains on, so a rare class counts as much as a common one; "none" weighs every row alike.
CLASS_WEIGHTS = ("none", "balanced")

# The training part of each labelled window, by window index.
TrainSplits = Mapping[int, tuple[np.ndarray, np.ndarray]]


@dataclass
class TrainedCandidate:
    """A freshly trained model and what it cost, ready to be registered as a candidate version."""

    module: ClassifierModule
    kind: str
    trained_on_windows: list[int]
    n_samples: int
    n_replayed: int
    samples_processed: int
    train_seconds: float
    optimizer_state: dict


def shaped(
    build: Callable[..., ClassifierModule], known_classes: int | None, n_features: int | None
) -> ClassifierModule:
    """A fresh module from ``build`` that knows the first ``known_classes`` classes and reads the
    first ``n_features`` columns (None: all of either). ``build()`` makes one for the stream's whole
    schema; only a narrower one is asked for with those keywords, so a ``build`` without them
    serves any stream whose schema does not grow."""
    module = build()
    if (known_classes is not None and known_classes < module.n_classes) or n_features is not None:
        module = build(known_classes=known_classes, n_features=n_features)
    return module


def balanced_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Loss weights ``n / (present * n_c)`` for the classes present in ``y``, 1 for the others (they
    have no rows to weigh), as scikit-learn's "balanced".

    >>> balanced_weights(np.array([0, 0, 0, 1]), 3).tolist()
    [0.6666666865348816, 2.0, 1.0]
    """
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = len(y) / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


class Update(ABC):
    """Makes a candidate from the champion and the labelled data seen so far."""

    kind: ClassVar[str]

    def __init__(
        self,
        epochs: int,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        class_weight: str = "none",
    ) -> None:
        if epochs < 1:
            raise ValueError(f"update.epochs must be >= 1, got {epochs}")
        if batch_size < 1:
            raise ValueError(f"update.batch_size must be >= 1, got {batch_size}")
        if class_weight not in CLASS_WEIGHTS:
            raise ValueError(
                f"update.class_weight must be one of {list(CLASS_WEIGHTS)}, got {class_weight!r}"
            )
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.class_weight = class_weight

    @abstractmethod
    def start(
        self, build: Callable[[], ClassifierModule], champion: ClassifierModule | None
    ) -> ClassifierModule:
        """The module training starts from."""

    @abstractmethod
    def training_windows(self, new: list[int], seen: list[int]) -> list[int]:
        """Which labelled windows to train on, given those new since the last update and all seen."""

    def replay_count(self, n_new: int, buffer: ReplayBuffer | None) -> int:
        return 0

    def choose(self, newest_first: Iterable) -> Update:
        """The update to run next, given the registry's versions newest first (read lazily, so a
        long run pays for the versions a choice looks at, not for all of them): this one."""
        return self

    def retrain(self) -> Update:
        """The stateless retrain this update runs when fine-tuning cannot (new feature columns)."""
        settings = {"batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay}
        return StatelessUpdate(self.epochs, class_weight=self.class_weight, **settings)

    def run(
        self,
        build: Callable[..., ClassifierModule],
        champion: ClassifierModule | None,
        splits: TrainSplits,
        new: list[int],
        buffer: ReplayBuffer | None,
        seed: int,
        trainer: Mapping | None = None,
        regularizers: Sequence[Regularizer] = (),
        n_features: int | None = None,
        grow_head: bool = True,
    ) -> TrainedCandidate:
        """Train a candidate. ``n_features`` is the number of leading feature columns a fresh model
        reads (None: all); windows of ``splits`` from before those columns appeared are left out of
        a retrain. With ``grow_head`` the head covers the classes in the training data (a
        fine-tuned head grows to them); without, every class of the stream from the start."""
        windows = self.training_windows(new, sorted(splits))
        width = n_features or math.prod(splits[new[-1]][0].shape[1:])
        windows = [w for w in windows if present_features(splits[w][0]) >= width]
        x = np.concatenate([splits[w][0] for w in windows])
        y = np.concatenate([splits[w][1] for w in windows])
        data = {"x": x, "y": y}
        n_replay = self.replay_count(len(y), buffer)
        if n_replay and buffer is not None:
            drawn = buffer.draw(n_replay, seed)
            # Rows stored before the columns the model reads appeared cannot train it.
            readable = present_features(drawn["x"], rows=True) >= width
            drawn = {k: v[readable] for k, v in drawn.items()}
            n_replay = len(drawn["y"])
            data = {
                "x": np.concatenate([x, drawn["x"].astype(x.dtype)]),
                "y": np.concatenate([y, drawn["y"]]),
            }
            if "logits" in drawn:  # DER++: replayed rows carry the logits they were stored with
                data["logits"] = np.concatenate(
                    [np.zeros((len(y), drawn["logits"].shape[1]), np.float32), drawn["logits"]]
                )
                data["replayed"] = np.r_[np.zeros(len(y), bool), np.ones(n_replay, bool)]
        L.seed_everything(seed, workers=False, verbose=False)  # a fresh backbone's init is seeded too
        # Class ids are integers; a regression target is a float and its one output never grows.
        known = int(data["y"].max()) + 1 if grow_head and data["y"].dtype.kind in "iu" else None
        module = self.start(partial(shaped, build, known, n_features), champion)
        if known is not None:
            module.grow_classes(known)  # a fine-tuned head meets classes its parent never saw
        module.lr, module.weight_decay = self.lr, self.weight_decay
        if self.class_weight == "balanced":
            if module.task == "regression":
                raise ValueError(
                    "update.class_weight=balanced weighs each class's loss, and a regression target has "
                    "no classes: use update.class_weight=none"
                )
            module.class_weights = balanced_weights(data["y"], module.n_classes)
        if isinstance(module, RegressorModule):
            module.fit_target(data["y"])  # a fresh regressor learns its target's scale; a fine-tune keeps it
        inherited = module.strategy_state
        for regularizer in regularizers:
            regularizer.begin(module, inherited.get(regularizer.name))
        module.regularizers = list(regularizers)
        try:
            result = fit(
                module, data, epochs=self.epochs, batch_size=self.batch_size, seed=seed, trainer=trainer
            )
        finally:
            module.regularizers, module.class_weights = [], None
        module.optimizer_state = result.optimizer_state  # a later fine-tune of this version continues it
        # What this version hands down is computed on its new data, as continual-learning methods do.
        module.strategy_state = {
            r.name: r.end(module, {"x": x, "y": y}, inherited.get(r.name)) for r in regularizers
        }
        return TrainedCandidate(
            module=module,
            kind=self.kind,
            trained_on_windows=windows,
            n_samples=len(data["y"]),
            n_replayed=n_replay,
            samples_processed=result.samples_processed,
            train_seconds=result.seconds,
            optimizer_state=result.optimizer_state,
        )


class StatelessUpdate(Update):
    """Retrain from scratch on ``history``: "all" labelled windows, or the last K. Makes v2, v3, ..."""

    kind = "stateless"

    def __init__(self, epochs: int = 20, history: str | int = "all", **kwargs) -> None:
        super().__init__(epochs, **kwargs)
        valid_count = isinstance(history, int) and not isinstance(history, bool) and history >= 1
        if not (history == "all" or valid_count):
            raise ValueError(f"update.history must be 'all' or a window count >= 1, got {history!r}")
        self.history = history

    def start(
        self, build: Callable[[], ClassifierModule], champion: ClassifierModule | None
    ) -> ClassifierModule:
        return build()

    def training_windows(self, new: list[int], seen: list[int]) -> list[int]:
        return seen if self.history == "all" else seen[-int(self.history) :]

    def retrain(self) -> Update:
        return self


class StatefulUpdate(Update):
    """Fine-tune a copy of the champion on the new windows plus a replay sample. Makes v1.1, v1.2, ...

    ``replay_fraction`` is the share of each update's training set drawn from the buffer
    (0.5: as many replayed examples as new ones). With no buffer it is plain fine-tuning.

    ``recent_windows`` caps the new windows trained on to the newest ones. A trigger that waits
    many windows before it fires would otherwise fine-tune on all of them, mostly from before the
    drift that fired it; the older ones still reach the buffer and are replayed.
    """

    kind = "stateful"

    def __init__(
        self, epochs: int = 20, replay_fraction: float = 0.5, recent_windows: int | None = None, **kwargs
    ) -> None:
        super().__init__(epochs, **kwargs)
        if not 0 <= replay_fraction < 1:
            raise ValueError(f"update.replay_fraction must be in [0, 1), got {replay_fraction}")
        valid = recent_windows is None or (isinstance(recent_windows, int) and recent_windows >= 1)
        if not valid or isinstance(recent_windows, bool):
            raise ValueError(
                f"update.recent_windows must be null or a window count >= 1, got {recent_windows!r}"
            )
        self.replay_fraction, self.recent_windows = replay_fraction, recent_windows

    def start(
        self, build: Callable[[], ClassifierModule], champion: ClassifierModule | None
    ) -> ClassifierModule:
        if champion is None:
            return build()
        return copy.deepcopy(champion)  # the copy carries the champion's optimizer state

    def training_windows(self, new: list[int], seen: list[int]) -> list[int]:
        return list(new) if self.recent_windows is None else list(new)[-self.recent_windows :]

    def replay_count(self, n_new: int, buffer: ReplayBuffer | None) -> int:
        if buffer is None or len(buffer) == 0:
            return 0
        return round(n_new * self.replay_fraction / (1 - self.replay_fraction))


class HybridUpdate(Update):
    """Stateful fine-tuning, with a stateless retrain on all history every ``retrain_every``-th
    update: v1, v1.1, v1.2, v2, v2.1, v2.2, v3 ... at ``retrain_every=3``.

    Fine-tuning is cheap and keeps what the line has learned, but many small steps drift: each
    starts from the last, its errors and the optimizer state it inherits included. A periodic
    retrain from scratch starts a new line from all the data, and the gate decides whether it
    beats the line it would replace. Rejected candidates count as updates too.

    >>> from types import SimpleNamespace as V
    >>> hybrid = HybridUpdate(retrain_every=3)
    >>> [hybrid.choose([V(kind=k) for k in ks]).kind for ks in (["stateless"], ["stateful", "stateless"],
    ...  ["stateful", "stateful", "stateless"])]
    ['stateful', 'stateful', 'stateless']
    """

    kind = "hybrid"

    def __init__(
        self,
        epochs: int = 20,
        retrain_every: int = 3,
        replay_fraction: float = 0.5,
        recent_windows: int | None = None,
        history: str | int = "all",
        **kwargs,
    ) -> None:
        super().__init__(epochs, **kwargs)
        if isinstance(retrain_every, bool) or not isinstance(retrain_every, int) or retrain_every < 2:
            raise ValueError(f"update.retrain_every must be an integer >= 2, got {retrain_every!r}")
        self.retrain_every = retrain_every
        self.stateful = StatefulUpdate(epochs, replay_fraction, recent_windows, **kwargs)
        self.stateless = StatelessUpdate(epochs, history, **kwargs)

    def retrain(self) -> Update:
        return self.stateless

    def choose(self, newest_first: Iterable) -> Update:
        since = 0  # updates since the newest stateless version (v1 is one)
        for version in newest_first:
            if version.kind == "stateless":
                break
            since += 1
        return self.stateless if since + 1 >= self.retrain_every else self.stateful

    # Run directly (not through choose), a hybrid fine-tunes.
    def start(
        self, build: Callable[[], ClassifierModule], champion: ClassifierModule | None
    ) -> ClassifierModule:
        return self.stateful.start(build, champion)

    def training_windows(self, new: list[int], seen: list[int]) -> list[int]:
        return self.stateful.training_windows(new, seen)

    def replay_count(self, n_new: int, buffer: ReplayBuffer | None) -> int:
        return self.stateful.replay_count(n_new, buffer)
