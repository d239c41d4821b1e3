"""The `perennial-run` entry point, run as a user would, and every config in conf/ instantiating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from perennial.cli.common import stream_and_builder
from perennial.cli.run import CONF_DIR
from perennial.evaluate import PromotionGate, WindowScreen
from perennial.learn.fit import make_fabric
from perennial.learn.updater import Update
from perennial.rollout.live import Rollout
from perennial.tracking import RunLogger
from perennial.triggers import Trigger

from .data.test_images import needs_fashion

FAST = ["update.epochs=2", "loop.initial_epochs=3", "loop.warmup_windows=1", "progress=false"]


def perennial_run(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "perennial.cli.run", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def unprepared_csv(path: Path, n: int = 1200) -> Path:
    """A file nobody prepared for perennial: text dates, a text category, a text label, a stray NaN."""
    rng = np.random.default_rng(1)
    day = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 120, n), unit="D")
    region = rng.choice(["north", "south", "east"], n)
    amount = rng.gamma(2.0, 30.0, n).round(2)
    hour = rng.integers(0, 24, n)
    fraud = (amount + 40 * (region == "east") + rng.normal(0, 20, n) > 110).astype(int)
    frame = pd.DataFrame(
        {
            "Order Date": day.strftime("%Y-%m-%d"),
            "region": region,
            "amount": amount,
            "hour": hour,
            "label": np.where(fraud, "fraud", "ok"),
        }
    )
    frame.loc[7, "amount"] = np.nan
    frame.to_csv(path, index=False)
    return path


def test_table_job_on_an_unprepared_csv_writes_every_output(tmp_path):
    csv = unprepared_csv(tmp_path / "orders.csv")
    out = tmp_path / "run"
    done = perennial_run(
        "data=table",
        f"data.path={csv}",
        "data.time_column=Order Date",
        "data.target=label",
        "data.window=14D",
        f"hydra.run.dir={out}",
        *FAST,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stream"] == "orders"
    assert summary["versions"][0] == {
        "id": "v1",
        "parent": None,
        "kind": "stateless",
        "status": summary["versions"][0]["status"],
        "trained_on_windows": [0],
    }
    assert summary["versions"][1]["id"] == "v1.1" and summary["versions"][1]["parent"] == "v1"
    assert summary["quarantined_rows"] == 1
    quarantine = pd.read_csv(out / "quarantine.csv")
    assert "amount" in quarantine["reason"][0]
    windows = pd.read_csv(out / "windows.csv")
    assert len(windows) == summary["evaluated_windows"] == summary["windows"] - 1
    assert {"served_accuracy", "static_accuracy", "champion", "trigger", "decision"} <= set(windows.columns)
    for key in ("served_accuracy", "static_accuracy", "forgetting", "compute", "windows"):
        assert key in summary
    assert (out / "accuracy_over_time.png").stat().st_size > 10_000
    assert (out / "accuracy_matrix.png").stat().st_size > 5_000
    assert "served accuracy" in done.stdout


def test_bad_table_input_is_a_clear_error_without_a_traceback(tmp_path):
    csv = unprepared_csv(tmp_path / "orders.csv", n=200)
    done = perennial_run(
        "data=table",
        f"data.path={csv}",
        "data.time_column=when",
        "data.target=label",
        f"hydra.run.dir={tmp_path / 'run'}",
        *FAST,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "orders.csv" in done.stderr and "when" in done.stderr
    assert "Traceback" not in done.stderr


def test_resume_true_continues_the_newest_run_of_the_same_name(tmp_path):
    args = ["data=synthetic", "data.n_samples=2000", "data.window=500", *FAST]
    first = perennial_run(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "synthetic-stateful").iterdir()
    again = perennial_run(*args, "resume=true", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert list((tmp_path / "runs" / "synthetic-stateful").iterdir()) == [run_dir]
    assert json.loads((run_dir / "summary.json").read_text())["windows"] == 4
    changed = perennial_run(*args, "resume=true", "seed=1", cwd=tmp_path)
    assert changed.returncode == 2 and "different config" in changed.stderr


def test_a_challenger_line_runs_from_the_command_line_and_a_bad_preset_is_named(tmp_path):
    args = ["data=synthetic", "data.n_samples=2000", "data.window=500", *FAST]
    run_dir = f"hydra.run.dir={tmp_path / 'run'}"
    done = perennial_run(*args, "challenger.model=mlp_wide", "gate.fresh=holdout", run_dir, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert sum(summary["challengers"].values()) == 3  # one at each of the 3 updates
    bad = perennial_run(*args, "challenger.model=resnet", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert bad.returncode == 2
    assert "challenger.model='resnet' is not a preset of conf/model" in bad.stderr


# experiment/ holds whole-sweep presets (tests/test_sweeps.py composes them); hydra/ holds launchers;
# recommender/ is perennial-recommend's group (test_every_recommender_config_builds).
GROUPS = {
    p.name: sorted(f.stem for f in p.glob("*.yaml"))
    for p in Path(CONF_DIR).iterdir()
    if p.is_dir() and p.name not in ("experiment", "hydra", "recommender")
}


@pytest.mark.parametrize("option", sorted(f.stem for f in (Path(CONF_DIR) / "recommender").glob("*.yaml")))
def test_every_recommender_config_builds(option, tmp_path):
    from omegaconf import OmegaConf

    from perennial.recommend import ContinualRecommender, SessionUpdater
    from perennial.registry import Registry

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="recommend", overrides=[f"recommender={option}"])
    settings = OmegaConf.to_container(cfg.recommender, resolve=True)
    kinds = {"matrix_factorization": ContinualRecommender, "session": SessionUpdater}
    updater = kinds[settings.pop("ranker")](Registry(tmp_path / "registry"), seed=cfg.seed, **settings)
    assert updater.registry.ids() == []


# Configs whose data is not on every machine: they skip, naming how to get it, where it is absent.
NEEDS = {("data", "fashion_mnist"): [needs_fashion]}


@pytest.mark.parametrize(
    "group,option",
    [pytest.param(g, o, marks=NEEDS.get((g, o), [])) for g, opts in GROUPS.items() for o in opts],
)
def test_every_config_instantiates(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "table":
        unprepared_csv(tmp_path / "t.csv", n=300)
        overrides += [f"data.path={tmp_path / 't.csv'}", "data.time_column=Order Date", "data.target=label"]
    if group == "data" and option == "serve_log":
        from tests.data.test_serve_log import numeric_registry

        overrides += [f"data.path={numeric_registry(tmp_path / 'registry') / 'serve-log.sqlite'}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides)
    node = cfg[group]
    if group == "trainer":
        settings = dict(node)
        if settings.get("accelerator") == "gpu" and not _has_cuda():
            pytest.skip("no GPU on this machine")
        make_fabric(settings)  # Fabric validates accelerator, devices, precision, strategy
        return
    if group == "strategy":
        assert node.buffer is None or len(instantiate(node.buffer)) == 0
        assert all(instantiate(r).name for r in node.get("regularizers") or [])
        return
    if group == "data":  # built as perennial-run builds it: label_delay belongs to the loop
        stream, _ = stream_and_builder(cfg)
        assert stream.label_delay == node.label_delay == 0
        return
    if not node.get("_target_"):  # as perennial-run reads it: the loop runs without this part
        assert (group, option) in (("rollout", "none"), ("screen", "none"))
        return
    built = instantiate(node)
    if group == "model":  # a builder: a network for 8x8 one-channel images and ten classes
        assert built(in_shape=(1, 8, 8), n_classes=10)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
        return
    base = {
        "trigger": Trigger,
        "gate": PromotionGate,
        "update": Update,
        "rollout": Rollout,
        "screen": WindowScreen,
        "logger": RunLogger,
    }[group]
    assert isinstance(built, base), f"{group}={option} built a {type(built).__name__}"
    # The option's name is the part it builds, and a fresh trigger, having seen nothing, is quiet.
    if group == "trigger":
        assert built.name == option and built.fires() is None
    if group in ("update", "rollout"):
        assert built.kind == option


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


DETECTORS = sorted(f.stem for f in (Path(CONF_DIR) / "trigger" / "detector").glob("*.yaml"))


@pytest.mark.parametrize("detector", DETECTORS)
def test_every_drift_detector_config_builds_a_drift_trigger(detector):
    from perennial.triggers import DriftTrigger

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=["trigger=drift", f"trigger/detector={detector}"])
    trigger = instantiate(cfg["trigger"])
    assert isinstance(trigger, DriftTrigger)
    made_for = {"adwin": "errors", "page_hinkley": "errors", "prediction_shift": "predictions"}
    assert trigger.compare == made_for.get(detector, "inputs")
