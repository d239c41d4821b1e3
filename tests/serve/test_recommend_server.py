"""perennial-serve in recommender mode over HTTP (in-process client): /feedback changes that unit's next
/rank and no one else's, bad feedback gets a clear 4xx and leaves every session as it was, sessions
expire and stay within their bound, and the global model in the registry never changes."""

import warnings

import numpy as np
import pytest
import torch

from perennial.recommend import Recommender
from perennial.registry import Registry, VersionRecord
from perennial.serve import ServeSettings, create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's test client warns about its own httpx dependency
    from fastapi.testclient import TestClient

TOKEN = "test-token"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry(tmp_path):
    root = tmp_path / "registry"
    with Registry(root) as reg:
        model = Recommender.synthetic(n_items=300, dim=8, seed=0, version="v1")
        reg.add(VersionRecord("v1", None, "stateless", config={"recommender": {}}), model.state_dict())
        reg.promote("v1")
    return root


def client(registry, clock: Clock | None = None, **settings) -> TestClient:
    app = create_app(ServeSettings(registry=registry, mode="recommender", token=TOKEN, **settings))
    if clock is not None:
        app.state.server.store.clock = clock
    return TestClient(app)


def rank(c: TestClient, unit: str, k: int = 10) -> dict:
    response = c.post("/rank", json={"unit": unit, "k": k})
    assert response.status_code == 200, response.text
    return response.json()


def test_feedback_changes_the_next_rank_of_that_unit_only(registry):
    with client(registry) as c:
        before_a, before_b = rank(c, "a"), rank(c, "b")
        assert before_a["items"] == before_b["items"] and before_a["session"] == "started"
        for item in rank(c, "a", 60)["items"][-5:]:
            answer = c.post("/feedback", json={"unit": "a", "item": item, "rating": 5.0})
            assert answer.status_code == 200, answer.text
        after_a, after_b = rank(c, "a"), rank(c, "b")
        assert after_a["items"] != before_a["items"] and after_a["interactions"] == 5
        assert after_b["items"] == before_b["items"] and after_b["interactions"] == 0
        # A click counts too, and integer unit ids are units like any other.
        rank(c, 42)
        assert c.post("/feedback", json={"unit": 42, "item": 3, "click": True}).json()["interactions"] == 1


def test_bad_feedback_gets_a_clear_4xx_and_leaves_sessions_as_they_were(registry):
    with client(registry, feedback_rate=1.0, feedback_burst=4) as c:
        rank(c, "a")
        rank(c, "b")
        assert c.post("/feedback", json={"unit": "b", "item": 9, "rating": 4.0}).status_code == 200
        b_before = rank(c, "b")
        cases = [
            (
                {"unit": "a", "item": 12345, "rating": 4.0},
                422,
                "item 12345 is not in the catalogue of version v1",
            ),
            ({"unit": "a", "item": 1, "rating": 9.0}, 422, "outside version v1's range"),
            ({"unit": "a", "item": 1}, 422, "exactly one of 'rating'"),
            ({"unit": "a", "item": 1, "rating": "4"}, 422, "rating"),
            ({"unit": "a", "item": 1.5, "rating": 4.0}, 422, "item"),
            ({"unit": "nobody", "item": 1, "rating": 4.0}, 404, "unit 'nobody' has no session"),
        ]
        for body, status, message in cases:
            response = c.post("/feedback", json=body)
            assert response.status_code == status, (body, response.text)
            assert message in response.json()["error"]
        assert rank(c, "a")["interactions"] == 0
        assert rank(c, "b") == b_before
        assert c.post("/rank", json={"unit": "a", "k": 5000}).status_code == 422
        # An item id past int64 is refused at the edge, naming it, not overflowed in the catalogue lookup.
        huge = c.post("/feedback", json={"unit": "a", "item": 2**63, "rating": 4.0})
        assert huge.status_code == 422 and "item" in huge.json()["error"], huge.text
        assert str(2**63) in huge.json()["error"]
        assert rank(c, "a")["interactions"] == 0


def test_a_flood_of_feedback_is_rate_limited_per_unit(registry):
    clock = Clock()
    with client(registry, clock, feedback_rate=2.0, feedback_burst=3) as c:
        rank(c, "flood")
        rank(c, "calm")
        codes = [
            c.post("/feedback", json={"unit": "flood", "item": i, "rating": 4.0}).status_code
            for i in range(6)
        ]
        assert codes == [200, 200, 200, 429, 429, 429]
        refused = c.post("/feedback", json={"unit": "flood", "item": 99, "rating": 4.0})
        assert refused.headers["retry-after"] == "1" and "too much feedback" in refused.json()["error"]
        assert rank(c, "flood")["interactions"] == 3
        assert c.post("/feedback", json={"unit": "calm", "item": 1, "rating": 4.0}).status_code == 200
        clock.now = 0.5
        assert c.post("/feedback", json={"unit": "flood", "item": 50, "rating": 4.0}).status_code == 200
        assert c.get("/status").json()["sessions"]["rate_limited"] == 4


def test_expired_sessions_and_the_memory_bound(registry):
    clock = Clock()
    with client(registry, clock, session_ttl_s=30, max_sessions=3) as c:
        rank(c, "a")
        clock.now = 31.0
        expired = c.post("/feedback", json={"unit": "a", "item": 1, "rating": 4.0})
        assert expired.status_code == 410 and "expired" in expired.json()["error"]
        assert rank(c, "a")["session"] == "started"
        for unit in ("b", "c", "d"):  # a is now the least recently used of four: evicted
            rank(c, unit)
        evicted = c.post("/feedback", json={"unit": "a", "item": 1, "rating": 4.0})
        assert evicted.status_code == 404
        sessions = c.get("/status").json()["sessions"]
        assert sessions["live"] == 3 and sessions["evicted"] == 1 and sessions["expired"] == 1
        metrics = c.get("/metrics").text
        assert "perennial_serve_sessions_live 3.0" in metrics
        assert "# TYPE perennial_serve_sessions_evicted_total counter" in metrics


def test_sessions_never_change_the_global_model(registry):
    with Registry(registry, create=False) as reg:
        stored = reg.load_weights("v1")
    with client(registry) as c:
        served = c.app.state.server.live.model
        arrays = {name: tensor.clone() for name, tensor in served.state_dict().items()}
        for unit in range(20):
            rank(c, unit)
            for item in np.random.default_rng(unit).choice(300, 8, replace=False).tolist():
                c.post("/feedback", json={"unit": unit, "item": item, "rating": 5.0})
        assert c.app.state.server.live.model is served
        for name, tensor in served.state_dict().items():
            assert torch.equal(tensor, arrays[name]), name
    with Registry(registry, create=False) as reg:
        assert [v.id for v in reg.versions()] == ["v1"]
        for name, tensor in reg.load_weights("v1").items():
            assert torch.equal(tensor, stored[name]), name


def test_reload_serves_a_newly_promoted_version_and_sessions_refit(registry):
    with client(registry) as c:
        rank(c, "a")
        c.post("/feedback", json={"unit": "a", "item": 5, "rating": 5.0})
        assert c.post("/reload").status_code == 401
        lower = c.post("/reload", headers={"Authorization": f"bearer {TOKEN}"})  # RFC 7235: any case
        assert lower.status_code == 200 and lower.json() == {"version": "v1", "previous": "v1"}
        with Registry(registry, create=False) as reg:
            model = Recommender.synthetic(n_items=300, dim=8, seed=1, version="v1.1")
            reg.add(VersionRecord("v1.1", "v1", "stateful", config={"recommender": {}}), model.state_dict())
            reg.promote("v1.1")
        answer = c.post("/reload", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert answer == {"version": "v1.1", "previous": "v1"}
        after = rank(c, "a")
        assert after["version"] == "v1.1" and after["interactions"] == 1 and 5 not in after["items"]


def test_the_modes_do_not_mix(registry):
    with client(registry) as c:
        response = c.post("/predict", json={"unit": "a", "features": [1.0]})
        assert response.status_code == 404 and "serve.mode=recommender" in response.json()["error"]
    with pytest.raises(ValueError, match=r"is a recommender: serve it with serve\.mode=recommender"):
        create_app(ServeSettings(registry=registry))
    with pytest.raises(ValueError, match=r"serve\.mode must be one of"):
        create_app(ServeSettings(registry=registry, mode="ranker"))
