"""Shared fixtures: small streams and a loop factory, so end-to-end tests run in seconds."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from perennial.data import SyntheticStream
from perennial.evaluate import PromotionGate
from perennial.learn import MLP, ClassifierModule, ReservoirBuffer, StatefulUpdate
from perennial.loop import ContinuousDeployment, LoopSettings
from perennial.registry import Registry
from perennial.triggers import EveryWindow

# Tiny models train faster on one thread, and two test processes never fight over OpenMP threads.
torch.set_num_threads(1)


def build_mlp(in_shape, n_classes, hidden=(32,), known_classes=None, n_features=None) -> ClassifierModule:
    backbone = MLP(in_shape=(n_features,) if n_features else in_shape, n_classes=known_classes or n_classes,
                   hidden=hidden)
    return ClassifierModule(backbone, n_classes, known_classes, n_features)


def small_stream(**kw) -> SyntheticStream:
    return SyntheticStream(
        **{
            "kind": "abrupt",
            "n_samples": 3000,
            "window": 500,
            "n_features": 6,
            "drift_points": [1500],
            "seed": 0,
            **kw,
        }
    )


def make_loop(
    run_dir: Path,
    stream=None,
    update=None,
    buffer="reservoir",
    trigger=None,
    gate=None,
    regularizers=(),
    rollout=None,
    screen=None,
    build=None,
    challenger=None,
    **settings,
):
    stream = stream if stream is not None else small_stream()
    if buffer == "reservoir":
        buffer = ReservoirBuffer(capacity=300, seed=0)
    return ContinuousDeployment(
        stream=stream,
        build=build or partial(build_mlp, tuple(stream.feature_shape), stream.n_classes),
        update=update or StatefulUpdate(epochs=3, replay_fraction=0.5),
        trigger=trigger or EveryWindow(),
        gate=gate or PromotionGate(),
        buffer=buffer,
        registry=Registry(run_dir / "registry"),
        run_dir=run_dir,
        settings=LoopSettings(**{"warmup_windows": 1, "initial_epochs": 5, **settings}),
        config={"test": True},
        progress=False,
        regularizers=regularizers,
        rollout=rollout,
        screen=screen,
        challenger=challenger,
    )


@pytest.fixture
def loop_factory(tmp_path):
    return partial(make_loop, tmp_path)


def kill_mid_window(loop: ContinuousDeployment, window: int) -> None:
    """Run ``loop`` until ``window`` has trained its candidate, then die before the window commits,
    as a killed process would; the registry is closed like a dead process's file handles."""
    real = loop.registry.record_decision

    def crash(version, at, *args, **kwargs):
        if at == window:
            raise KeyboardInterrupt("killed after training, before the window committed")
        return real(version, at, *args, **kwargs)

    loop.registry.record_decision = crash
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    loop.registry.close()
