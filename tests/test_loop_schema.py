"""Schema change mid-stream: new feature columns start a new major version trained from scratch;
new classes grow a fine-tuned model's head."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pytest
import torch

from perennial.data import DataError, DigitsStream, NewColumnsStream, Stream, Window
from perennial.drift.mmd import MMDDrift
from perennial.evaluate import PromotionGate
from perennial.evaluate.gate import GateDecision
from perennial.evaluate.metrics import evaluate
from perennial.evaluate.screening import WindowScreen
from perennial.learn import MLP, ClassifierModule, ReservoirBuffer, StatefulUpdate
from perennial.triggers.drift import DriftTrigger
from tests.conftest import make_loop, small_stream

ALWAYS = PromotionGate(tolerance=1.0, forgetting_tolerance=1.0, fresh="holdout")


def lineage(registry) -> list[tuple]:
    return [(v.id, v.kind, v.trigger["name"]) for v in registry.versions()]


def test_new_columns_force_a_stateless_major_version_that_records_why(tmp_path):
    stream = NewColumnsStream(small_stream(), columns=2, at=3)
    loop = make_loop(tmp_path / "run", stream=stream, gate=ALWAYS)
    state = loop.run()
    assert lineage(loop.registry) == [
        ("v1", "stateless", "initial"),
        ("v1.1", "stateful", "every_window"),
        ("v1.2", "stateful", "every_window"),
        ("v2", "stateless", "schema"),  # fine-tuning cannot give v1.2 the new inputs
        ("v2.1", "stateful", "every_window"),
        ("v2.2", "stateful", "every_window"),
    ]
    v2 = loop.registry.get("v2")
    assert v2.trigger["reason"] == "window 3 brings new feature columns x4, x5"
    assert v2.trained_on_windows == [3]  # earlier windows lack the columns it reads
    assert loop.registry.load_extra("v1.2", "schema") == {"n_features": 4}
    assert loop.registry.load_extra("v2.1", "schema") is None  # reads every column
    rows = {r["window"]: r for r in state["rows"]}
    # The narrow champion went on serving the window that brought the columns, on the columns it knows.
    assert rows[3]["champion"] == "v1.2" and np.isfinite(rows[3]["served_accuracy"])
    assert rows[3]["trigger_reason"] == v2.trigger["reason"]
    matrix = loop.accuracy_matrix()
    assert matrix.loc["v2", [0, 1, 2]].isna().all() and matrix.loc["v2", [3, 4, 5]].notna().all()
    # The new columns carry signal here (the synthetic concept reads every column): the wider line
    # beats the narrow one on the windows after the change.
    assert matrix.loc["v2.2", [3, 4, 5]].mean() > matrix.loc["v1.2", [3, 4, 5]].mean() + 0.05


def test_a_stateful_update_after_a_rejected_retrain_keeps_the_champions_columns(tmp_path):
    stream = NewColumnsStream(small_stream(), columns=2, at=3)
    loop = make_loop(tmp_path / "run", stream=stream, gate=ALWAYS)
    judge = loop.judge

    def refuse_the_wide_model(candidate, *args, **kwargs):
        decision, fresh = judge(candidate, *args, **kwargs)
        wide = candidate.n_features is None
        return (GateDecision(False, "refused for this test") if wide else decision), fresh

    loop.judge = refuse_the_wide_model
    loop.run()
    statuses = {v.id: v.status for v in loop.registry.versions()}
    assert statuses == {
        "v1": "retired",
        "v1.1": "retired",
        "v1.2": "retired",
        "v2": "rejected",
        "v1.3": "retired",  # the narrow line goes on, fine-tuned on the columns it reads
        "v1.4": "champion",
    }
    assert loop.registry.load_extra("v1.4", "schema") == {"n_features": 4}


@dataclass
class DroppedColumn(Stream):
    """``inner`` whose last column goes missing from window ``at`` on."""

    inner: Stream = field(default=None)  # type: ignore[assignment]
    at: int = 2

    def __post_init__(self) -> None:
        self.name, self.feature_shape, self.classes = "dropped", self.inner.feature_shape, self.inner.classes

    def windows(self) -> list[Window]:
        out = []
        for k, w in enumerate(self.inner.windows()):
            x = w.x.copy()
            if k >= self.at:
                x[:, -1] = np.nan
            out.append(replace(w, x=x))
        return out


def test_a_column_that_vanishes_stops_the_run_naming_the_window_and_champion(tmp_path):
    loop = make_loop(tmp_path / "run", stream=DroppedColumn(small_stream(), at=2), gate=ALWAYS)
    with pytest.raises(DataError, match=r"window 2 .* lacks feature columns that champion v1\.1 reads"):
        loop.run()
    assert loop.registry.get_state("loop")["next_window"] == 2  # everything before it was kept


def test_growing_the_head_keeps_the_old_classes_outputs_and_optimizer_state():
    torch.manual_seed(0)
    module = ClassifierModule(MLP(in_shape=(4,), n_classes=2, hidden=(8,)), n_classes=5, known_classes=2)
    x = torch.randn(16, 4)
    before = module(x)
    assert torch.isinf(before[:, 2:]).all()  # classes it has not met are never predicted
    optimizer = module.configure_optimizers()
    module(x)[:, :2].sum().backward()
    optimizer.step()
    module.optimizer_state = optimizer.state_dict()
    before = module(x).detach()
    module.grow_classes(4)
    after = module(x).detach()
    assert module.known_classes == 4 and module.schema == {"known_classes": 4}
    torch.testing.assert_close(after[:, :2], before[:, :2], rtol=0, atol=0)
    assert torch.isfinite(after[:, 2:4]).all() and torch.isinf(after[:, 4]).all()
    head_weight = module.optimizer_state["state"][2]["exp_avg"]
    assert head_weight.shape == (4, 8) and not head_weight[2:].any()
    module.configure_optimizers()  # the grown moments fit the grown parameters
    with pytest.raises(ValueError, match="cannot grow to 6 classes: the stream has 5"):
        module.grow_classes(6)


def test_new_classes_grow_the_head_without_losing_old_class_accuracy_beyond_the_tolerance(tmp_path):
    # forgetting_tolerance 0.05 on earlier windows' held-out rows, decided where each is trained
    gate = PromotionGate(fresh="holdout")
    loop = make_loop(
        tmp_path / "run",
        stream=DigitsStream(scenario="class_incremental"),  # two new digits a window
        update=StatefulUpdate(epochs=8, replay_fraction=0.5),
        buffer=ReservoirBuffer(300, seed=0),
        gate=gate,
        initial_epochs=10,
    )
    loop.run()
    versions = loop.registry.versions()
    assert [(v.id, v.kind) for v in versions] == [
        ("v1", "stateless"),
        ("v1.1", "stateful"),
        ("v1.2", "stateful"),
        ("v1.3", "stateful"),
        ("v1.4", "stateful"),
    ]
    assert [v.trigger["reason"] for v in versions[1:3]] == [
        "window 1 brings new classes 2, 3",
        "window 2 brings new classes 4, 5",
    ]
    known = [(loop.registry.load_extra(v.id, "schema") or {}).get("known_classes", 10) for v in versions]
    assert known == [2, 4, 6, 8, 10]
    decided = {d["version"]: d for d in loop.registry.decisions()}
    promoted = [v.id for v in versions[1:] if decided[v.id]["decision"] == "promoted"]
    assert len(promoted) >= 2  # growing is not refused as such ...
    for version in promoted:  # ... and a promoted one kept the old digits within the tolerance
        child, parent = loop.load(version), loop.load(loop.registry.get(version).parent)
        old = range(loop.registry.get(version).trained_on_windows[0])
        x = np.concatenate([loop.split(w).holdout[0] for w in old])
        y = np.concatenate([loop.split(w).holdout[1] for w in old])
        assert evaluate(child, x, y).accuracy >= evaluate(parent, x, y).accuracy - gate.forgetting_tolerance
    for version in set(v.id for v in versions[1:]) - set(promoted):  # ... or it was refused, saying why
        assert decided[version]["numbers"]["reason"].startswith("forgets earlier windows")


def test_loop_head_full_gives_every_class_an_output_from_the_first_version(tmp_path):
    loop = make_loop(
        tmp_path / "run", stream=DigitsStream(scenario="class_incremental"), gate=ALWAYS, head="full"
    )
    loop.run()
    assert all(loop.registry.load_extra(v.id, "schema") is None for v in loop.registry.versions())
    assert all(v.trigger["name"] in ("initial", "schema") for v in loop.registry.versions())
    with pytest.raises(ValueError, match=r"loop.head must be 'grow' or 'full', got 'wide'"):
        make_loop(tmp_path / "bad", head="wide")


def test_a_run_with_grown_and_narrow_versions_resumes_exactly(tmp_path):
    from tests.conftest import kill_mid_window

    def loop_at(path):
        return make_loop(path, stream=NewColumnsStream(small_stream(), columns=2, at=3), gate=ALWAYS)

    whole = loop_at(tmp_path / "whole")
    whole.run()
    kill_mid_window(loop_at(tmp_path / "crashed"), window=4)
    resumed = loop_at(tmp_path / "crashed")
    state = resumed.run(resume=True)
    assert lineage(resumed.registry) == lineage(whole.registry)
    assert state["rows"] == whole.registry.window_rows()


def test_new_columns_must_be_flat_features_and_appear_after_the_first_window():
    with pytest.raises(ValueError, match=r"data.columns must be a column count in 1\.\.5, got 6"):
        NewColumnsStream(small_stream(), columns=6)
    with pytest.raises(ValueError, match=r"data.at must be a window index >= 1, got 0"):
        NewColumnsStream(small_stream(), at=0)
    with pytest.raises(ValueError, match="flat features"):
        NewColumnsStream(DigitsStream(scenario="rotated"), columns=1)


def test_late_labels_the_screen_and_a_drift_trigger_work_across_new_columns(tmp_path):
    # Each reads the champion's columns only: reference rows from before the change lack the new ones.
    stream = NewColumnsStream(small_stream(), columns=2, at=3, label_delay=1)
    screen = WindowScreen(checks=("label_shift", "disagreement", "class_stats"))
    loop = make_loop(tmp_path / "delay", stream=stream, gate=ALWAYS, screen=screen)
    loop.run()
    v2 = loop.registry.get("v2")
    assert (v2.trigger["name"], v2.created_window) == ("schema", 4)  # window 3's labels land at 4
    drift = DriftTrigger(MMDDrift(), compare="inputs")
    stream = NewColumnsStream(small_stream(), columns=2, at=3)
    loop = make_loop(tmp_path / "drift", stream=stream, gate=ALWAYS, trigger=drift)
    loop.run()
    assert loop.registry.get("v2").trigger["name"] == "schema"


def sensor_csv(path, n_days: int = 120, installed: int = 45):
    """Daily rows, 20 a day; the humidity sensor is installed on day ``installed`` (empty before), and
    once, later, a reading is lost."""
    import pandas as pd

    rng = np.random.default_rng(0)
    day = np.repeat(np.arange(n_days), 20)
    temperature, humidity = rng.normal(size=len(day)), rng.normal(size=len(day))
    rain = (0.3 * temperature + humidity + rng.normal(0, 0.3, len(day)) > 0).astype(int)
    frame = pd.DataFrame(
        {
            "date": (pd.Timestamp("2024-01-01") + pd.to_timedelta(day, unit="D")).strftime("%Y-%m-%d"),
            "humidity": np.where(day >= installed, humidity.round(3), np.nan),
            "temperature": temperature.round(3),
            "rain": rain,
        }
    )
    frame.loc[len(frame) - 7, "humidity"] = np.nan
    frame.to_csv(path, index=False)
    return path


def test_a_csv_column_that_starts_empty_is_a_new_column_not_bad_rows(tmp_path):
    from perennial.data import TableStream
    from perennial.data.window import present_features

    stream = TableStream(sensor_csv(tmp_path / "sensor.csv"), "date", "rain", window="15D")
    assert stream.feature_names == ["temperature", "humidity"]  # the new column goes last
    assert [present_features(w.x) for w in stream.windows()] == [1, 1, 1, 2, 2, 2, 2, 2]
    assert stream.quarantined_rows == 1  # the lost reading, after the sensor was installed
    assert "humidity" in stream.quarantine["reason"].iloc[0]
    first_humid = stream.windows()[3].x[:, 1]  # standardised on the window it appears in
    assert abs(first_humid.mean()) < 1e-5 and abs(first_humid.std() - 1) < 1e-3
    loop = make_loop(tmp_path / "run", stream=stream, gate=ALWAYS)
    loop.run()
    v2 = loop.registry.get("v2")
    assert v2.trigger["reason"] == "window 3 brings new feature columns humidity"
    # humidity decides the rain here: the line that reads it is far better on the windows after
    matrix = loop.accuracy_matrix()
    after = [w for w in range(3, 8)]
    assert matrix.loc[loop.registry.champion(), after].mean() > matrix.loc["v1.2", after].mean() + 0.1
