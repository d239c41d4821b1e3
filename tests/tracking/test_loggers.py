"""Experiment loggers on real loop runs: what a user watching a run sees is each window and each
version exactly once, also after the run was killed and resumed."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import pytest
import torch

from perennial.registry import Registry, VersionRecord
from perennial.tracking import CSVLogger, MLflowLogger, RunHistory, RunLogger, TensorBoardLogger
from tests.conftest import kill_mid_window, make_loop, small_stream

EVALUATED = [1, 2, 3, 4, 5]  # small_stream: 6 windows, v1 trained on window 0


@pytest.fixture(autouse=True)
def _no_mlflow_telemetry(monkeypatch):
    # MLflow would try to send usage data; tests reach no network.
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


def logged_loop(run_dir: Path, logger: RunLogger, **kw):
    loop = make_loop(run_dir, **kw)
    loop.logger = logger
    return loop


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class DiesAfterCommit(CSVLogger):
    """A CSV logger whose process dies as it logs ``window``: the window has committed, its line is
    not written."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = window

    def log_window(self, row):
        if row["window"] == self.window:
            raise KeyboardInterrupt("killed after the window committed, before it was logged")
        super().log_window(row)


def test_csv_log_holds_each_window_and_event_once_after_crashes_and_resumes(tmp_path):
    # Killed in window 2 after its candidate was logged, before the window committed ...
    kill_mid_window(logged_loop(tmp_path, CSVLogger()), 2)
    # ... then resumed, and killed after window 4 committed, before it was logged ...
    loop = logged_loop(tmp_path, DiesAfterCommit(window=4))
    with pytest.raises(KeyboardInterrupt):
        loop.run(resume=True)
    loop.registry.close()
    # ... with a line for window 5 that a log wrote but the run never committed, and a torn one.
    with (tmp_path / "metrics.csv").open("a") as f:
        f.write("5,0.5,0.5\n6,0.")
    loop = logged_loop(tmp_path, CSVLogger())
    state = loop.run(resume=True)

    metrics = read_csv(tmp_path / "metrics.csv")
    assert [int(m["window"]) for m in metrics] == EVALUATED
    assert [float(m["served_accuracy"]) for m in metrics] == pytest.approx(
        [r["served_accuracy"] for r in state["rows"]]
    )
    events = read_csv(tmp_path / "events.csv")
    versions = [e["version"] for e in events if e["event"] == "version"]
    assert sorted(versions) == sorted(loop.registry.ids())  # v1 and one candidate per window, none twice
    decided = [(e["version"], e["event"], int(e["window"])) for e in events if e["event"] != "version"]
    assert decided == [(d["version"], d["decision"], d["window"]) for d in loop.registry.decisions()]
    assert {"promoted", "rejected"} & {e for _, e, _ in decided}
    loop.registry.close()


def test_with_late_labels_a_window_is_logged_once_its_scores_are_in(tmp_path):
    def loop_at():
        stream = small_stream()
        stream.label_delay = 2  # window w's labels land at step w + 2: windows 4 and 5 never
        return logged_loop(tmp_path, CSVLogger(), stream=stream)

    kill_mid_window(loop_at(), 4)
    loop = loop_at()
    state = loop.run(resume=True)
    loop.registry.close()
    metrics = read_csv(tmp_path / "metrics.csv")
    assert [int(m["window"]) for m in metrics] == [1, 2, 3]
    labelled = [r for r in state["rows"] if r["served_accuracy"] is not None]
    assert [float(m["served_accuracy"]) for m in metrics] == pytest.approx(
        [r["served_accuracy"] for r in labelled]
    )
    assert [r["window"] for r in state["rows"]] == EVALUATED  # windows.csv still lists every window


def test_tensorboard_has_served_accuracy_once_for_every_window_after_a_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    kill_mid_window(logged_loop(tmp_path, TensorBoardLogger()), 3)
    loop = logged_loop(tmp_path, TensorBoardLogger())
    state = loop.run(resume=True)
    loop.registry.close()

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    served = events.Scalars("served_accuracy")
    assert [s.step for s in served] == EVALUATED
    assert [s.value for s in served] == pytest.approx([r["served_accuracy"] for r in state["rows"]])
    assert [s.step for s in events.Scalars("static_accuracy")] == EVALUATED
    assert {"version/n_samples", "version/train_seconds"} <= set(events.Tags()["scalars"])


def test_mlflow_registers_every_version_once_and_points_champion_at_the_champion(tmp_path):
    from mlflow import MlflowClient

    # Killed in window 3 after its candidate became a model version, before the window committed.
    kill_mid_window(logged_loop(tmp_path, MLflowLogger(registered_model="weather")), 3)
    loop = logged_loop(tmp_path, MLflowLogger(registered_model="weather"))
    state = loop.run(resume=True)
    registry = loop.registry

    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model_versions = client.search_model_versions("name = 'weather'")
    by_id = {mv.tags["perennial.version"]: mv for mv in model_versions}
    assert len(model_versions) == len(by_id)  # the crashed window's candidate is gone
    assert sorted(by_id) == sorted(registry.ids())
    for record in registry.versions():
        mv = by_id[record.id]
        assert mv.tags["perennial.status"] == record.status
        assert mv.tags["perennial.parent"] == (record.parent or "")
        assert Path(mv.source) == (tmp_path / "registry" / "versions" / record.id).resolve()
    promoted = [d for d in registry.decisions() if d["decision"] == "promoted" and d["version"] != "v1"]
    assert promoted, "the run should promote at least one update"
    aliases = client.get_registered_model("weather").aliases
    assert str(by_id[registry.champion()].version) == str(aliases["champion"])
    # every candidate was decided but the last, which awaits the window after the stream (gate.fresh=next)
    awaiting = state["awaiting"]["candidate"]
    assert str(aliases.get("challenger")) == str(by_id[awaiting].version)

    (run,) = client.search_runs([client.get_experiment_by_name("perennial").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["test"] == "true"  # the loop's config
    history = client.get_metric_history(run.info.run_id, "served_accuracy")
    assert sorted(m.step for m in history) == EVALUATED
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        [r["served_accuracy"] for r in state["rows"]]
    )
    registry.close()


def test_mlflow_aliases_follow_a_rollout_a_promotion_and_a_rejection(tmp_path):
    registry = Registry(tmp_path / "registry")

    def add(version: str, parent: str | None, window: int) -> VersionRecord:
        kind = "stateful" if parent else "stateless"
        return registry.add(VersionRecord(version, parent, kind, created_window=window), {"w": torch.ones(2)})

    add("v1", None, 0)
    registry.promote("v1", window=0)
    registry.record_decision("v1", 0, "promoted", {"reason": "first model"})
    logger = MLflowLogger()
    logger.start(RunHistory.of(tmp_path, registry, {"config": {"name": "demo"}}))
    client = logger._client

    def aliases() -> dict[str, str]:
        by_number = {str(mv.version): mv.tags["perennial.version"] for mv in client.search_model_versions()}
        return {a: by_number[str(n)] for a, n in client.get_registered_model("demo").aliases.items()}

    def status(version: str) -> str:
        (mv,) = [m for m in client.search_model_versions() if m.tags["perennial.version"] == version]
        return mv.tags["perennial.status"]

    assert aliases() == {"champion": "v1"}
    logger.log_version(add("v1.1", "v1", 1))
    logger.log_decision("v1.1", 1, "rollout", {"reason": "passed the gate"})
    assert aliases() == {"champion": "v1", "challenger": "v1.1"}  # on live traffic, not yet serving all
    logger.log_decision("v1.1", 3, "promoted", {"reason": "canary rollout over 2 window(s): promote"})
    assert aliases() == {"champion": "v1.1"}
    assert (status("v1"), status("v1.1")) == ("retired", "champion")
    logger.log_version(add("v1.2", "v1.1", 4))
    logger.log_decision("v1.2", 4, "rollout", {"reason": "passed the gate"})
    logger.log_decision("v1.2", 5, "rejected", {"reason": "canary rollout over 1 window(s): reject"})
    assert aliases() == {"champion": "v1.1"}  # rolled back off live traffic
    assert status("v1.2") == "rejected"
    logger.close()
    registry.close()


def test_a_logger_that_cannot_work_fails_when_built_naming_the_fix(monkeypatch):
    # Port 9 (discard) on the loopback: nothing listens, the connection is refused at once.
    with pytest.raises(RuntimeError, match=r"cannot reach the MLflow tracking server.*127\.0\.0\.1:9"):
        MLflowLogger(tracking_uri="http://127.0.0.1:9", timeout=2)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[tensorboard\]'"):
        TensorBoardLogger()
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[mlflow\]'"):
        MLflowLogger()
    with pytest.raises(ValueError, match=re.escape("'runs/metrics.csv'")):
        CSVLogger(metrics="runs/metrics.csv")


def test_a_logger_added_when_a_run_resumes_catches_up_with_the_whole_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    kill_mid_window(logged_loop(tmp_path, CSVLogger()), 3)
    loop = logged_loop(tmp_path, TensorBoardLogger())
    loop.run(resume=True)
    loop.registry.close()

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [s.step for s in events.Scalars("served_accuracy")] == EVALUATED


def test_perennial_run_with_logger_mlflow_logs_its_config_windows_and_versions(tmp_path):
    from mlflow import MlflowClient

    from tests.test_cli_run import FAST, perennial_run

    done = perennial_run(
        "data=synthetic",
        "data.n_samples=2000",
        "data.window=500",
        f"hydra.run.dir={tmp_path}",
        "logger=mlflow",
        "logger.registered_model=rain",
        *FAST,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "metrics.csv").exists()  # logger=mlflow replaces the default csv

    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    registry = Registry(tmp_path / "registry", create=False)
    versions = {mv.tags["perennial.version"] for mv in client.search_model_versions("name = 'rain'")}
    assert versions == set(registry.ids())
    (run,) = client.search_runs([client.get_experiment_by_name("perennial").experiment_id])
    assert run.data.params["data.window"] == "500" and run.data.params["name"] == "synthetic-stateful"
    # The logger is left out of the config a resumed run must keep: a run may resume with another.
    assert not any(key.startswith("logger.") for key in run.data.params)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "served_accuracy")) == [1, 2, 3]
    registry.close()
