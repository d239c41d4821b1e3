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
from perennial.data.pipeline import InputPipeline
from perennial.evaluate import PromotionGate
from perennial.learn import StatefulUpdate
from perennial.loop import ContinuousDeployment, LoopSettings
from perennial.registry import Registry, VersionRecord
from perennial.serve.models import (
    ALLOWED_TARGETS,
    STREAM_TARGETS,
    ModelStore,
    UnservableVersion,
    check_targets,
)
from perennial.triggers import EveryWindow

from .stored import pipeline_extra, table_registry

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


def _registry_with(tmp_path, weights=None, config=None, pipeline=True):
    """A registry whose v1 has ``weights`` (default: a fresh model's) and ``config`` (default: SMALL),
    stored with its pipeline extra as the loop stores it (``pipeline=False``: as before it did)."""
    stream, build = stream_and_builder(OmegaConf.create(SMALL))
    torch.manual_seed(0)
    state = build().state_dict()
    root = tmp_path / "registry"
    with Registry(root) as reg:
        reg.add(
            VersionRecord("v1", None, "stateless", config=config or SMALL),
            {**state, **(weights or {})},
            pipeline_extra(stream) if pipeline else None,
        )
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
    # The server builds only the model group; a data group is built only by the fallback of a version
    # stored without a pipeline, which must never be called with a foreign target.
    legacy = where.startswith("data")
    root, _ = _registry_with(tmp_path, config=config, pipeline=not legacy)
    with pytest.raises(UnservableVersion) as err:
        ModelStore(root, fallback=lambda stored: pytest.fail("the fallback was called")).load("v1")
    assert f"version v1 cannot serve: {where}._target_ is {target!r}" in str(err.value)
    assert not (tmp_path / "imported").exists() and "probe_not_perennial" not in sys.modules


def test_an_interpolation_in_a_stored_config_is_refused(tmp_path):
    config = {**SMALL, "model": {**SMALL["model"], "hidden": "${oc.env:HOME}"}}
    root, _ = _registry_with(tmp_path, config=config)
    with pytest.raises(UnservableVersion, match=r"model.hidden is '\$\{oc.env:HOME\}'"):
        ModelStore(root).load("v1")


def test_every_model_preset_is_allowed_and_every_data_preset_to_a_fallback():
    models = sorted((REPO / "conf" / "model").glob("*.yaml"))
    data = sorted((REPO / "conf" / "data").glob("*.yaml"))
    assert models and data
    for path in models:
        check_targets(OmegaConf.to_container(OmegaConf.load(path)), path.stem)
    for path in data:
        with pytest.raises(ValueError, match="which the server does not build"):
            check_targets(OmegaConf.to_container(OmegaConf.load(path)), path.stem)
        check_targets(
            OmegaConf.to_container(OmegaConf.load(path)), path.stem, ALLOWED_TARGETS | STREAM_TARGETS
        )


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
            VersionRecord("v2", None, "stateless", config=SMALL),
            {"backbone.net.1.weight": torch.zeros(8, 6)},
            {"pipeline": reg.load_extra("v1", "pipeline")},
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


# ---- from the registry alone ----------------------------------------------------------------------
def test_a_version_serves_though_its_training_data_is_gone(tmp_path):
    root, csv, stream, module = table_registry(tmp_path)
    csv.unlink()  # the stored config's data group now names a file that does not exist
    loaded = ModelStore(root).load("v1")
    x = np.concatenate([w.x for w in stream.windows()])
    assert loaded.feature_shape == stream.feature_shape and loaded.inputs.classes == ("buy", "skip")
    torch.testing.assert_close(
        loaded.module.predict_logits(x), module.eval().predict_logits(x), rtol=0, atol=0
    )


def test_a_version_without_a_pipeline_and_no_fallback_says_what_is_missing(tmp_path):
    root, _ = _registry_with(tmp_path, pipeline=False)
    with pytest.raises(UnservableVersion, match=r"v1 cannot serve: it was stored without a pipeline extra"):
        ModelStore(root).load("v1")


def test_a_version_without_a_pipeline_is_rebuilt_by_the_fallback_from_its_stored_config(tmp_path):
    root, _, stream, module = table_registry(tmp_path, pipeline=False)
    asked = []

    def fallback(stored):
        asked.append(stored["data"]["path"])
        stream, build = stream_and_builder(OmegaConf.create({k: stored[k] for k in ("data", "model")}))
        return build, tuple(stream.feature_shape)

    store = ModelStore(root, fallback=fallback)
    loaded = store.load("v1")
    assert asked == [str(tmp_path / "sales.csv")]
    # Its class names are unknown, but the preprocessing extra stored with it still encodes raw rows.
    assert loaded.inputs.classes == () and loaded.inputs.encoding == stream.encoding
    x = np.concatenate([w.x for w in stream.windows()])
    torch.testing.assert_close(
        loaded.module.predict_logits(x), module.eval().predict_logits(x), rtol=0, atol=0
    )


def test_a_pipeline_that_disagrees_with_the_weights_is_refused(tmp_path):
    root, _ = _registry_with(tmp_path, pipeline=False)
    stored = InputPipeline((6,), ("a", "b", "c")).to_dict()  # three classes; the weights answer two
    with Registry(root) as reg:
        reg.add(
            VersionRecord("v2", None, "stateless", config=SMALL), reg.load_weights("v1"), {"pipeline": stored}
        )
        reg.add(
            VersionRecord("v3", None, "stateless", config=SMALL),
            reg.load_weights("v1"),
            {"pipeline": {**stored, "format": "something/2"}},
        )
    with pytest.raises(UnservableVersion, match=r"v2 cannot serve: it fails to build or run: RuntimeError"):
        ModelStore(root).load("v2")
    with pytest.raises(
        UnservableVersion, match=r"v3 cannot serve: its pipeline extra is unusable: not an input"
    ):
        ModelStore(root).load("v3")
