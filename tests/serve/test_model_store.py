"""The server rebuilds every kind of version a run stores: ones narrower than the stream (fewer
classes or columns) and ones of a challenger line's architecture."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from perennial.cli.common import challenger, stream_and_builder
from perennial.evaluate import PromotionGate
from perennial.learn import StatefulUpdate
from perennial.loop import ContinuousDeployment, LoopSettings
from perennial.registry import Registry, VersionRecord
from perennial.serve.models import ModelStore, UnservableVersion, check_targets
from perennial.triggers import EveryWindow

REPO = Path(__file__).resolve().parents[2]
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
        gate=PromotionGate(tolerance=1.0, forgetting_tolerance=1.0, fresh="holdout"),
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


# ---- what the server refuses to load ------------------------------------------------------------
SMALL = {
    "data": {
        "_target_": "perennial.data.SyntheticStream",
        "kind": "none",
        "n_samples": 400,
        "window": 100,
        "n_features": 6,
        "seed": 0,
    },
    "model": {"_target_": "perennial.learn.MLP", "_partial_": True, "hidden": [8]},
}


def _registry_with(tmp_path, weights=None, config=None):
    """A registry whose v1 has ``weights`` (default: a fresh model's) and ``config`` (default: SMALL)."""
    _, build = stream_and_builder(OmegaConf.create(SMALL))
    torch.manual_seed(0)
    state = build().state_dict()
    root = tmp_path / "registry"
    with Registry(root) as reg:
        reg.add(VersionRecord("v1", None, "stateless", config=config or SMALL), {**state, **(weights or {})})
    return root, state


def test_a_version_loads_and_answers(tmp_path):
    root, state = _registry_with(tmp_path)
    loaded = ModelStore(root).load("v1")
    assert loaded.feature_shape == (6,)
    assert torch.equal(loaded.module.state_dict()["backbone.net.1.weight"], state["backbone.net.1.weight"])


@pytest.mark.parametrize(
    "where",
    ["model", "data.inner", "model._args_[0]"],
)
@pytest.mark.parametrize("target", ["probe_not_perennial.Boom", "perennial.cli.run.main", "os.system"])
def test_a_config_naming_a_foreign_target_is_refused_without_importing_it(
    tmp_path, monkeypatch, where, target
):
    # A module that leaves a mark when imported: the server must refuse before anything imports it.
    (tmp_path / "probe_not_perennial.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\nclass Boom:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = json.loads(json.dumps(SMALL))
    if where == "model":
        config["model"]["_target_"] = target
    elif where == "data.inner":
        config["data"]["inner"] = {"_target_": target}
    else:
        config["model"]["_args_"] = [{"_target_": target}]
    root, _ = _registry_with(tmp_path, config=config)
    with pytest.raises(UnservableVersion) as err:
        ModelStore(root).load("v1")
    assert f"version v1 cannot serve: {where}._target_ is {target!r}" in str(err.value)
    assert not (tmp_path / "imported").exists() and "probe_not_perennial" not in sys.modules


def test_an_interpolation_in_a_stored_config_is_refused(tmp_path):
    config = {**SMALL, "data": {**SMALL["data"], "seed": "${oc.env:HOME}"}}
    root, _ = _registry_with(tmp_path, config=config)
    with pytest.raises(UnservableVersion, match=r"data.seed is '\$\{oc.env:HOME\}'"):
        ModelStore(root).load("v1")


def test_every_model_and_data_preset_is_allowed():
    presets = sorted((REPO / "conf" / "model").glob("*.yaml")) + sorted(
        (REPO / "conf" / "data").glob("*.yaml")
    )
    assert presets
    for path in presets:
        check_targets(OmegaConf.to_container(OmegaConf.load(path)), path.stem)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, value):
    root, _ = _registry_with(tmp_path, {"backbone.net.3.weight": torch.full((2, 8), value)})
    with pytest.raises(
        UnservableVersion, match=r"v1 cannot serve: its weights are not finite: backbone.net.3.weight"
    ):
        ModelStore(root).load("v1")


def test_finite_weights_that_answer_nan_fail_the_smoke_pass(tmp_path):
    # Every hidden unit at 3e38, times 10, overflows the logits to inf; softmax(inf, inf) is NaN.
    huge = {"backbone.net.1.bias": torch.full((8,), 3e38), "backbone.net.3.weight": torch.full((2, 8), 10.0)}
    root, _ = _registry_with(tmp_path, huge)
    with pytest.raises(
        UnservableVersion, match=r"a forward pass on zeros gives NaN or infinite probabilities"
    ):
        ModelStore(root).load("v1")


def test_a_version_stored_before_checksums_still_loads_checked_for_finite_weights(tmp_path):
    root, _ = _registry_with(tmp_path)
    with Registry(root) as reg:
        reg.add(
            VersionRecord("v2", None, "stateless", config=SMALL), {"backbone.net.1.weight": torch.zeros(8, 6)}
        )
    with sqlite3.connect(root / "index.sqlite") as conn:
        conn.execute("DROP TABLE files")
        weights = root / "versions" / "v2" / "weights.safetensors"
    store = ModelStore(root)
    assert store.load("v1").version == "v1"
    with pytest.raises(UnservableVersion, match=r"v2 cannot serve: it fails to build or run: RuntimeError"):
        store.load("v2")  # its weights do not fit the model: refused, not a traceback at serving time
    weights.write_bytes(weights.read_bytes()[:30])
    with pytest.raises(UnservableVersion, match=r"v2 cannot serve: weights.safetensors is not a readable"):
        store.load("v2")
