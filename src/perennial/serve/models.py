"""What the server serves: versions loaded from a registry, the live rollout that routes between them,
and the immutable ``Deployment`` snapshot that a hot swap replaces in one assignment.

A version is built from the registry alone: its weights, its ``pipeline`` extra (input shape, class
names, the fitted encoding of raw rows: :class:`~perennial.data.pipeline.InputPipeline`), its
``schema`` extra (narrower than the stream, or a challenger line's architecture) and the ``model``
group of the run config stored with it, which may name only perennial's own models (see
``ALLOWED_TARGETS``). No stream is built and no training data is read. A version stored without a
pipeline (a registry from before versions carried one) is rebuilt by the server's fallback, if it
has one. Nothing serves before its files pass their checksums, its weights are finite and a forward
pass answers (``ModelStore.load``).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perennial.data.encoding import TableEncoding
from perennial.data.pipeline import InputPipeline
from perennial.learn.module import ClassifierModule, build_model
from perennial.registry import CorruptVersion, Registry, RegistryIndexError, UnknownVersion
from perennial.rollout.live import Rollout

Builder = Callable[..., ClassifierModule]
# For versions stored without a pipeline extra: given the version's stored run config (its ``model``
# already the challenger's for a challenger-line version), a module builder and the feature shape.
# perennial-serve's rebuilds the stored data group (reading its training data, as servers did before
# versions carried their pipeline), or its own data=/model= for a version stored without one.
FallbackBuilder = Callable[[Mapping[str, Any]], tuple[Builder, tuple[int, ...]]]

# The classes a config stored in the registry may name, by their public path or their module's:
# whoever can write index.sqlite chooses the config, and Hydra would call any importable callable.
# The server builds only models; streams are built only by a fallback, for versions stored without
# a pipeline, and only those in STREAM_TARGETS.
_MODELS = {"MLP": "backbones", "ResNet18": "backbones", "SmallCNN": "backbones"}
_STREAMS = {
    "DigitsStream": "images",
    "FashionMNISTStream": "images",
    "NewColumnsStream": "schema",
    "PartitionedTable": "partitions",
    "RareClassStream": "rare",
    "ServeLogStream": "serve_log",
    "SyntheticStream": "synthetic",
    "TableStream": "table",
    "WeatherStream": "weather",
    "open_table": "partitions",  # data=table's factory: one file (TableStream) or partitions
}
ALLOWED_TARGETS = frozenset(
    [f"perennial.learn.{name}" for name in _MODELS]
    + [f"perennial.learn.{module}.{name}" for name, module in _MODELS.items()]
)
STREAM_TARGETS = frozenset(
    [f"perennial.data.{name}" for name in _STREAMS]
    + [f"perennial.data.{module}.{name}" for name, module in _STREAMS.items()]
    + ["perennial.data.avalanche.AvalancheStream"]
)
PIPELINE = "pipeline"  # the registry extra holding a version's InputPipeline.to_dict()


class UnservableVersion(ValueError):
    """A version the server will not serve: damaged files, non-finite weights, a config naming a
    class outside ``ALLOWED_TARGETS``, a missing pipeline, or a module that fails to build or to answer."""

    def __init__(self, version: str, problem: str) -> None:
        super().__init__(f"version {version} cannot serve: {problem}")
        self.version, self.problem = version, problem


def check_targets(tree: Any, where: str, allowed: frozenset[str] = ALLOWED_TARGETS) -> None:
    """Refuse a stored config that would make Hydra build anything but ``allowed`` (by default
    ``ALLOWED_TARGETS``: perennial's own models).

    Only strings are compared, so a refused target is never imported. Interpolations are refused
    too: a stored config is resolved when written, and a resolver could read the server's environment.

    >>> check_targets({"_target_": "os.system", "_args_": ["true"]}, "model")
    Traceback (most recent call last):
    ...
    ValueError: model._target_ is 'os.system', which the server does not build: a stored config may name only perennial's own models (e.g. perennial.learn.MLP)
    """  # noqa: E501
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if key == "_target_" and (not isinstance(value, str) or value not in allowed):
                what = "models (e.g. perennial.learn.MLP)"
                if allowed & STREAM_TARGETS:
                    what = "models and data streams (e.g. perennial.learn.MLP, perennial.data.WeatherStream)"
                raise ValueError(
                    f"{where}._target_ is {value!r}, which the server does not build: a stored config "
                    f"may name only perennial's own {what}"
                )
            check_targets(value, f"{where}.{key}", allowed)
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            check_targets(value, f"{where}[{i}]", allowed)
    elif isinstance(tree, str) and "${" in tree:
        raise ValueError(f"{where} is {tree!r}: a stored config may not hold interpolations")


@dataclass(frozen=True)
class LoadedModel:
    """One version's module, fully loaded and in eval mode, ready to answer from any thread, and its
    input pipeline (how raw rows become its inputs, and its class names)."""

    version: str
    module: ClassifierModule
    feature_shape: tuple[int, ...]
    device: str = "cpu"
    pipeline: InputPipeline | None = None  # None: only numeric arrays (built by hand, without one)

    @property
    def n_features(self) -> int:
        return math.prod(self.feature_shape)

    @property
    def inputs(self) -> InputPipeline:
        """The pipeline, or for a model built without one, one that takes numeric arrays only."""
        return self.pipeline if self.pipeline is not None else InputPipeline(self.feature_shape)

    @property
    def task(self) -> str:
        """What it answers: ``classification`` (a class per row) or ``regression`` (a value)."""
        return getattr(self.module, "task", "classification")

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class ids and class probabilities for rows ``x`` of shape ``(n, *feature_shape)``; for a
        regressor its values ``(n,)`` and the same as its outputs ``(n, 1)``."""
        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
            outputs = self.module(inputs).float()
            if self.task == "regression":
                values = outputs.cpu().numpy()
                return values[:, 0], values
            probabilities = torch.softmax(outputs, dim=1).cpu()
        return probabilities.argmax(1).numpy(), probabilities.numpy()


def build_served(
    model: Mapping[str, Any], pipeline: InputPipeline, schema: Mapping[str, Any]
) -> ClassifierModule:
    """An untrained module of the stored ``model`` group for ``pipeline``'s inputs and classes, as
    narrow as ``schema`` says (``known_classes``, ``n_features``): what the training run built
    (``perennial.learn.module.build_model``), so its weights load. The group is instantiated by Hydra:
    check it with :func:`check_targets` first."""
    from hydra.utils import instantiate

    unknown = sorted(set(schema) - {"known_classes", "n_features"})
    if unknown:
        raise ValueError(f"the schema extra has unknown keys {unknown}; expected known_classes, n_features")
    known, n_features = schema.get("known_classes"), schema.get("n_features")
    n_features = int(n_features) if n_features is not None else None
    # A pretrained backbone's weights file (model.weights) is where training started; the version's
    # own weights replace it, so the server neither needs that file nor reads it.
    factory = instantiate({k: v for k, v in dict(model).items() if k != "weights"})
    return build_model(
        factory, pipeline.feature_shape, len(pipeline.classes), known, n_features, task=pipeline.task
    )


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
            # Which registry the models come from: one replaced at the same path is another registry.
            self.identity = registry.identity
        self._loaded: dict[str, LoadedModel] = {}
        self._fallbacks: dict[str, tuple[Builder, tuple[int, ...]]] = {}
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
        registry kept checksums skip only this), finite weights, a pipeline and a config naming only
        ``ALLOWED_TARGETS``, and one forward pass on zeros that gives finite probabilities, one per
        class of its pipeline.
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
            stored = registry.load_extra(version, PIPELINE)
            # A version narrower than the stream (classes or columns it has not met), or of a
            # challenger line's architecture, says so in its schema extra.
            schema = dict(registry.load_extra(version, "schema") or {})
            preprocessing = registry.load_extra(version, "preprocessing") if stored is None else None
        config = dict(record.config or {})
        if schema.pop("architecture", None) == "challenger":
            config["model"] = (config.get("challenger") or {}).get("model")
        if stored is not None:
            pipeline = self._pipeline(version, stored)
            module = build_served(self._model_group(version, config), pipeline, schema)
        else:
            build, shape = self._fallback(version, config)
            module = build(**schema) if schema else build()
            pipeline = _legacy_pipeline(tuple(int(s) for s in shape), preprocessing)
        module.load_state_dict(weights)
        module.to(self.device).eval()
        loaded = LoadedModel(version, module, pipeline.feature_shape, self.device, pipeline)
        _smoke_test(loaded)
        return loaded

    @staticmethod
    def _pipeline(version: str, stored: Mapping[str, Any]) -> InputPipeline:
        try:
            pipeline = InputPipeline.from_dict(stored)
        except ValueError as err:
            raise UnservableVersion(version, f"its {PIPELINE} extra is unusable: {err}") from None
        if not pipeline.classes and pipeline.task != "regression":
            raise UnservableVersion(version, f"its {PIPELINE} extra lists no classes")
        return pipeline

    @staticmethod
    def _model_group(version: str, config: Mapping[str, Any]) -> Mapping[str, Any]:
        model = config.get("model")
        if not isinstance(model, Mapping) or "_target_" not in model:
            raise UnservableVersion(
                version,
                "its stored config has no model group to build it from (a model config with a "
                "_target_, such as perennial.learn.MLP)",
            )
        try:
            check_targets(model, "model")
        except ValueError as err:
            raise UnservableVersion(version, str(err)) from None
        return model

    def _fallback(self, version: str, config: Mapping[str, Any]) -> tuple[Builder, tuple[int, ...]]:
        """The builder for a version stored without a pipeline: the server's fallback, over the
        version's stored config once its groups name only what a fallback may build."""
        if self.fallback is None:
            raise UnservableVersion(
                version,
                f"it was stored without a {PIPELINE} extra (its input shape and class names; a "
                "registry written before versions carried one), and the server has no fallback "
                "builder: serve it with perennial-serve, which rebuilds it from the data config "
                "stored with it, or pass ServeSettings(fallback=...)",
            )
        groups = {name: config.get(name) for name in ("data", "model")}
        try:
            for name, group in groups.items():
                if group is not None:
                    check_targets(group, name, ALLOWED_TARGETS | STREAM_TARGETS)
        except ValueError as err:
            raise UnservableVersion(version, str(err)) from None
        # The stream a fallback builds reads its training data: once per distinct config.
        key = json.dumps(groups, sort_keys=True, default=str)
        if key not in self._fallbacks:
            self._fallbacks[key] = self.fallback(config)
        return self._fallbacks[key]


def _legacy_pipeline(shape: tuple[int, ...], preprocessing: Mapping[str, Any] | None) -> InputPipeline:
    """What can be told of a version stored without a pipeline: its shape, and from its
    ``preprocessing`` extra (stored with table versions before pipelines were) how raw rows become
    its inputs. Its class names are unknown."""
    if preprocessing is not None:
        try:
            encoding = TableEncoding.from_dict(dict(preprocessing))
        except (KeyError, TypeError, ValueError):
            encoding = None  # then raw rows are refused; numeric arrays still serve
        if encoding is not None and shape == (encoding.width,):
            return InputPipeline(shape, (), tuple(encoding.feature_names), encoding)
    return InputPipeline(shape)


def _smoke_test(loaded: LoadedModel) -> None:
    """One forward pass on two rows of zeros: a module that cannot answer, or answers NaN, never serves."""
    if loaded.task == "regression":
        _, values = loaded.predict(np.zeros((2, *loaded.feature_shape), dtype=np.float32))
        if values.shape != (2, 1):
            raise UnservableVersion(
                loaded.version, f"a forward pass on 2 rows gave values of shape {values.shape}"
            )
        if not np.isfinite(values).all():
            raise UnservableVersion(loaded.version, "a forward pass on zeros gives NaN or infinite values")
        return
    _, probabilities = loaded.predict(np.zeros((2, *loaded.feature_shape), dtype=np.float32))
    if probabilities.ndim != 2 or probabilities.shape[0] != 2 or probabilities.shape[1] < 1:
        raise UnservableVersion(
            loaded.version, f"a forward pass on 2 rows gave probabilities of shape {probabilities.shape}"
        )
    classes = loaded.inputs.classes
    if classes and probabilities.shape[1] != len(classes):
        raise UnservableVersion(
            loaded.version,
            f"it answers {probabilities.shape[1]} class probabilities, but its pipeline names "
            f"{len(classes)} classes",
        )
    if not np.isfinite(probabilities).all():
        raise UnservableVersion(loaded.version, "a forward pass on zeros gives NaN or infinite probabilities")


@dataclass(frozen=True)
class Deployment:
    """What serves now: the champion, and the running rollout with its candidate. Never changed in
    place: a swap builds a new one, and a request keeps the one it started with."""

    champion: LoadedModel
    rollout: Rollout | None = None  # the registry's running rollout, as this server last read it
    candidate: LoadedModel | None = None
    rollout_id: int | None = None

    def model(self, arm: str) -> LoadedModel:
        if self.candidate is not None and arm == self.candidate.version:
            return self.candidate
        return self.champion

    def route(self, unit: str) -> str:
        return self.rollout.route(unit) if self.rollout is not None else self.champion.version
