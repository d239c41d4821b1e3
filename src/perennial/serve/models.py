"""What the server serves: versions loaded from a registry, the live rollout that routes between them,
and the immutable ``Deployment`` snapshot that a hot swap replaces in one assignment.

A version's module is rebuilt from the run config stored with it (its ``data`` and ``model`` groups,
which may name only perennial's own classes, see ``ALLOWED_TARGETS``), or, for versions stored
without one, from the builder the server was started with. Nothing serves before its files pass
their checksums, its weights are finite and a forward pass answers (``ModelStore.load``).

>>> rollout = make_rollout("ab", "v1", "v2", {"share": 0.5, "salt": "doc"})
>>> sorted(rollout.shares().items())
[('v1', 0.5), ('v2', 0.5)]
>>> rollout.route("user-1") == rollout.route("user-1")  # sticky
True
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from perennial.learn.module import ClassifierModule
from perennial.registry import CorruptVersion, Registry, RegistryIndexError, UnknownVersion
from perennial.rollout import ABTest, CanaryRollout, MixtureSPRT, ShadowDeployment
from perennial.rollout.interleaving import Interleaving, credit, team_draft

Builder = Callable[[], ClassifierModule]
# A fallback that gives a module builder and the feature shape, for versions stored without a config.
FallbackBuilder = Callable[[], tuple[Builder, tuple[int, ...]]]

# The classes a config stored in the registry may name, by their public path or their module's:
# whoever can write index.sqlite chooses the config, and Hydra would call any importable callable.
_MODELS = {"MLP": "backbones", "SmallCNN": "backbones"}
_STREAMS = {
    "DigitsStream": "images",
    "FashionMNISTStream": "images",
    "NewColumnsStream": "schema",
    "RareClassStream": "rare",
    "SyntheticStream": "synthetic",
    "TableStream": "table",
    "WeatherStream": "weather",
}
ALLOWED_TARGETS = frozenset(
    [f"perennial.learn.{name}" for name in _MODELS]
    + [f"perennial.learn.{module}.{name}" for name, module in _MODELS.items()]
    + [f"perennial.data.{name}" for name in _STREAMS]
    + [f"perennial.data.{module}.{name}" for name, module in _STREAMS.items()]
    + ["perennial.data.avalanche.AvalancheStream"]
)


class UnservableVersion(ValueError):
    """A version the server will not serve: damaged files, non-finite weights, a config naming a
    class outside ``ALLOWED_TARGETS``, or a module that fails to build or to answer."""

    def __init__(self, version: str, problem: str) -> None:
        super().__init__(f"version {version} cannot serve: {problem}")
        self.version, self.problem = version, problem


def check_targets(tree: Any, where: str) -> None:
    """Refuse a stored config that would make Hydra build anything but ``ALLOWED_TARGETS``.

    Only strings are compared, so a refused target is never imported. Interpolations are refused
    too: a stored config is resolved when written, and a resolver could read the server's environment.

    >>> check_targets({"_target_": "os.system", "_args_": ["true"]}, "model")
    Traceback (most recent call last):
    ...
    ValueError: model._target_ is 'os.system', which the server does not build: a stored config may name only perennial's own models and data streams (e.g. perennial.learn.MLP, perennial.data.WeatherStream)
    """  # noqa: E501
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if key == "_target_" and (not isinstance(value, str) or value not in ALLOWED_TARGETS):
                raise ValueError(
                    f"{where}._target_ is {value!r}, which the server does not build: a stored config "
                    "may name only perennial's own models and data streams "
                    "(e.g. perennial.learn.MLP, perennial.data.WeatherStream)"
                )
            check_targets(value, f"{where}.{key}")
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            check_targets(value, f"{where}[{i}]")
    elif isinstance(tree, str) and "${" in tree:
        raise ValueError(f"{where} is {tree!r}: a stored config may not hold interpolations")


@dataclass(frozen=True)
class LoadedModel:
    """One version's module, fully loaded and in eval mode, ready to answer from any thread."""

    version: str
    module: ClassifierModule
    feature_shape: tuple[int, ...]
    device: str = "cpu"

    @property
    def n_features(self) -> int:
        return math.prod(self.feature_shape)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class ids and class probabilities for rows ``x`` of shape ``(n, *feature_shape)``."""
        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
            probabilities = torch.softmax(self.module(inputs).float(), dim=1).cpu()
        return probabilities.argmax(1).numpy(), probabilities.numpy()


class ModelStore:
    """Loads versions from the registry at ``root``; loaded versions are kept (weights never change).

    The registry is checked page by page when the store opens it, so a damaged index stops the
    server at start-up with :class:`~perennial.registry.RegistryIndexError` naming the file.
    """

    def __init__(
        self, root: str | Path, fallback: FallbackBuilder | None = None, device: str = "cpu"
    ) -> None:
        self.root = Path(root)
        self.fallback = fallback
        self.device = device  # champion, candidates and shadows all share it
        with self.reader() as registry:  # fail now, with the path, if there is no usable registry
            registry.check()
        self._loaded: dict[str, LoadedModel] = {}
        self._builders: dict[str, tuple[Builder, tuple[int, ...]]] = {}
        self._lock = threading.Lock()

    def registry(self) -> Registry:
        """A fresh connection to write the registry (promote, reject); SQLite connections stay in the
        thread that made them. It never creates a registry nor removes anything."""
        return Registry(self.root, create=False)

    def reader(self) -> Registry:
        """A fresh read-only connection, for loading and ``/status``: these cannot change the registry."""
        return Registry(self.root, create=False, readonly=True)

    def load(self, version: str) -> LoadedModel:
        """``version`` ready to serve, or :class:`UnservableVersion` saying why not (UnknownVersion if
        the registry has no such version).

        Checked before it can serve: its files against their sha256 (versions stored before the
        registry kept checksums skip only this), finite weights, a config naming only
        ``ALLOWED_TARGETS``, and one forward pass on zeros that gives finite probabilities.
        """
        with self._lock:
            cached = self._loaded.get(version)
        try:
            if cached is not None:
                # The module in memory is fine, but the files must be too before the registry names
                # the version again (a rollback): a restart loads them, not this module.
                with self.reader() as registry:
                    registry.verify(version)
                return cached
            loaded = self._load(version)
        except (UnknownVersion, UnservableVersion, RegistryIndexError, sqlite3.Error):
            raise  # not this version's files or config: the caller reports these as they are
        except CorruptVersion as err:
            raise UnservableVersion(version, err.problem) from None
        except Exception as err:  # whatever building or running it raised: it must not serve
            problem = f"it fails to build or run: {type(err).__name__}: {err}"
            raise UnservableVersion(version, problem) from err
        with self._lock:
            return self._loaded.setdefault(version, loaded)

    def _load(self, version: str) -> LoadedModel:
        with self.reader() as registry:
            record = registry.get(version)
            # Every file, the optimizer's too: the loop resumes from the champion the server names.
            registry.verify(version)
            weights = registry.load_weights(version)
            # A version narrower than the stream (classes or columns it has not met), or of a
            # challenger line's architecture, says so in its schema extra.
            schema = dict(registry.load_extra(version, "schema") or {})
        config = record.config
        if schema.pop("architecture", None) == "challenger":
            challenger = (config.get("challenger") or {}).get("model")
            config = {**config, "model": challenger}
        build, shape = self._builder(version, config)
        module = build(**schema) if schema else build()
        module.load_state_dict(weights)
        module.to(self.device).eval()
        loaded = LoadedModel(version, module, tuple(int(s) for s in shape), self.device)
        _smoke_test(loaded)
        return loaded

    def _builder(self, version: str, config: Mapping[str, Any]) -> tuple[Builder, tuple[int, ...]]:
        groups = {k: config.get(k) for k in ("data", "model")}
        if all(isinstance(g, Mapping) and "_target_" in g for g in groups.values()):
            try:
                for name, group in groups.items():
                    check_targets(group, name)
            except ValueError as err:
                raise UnservableVersion(version, str(err)) from None
            key = json.dumps(groups, sort_keys=True)
            if key not in self._builders:
                from omegaconf import OmegaConf

                from perennial.cli.common import stream_and_builder

                stream, build = stream_and_builder(OmegaConf.create(groups))
                self._builders[key] = (build, tuple(stream.feature_shape))
            return self._builders[key]
        if self.fallback is None:
            raise ValueError(
                f"version {version} was stored without data and model configs, and the server has no "
                "data=/model= config to rebuild it from"
            )
        if "" not in self._builders:
            self._builders[""] = self.fallback()
        return self._builders[""]


def _smoke_test(loaded: LoadedModel) -> None:
    """One forward pass on two rows of zeros: a module that cannot answer, or answers NaN, never serves."""
    _, probabilities = loaded.predict(np.zeros((2, *loaded.feature_shape), dtype=np.float32))
    if probabilities.ndim != 2 or probabilities.shape[0] != 2 or probabilities.shape[1] < 1:
        raise UnservableVersion(
            loaded.version, f"a forward pass on 2 rows gave probabilities of shape {probabilities.shape}"
        )
    if not np.isfinite(probabilities).all():
        raise UnservableVersion(loaded.version, "a forward pass on zeros gives NaN or infinite probabilities")


# ---- rollouts ---------------------------------------------------------------------------------------
OUTCOMES = ("continue", "promote", "reject")


class LiveRollout(ABC):
    """One candidate against the champion on the server's traffic, built from a perennial.rollout class.

    ``route`` picks the arm for a unit, ``feedback`` records one labelled request and returns
    ``"continue"``, ``"promote"`` or ``"reject"``; both are safe to call from many threads.
    """

    kind: ClassVar[str]

    def __init__(self, champion: str, candidate: str, settings: Mapping[str, Any]) -> None:
        if champion == candidate:
            raise ValueError(f"the candidate {candidate} is already the champion")
        self.champion, self.candidate = champion, candidate
        self.settings = dict(settings)
        self.lock = threading.Lock()
        try:
            self._start(**self.settings)
        except TypeError as err:  # an unknown setting
            raise ValueError(f"bad {self.kind} rollout settings {self.settings}: {err}") from None

    @property
    def shadows(self) -> list[str]:
        """Versions that predict every request off the record."""
        return []

    @abstractmethod
    def _start(self, **settings: Any) -> None: ...

    @abstractmethod
    def _route(self, unit: str) -> str: ...

    @abstractmethod
    def shares(self) -> dict[str, float]:
        """Each arm's share of the traffic now."""

    @abstractmethod
    def _feedback(
        self, arm: str, served: np.ndarray, labels: np.ndarray, candidate: np.ndarray | None
    ) -> str: ...

    @abstractmethod
    def _summary(self) -> dict[str, Any]: ...

    def route(self, unit: str) -> str:
        with self.lock:
            return self._route(unit)

    def feedback(
        self, arm: str, served: Sequence[int], labels: Sequence[int], candidate: Sequence[int] | None = None
    ) -> str:
        """Labels for one request: the arm that answered, its predictions, and (shadow) the candidate's."""
        with self.lock:
            return self._feedback(
                arm,
                np.asarray(served),
                np.asarray(labels),
                None if candidate is None else np.asarray(candidate),
            )

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return _json_safe({"shares": self.shares(), **self._summary()})


class LiveShadow(LiveRollout):
    """The champion answers everyone; the candidate predicts every request in the background."""

    kind = "shadow"

    def _start(
        self, criterion: str = "not_worse", margin: float = 0.01, alpha: float = 0.05, min_requests: int = 500
    ) -> None:
        self.live = ShadowDeployment(self.champion, [self.candidate], criterion, margin, alpha, min_requests)

    @property
    def shadows(self) -> list[str]:
        return [self.candidate]

    def _route(self, unit: str) -> str:
        return self.champion

    def shares(self) -> dict[str, float]:
        return {self.champion: 1.0, self.candidate: 0.0}

    def _feedback(self, arm, served, labels, candidate):
        if candidate is None or len(candidate) != len(served):
            return "continue"  # the shadow's prediction was lost (its queue was full): no pair to compare
        self.live.record({self.champion: served, self.candidate: candidate}, labels=labels)
        return self.live.decision(self.candidate)

    def _summary(self) -> dict[str, Any]:
        s = self.live.summary()
        return {
            "decision": self.live.decision(self.candidate),
            "p_value": s[self.candidate]["p_value"],
            "labelled": self.live.labelled,
            "arms": s,
        }


class LiveAB(LiveRollout):
    """Units are split between champion and candidate by a sticky salted hash; a sequential test decides."""

    kind = "ab"

    def _start(self, share: float = 0.5, alpha: float = 0.05, salt: str | None = None) -> None:
        if not 0 < share < 1:
            raise ValueError(f"ab share must be in (0, 1), got {share}")
        salt = salt or f"serve:{self.candidate}"
        self.live = ABTest(self.champion, {self.candidate: share}, salt=salt, alpha=alpha)

    def _route(self, unit: str) -> str:
        return self.live.router.route(unit)

    def shares(self) -> dict[str, float]:
        return self.live.router.shares()

    def _feedback(self, arm, served, labels, candidate):
        self.live.record(np.full(len(labels), arm, dtype=object), (served == labels).astype(float))
        decision = self.live.decision()
        return {"continue": "continue", self.candidate: "promote"}.get(decision, "reject")

    def _summary(self) -> dict[str, Any]:
        result = self.live.results()[self.candidate]
        decision = self.live.decision()
        return {
            "decision": {"continue": "continue", self.candidate: "promote"}.get(decision, "reject"),
            "p_value": result["p_holm"],
            "effect": result["effect"],
            "n": result["n"],
        }


class LiveCanary(LiveRollout):
    """The candidate's share grows in steps while a one-sided test guards accuracy; the first
    significant drop rolls it back and sends everyone to the champion."""

    kind = "canary"

    def _start(
        self,
        steps: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
        min_samples: int = 100,
        alpha: float = 0.05,
        salt: str | None = None,
        feedback_batch: int = 50,
        holdout: float = 0.05,
    ) -> None:
        if feedback_batch < 1:
            raise ValueError(f"canary feedback_batch must be >= 1, got {feedback_batch}")
        salt = salt or f"serve:{self.candidate}"
        self.live = CanaryRollout(
            self.champion,
            self.candidate,
            steps=steps,
            min_samples=min_samples,
            alpha=alpha,
            salt=salt,
            holdout=holdout,
        )
        # Labelled rows are recorded in batches: one record() per request would re-check the step
        # and the guards' timeline once per request.
        self.feedback_batch = feedback_batch
        self._arms: list[str] = []
        self._correct: list[float] = []

    def _route(self, unit: str) -> str:
        return str(self.live.assign([unit])[0])

    def shares(self) -> dict[str, float]:
        if self.live.status == "rolled_back":
            return {self.champion: 1.0, self.candidate: 0.0}
        return self.live.router.shares()

    def _feedback(self, arm, served, labels, candidate):
        self._arms += [arm] * len(labels)
        self._correct += (served == labels).astype(float).tolist()
        status = self.live.status
        if len(self._arms) >= self.feedback_batch:
            arms, correct = np.array(self._arms, dtype=object), np.array(self._correct)
            self._arms, self._correct = [], []
            status = self.live.record(arms, {"accuracy": correct})
        return {"completed": "promote", "rolled_back": "reject"}.get(status, "continue")

    def _summary(self) -> dict[str, Any]:
        test = self.live.tests["accuracy"]
        return {
            "decision": {"completed": "promote", "rolled_back": "reject"}.get(self.live.status, "continue"),
            "status": self.live.status,
            "step": self.live.step,
            "p_value": test.p_value,
            "effect": test.effect if test.n else None,
            "units": self.live.units,
            "canary_units": self.live.canary_units,
            "waiting_feedback": len(self._arms),
            "timeline": self.live.timeline,
        }


class LiveInterleave(LiveRollout):
    """``POST /rank`` shows a team-draft mix of champion's and candidate's ranked classes; clicks
    credit the model that placed the item, and a mixture SPRT on the per-impression credit decides.
    ``/predict`` traffic is answered by the champion meanwhile."""

    kind = "interleave"

    def _start(self, alpha: float = 0.05, min_impressions: int = 100, salt: str | None = None) -> None:
        self.test = MixtureSPRT(alpha=alpha, min_per_arm=min_impressions)
        self.salt = salt or f"serve:{self.candidate}"
        self.wins = {"champion": 0, "candidate": 0, "tie": 0}

    def _route(self, unit: str) -> str:
        return self.champion

    def shares(self) -> dict[str, float]:
        return {self.champion: 1.0, self.candidate: 0.0}

    def interleave(self, request_id: str, ours: Sequence[int], theirs: Sequence[int]) -> Interleaving:
        """The shown list for one request; seeded by it, so the log can be replayed exactly."""
        rng = np.random.default_rng(zlib.crc32(f"{self.salt}:{request_id}".encode()))
        return team_draft(ours, theirs, rng, length=len(ours))

    def clicks(self, teams: Sequence[str], positions: Sequence[int]) -> str:
        """Clicked positions of one impression whose positions were placed by ``teams`` (versions)."""
        sides = tuple("a" if t == self.champion else "b" for t in teams)
        shown = Interleaving("team_draft", tuple(range(len(teams))), ((), ()), teams=sides)
        outcome = credit(shown, positions)
        with self.lock:
            self.wins[{"a": "champion", "b": "candidate", "tie": "tie"}[outcome.winner]] += 1
            # The control fixed at 0 gives each pair the variance of the credit itself (see live.Interleave).
            self.test.update([0.0], [outcome.score])
            return self._decision()

    def _decision(self) -> str:
        if self.test.decision == "continue":
            return "continue"
        return "promote" if self.test.effect > 0 else "reject"

    def _feedback(self, arm, served, labels, candidate):
        return self._decision()  # labels of /predict requests say nothing about the rankings

    def _summary(self) -> dict[str, Any]:
        return {
            "decision": self._decision(),
            "p_value": self.test.p_value,
            "effect": self.test.effect if self.test.n else None,
            "impressions": self.test.n,
            "wins": dict(self.wins),
        }


ROLLOUTS: dict[str, type[LiveRollout]] = {
    "shadow": LiveShadow,
    "ab": LiveAB,
    "canary": LiveCanary,
    "interleave": LiveInterleave,
}


def make_rollout(kind: str, champion: str, candidate: str, settings: Mapping[str, Any]) -> LiveRollout:
    """A live rollout of ``kind`` (shadow, ab, canary or interleave) with its settings."""
    if kind not in ROLLOUTS:
        raise ValueError(f"unknown rollout kind {kind!r}; expected one of {', '.join(ROLLOUTS)}")
    return ROLLOUTS[kind](champion, candidate, settings)


@dataclass(frozen=True)
class Deployment:
    """What serves now: the champion, and the running rollout with its candidate. Never changed in
    place: a swap builds a new one, and a request keeps the one it started with."""

    champion: LoadedModel
    rollout: LiveRollout | None = None
    candidate: LoadedModel | None = None
    rollout_id: int | None = None

    def model(self, arm: str) -> LoadedModel:
        if self.candidate is not None and arm == self.candidate.version:
            return self.candidate
        return self.champion

    def route(self, unit: str) -> str:
        return self.rollout.route(unit) if self.rollout is not None else self.champion.version


def _json_safe(tree: Any) -> Any:
    """NaN and infinities as None, tuples as lists: JSON that any client can read."""
    if isinstance(tree, Mapping):
        return {str(k): _json_safe(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_json_safe(v) for v in tree]
    if isinstance(tree, np.generic):
        tree = tree.item()
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree
