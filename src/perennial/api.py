"""perennial from Python: :func:`deploy` builds the continuous-deployment loop from parts, and every
part it is not given is the one ``perennial-run`` builds with no overrides (read from the packaged
conf/, so the two cannot drift); :func:`model_builder` turns a backbone into the loop's model builder.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from perennial.data.window import Stream
from perennial.evaluate.gate import PromotionGate
from perennial.evaluate.screening import WindowScreen
from perennial.learn.module import ClassifierModule, build_model
from perennial.learn.replay import ReplayBuffer
from perennial.learn.strategies import Regularizer
from perennial.learn.updater import Update
from perennial.loop import ContinuousDeployment, LoopSettings
from perennial.registry import Registry
from perennial.rollout.live import Rollout
from perennial.tracking import RunLogger
from perennial.triggers.base import Trigger

__all__ = ["DEFAULT", "build_for", "cli_config", "deploy", "describe", "model_builder"]

BackboneFactory = Callable[..., nn.Module]  # called as factory(in_shape=..., n_classes=...)
# Loop settings of how perennial-run drives a run (a command line's), not of what the run does.
RUN_MODE_KEYS = ("follow", "poll")
# The parts of perennial-run's config that are not part of the loop, or that a resumed run may change.
NOT_PARTS = ("defaults", "hydra", "name", "resume", "progress", "recent_windows", "registry_dir")


class _Default(enum.Enum):
    DEFAULT = "perennial-run's default"

    def __repr__(self) -> str:
        return "DEFAULT"


# For the parts where None already means "none" (no replay buffer, no logger): perennial-run's default.
DEFAULT = _Default.DEFAULT

P = ParamSpec("P")
R = TypeVar("R")


# ---- perennial-run's defaults -------------------------------------------------------------------


@functools.cache
def _packaged_run_config() -> dict[str, Any]:
    """conf/run.yaml composed with the default option of each of its groups, unresolved."""
    conf = Path(str(files("perennial.conf")))
    run = OmegaConf.to_container(OmegaConf.load(conf / "run.yaml"))  # unresolved: name is hydra's
    groups = {}
    for entry in run["defaults"]:
        if not isinstance(entry, dict):  # _self_
            continue
        ((group, choice),) = entry.items()
        if choice is None or " " in group or "/" in group:  # experiment: null, override hydra/...
            continue
        node = OmegaConf.load(conf / group / f"{choice}.yaml")
        if "defaults" in node:
            raise RuntimeError(
                f"conf/{group}/{choice}.yaml has a defaults list, which cli_config() does not compose"
            )
        groups[group] = node
    own = {k: v for k, v in run.items() if k not in NOT_PARTS}
    return OmegaConf.to_container(OmegaConf.merge(groups, own))


def cli_config(seed: int = 0) -> DictConfig:
    """What ``perennial-run`` is configured with when given no overrides but ``seed``: every group's
    default option from the packaged conf/ (the parts :func:`deploy` builds when not given them).

    >>> cfg = cli_config(seed=7)
    >>> cfg["update"]["_target_"], cfg.strategy.buffer.seed, cfg.loop.warmup_windows
    ('perennial.learn.StatefulUpdate', 7, 3)
    """
    cfg = OmegaConf.create(_packaged_run_config())
    cfg.seed = seed
    return cfg


def _built(cfg: DictConfig, group: str) -> Any:
    """The part ``cfg[group]`` configures, as perennial-run builds it: None for an empty group."""
    node = cfg.get(group)
    return instantiate(node, _convert_="all") if node is not None and node.get("_target_") else None


# ---- the model ----------------------------------------------------------------------------------


def model_builder(stream: Stream, backbone: BackboneFactory | None = None) -> Callable[..., ClassifierModule]:
    """The loop's ``build``: makes a fresh, untrained classifier of ``backbone`` for ``stream``.

    ``backbone`` is called as ``backbone(in_shape=..., n_classes=...)`` and returns a
    ``torch.nn.Module`` (perennial's :class:`~perennial.learn.MLP` and
    :class:`~perennial.learn.SmallCNN`, a ``functools.partial`` of one, or your own); None is
    perennial-run's ``model=mlp``. The model fits the stream's schema as it stands when it is built:
    a growing source knows its width and classes from its first window. A version narrower than the
    stream (fewer classes or columns) is rebuilt with ``build(known_classes=..., n_features=...)``.

    >>> from functools import partial
    >>> import torch
    >>> from perennial import MLP, SyntheticStream
    >>> stream = SyntheticStream(n_samples=200, window=100, n_features=4)
    >>> build = model_builder(stream, partial(MLP, hidden=(8,)))
    >>> build()(torch.zeros(3, 4)).shape
    torch.Size([3, 2])
    >>> build(known_classes=1).known_classes
    1
    """
    if not isinstance(stream, Stream):
        raise TypeError(f"model_builder(stream=...) must be a perennial Stream; got {_shown(stream)}")
    where = "model_builder(backbone=...)"
    factory = _default_backbone() if backbone is None else _check_backbone(backbone, where)
    return functools.partial(build_for, factory, stream)


def build_for(backbone_factory: BackboneFactory, stream: Stream, **schema: int) -> ClassifierModule:
    """A fresh model for ``stream``'s schema as it stands when the model is built: a growing source
    knows its width and classes from its first window, and a resumed run from its saved state."""
    return build_model(
        backbone_factory, tuple(stream.feature_shape), stream.n_classes, task=stream.task, **schema
    )


def _default_backbone() -> BackboneFactory:
    return _built(cli_config(), "model")


def _check_backbone(factory: object, where: str) -> BackboneFactory:
    example = "perennial.MLP or functools.partial(perennial.MLP, hidden=(32, 32))"
    what = f"{where} must be a backbone factory, a callable (in_shape, n_classes) -> torch.nn.Module such as"
    if isinstance(factory, nn.Module):
        raise TypeError(
            f"{what} {example}; got a {type(factory).__name__} module that is already built: pass its "
            "class, or a functools.partial of it, and each version gets a fresh one"
        )
    if not callable(factory):
        raise TypeError(f"{what} {example}; got {_shown(factory)}")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin: nothing to check before it is called
        return factory
    try:
        signature.bind(in_shape=(1,), n_classes=2)
    except TypeError as err:
        raise TypeError(f"{what} {example}; {_name(factory)} cannot be called so: {err}") from None
    return factory


def _model_config(factory: BackboneFactory) -> dict[str, Any]:
    """``factory`` as a config's ``model`` group (``_target_``, ``_partial_`` and its arguments): the
    server rebuilds each version from it, and perennial-serve builds perennial's own models only."""
    target, args, keywords = factory, (), {}
    if isinstance(factory, functools.partial):
        target, args, keywords = factory.func, factory.args, factory.keywords
    group: dict[str, Any] = {"_target_": _path(target), "_partial_": True}
    if args:
        group["_args_"] = _plain(list(args))
    group |= {k: v for k, v in ((k, _plain(v)) for k, v in keywords.items()) if v is not _SKIP}
    return group


# ---- the loop -----------------------------------------------------------------------------------

# perennial-run's names for what deploy() takes under another name, for the error a CLI user meets.
CLI_NAMES = {
    "data": "perennial-run's data= is deploy's stream, its first argument",
    "strategy": "perennial-run's strategy= is deploy's buffer and regularizers",
    "loop": "perennial-run's loop.* settings are deploy's settings=perennial.LoopSettings(...)",
    "registry_dir": "perennial-run's registry_dir= is deploy's registry",
    "resume": "to continue a run, call run(resume=True) on the loop deploy() returns",
    "challenger": "a challenger line (challenger.model=...) is perennial-run's only, for now",
}


def _named_arguments(function: Callable[P, R]) -> Callable[P, R]:
    """Refuse an unknown keyword naming the argument meant, not only the one given."""
    parameters = list(inspect.signature(function).parameters)

    @functools.wraps(function)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        for key in kwargs:
            if key not in parameters:
                close = difflib.get_close_matches(key, parameters, n=1)
                if key in CLI_NAMES:
                    hint = CLI_NAMES[key]
                elif close:
                    hint = f"did you mean {close[0]}=?"
                else:
                    hint = f"it takes {', '.join(parameters)}"
                raise TypeError(f"{function.__name__}() got an unexpected keyword argument {key!r}; {hint}")
        return function(*args, **kwargs)

    return checked


@_named_arguments
def deploy(
    stream: Stream,
    model: BackboneFactory | None = None,
    *,
    run_dir: str | os.PathLike[str],
    update: Update | None = None,
    trigger: Trigger | None = None,
    gate: PromotionGate | None = None,
    buffer: ReplayBuffer | _Default | None = DEFAULT,
    regularizers: Sequence[Regularizer] = (),
    rollout: Rollout | None = None,
    screen: WindowScreen | None = None,
    registry: Registry | str | os.PathLike[str] | None = None,
    settings: LoopSettings | None = None,
    trainer: Mapping[str, Any] | None = None,
    logger: RunLogger | _Default | None = DEFAULT,
    seed: int = 0,
    progress: bool = False,
) -> ContinuousDeployment:
    """The continuous-deployment loop over ``stream``, ready to ``run()``, ``follow()`` or ``process()``.

    Every part left out is the one ``perennial-run`` builds with no overrides: ``model`` the MLP of
    ``model=mlp``, ``update`` a ``StatefulUpdate`` (``update=stateful``), ``trigger``
    ``EveryWindow()``, ``gate`` the ``PromotionGate`` of ``gate=default``, ``buffer`` the
    ``ReservoirBuffer`` of ``strategy=replay`` (None: fine-tune without replay), no ``rollout``, no
    ``screen``, ``settings`` run.yaml's ``loop``, ``trainer`` ``trainer=cpu`` and ``logger``
    ``logger=csv`` (None: log nothing). ``seed`` seeds the run (the loop, the buffer, the gate). The
    registry is ``<run_dir>/registry`` unless given. Unlike perennial-run there is no progress bar
    unless ``progress=True``.

    ``model`` is a backbone factory (see :func:`model_builder`). Each version is stored with the run's
    config (its ``model`` group says how to rebuild it), so ``perennial-serve`` serves it.

    Continue a run in the same ``run_dir`` with the same parts: ``deploy(...).run(resume=True)``.

    >>> import tempfile
    >>> from perennial import LoopSettings, StatefulUpdate, SyntheticStream
    >>> stream = SyntheticStream(n_samples=1500, window=300, n_features=4)
    >>> loop = deploy(stream, run_dir=tempfile.mkdtemp(), update=StatefulUpdate(epochs=1),
    ...               settings=LoopSettings(warmup_windows=1, initial_epochs=2))
    >>> result = loop.run()
    >>> result.started, result.windows, result.versions[:2]
    (True, 5, ['v1', 'v1.1'])
    >>> deploy(stream, run_dir=tempfile.mkdtemp(), update="stateful")
    Traceback (most recent call last):
    TypeError: deploy(update=...) must be an Update such as perennial.StatefulUpdate(epochs=20); got 'stateful' (perennial-run's name for it: from Python, pass the object)
    """  # noqa: E501
    _check(stream, "stream", Stream, "perennial.WeatherStream(window=365) or perennial.open_table(path, ...)")
    if not isinstance(run_dir, str | os.PathLike):
        raise TypeError(f"deploy(run_dir=...) must be a directory path; got {_shown(run_dir)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"deploy(seed=...) must be an integer in [0, 2**32); got {_shown(seed)}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"deploy(seed=...) must be an integer in [0, 2**32); got {seed!r}")
    seed = int(seed)
    if not isinstance(progress, bool):
        raise TypeError(f"deploy(progress=...) must be True or False; got {_shown(progress)}")
    cfg = cli_config(seed)
    factory = _default_backbone() if model is None else _check_backbone(model, "deploy(model=...)")
    update = _part(update, "update", Update, "perennial.StatefulUpdate(epochs=20)", cfg)
    trigger = _part(trigger, "trigger", Trigger, "perennial.EveryWindow()", cfg)
    gate = _part(gate, "gate", PromotionGate, "perennial.PromotionGate(tolerance=0.0)", cfg)
    buffer = _optional(buffer, "buffer", ReplayBuffer, "perennial.ReservoirBuffer(capacity=1000)", cfg)
    logger = _optional(logger, "logger", RunLogger, "perennial.CSVLogger()", cfg)
    _check(rollout, "rollout", Rollout, "perennial.Canary()", optional=True)
    _check(screen, "screen", WindowScreen, "perennial.WindowScreen()", optional=True)
    regularizers = _regularizers(regularizers, buffer)
    if rollout is not None and getattr(stream, "label_delay", 0):
        raise ValueError(
            f"deploy(rollout={type(rollout).__name__}(...)) decides from labels on the traffic it serves, "
            f"but the stream's labels land late (label_delay={stream.label_delay!r}): use rollout=None"
        )
    settings = _settings(settings, seed, cfg)
    if trainer is None:
        trainer = _container(cfg.trainer)
    elif not isinstance(trainer, Mapping):
        raise TypeError(
            "deploy(trainer=...) must be a mapping of lightning.Fabric settings such as "
            f"{{'accelerator': 'gpu', 'devices': 1}}; got {_shown(trainer)}"
        )
    config = {
        "name": f"{stream.name}-{update.kind}",  # as perennial-run names a run: data-update
        "seed": seed,
        "data": describe(stream),
        "model": _model_config(factory),
        "update": describe(update),
        "strategy": {"buffer": describe(buffer), "regularizers": [describe(r) for r in regularizers]},
        "trigger": describe(trigger),
        "gate": describe(gate),
        "rollout": describe(rollout) or {},
        "screen": describe(screen) or {},
        "trainer": dict(trainer),
        "loop": {k: v for k, v in dataclasses.asdict(settings).items() if k != "seed"},
    }
    run_dir = Path(run_dir)
    opened = _registry(registry, run_dir)
    try:
        return ContinuousDeployment(
            stream=stream,
            build=functools.partial(build_for, factory, stream),
            update=update,
            trigger=trigger,
            gate=gate,
            buffer=buffer,
            registry=opened,
            run_dir=run_dir,
            settings=settings,
            trainer=dict(trainer),
            # As the checkpoint stores it (tuples become lists), so a resumed run's compares equal.
            config=json.loads(json.dumps(config)),
            progress=progress,
            regularizers=regularizers,
            rollout=rollout,
            screen=screen,
            logger=logger,
        )
    except BaseException:
        if opened is not registry:  # opened here: a loop refused (a trainer that cannot run) leaves it closed
            opened.close()
        raise


def _part(value: Any, name: str, kind: type, example: str, cfg: DictConfig) -> Any:
    if value is None:
        return _built(cfg, name)
    _check(value, name, kind, example)
    return value


def _optional(value: Any, name: str, kind: type, example: str, cfg: DictConfig) -> Any:
    if value is DEFAULT:
        return _built(cfg.strategy, "buffer") if name == "buffer" else _built(cfg, name)
    _check(value, name, kind, example, optional=True)
    return value


def _check(value: Any, name: str, kind: type, example: str, optional: bool = False) -> None:
    if (value is None and optional) or isinstance(value, kind):
        return
    article = "an" if kind.__name__[0] in "AEIOU" else "a"
    accepted = f"{article} {kind.__name__} such as {example}" + (", or None" if optional else "")
    hint = ""
    if isinstance(value, str):
        hint = " (perennial-run's name for it: from Python, pass the object)"
    elif isinstance(value, type) and issubclass(value, kind):
        hint = f" (the class itself: pass an instance, {value.__name__}(...))"
    raise TypeError(f"deploy({name}=...) must be {accepted}; got {_shown(value)}{hint}")


def _regularizers(value: Any, buffer: ReplayBuffer | None) -> list[Regularizer]:
    if isinstance(value, Regularizer):
        value = [value]
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(
            f"deploy(regularizers=...) must be a list of Regularizers such as [perennial.EWC()]; "
            f"got {_shown(value)}"
        )
    for i, item in enumerate(value):
        if not isinstance(item, Regularizer):
            raise TypeError(
                f"deploy(regularizers=...) must hold Regularizers such as perennial.EWC(), "
                f"perennial.LwF(), perennial.DER(); item {i} is {_shown(item)}"
            )
    replaying = [type(r).__name__ for r in value if r.needs_logits]
    if replaying and buffer is None:
        raise ValueError(
            f"deploy(regularizers=[{', '.join(replaying)}(...)]) replays stored logits and needs a buffer, "
            "but deploy(buffer=None) keeps none: leave buffer out, or pass perennial.ReservoirBuffer(...)"
        )
    return list(value)


def _settings(settings: LoopSettings | None, seed: int, cfg: DictConfig) -> LoopSettings:
    if settings is None:
        loop = {k: v for k, v in _container(cfg.loop).items() if k not in RUN_MODE_KEYS}
        return LoopSettings(seed=seed, **loop)
    if not isinstance(settings, LoopSettings):
        raise TypeError(
            f"deploy(settings=...) must be a perennial.LoopSettings such as "
            f"LoopSettings(warmup_windows=3); got {_shown(settings)}"
        )
    if settings.seed not in (0, seed):
        raise ValueError(
            f"deploy(settings=LoopSettings(seed={settings.seed})) and deploy(seed={seed}) name two seeds; "
            f"give the run's seed once, as deploy(seed={settings.seed})"
        )
    return dataclasses.replace(settings, seed=seed)


def _registry(registry: Any, run_dir: Path) -> Registry:
    if registry is None:
        return Registry(run_dir / "registry")
    if isinstance(registry, Registry):
        return registry
    if isinstance(registry, str | os.PathLike):
        return Registry(registry)
    raise TypeError(
        f"deploy(registry=...) must be a perennial.Registry or a directory path (None: <run_dir>/registry); "
        f"got {_shown(registry)}"
    )


# ---- parts as config ----------------------------------------------------------------------------

_SKIP = object()  # a value no config can hold


def describe(part: object) -> dict[str, Any] | None:
    """``part`` as a config group: its class as ``_target_`` and those of its constructor arguments
    that it keeps (as scikit-learn's ``get_params``: under the same name, a private ``_name``, or in
    a ``settings`` mapping) and that are plain data; None for None. What :func:`deploy` stores with
    every version, and compares when a run is resumed.

    >>> from perennial import Canary, PromotionGate
    >>> describe(PromotionGate(tolerance=0.02))["tolerance"]
    0.02
    >>> describe(Canary(steps=(0.5, 1.0)))["steps"]
    [0.5, 1.0]
    """
    if part is None:
        return None
    cls = type(part)
    group: dict[str, Any] = {"_target_": _path(cls)}
    for name in _init_parameters(cls):
        value = _plain(_argument(part, name))
        if value is not _SKIP:
            group[name] = value
    return group


def _argument(part: object, name: str) -> Any:
    """What ``part`` keeps of its constructor argument ``name``, or _SKIP."""
    for attribute in (name, f"_{name}"):
        try:
            return getattr(part, attribute)
        except AttributeError:
            continue
        except Exception:  # a property that cannot answer yet (a source not polled)
            return _SKIP
    settings = getattr(part, "settings", None)
    if isinstance(settings, Mapping) and name in settings:  # rollouts keep their settings so
        return settings[name]
    return _SKIP


def _init_parameters(cls: type) -> list[str]:
    names: list[str] = []
    # A subclass passes **kwargs on to its base's arguments; a dataclass's __init__ is generated.
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            named = p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            if named and p.name != "self" and not p.name.startswith("_") and p.name not in names:
                names.append(p.name)
    return names


def _plain(value: Any, depth: int = 0) -> Any:
    if value is _SKIP or value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        items = {k: _plain(v, depth + 1) for k, v in value.items()}
        return _SKIP if _SKIP in items.values() else items
    if isinstance(value, list | tuple):
        items = [_plain(v, depth + 1) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else items
    if depth < 3 and type(value).__module__.startswith("perennial."):  # a part of a part: a detector
        return describe(value)
    return _SKIP


def _path(target: Any) -> str:
    named = target if hasattr(target, "__qualname__") else type(target)
    return f"{named.__module__}.{named.__qualname__}"


def _name(value: Any) -> str:
    return getattr(value, "__qualname__", None) or type(value).__name__


def _shown(value: Any) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return repr(value)
    if isinstance(value, type):
        return f"the class {value.__name__}"
    text = repr(value)
    return f"{type(value).__name__} {text[:80] + '...' if len(text) > 80 else text}"


def _container(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)
