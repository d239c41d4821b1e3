"""A session model for cold users: a GRU reads a session's items in order and scores the whole catalogue
for the next one (GRU4Rec-style, output tied to the item embeddings). It has no per-user parameters, so
a user is served from their first interaction, and every interaction moves the ranking.

Why a GRU rather than self-attention (SASRec): serving keeps one hidden state of ``dim`` floats and the
last ``max_len`` item ids per session, so an interaction costs at most ``max_len`` recurrent steps plus
one product with the item embeddings, whatever the session's length, and a live session weighs a few
hundred bytes; on a few hundred training users
the smaller model is also the one less likely to overfit.

Tokens: 0 pads, 1 starts a session (so an empty session is ranked by the model's learned
start-of-session distribution, not by a popularity fallback), and catalogue row ``r`` is token
``r + 2``. Training (:class:`SessionLearner`) cuts each user's time-ordered items into chunks of
``max_len`` positions, scores each position's prediction against the user's next items with
full-softmax cross-entropy over the catalogue, and fits through :func:`perennial.learn.fit.fit`;
window by window the model is fine-tuned from its previous weights on the new chunks plus as many
replayed from a reservoir of past ones.

>>> import pandas as pd
>>> chain = pd.DataFrame({"user": np.repeat(np.arange(40), 10), "item": np.tile(np.arange(10), 40),
...                       "timestamp": np.tile(np.arange(10), 40)})
>>> learner = SessionLearner(dim=16, max_len=10, horizon=1, lr=0.01, epochs=30, seed=0)
>>> learner.update(chain, window=0).chunks
40
>>> learner.model.rank([0, 1, 2], k=1, exclude=[0, 1, 2])  # item i is always followed by item i + 1
[3]
>>> state = learner.model.start()  # serving: a state per live session
>>> for item in (0, 1, 2, 3):
...     state = learner.model.observe(state, item)
>>> learner.model.rank_state(state, k=1, exclude=state.items)
[4]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from perennial.learn.fit import fit

PAD, START, OFFSET = 0, 1, 2  # token ids; catalogue row r is token r + OFFSET
IGNORE = -100  # a padded target (cross_entropy's ignore_index)
WEIGHTS = (
    "embedding",
    "item_bias",
    "gru.weight_ih_l0",
    "gru.weight_hh_l0",
    "gru.bias_ih_l0",
    "gru.bias_hh_l0",
)


def item_ids(values: Iterable[Any] | np.ndarray, what: str = "item id") -> np.ndarray:
    """``values`` as int64 item ids, or a ``TypeError`` naming the first that is not a whole number."""
    if isinstance(values, torch.Tensor):
        values = values.cpu().numpy()
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return values.astype(np.int64).reshape(-1)
    values = values.reshape(-1).tolist() if isinstance(values, np.ndarray) else list(values)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{what}s must be whole numbers, got {value!r} ({type(value).__name__})")
    return np.array(values, np.int64)


def _whole(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True, eq=False, slots=True)
class SessionState:
    """A live session as the model serves it: the hidden state after its last ``max_len`` interactions
    (float32), their item ids (oldest first) and how many interactions it has seen in all."""

    hidden: np.ndarray
    items: np.ndarray
    length: int


class SessionRecommender(L.LightningModule):
    """A GRU over a session's items that scores every catalogue item as the next one.

    ``items``: the catalogue's item ids (any distinct whole numbers; an int ``n`` means ``0..n-1``).
    ``dim``: the size of the item embeddings and the hidden state. ``max_len``: the length of the
    training chunks and of the item ids a :class:`SessionState` keeps. ``dropout``: on the embeddings
    read and the hidden states scored, while training. ``lr`` / ``weight_decay``: Adam's, for a fit.
    ``seed`` sets the initial weights. Settings are constructor arguments (:attr:`config`); the
    weights and the catalogue are the :meth:`state_dict` (plain tensors, safetensors-ready).
    """

    def __init__(
        self,
        items: int | Sequence[int] | np.ndarray,
        dim: int = 64,
        max_len: int = 20,
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.dim = _whole("dim", dim, 1)
        self.max_len = _whole("max_len", max_len, 1)
        if not (isinstance(dropout, int | float) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        for name, value in (("lr", lr), ("weight_decay", weight_decay)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.dropout, self.lr, self.weight_decay = float(dropout), float(lr), float(weight_decay)
        self.seed = int(seed)
        ids = np.arange(_whole("items", items, 1)) if isinstance(items, int | np.integer) else item_ids(items)
        if len(ids) == 0:
            raise ValueError("the catalogue is empty: give at least one item id")
        self._check_distinct(ids)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.embedding = nn.Parameter(self._fresh_rows(len(ids) + OFFSET))
            self.gru = nn.GRU(self.dim, self.dim, batch_first=True)
        with torch.no_grad():
            self.embedding[PAD].zero_()
        self.item_bias = nn.Parameter(torch.zeros(len(ids)))
        self.register_buffer("item_ids", torch.from_numpy(ids.copy()))
        self._index()

    # -- the catalogue ------------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """The settings that rebuild this model around a :meth:`state_dict` (:meth:`from_state_dict`)."""
        return {
            "dim": self.dim,
            "max_len": self.max_len,
            "dropout": self.dropout,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
        }

    @property
    def items(self) -> np.ndarray:
        """Catalogue item ids, by row (new items are appended, so a row never moves)."""
        return self.item_ids.cpu().numpy()

    def __len__(self) -> int:
        return len(self.item_bias)

    def rows(self, items: Iterable[Any] | np.ndarray) -> np.ndarray:
        """Catalogue rows of ``items``; -1 for an id not in the catalogue."""
        ids = item_ids(items)
        at = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        return np.where(self._sorted[at] == ids, self._order[at], -1)

    def known_rows(self, items: Iterable[Any] | np.ndarray) -> np.ndarray:
        """Catalogue rows of ``items``, or a ``ValueError`` naming the first id not in the catalogue."""
        ids = item_ids(items)
        rows = self.rows(ids)
        if (rows < 0).any():
            bad = int(ids[np.argmax(rows < 0)])
            raise ValueError(
                f"item {bad} is not in the session model's catalogue ({len(self)} items, ids "
                f"{int(self._sorted[0])}..{int(self._sorted[-1])}): train on it first"
            )
        return rows

    def add_items(self, items: Iterable[Any] | np.ndarray) -> int:
        """Append rows for the ids of ``items`` not in the catalogue yet (in order of first appearance);
        earlier rows keep their weights. Returns how many were added."""
        ids = pd.unique(item_ids(items))
        new = ids[self.rows(ids) < 0]
        if len(new) == 0:
            return 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + len(self))
            rows = self._fresh_rows(len(new)).to(self.embedding)
        self.embedding = nn.Parameter(torch.cat([self.embedding.detach(), rows]))
        self.item_bias = nn.Parameter(
            torch.cat([self.item_bias.detach(), self.item_bias.new_zeros(len(new))])
        )
        self.item_ids = torch.cat([self.item_ids, torch.from_numpy(new).to(self.item_ids)])
        self._index()
        return len(new)

    def _fresh_rows(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.dim) * self.dim**-0.5

    def _index(self) -> None:
        ids = self.item_ids.cpu().numpy()
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    @staticmethod
    def _check_distinct(ids: np.ndarray) -> None:
        unique, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"item ids must be distinct; {int(unique[np.argmax(counts > 1)])} repeats")

    # -- training -----------------------------------------------------------------------------------

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(batch, length, dim)`` after each token of ``tokens`` ``(batch, length)``."""
        x = F.dropout(F.embedding(tokens, self.embedding, padding_idx=PAD), self.dropout, self.training)
        out, _ = self.gru(x)
        return F.dropout(out, self.dropout, self.training)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every catalogue row for hidden states ``(..., dim)``: tied to the item embeddings."""
        return hidden @ self.embedding[OFFSET:].T + self.item_bias

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Full-softmax cross-entropy over the catalogue of every target of the batch's chunks, pads left
        out: ``y`` is ``(chunks, max_len)`` (the next item) or ``(chunks, max_len, horizon)`` (each of
        the next ``horizon`` items, every one a target of the same prediction)."""
        targets = batch["y"] if batch["y"].ndim == 3 else batch["y"][..., None]
        keep = (targets != IGNORE).any(-1)  # a position with no target (a pad, the end) predicts nothing
        log_p = F.log_softmax(self.logits(self(batch["x"])[keep]), -1)
        targets = targets[keep]
        valid = targets != IGNORE
        picked = log_p.gather(1, targets.clamp(min=0))
        # A batch with no target at all (every chunk's items disliked) adds nothing rather than NaN.
        return -(picked * valid).sum() / valid.sum().clamp(min=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # A fresh Adam each fit: the catalogue grows between windows, so old moments would not fit.
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    # -- serving ------------------------------------------------------------------------------------

    @torch.no_grad()
    def start(self) -> SessionState:
        """A session with no interactions: the hidden state after the start token."""
        return self.session([])

    @torch.no_grad()
    def observe(self, state: SessionState, item: Any) -> SessionState:
        """The session after one more interaction with ``item`` (``state`` is not changed). An id outside
        the catalogue is a ``ValueError``; not a whole number, a ``TypeError``.

        The model reads a session as it was trained: the last ``max_len`` items, from a zero state (after
        the start token while the session is shorter), so a step costs at most ``max_len`` recurrent
        steps whatever the session's length, and a long session never runs the recurrence past the
        lengths it was trained on."""
        self.known_rows([item])
        items = np.append(state.items, np.int64(item))[-self.max_len :]
        return self._state(items, state.length + 1)

    @torch.no_grad()
    def session(self, session_items: Iterable[Any] | np.ndarray) -> SessionState:
        """The state after ``session_items`` in order (the same as observing them one by one)."""
        ids = item_ids(session_items, "session item")
        return self._state(ids[-self.max_len :].copy(), len(ids))

    def _state(self, window: np.ndarray, length: int) -> SessionState:
        rows = self.known_rows(window) + OFFSET
        # Shorter than a chunk: the start token opens it, as in training; a full chunk opens on its
        # first item (a training chunk's "previous" item).
        tokens = rows if length >= self.max_len else np.concatenate([[START], rows])
        out, _ = self.gru(self.embedding[torch.from_numpy(tokens).to(self.item_ids)][None])
        return SessionState(out[0, -1].cpu().numpy().copy(), window, length)

    def _run(self, ids: np.ndarray) -> torch.Tensor:
        """Hidden states after the start token and after each of ``ids``: ``(len(ids) + 1, dim)``."""
        rows = self.known_rows(ids)
        tokens = torch.from_numpy(np.concatenate([[START], rows + OFFSET])).to(self.item_ids)
        out, _ = self.gru(self.embedding[tokens][None])
        return out[0].cpu()

    @torch.no_grad()
    def scores(self, state: SessionState) -> np.ndarray:
        """Every catalogue item's score as the session's next one, by row."""
        hidden = torch.from_numpy(state.hidden).to(self.embedding)
        return self.logits(hidden).cpu().numpy()

    @torch.no_grad()
    def prefix_scores(self, session_items: Iterable[Any] | np.ndarray) -> np.ndarray:
        """Scores by row after 0, 1, ..., n of the session's n items: ``(n + 1, items)``, one pass. Equal
        to :meth:`session`'s for prefixes shorter than ``max_len`` (longer ones are read windowed)."""
        return (
            self.logits(self._run(item_ids(session_items, "session item")).to(self.embedding)).cpu().numpy()
        )

    def rank(
        self, session_items: Iterable[Any] | np.ndarray, k: int, exclude: Iterable[Any] | np.ndarray = ()
    ) -> list[int]:
        """The ``k`` likeliest next items (ids, best first) after ``session_items`` in order, leaving out
        ``exclude`` (pass the session's items to leave out what it already saw). An empty session is
        ranked by the learned start-of-session distribution."""
        return self.rank_state(self.session(session_items), k, exclude)

    def rank_state(self, state: SessionState, k: int, exclude: Iterable[Any] | np.ndarray = ()) -> list[int]:
        """:meth:`rank` for a live session's state."""
        return self.top(self.scores(state), k, exclude)

    def top(self, scores: np.ndarray, k: int, exclude: Iterable[Any] | np.ndarray = ()) -> list[int]:
        """The ids of the ``k`` highest ``scores`` (one per row), leaving out ``exclude`` (ids outside
        the catalogue cannot be ranked anyway and are ignored); equal scores go to the smaller id."""
        k = _whole("k", k, 1)
        scores = np.array(scores, np.float64)
        rows = self.rows(item_ids(exclude, "excluded item"))
        scores[rows[rows >= 0]] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        if k == 0:
            return []
        best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        ids = self.items
        cut = scores[best].min()
        tied = np.flatnonzero(scores == cut)  # ties at the cut: the smaller ids, whatever argpartition took
        best = np.concatenate([best[scores[best] > cut], tied[np.argsort(ids[tied], kind="stable")]])[:k]
        best = best[np.lexsort((ids[best], -scores[best]))]
        return ids[best].tolist()

    # -- checkpoints --------------------------------------------------------------------------------

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], **config: Any) -> SessionRecommender:
        """A model of ``state``'s catalogue and weights, with the settings ``config`` (:attr:`config`)."""
        missing = [key for key in ("item_ids", *WEIGHTS) if key not in state]
        if missing:
            raise ValueError(
                f"not a session model's state: tensors {missing} are missing (has {sorted(state)})"
            )
        dim = int(state["embedding"].shape[1])
        if config.setdefault("dim", dim) != dim:
            raise ValueError(f"the state holds embeddings of size {dim}, not dim={config['dim']}")
        model = cls(state["item_ids"].numpy(), **config)
        model.load_state_dict(dict(state))
        return model


def next_item_chunks(
    sequence: np.ndarray,
    previous: int | None,
    max_len: int,
    horizon: int = 1,
    target: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Training chunks for one user's new items ``sequence`` (catalogue rows, in order): ``inputs``
    ``(chunks, max_len)`` and ``targets`` ``(chunks, max_len, horizon)``, right-padded with ``PAD`` /
    ``IGNORE``. After the input at a position, the targets are the next ``horizon`` items of
    ``sequence`` (fewer at its end: what comes later is not known yet). The input before the first
    item is ``previous`` (the row the user last interacted with) or, for a user's first interactions,
    the start token; each chunk's recurrence starts from zero. ``target`` (booleans, one per item)
    keeps only some items as targets (e.g. the liked ones); every item is still an input.

    >>> x, y = next_item_chunks(np.array([5, 6, 7]), previous=None, max_len=2, horizon=2)
    >>> x.tolist()
    [[1, 7], [8, 0]]
    >>> y.tolist()
    [[[5, 6], [6, 7]], [[7, -100], [-100, -100]]]
    """
    n = len(sequence)
    sequence = np.asarray(sequence, np.int64)
    first = START if previous is None else int(previous) + OFFSET
    inputs = np.concatenate([[first], sequence[:-1] + OFFSET])
    chunks = -(-n // max_len)
    x = np.full(chunks * max_len, PAD, np.int64)
    y = np.full((chunks * max_len, horizon), IGNORE, np.int64)
    x[:n] = inputs
    labels = sequence if target is None else np.where(np.asarray(target, bool), sequence, IGNORE)
    for h in range(min(horizon, n)):
        y[: n - h, h] = labels[h:]
    return x.reshape(chunks, max_len), y.reshape(chunks, max_len, horizon)


class ChunkReservoir:
    """A uniform sample (reservoir sampling) of every training chunk it was given, at most ``capacity``,
    to replay past windows in a fine-tune. Draws derive from ``seed`` and the chunks seen so far, so a
    reservoir restored from ``state_dict`` continues exactly.

    >>> reservoir = ChunkReservoir(capacity=2, max_len=3, horizon=1, seed=0)
    >>> reservoir.update(np.ones((5, 3), np.int64), np.ones((5, 3, 1), np.int64))
    >>> len(reservoir), reservoir.seen
    (2, 5)
    """

    def __init__(self, capacity: int = 20_000, max_len: int = 20, horizon: int = 1, seed: int = 0) -> None:
        self.capacity = _whole("capacity", capacity, 0)
        self.seed = int(seed)
        self.x = np.empty((0, max_len), np.int64)
        self.y = np.empty((0, max_len, horizon), np.int64)
        self.seen = 0

    def __len__(self) -> int:
        return len(self.x)

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        room = max(0, min(self.capacity - len(self), len(x)))
        self.x, self.y = np.concatenate([self.x, x[:room]]), np.concatenate([self.y, y[:room]])
        rest = np.arange(room, len(x))
        if len(rest):
            # Algorithm R: the j-th chunk ever seen takes a uniform slot with probability capacity / (j + 1);
            # in order, so a later chunk drawn into the same slot wins, as one by one.
            slots = np.random.default_rng([self.seed, self.seen]).integers(0, self.seen + rest + 1)
            for slot, j in zip(slots[slots < self.capacity], rest[slots < self.capacity], strict=True):
                self.x[slot], self.y[slot] = x[j], y[j]
        self.seen += len(x)

    def sample(self, n: int, salt: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` chunks drawn without replacement."""
        n = min(int(n), len(self))
        at = np.random.default_rng([self.seed, self.seen, salt, 1]).choice(len(self), n, replace=False)
        return self.x[at], self.y[at]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "x": torch.from_numpy(self.x.copy()),
            "y": torch.from_numpy(self.y.copy()),
            "seen": torch.tensor([self.seen]),
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.x, self.y = state["x"].numpy().copy(), state["y"].numpy().copy()
        self.seen = int(state["seen"][0])


@dataclass(frozen=True)
class SessionUpdate:
    """What one window's training did: chunks of new targets and replayed ones, the catalogue's growth,
    the epochs and the seconds of the fit."""

    window: int
    stateful: bool
    targets: int
    chunks: int
    replayed: int
    new_items: int
    catalogue: int
    epochs: int
    seconds: float


class SessionLearner:
    """Trains a :class:`SessionRecommender` window by window on a stream of interactions (columns
    ``user``, ``item``, ``timestamp``): the first window from scratch for ``epochs``, every later one
    fine-tuned from the current weights (stateful) for ``finetune_epochs`` on the window's new
    chunks plus ``replay_ratio`` times as many drawn from a :class:`ChunkReservoir` of past ones,
    against forgetting earlier users and items. Items new in a window get new rows first.

    ``horizon``: after each interaction, each of the user's next ``horizon`` items is a target of the
    same prediction (1: the next item only). Scoring what comes soon rather than exactly next gives
    every position several targets, which matters on small data, and ignores the order of items rated
    at the same moment. ``like``: when set, only items rated at least ``like`` are targets (every
    interaction is still an input); the interactions then need a ``rating`` column.

    A user's sequence continues across windows: the first target of a window follows the last item the
    user had (only that item is kept per user, the input of the chunk's first step).
    The model settings (``dim`` to ``weight_decay``) go to :class:`SessionRecommender`; ``trainer`` to
    :func:`perennial.learn.fit.fit`.
    """

    def __init__(
        self,
        dim: int = 64,
        max_len: int = 20,
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        horizon: int = 10,
        like: float | None = None,
        epochs: int = 20,
        finetune_epochs: int = 5,
        batch_size: int = 64,
        replay_ratio: float = 1.0,
        reservoir: int = 20_000,
        seed: int = 0,
        trainer: Mapping | None = None,
    ) -> None:
        self.model_settings = {
            "dim": dim,
            "max_len": max_len,
            "dropout": dropout,
            "lr": lr,
            "weight_decay": weight_decay,
            "seed": seed,
        }
        SessionRecommender(1, **self.model_settings)  # a bad model setting fails now, naming it
        self.horizon = _whole("horizon", horizon, 1)
        if like is not None and not (isinstance(like, int | float) and math.isfinite(like)):
            raise ValueError(f"like must be a finite rating or None, got {like!r}")
        self.like = None if like is None else float(like)
        self.epochs = _whole("epochs", epochs, 1)
        self.finetune_epochs = _whole("finetune_epochs", finetune_epochs, 1)
        self.batch_size = _whole("batch_size", batch_size, 1)
        if not (isinstance(replay_ratio, int | float) and math.isfinite(replay_ratio) and replay_ratio >= 0):
            raise ValueError(f"replay_ratio must be a finite number >= 0, got {replay_ratio!r}")
        self.replay_ratio, self.seed, self.trainer = float(replay_ratio), int(seed), trainer
        self.reservoir = ChunkReservoir(reservoir, _whole("max_len", max_len, 1), self.horizon, seed)
        self.model: SessionRecommender | None = None
        self.last: dict[int, int] = {}  # user -> catalogue row of their last item
        self.history: list[SessionUpdate] = []

    def update(self, interactions: pd.DataFrame, window: int) -> SessionUpdate:
        """Learn one window's interactions; returns what the fit did."""
        needed = ("user", "item") if self.like is None else ("user", "item", "rating")
        missing = [c for c in needed if c not in interactions.columns]
        if missing:
            raise ValueError(f"interactions lack the columns {missing}; got {list(interactions.columns)}")
        if interactions.empty:
            raise ValueError(f"window {window} has no interactions to learn")
        ordered = interactions
        if "timestamp" in interactions:
            ordered = interactions.sort_values("timestamp", kind="stable")
        items = item_ids(ordered["item"].to_numpy())
        users = item_ids(ordered["user"].to_numpy(), "user id")
        stateful = self.model is not None
        if self.model is None:
            self.model = SessionRecommender(pd.unique(items), **self.model_settings)
            new_items = len(self.model)
        else:
            new_items = self.model.add_items(items)
        rows = self.model.rows(items)
        target = None
        if self.like is not None:
            target = ordered["rating"].to_numpy(np.float64) >= self.like
        x_new, y_new = self._chunks(users, rows, target)
        x, y = x_new, y_new
        replayed = 0
        if stateful and self.replay_ratio > 0:
            x_old, y_old = self.reservoir.sample(round(self.replay_ratio * len(x_new)), salt=window)
            x, y, replayed = np.concatenate([x_new, x_old]), np.concatenate([y_new, y_old]), len(x_old)
        epochs = self.finetune_epochs if stateful else self.epochs
        result = fit(
            self.model,
            {"x": x, "y": y},
            epochs=epochs,
            batch_size=self.batch_size,
            seed=self.seed * 1_000_003 + window,
            trainer=self.trainer,
        )
        self.model.eval()
        self.reservoir.update(x_new, y_new)
        outcome = SessionUpdate(
            window,
            stateful,
            len(items),
            len(x_new),
            replayed,
            new_items,
            len(self.model),
            epochs,
            result.seconds,
        )
        self.history.append(outcome)
        return outcome

    def _chunks(
        self, users: np.ndarray, rows: np.ndarray, target: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self.model is not None
        order = np.argsort(users, kind="stable")  # each user's items stay in time order
        bounds = np.flatnonzero(np.diff(users[order])) + 1
        xs, ys = [], []
        for group in np.split(order, bounds):
            user = int(users[group[0]])
            sequence = rows[group]
            x, y = next_item_chunks(
                sequence,
                self.last.get(user),
                self.model.max_len,
                self.horizon,
                None if target is None else target[group],
            )
            xs.append(x)
            ys.append(y)
            self.last[user] = int(sequence[-1])
        return np.concatenate(xs), np.concatenate(ys)

    # -- checkpoints --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything a later update continues from, as flat tensors (safetensors, no pickle): the model's
        catalogue and weights (``model.*``), the reservoir (``reservoir.*``) and each user's last item
        (``last.*``). The settings are the constructor's, not state."""
        if self.model is None:
            raise ValueError("the learner has learned nothing yet: update it on a window first")
        users = sorted(self.last)
        return {
            **{f"model.{k}": v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            **{f"reservoir.{k}": v for k, v in self.reservoir.state_dict().items()},
            "last.users": torch.tensor(users, dtype=torch.int64),
            "last.rows": torch.tensor([self.last[u] for u in users], dtype=torch.int64),
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Continue from a :meth:`state_dict`: the next :meth:`update` fine-tunes the restored model."""
        model = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        self.model = SessionRecommender.from_state_dict(model, **self.model_settings).eval()
        self.reservoir.load_state_dict(
            {k.removeprefix("reservoir."): v for k, v in state.items() if k.startswith("reservoir.")}
        )
        self.last = dict(zip(state["last.users"].tolist(), state["last.rows"].tolist(), strict=True))
