"""perennial from Python: the README's example runs, ``deploy`` builds what ``perennial-run`` builds
by default, a bad argument is refused by its Python name, the result reads as a dict and as typed
figures, a run resumes, and a version trained from Python serves."""

from __future__ import annotations

import doctest
import functools
import importlib
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import perennial as pn
from perennial.api import describe
from perennial.cli.run import CONF_DIR
from perennial.data import Window
from perennial.report.run import summarize
from perennial.serve.models import ModelStore
from perennial.tracking import RunLogger

README = Path(__file__).resolve().parents[1] / "README.md"


def small_stream(**kw) -> pn.SyntheticStream:
    return pn.SyntheticStream(**{"n_samples": 1500, "window": 300, "n_features": 4, "kind": "none", **kw})


def fast(**parts):
    """Small, quick parts (fresh objects each call, as a new process would make them)."""
    return {
        "update": pn.StatefulUpdate(epochs=1),
        "settings": pn.LoopSettings(warmup_windows=1, initial_epochs=2),
        "model": functools.partial(pn.MLP, hidden=(16,)),
        **parts,
    }


# ---- the README example ---------------------------------------------------------------------------


def readme_example() -> str:
    text = README.read_text()
    found = re.search(r"<!-- python-api -->\s*```python\n(.*?)```\s*<!-- /python-api -->", text, re.S)
    assert found, "README.md has no ```python block between <!-- python-api --> markers"
    return found.group(1)


def test_the_readme_example_runs_and_reports_sane_figures(tmp_path, monkeypatch, capsys):
    code = readme_example()
    assert 15 <= len(code.strip().splitlines()) <= 25  # about 20 lines, as the README promises
    monkeypatch.chdir(tmp_path)  # its run_dir is relative: runs/weather-python
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    out = capsys.readouterr().out

    result = namespace["result"]
    assert isinstance(result, pn.RunResult) and result.started
    assert result.windows == 50 and len(result.rows) == 47  # 3 warm-up years train v1
    champion = re.search(r"champion (\S+) of (\d+) versions", out)
    assert champion.groups() == (result.champion, str(len(result.versions)))
    served, static = map(float, re.search(r"served ([\d.]+), v1 never updated ([\d.]+)", out).groups())
    assert 0.6 < served < 0.95 and 0.6 < static < 0.95  # rain or not, from the day's weather
    assert served == pytest.approx(result.served_accuracy, abs=5e-4)
    # The stream drifts from about year 33: keeping the model fresh pays off over the last decade.
    recent = result.recent(10)
    assert recent.served_accuracy > recent.static_accuracy
    assert (tmp_path / "runs" / "weather-python" / "registry" / "index.sqlite").exists()


def test_the_readme_quotes_the_error_deploy_raises():
    quoted = re.search(r"raises `TypeError: (deploy\(update=.*?)`", README.read_text(), re.S).group(1)
    with pytest.raises(TypeError) as err:
        pn.deploy(small_stream(), run_dir="unused", update="stateful")
    assert " ".join(quoted.split()) in str(err.value)


# ---- defaults: those of perennial-run ------------------------------------------------------------


def state(part: object) -> dict:
    """What a part was built with and holds, comparable across two instances."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in vars(part).items()}


def test_every_default_part_is_the_one_perennial_run_builds(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=["seed=3"])
    stream = instantiate(cfg.data)
    loop = pn.deploy(stream, run_dir=tmp_path, seed=3)

    # Built from config as perennial-run builds it (perennial.cli.run.run).
    assert type(loop.update) is type(instantiate(cfg["update"]))
    assert state(loop.update) == state(instantiate(cfg["update"]))
    assert state(loop.trigger) == state(instantiate(cfg.trigger))
    assert type(loop.gate) is pn.PromotionGate and state(loop.gate) == state(instantiate(cfg.gate))
    buffer = instantiate(cfg.strategy.buffer)
    assert type(loop.buffer) is type(buffer) and state(loop.buffer) == state(buffer)
    assert loop.buffer.seed == loop.gate.seed == loop.settings.seed == 3
    assert loop.regularizers == [instantiate(r) for r in cfg.strategy.get("regularizers") or []] == []
    assert loop.rollout is None and not cfg.rollout.get("_target_")
    assert loop.screen is None and not cfg.screen.get("_target_")
    loop_settings = {k: v for k, v in OmegaConf.to_container(cfg.loop).items() if k not in ("follow", "poll")}
    assert loop.settings == pn.LoopSettings(seed=cfg.seed, **loop_settings)
    assert loop.trainer == OmegaConf.to_container(cfg.trainer, resolve=True)
    logger = instantiate(cfg.logger)
    assert type(loop.logger) is type(logger) and state(loop.logger) == state(logger)
    assert loop.progress is False  # the one deliberate difference: no progress bar in a notebook

    # The model: the backbone factory of model=mlp, for the same stream.
    factory, built_for = loop.build.args
    model = instantiate(cfg.model)
    assert built_for is stream and factory.func is model.func
    assert factory.keywords == OmegaConf.to_container(OmegaConf.create(model.keywords))
    # The stored config names the same parts.
    assert loop.config["model"] | {"_target_": "perennial.learn.MLP"} == OmegaConf.to_container(cfg.model)
    assert loop.config["name"] == "weather-stateful"  # as perennial-run names the run
    assert loop.config["loop"] == loop_settings


def test_given_parts_are_used_as_given(tmp_path):
    update, gate = pn.StatelessUpdate(epochs=2), pn.PromotionGate(tolerance=0.02, fresh="holdout")
    registry = pn.Registry(tmp_path / "elsewhere")
    loop = pn.deploy(
        small_stream(), run_dir=tmp_path / "run", update=update, gate=gate, buffer=None, registry=registry,
        logger=None, trigger=pn.TimeTrigger(every=2),
    )  # fmt: skip
    assert loop.update is update and loop.gate is gate and loop.buffer is None and loop.registry is registry
    assert type(loop.logger) is RunLogger  # logs nothing
    assert loop.config["update"]["epochs"] == 2 and loop.config["trigger"]["every"] == 2
    assert loop.config["strategy"]["buffer"] is None
    default = pn.deploy(small_stream(), run_dir=tmp_path / "other")
    assert default.registry.root == tmp_path / "other" / "registry"


# ---- errors that name the Python argument --------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "names"),
    [
        ({"update": "stateful"}, TypeError, r"deploy\(update=\.\.\.\) must be an Update .*got 'stateful'"),
        ({"update": pn.StatefulUpdate}, TypeError, r"deploy\(update=.*the class StatefulUpdate"),
        ({"trigger": "every_window"}, TypeError, r"deploy\(trigger=\.\.\.\) must be a Trigger"),
        ({"gate": 0.05}, TypeError, r"deploy\(gate=\.\.\.\) must be a PromotionGate .*got 0.05"),
        ({"buffer": 1000}, TypeError, r"deploy\(buffer=\.\.\.\) must be a ReplayBuffer .*or None"),
        ({"rollout": "canary"}, TypeError, r"deploy\(rollout=\.\.\.\) must be a Rollout"),
        ({"regularizers": ["ewc"]}, TypeError, r"deploy\(regularizers=\.\.\.\) .*item 0 is 'ewc'"),
        (
            {"regularizers": [pn.DER()], "buffer": None},
            ValueError,
            r"deploy\(regularizers=\[DER.*buffer=None",
        ),
        ({"model": "mlp"}, TypeError, r"deploy\(model=\.\.\.\) must be a backbone factory.*got 'mlp'"),
        ({"model": pn.MLP(in_shape=(4,), n_classes=2)}, TypeError, r"deploy\(model=.*already built"),
        ({"model": pn.EveryWindow}, TypeError, r"deploy\(model=.*EveryWindow cannot be called so"),
        (
            {"settings": {"warmup_windows": 1}},
            TypeError,
            r"deploy\(settings=\.\.\.\) must be a .*LoopSettings",
        ),
        ({"settings": pn.LoopSettings(seed=4)}, ValueError, r"deploy\(settings=LoopSettings\(seed=4\)\)"),
        ({"seed": -1}, ValueError, r"deploy\(seed=\.\.\.\) must be an integer .*got -1"),
        ({"seed": 1.5}, TypeError, r"deploy\(seed=\.\.\.\) must be an integer .*got 1.5"),
        ({"registry": 3}, TypeError, r"deploy\(registry=\.\.\.\) must be a perennial.Registry"),
        ({"trainer": "gpu"}, TypeError, r"deploy\(trainer=\.\.\.\) must be a mapping"),
        ({"progress": "yes"}, TypeError, r"deploy\(progress=\.\.\.\) must be True or False"),
        ({"run_dir": 7}, TypeError, r"deploy\(run_dir=\.\.\.\) must be a directory path"),
        ({"epochs": 3}, TypeError, r"unexpected keyword argument 'epochs'; it takes stream, model, run_dir"),
        ({"updates": pn.StatefulUpdate()}, TypeError, r"'updates'; did you mean update=\?"),
        ({"data": "weather"}, TypeError, r"'data'; perennial-run's data= is deploy's stream"),
        ({"strategy": "replay"}, TypeError, r"perennial-run's strategy= is deploy's buffer and regularizers"),
    ],
)
def test_a_bad_argument_is_refused_by_its_python_name(tmp_path, arguments, error, names):
    with pytest.raises(error, match=names):
        pn.deploy(small_stream(), **{"run_dir": tmp_path, **arguments})
    assert not (tmp_path / "registry").exists()  # refused before anything was written


def test_a_stream_that_is_not_a_stream_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"deploy\(stream=\.\.\.\) must be a Stream such as .*got the class"):
        pn.deploy(pn.WeatherStream, run_dir=tmp_path)
    with pytest.raises(TypeError, match=r"deploy\(stream=\.\.\.\) must be a Stream .*got DataFrame"):
        pn.deploy(pd.DataFrame({"x": [1.0]}), run_dir=tmp_path)
    with pytest.raises(TypeError, match=r"model_builder\(backbone=\.\.\.\) must be a backbone factory"):
        pn.model_builder(small_stream(), "mlp")


def test_a_rollout_on_a_stream_with_late_labels_names_both_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"deploy\(rollout=Canary\(\.\.\.\)\).*label_delay=1.*rollout=None"):
        pn.deploy(small_stream(label_delay=1), run_dir=tmp_path, rollout=pn.Canary())


# ---- the result --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A short run through deploy(), with its result."""
    run_dir = tmp_path_factory.mktemp("run")
    parts = fast(
        update=pn.StatefulUpdate(epochs=3), settings=pn.LoopSettings(warmup_windows=1, initial_epochs=20)
    )
    loop = pn.deploy(small_stream(), run_dir=run_dir, **parts)
    return loop, loop.run()


def test_the_result_reads_as_the_dict_it_always_was(finished):
    loop, result = finished
    assert isinstance(result, dict)
    assert result["started"] is True and result["champion"] == result.champion == loop.state.champion
    assert result["rows"] == result.rows == loop.registry.window_rows()
    assert result["windows"] == result.windows == 5 and result["static"] == result.static == "v1"
    assert json.loads(json.dumps(result))["rows"] == result.rows  # written out as plain JSON, as before


def test_the_typed_figures_agree_with_the_summary_perennial_run_writes(finished):
    loop, result = finished
    summary = summarize(result, loop.registry, loop.accuracy_matrix(), loop.stream, recent=2)
    assert result.served_accuracy == pytest.approx(summary["served_accuracy"], abs=1e-6)
    assert result.static_accuracy == pytest.approx(summary["static_accuracy"], abs=1e-6)
    assert result.recent(2).served_accuracy == pytest.approx(summary["recent"]["served_accuracy"], abs=1e-6)
    assert result.champion == summary["champion"]
    assert result.versions == [v["id"] for v in summary["versions"]]
    assert result.decisions[0]["version"] == "v1" and result.decisions[0]["decision"] == "promoted"
    table = result.table()
    assert list(table.index) == [1, 2, 3, 4] and table.loc[1, "champion"] == "v1"
    assert 0.6 < result.served_accuracy <= 1  # one concept throughout, learnt from a few hundred rows
    with pytest.raises(ValueError, match=r"recent\(n=\.\.\.\) must be a window count >= 1, got 0"):
        result.recent(0)


def test_a_result_outlives_its_loop_and_pickles(finished):
    _, result = finished
    copy = pickle.loads(pickle.dumps(result))
    assert type(copy) is pn.RunResult and copy == result and copy.versions == result.versions
    assert repr(result).startswith("RunResult(started=True, windows=5, champion=")


def test_a_result_before_v1_is_empty_but_typed(tmp_path):
    feed = pn.WindowFeed("orders", feature_shape=(4,), classes=[0, 1])
    result = pn.deploy(feed, run_dir=tmp_path, **fast()).run()
    assert not result.started and result.champion is None and result.rows == []
    assert np.isnan(result.served_accuracy) and result.table().empty and result.versions == []


# ---- resume and serve --------------------------------------------------------------------------


def windows(n: int) -> list[Window]:
    return list(small_stream(n_samples=300 * n))


def test_a_run_resumed_through_deploy_continues_where_it_stopped(tmp_path):
    def deployed(run_dir: Path, pushed: int, **parts) -> pn.ContinuousDeployment:
        feed = pn.WindowFeed("orders", feature_shape=(4,), classes=[0, 1])  # a new process's fresh objects
        feed.push(*windows(5)[:pushed])
        return pn.deploy(feed, run_dir=run_dir, **fast(**parts))

    whole = deployed(tmp_path / "whole", 5).run(resume=True)
    first = deployed(tmp_path / "resumed", 3).run(resume=True)
    assert [r["window"] for r in first.rows] == [1, 2]
    resumed = deployed(tmp_path / "resumed", 5).run(resume=True)
    assert [r["window"] for r in resumed.rows] == [1, 2, 3, 4]  # none lost, none twice
    assert resumed.rows == whole.rows and resumed.versions == whole.versions
    # The stored config describes the parts: resuming with other ones is refused, naming the change.
    with pytest.raises(ValueError, match=r"different config \(update.epochs: 1 -> 2\)"):
        deployed(tmp_path / "whole", 5, update=pn.StatefulUpdate(epochs=2)).run(resume=True)


def test_a_version_trained_from_python_serves(finished):
    loop, result = finished
    store = ModelStore(loop.registry.root)
    served = store.load(result.champion)
    x, y = loop.xy(4)
    labels, probabilities = served.predict(x)
    expected = loop.load(result.champion).predict_logits(x).argmax(1).numpy()
    assert np.array_equal(labels, expected) and probabilities.shape == (len(x), 2)
    assert (labels == y).mean() > 0.6


# ---- the package --------------------------------------------------------------------------------


def test_the_main_parts_are_exported_and_importing_perennial_stays_cheap():
    names = set(pn.__all__) - {"__version__"}
    assert names == set(pn._EXPORTS)
    for name in names:
        assert getattr(pn, name) is getattr(importlib.import_module(pn._EXPORTS[name]), name)
    assert names <= set(dir(pn))
    assert doctest.testmod(pn).failed == 0  # the package docstring's example (not a submodule's)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = pn.Nope
    # A fresh interpreter: importing perennial loads neither torch nor the loop.
    heavy = "('torch', 'perennial.loop', 'pandas')"
    code = f"import sys, perennial; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_cli_common_build_for_still_builds_for_a_stream():
    from perennial.cli.common import build_for

    stream = small_stream()
    module = build_for(functools.partial(pn.MLP, hidden=(8,)), stream, known_classes=1)
    assert module.known_classes == 1 and module.n_classes == 2


def test_describe_keeps_the_plain_arguments_a_part_was_built_with():
    trigger = pn.DriftTrigger(detector=importlib.import_module("perennial.drift").ADWIN(), cooldown=2)
    described = describe(trigger)
    assert described["_target_"] == "perennial.triggers.drift.DriftTrigger"
    assert described["detector"] == {
        "_target_": "perennial.drift.streaming.ADWIN",
        "delta": 0.002,
        "clock": 32,
        "max_window": 5000,
        "min_window": 5,
    }
    assert described["cooldown"]["windows"] == 2  # kept as a Cooldown: described as one
    assert describe(pn.Canary(min_samples=50))["min_samples"] == 50  # a rollout keeps its settings
    assert describe(None) is None
