"""A regression version served: /predict answers a value per row and logs it, /feedback takes numbers
(a label that is not a finite number is a 422 naming it), a canary of a worse regressor is rolled
back by feedback and analyze() replays it, a shadow compares paired squared errors, and a rollout
that does not fit the champion's task is refused."""

from __future__ import annotations

import shutil
from functools import partial

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from perennial.data.pipeline import InputPipeline
from perennial.learn import MLP
from perennial.learn.module import build_model
from perennial.registry import Registry, VersionRecord
from perennial.serve import ServeSettings, analyze, create_app
from perennial.serve.app import ModelServer

MODEL = {"_target_": "perennial.learn.MLP", "_partial_": True, "hidden": [8]}
CONFIG = {"model": MODEL}
REGRESSION = InputPipeline((4,), task="regression").to_dict()
TOKEN = "t"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
BIAS = 6.0  # v3 answers this much too high: 36 more squared error a row


def _data(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (50 + 10 * (x @ np.array([1.0, -2.0, 0.5, 0.0])) + rng.normal(size=n)).astype(np.float32)
    return x, y


def _regressor(x: np.ndarray, y: np.ndarray, seed: int):
    torch.manual_seed(seed)
    module = build_model(partial(MLP, hidden=(8,)), (4,), 0, task="regression")
    module.fit_target(y)
    opt = torch.optim.Adam(module.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(300):
        opt.zero_grad()
        module.loss(module(xt), yt).backward()
        opt.step()
    return module.eval()


@pytest.fixture(scope="module")
def rows():
    return _data(seed=1)


@pytest.fixture(scope="module")
def base_registry(tmp_path_factory):
    """v1 (champion) and v2 learned the target; v3 is v1 answering ``BIAS`` too high; v4 is a
    classifier of the same inputs."""
    x, y = _data()
    v1, v2 = _regressor(x, y, 0), _regressor(x, y, 1)
    v3 = {k: v.clone() for k, v in v1.state_dict().items()}
    v3["target_shift"] += BIAS
    torch.manual_seed(0)
    classifier = build_model(partial(MLP, hidden=(8,)), (4,), 2)
    root = tmp_path_factory.mktemp("serve-regression") / "registry"
    with Registry(root) as reg:
        for version, weights in (("v1", v1.state_dict()), ("v2", v2.state_dict()), ("v3", v3)):
            reg.add(
                VersionRecord(version, None, "stateless", config=CONFIG), weights, {"pipeline": REGRESSION}
            )
        pipeline = InputPipeline((4,), (0, 1)).to_dict()
        reg.add(
            VersionRecord("v4", None, "stateless", config=CONFIG),
            classifier.state_dict(),
            {"pipeline": pipeline},
        )
        reg.promote("v1", reason="test")
    return root, v1


@pytest.fixture
def registry(base_registry, tmp_path):
    root = tmp_path / "registry"
    shutil.copytree(base_registry[0], root)
    return root


@pytest.fixture
def client(registry):
    with TestClient(create_app(ServeSettings(registry=registry, token=TOKEN, follow=False))) as c:
        yield c


def _predict(client, unit: str, x: np.ndarray) -> dict:
    r = client.post("/predict", json={"unit": unit, "rows": x.tolist()})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_regressor_answers_a_value_per_row_and_logs_it(client, rows, base_registry):
    x, y = rows
    answer = _predict(client, "user-1", x[:50])
    assert set(answer) == {"request_id", "arm", "version", "values"}
    assert answer["version"] == "v1" and len(answer["values"]) == 50
    np.testing.assert_allclose(answer["values"], base_registry[1].predict_values(x[:50]), rtol=1e-5)
    assert np.mean((np.array(answer["values"]) - y[:50]) ** 2) < 10  # it learned the target
    logged = client.app.state.server.log.request(answer["request_id"])
    assert logged["predictions"] == answer["values"]
    one = client.post("/predict", json={"unit": "user-2", "features": x[0].tolist()}).json()
    assert one["values"] == pytest.approx(answer["values"][:1])


def test_feedback_takes_numbers_and_answers_their_squared_error(client, rows):
    x, y = rows
    answer = _predict(client, "user-1", x[:3])
    labels = [float(y[0]), round(float(y[1])), float(y[2])]  # an integer is a number too
    fb = client.post("/feedback", json={"request_id": answer["request_id"], "labels": labels})
    assert fb.status_code == 200, fb.text
    expected = float(np.sum((np.array(answer["values"]) - np.array(labels)) ** 2))
    assert fb.json()["squared_error"] == pytest.approx(expected)
    one = _predict(client, "user-2", x[3:4])
    fb = client.post("/feedback", json={"request_id": one["request_id"], "label": -12.5})
    assert fb.status_code == 200 and fb.json()["squared_error"] == pytest.approx(
        (one["values"][0] + 12.5) ** 2
    )
    metrics = client.get("/metrics").text
    assert 'perennial_serve_squared_error_total{arm="v1"}' in metrics
    mse = (expected + (one["values"][0] + 12.5) ** 2) / 4
    line = next(s for s in metrics.splitlines() if s.startswith('perennial_serve_mse{arm="v1"}'))
    assert float(line.split()[-1]) == pytest.approx(mse)
    assert 'perennial_serve_accuracy{arm="v1"}' not in metrics


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('"label": "abc"', ["label", "'abc'"]),
        ('"label": NaN', ["label", "NaN"]),
        ('"labels": [1.5, Infinity]', ["labels.1", "Infinity"]),
        ('"labels": [1.5, "x"]', ["labels.1", "'x'"]),
        ('"label": true', ["label", "True"]),
        ('"label": 1e39', ["label", "1e+39", "float32"]),
        ('"labels": [1.5, 2.5]', ["2 label(s)", "1 row"]),
    ],
)
def test_a_label_that_is_not_a_finite_number_is_a_422_naming_the_field_and_value(client, rows, body, words):
    answer = _predict(client, "user-1", rows[0][:1])
    raw = f'{{"request_id": "{answer["request_id"]}", {body}}}'
    r = client.post("/feedback", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert all(w in r.json()["error"] for w in words), r.json()["error"]
    ok = client.post("/feedback", json={"request_id": answer["request_id"], "label": 50.0})
    assert ok.status_code == 200  # nothing was recorded by the refused one


def test_class_label_rules_stand_for_unknown_requests_and_a_regressor_ranks_nothing(client, rows):
    unknown = client.post("/feedback", json={"request_id": "nope", "label": 2.5})
    assert unknown.status_code == 422 and "label" in unknown.json()["error"]  # as for class ids
    missing = client.post("/feedback", json={"request_id": "nope", "label": 2})
    assert missing.status_code == 404
    rank = client.post("/rank", json={"unit": "u", "features": rows[0][0].tolist()})
    assert rank.status_code == 422 and "regressor" in rank.json()["error"]


def _traffic(client, rows, n: int, start: int = 0, size: int = 4) -> list[dict]:
    x, y = rows
    out = []
    for i in range(start, start + n):
        part = slice(size * i % len(x), size * i % len(x) + size)
        answer = _predict(client, f"user-{i}", x[part])
        fb = client.post("/feedback", json={"request_id": answer["request_id"], "labels": y[part].tolist()})
        assert fb.status_code == 200, fb.text
        out.append(answer | {"feedback": fb.json()})
    return out


def test_a_canary_of_a_worse_regressor_is_rolled_back_by_feedback_and_analyze_replays_it(
    client, rows, registry
):
    settings = {"steps": [0.5, 1.0], "min_samples": 300, "salt": "c"}
    started = client.post(
        "/rollout", headers=ADMIN, json={"kind": "canary", "candidate": "v3", "settings": settings}
    )
    assert started.status_code == 200, started.text
    rollout = started.json()["rollout"]
    assert rollout["settings"]["task"] == "regression" and rollout["metric"] == "squared_error"
    served = _traffic(client, rows, 150)
    decided = [i for i, s in enumerate(served) if s["feedback"].get("rollout") == "reject"]
    assert len(decided) == 1 and any(s["arm"] == "v3" for s in served[: decided[0]])
    assert all(s["arm"] == "v1" for s in served[decided[0] + 1 :])  # everyone back on v1
    with Registry(registry, create=False) as reg:
        assert reg.get("v3").status == "rejected" and reg.champion() == "v1"
        evidence = reg.rollouts.all()[0].evidence
    report = analyze(client.app.state.server.log.path)
    canary = report["rollouts"][0]
    assert (canary["outcome"], canary["decision"], canary["status"]) == ("rejected", "reject", "rolled_back")
    assert canary["p_value"] == pytest.approx(evidence["p_value"]) and canary["effect"] > 20
    arms = report["arms"]
    assert set(arms["v3"]) == {"requests", "labelled", "squared_error", "mse"}
    assert arms["v3"]["mse"] - arms["v1"]["mse"] == pytest.approx(BIAS**2, rel=0.3)


def test_a_shadow_regressor_is_compared_on_the_same_requests(client, rows):
    settings = {"criterion": "better", "margin": 0.0}
    r = client.post(
        "/rollout", headers=ADMIN, json={"kind": "shadow", "candidate": "v2", "settings": settings}
    )
    assert r.status_code == 200, r.text
    served = _traffic(client, rows, 30)
    assert {s["arm"] for s in served} == {"v1"}
    shadow = client.get("/status").json()["rollout"]
    assert shadow["labelled"] == 120 and shadow["metric"] == "squared_error"
    assert shadow["effect"] == pytest.approx(shadow["mse"] - shadow["champion_mse"])
    logged = client.app.state.server.log.request(served[0]["request_id"])
    assert all(isinstance(v, float) for v in logged["shadow"]["v2"])
    replayed = analyze(client.app.state.server.log.path)["rollouts"][0]
    assert replayed["labelled"] == 120 and replayed["p_value"] == pytest.approx(shadow["p_value"])


def test_a_rollout_that_does_not_fit_the_champions_task_is_refused(client, registry):
    interleave = client.post("/rollout", headers=ADMIN, json={"kind": "interleave", "candidate": "v2"})
    assert interleave.status_code == 422 and "interleave ranks classes" in interleave.json()["error"]
    told = {"kind": "ab", "candidate": "v2", "settings": {"task": "classification"}}
    wrong_task = client.post("/rollout", headers=ADMIN, json=told)
    assert wrong_task.status_code == 422 and "regression model" in wrong_task.json()["error"]
    classifier = client.post("/rollout", headers=ADMIN, json={"kind": "ab", "candidate": "v4"})
    assert classifier.status_code == 422 and "classification model" in classifier.json()["error"]
    assert client.get("/status").json()["rollout"] is None


def test_a_registry_request_without_the_regression_task_fails_on_a_regressor(registry):
    with Registry(registry, create=False) as reg:
        record = reg.rollouts.request("ab", "v1", "v2", {"share": 0.5}, by="loop")  # task absent
    server = ModelServer(ServeSettings(registry=registry, follow=False))
    try:
        server.follow_registry()
        assert server.deployment.rollout is None
    finally:
        server.close()
    with Registry(registry, create=False) as reg:
        failed = reg.rollouts.get(record.id)
    assert failed.status == "failed" and "compares classification models" in failed.reason
