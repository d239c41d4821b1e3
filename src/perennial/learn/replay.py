"""Replay buffers: examples kept from past windows and rehearsed during stateful updates.

A buffer of capacity 0 keeps nothing, which is perennial's privacy mode: no incoming example is
stored anywhere, in memory, in checkpoints or in the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch


class ReplayBuffer(ABC):
    """A bounded store of (x, y, window) examples with torchmetrics-style state.

    ``update`` adds a window's training examples, ``sample`` draws a rehearsal set, and
    ``state_dict`` / ``load_state_dict`` carry the contents through checkpoints (tensors only,
    so they save as safetensors). Randomness is derived from ``seed`` and the number of examples
    seen, so a resumed run draws exactly what an uninterrupted one would.
    """

    def __init__(self, capacity: int, seed: int = 0, max_gib: float = 4.0) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"strategy.buffer.capacity must be a whole number >= 0, got {capacity!r}")
        if not max_gib > 0:
            raise ValueError(f"strategy.buffer.max_gib must be > 0, got {max_gib!r}")
        self.capacity = capacity
        self.seed = seed
        self.max_gib = max_gib
        self.x: np.ndarray | None = None
        self.y = np.empty(0, np.int64)
        self.window = np.empty(0, np.int64)
        self.logits: np.ndarray | None = None  # kept only for strategies that replay logits (DER++)
        self.seen = 0

    def __len__(self) -> int:
        return len(self.y)

    def _rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.seen, salt])

    def update(self, x: np.ndarray, y: np.ndarray, window: int, logits: np.ndarray | None = None) -> None:
        """Offer a window's examples (and optionally the model's logits for them) to the buffer;
        which ones stay depends on the policy."""
        if self.capacity == 0 or len(y) == 0:
            self.seen += len(y)
            return
        if self.x is None:
            self._check_room(x)
            self.x = np.empty((0, *x.shape[1:]), dtype=x.dtype)
            if logits is not None:
                self.logits = np.empty((0, logits.shape[1]), np.float32)
        if (logits is None) != (self.logits is None):
            raise ValueError("a buffer that keeps logits needs them with every update, and only then")
        # Class ids stay int64; a regression target keeps its float values.
        y = np.asarray(y, np.float32 if np.asarray(y).dtype.kind == "f" else np.int64)
        if len(self.y) == 0:
            self.y = self.y.astype(y.dtype)
        keep_old, keep_new = self._select(y)
        if self.logits is not None:
            self.logits = np.concatenate([self.logits[keep_old], np.asarray(logits, np.float32)[keep_new]])
        self.x = np.concatenate([self.x[keep_old], x[keep_new]])
        self.y = np.concatenate([self.y[keep_old], y[keep_new]])
        self.window = np.concatenate([self.window[keep_old], np.full(len(keep_new), window, np.int64)])
        self.seen += len(y)

    def _check_room(self, x: np.ndarray) -> None:
        """Refuse a capacity whose examples would not fit in ``max_gib``, before storing any."""
        per_example = max(1, x[:1].nbytes)
        allowed = int(self.max_gib * 2**30 // per_example)
        if self.capacity > allowed:
            raise ValueError(
                f"strategy.buffer.capacity={self.capacity:,} needs "
                f"{self.capacity * per_example / 2**30:.1f} GiB "
                f"for examples of shape {x.shape[1:]}; allowed range is 0..{allowed:,} "
                f"(strategy.buffer.max_gib={self.max_gib})"
            )

    @abstractmethod
    def _select(self, y_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of stored examples to keep, and of new examples to add (at most ``capacity`` in all)."""

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` stored examples drawn without replacement."""
        drawn = self.draw(n, seed)
        return drawn["x"], drawn["y"]

    def draw(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """Up to ``n`` stored examples drawn without replacement, with their window and any logits."""
        if n <= 0 or len(self) == 0 or self.x is None:
            return {"x": np.empty((0,)), "y": np.empty(0, self.y.dtype), "window": np.empty(0, np.int64)}
        idx = np.random.default_rng(seed).permutation(len(self))[: min(n, len(self))]
        drawn = {"x": self.x[idx], "y": self.y[idx], "window": self.window[idx]}
        if self.logits is not None:
            drawn["logits"] = self.logits[idx]
        return drawn

    def state_dict(self) -> dict:
        x = self.x if self.x is not None else np.empty(0, np.float32)
        return {
            "x": torch.from_numpy(np.ascontiguousarray(x)),
            "y": torch.from_numpy(self.y),
            "window": torch.from_numpy(self.window),
            "seen": self.seen,
            "has_x": self.x is not None,
            **({"logits": torch.from_numpy(self.logits)} if self.logits is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.x = state["x"].numpy() if state["has_x"] else None
        y = state["y"].numpy()
        self.y = y.astype(np.float32 if y.dtype.kind == "f" else np.int64)
        self.window = state["window"].numpy().astype(np.int64)
        self.logits = state["logits"].numpy() if "logits" in state else None
        self.seen = int(state["seen"])


class ReservoirBuffer(ReplayBuffer):
    """Reservoir sampling (Vitter's algorithm R): every example seen so far is kept with equal chance.

    >>> buf = ReservoirBuffer(capacity=100, seed=0)
    >>> for w in range(10):
    ...     buf.update(np.zeros((50, 2), np.float32), np.full(50, w % 2), window=w)
    >>> len(buf), sorted(set(buf.window.tolist())) == list(range(10))
    (100, True)
    """

    def _select(self, y_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng()
        slots = np.arange(len(self))  # slot -> stored index, or -(1 + new index)
        slots = np.concatenate([slots, np.full(max(0, self.capacity - len(self)), -(10**12))])
        filled = len(self)
        for i in range(len(y_new)):
            position = self.seen + i
            if filled < self.capacity:
                slots[filled] = -(1 + i)
                filled += 1
            else:
                j = rng.integers(0, position + 1)
                if j < self.capacity:
                    slots[j] = -(1 + i)
        slots = slots[:filled]
        return slots[slots >= 0], -(slots[slots < 0] + 1)


class ClassBalancedBuffer(ReplayBuffer):
    """Equal room for every class seen so far, so rare classes are not crowded out by common ones.

    Within a class the kept examples are a uniform random subset of those seen.

    >>> buf = ClassBalancedBuffer(capacity=20, seed=0)
    >>> buf.update(np.zeros((100, 2), np.float32), np.r_[np.zeros(95), np.ones(5)].astype(int), window=0)
    >>> np.bincount(buf.y).tolist()
    [15, 5]
    """

    def __init__(self, capacity: int, seed: int = 0, max_gib: float = 4.0) -> None:
        super().__init__(capacity, seed, max_gib)
        self.seen_per_class: dict[int, int] = {}

    def _select(self, y_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if y_new.dtype.kind == "f":
            raise ValueError(
                "a class-balanced buffer (strategy=replay_balanced) keeps equal room per "
                "class, and a regression target has no classes: use strategy=replay (a reservoir)"
            )
        rng = self._rng()
        seen_before = dict(self.seen_per_class)
        for c, k in zip(*np.unique(y_new, return_counts=True), strict=True):
            self.seen_per_class[int(c)] = self.seen_per_class.get(int(c), 0) + int(k)
        classes = np.array(sorted(self.seen_per_class))
        stored = [np.flatnonzero(self.y == c) for c in classes]
        new = [np.flatnonzero(y_new == c) for c in classes]
        quota = self._quotas(classes, np.array([len(s) + len(n) for s, n in zip(stored, new, strict=True)]))
        keep_old, keep_new = [], []
        for c, q, old_c, new_c in zip(classes, quota, stored, new, strict=True):
            # The stored examples are a uniform sample of the class's earlier ones, so drawing how
            # many new ones to keep from a hypergeometric keeps the class a uniform sample of all seen.
            n_new = rng.hypergeometric(len(new_c), seen_before.get(int(c), 0), q) if len(new_c) else 0
            n_old = min(q - n_new, len(old_c))
            n_new = min(q - n_old, len(new_c))
            keep_old.append(rng.permutation(old_c)[:n_old])
            keep_new.append(rng.permutation(new_c)[:n_new])
        return np.sort(np.concatenate(keep_old)).astype(int), np.sort(np.concatenate(keep_new)).astype(int)

    def _quotas(self, classes: np.ndarray, available: np.ndarray) -> np.ndarray:
        """Split the capacity evenly; room a small class cannot use goes to the others."""
        quota = np.zeros(len(classes), int)
        room, open_ = self.capacity, np.ones(len(classes), bool)
        while room > 0 and open_.any():
            share = max(1, room // int(open_.sum()))
            for i in np.flatnonzero(open_):
                add = min(share, available[i] - quota[i], room)
                quota[i] += add
                room -= add
                if quota[i] >= available[i]:
                    open_[i] = False
                if room == 0:
                    break
        return quota

    def state_dict(self) -> dict:
        return {**super().state_dict(), "seen_per_class": {str(k): v for k, v in self.seen_per_class.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.seen_per_class = {int(k): int(v) for k, v in state.get("seen_per_class", {}).items()}
