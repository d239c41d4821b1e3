"""The server rebuilds every kind of version a run stores: ones narrower than the stream (fewer
classes or columns) and ones of a challenger line's architecture."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf

from perennial.cli.common import challenger, stream_and_builder
from perennial.evaluate import PromotionGate
from perennial.learn import StatefulUpdate
from perennial.loop import ContinuousDeployment, LoopSettings
from perennial.registry import Registry
from perennial.serve.models import ModelStore
from perennial.triggers import EveryWindow

CONFIG = {
    "data": {
        "_target_": "perennial.data.NewColumnsStream",
        "inner": {
            "_target_": "perennial.data.SyntheticStream",
            "kind": "abrupt",
            "n_samples": 2000,
            "window": 500,
            "n_features": 6,
            "seed": 0,
        },
        "columns": 2,
        "at": 2,
    },
    "model": {"_target_": "perennial.learn.MLP", "_partial_": True, "hidden": [8]},
    "challenger": {
        "model": {"_target_": "perennial.learn.MLP", "_partial_": True, "hidden": [16]},
        "every": 1,
    },
}


def test_the_server_loads_narrow_and_challenger_versions_as_the_loop_does(tmp_path):
    cfg = OmegaConf.create(CONFIG)
    stream, build = stream_and_builder(cfg)
    loop = ContinuousDeployment(
        stream=stream,
        build=build,
        update=StatefulUpdate(epochs=2),
        trigger=EveryWindow(),
        gate=PromotionGate(tolerance=1.0, forgetting_tolerance=1.0),
        buffer=None,
        registry=Registry(tmp_path / "registry"),
        run_dir=tmp_path,
        settings=LoopSettings(warmup_windows=1, initial_epochs=2),
        config=OmegaConf.to_container(cfg),
        progress=False,
        challenger=challenger(cfg, stream),
    )
    loop.run()
    schemas = {v.id: loop.registry.load_extra(v.id, "schema") for v in loop.registry.versions()}
    assert schemas["v1"] == {"n_features": 4}
    assert any(s == {"architecture": "challenger"} for s in schemas.values())
    store = ModelStore(tmp_path / "registry")
    x = np.concatenate([w.x for w in stream.windows()[2:]])
    for version in schemas:
        expected = loop.load(version).predict_logits(x)
        served = store.load(version).module.cpu().predict_logits(x)
        torch.testing.assert_close(served, expected, rtol=0, atol=0)
