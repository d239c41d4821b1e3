"""perennial-serve in recommender mode over a session-model version (the GRU): an empty session gets the
popular items, feedback moves the unit's next ranking, a skip is excluded but never read as an
interaction, /reload switches between the two kinds of version with the sessions kept, and every
accepted feedback (and no refused one) is in the serve log's interactions, across a restart."""

import sqlite3
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from perennial.recommend import Recommender, SessionLearner
from perennial.recommend.session_snapshot import SessionSnapshot
from perennial.registry import Registry, VersionRecord
from perennial.serve import ServeSettings, create_app
from perennial.serve.log import RequestLog, read_interactions, unit_user_id

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's test client warns about its own httpx dependency
    from fastapi.testclient import TestClient

TOKEN = "test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
N_ITEMS = 20


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def trained() -> tuple[SessionLearner, np.ndarray]:
    """A tiny GRU on users walking a cycle of 20 items, and each item's count as its popularity."""
    rng = np.random.default_rng(0)
    starts = rng.integers(N_ITEMS, size=40)
    rows = [(u, int((starts[u] + t) % N_ITEMS), t) for u in range(40) for t in range(8)]
    data = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    learner = SessionLearner(dim=8, max_len=6, horizon=1, epochs=5, seed=0)
    learner.update(data, window=0)
    popularity = data["item"].value_counts().reindex(learner.model.items, fill_value=0).to_numpy(float)
    return learner, popularity


def add_session_version(reg: Registry, trained, version: str, parent: str | None, **config) -> None:
    learner, popularity = trained
    snapshot = SessionSnapshot(version, learner.model, popularity=popularity, rating_range=(1.0, 5.0))
    config = {"ranker": "session", "model": learner.model.config, **config}
    kind = "stateless" if parent is None else "stateful"
    reg.add(VersionRecord(version, parent, kind, config={"recommender": config}), snapshot.state_dict())
    reg.promote(version)


def add_mf_version(reg: Registry, version: str, parent: str | None, seed: int) -> Recommender:
    model = Recommender.synthetic(n_items=30, dim=4, seed=seed, version=version)
    kind = "stateless" if parent is None else "stateful"
    reg.add(VersionRecord(version, parent, kind, config={"recommender": {}}), model.state_dict())
    reg.promote(version)
    return model


@pytest.fixture
def registry(tmp_path, trained):
    root = tmp_path / "registry"
    with Registry(root) as reg:
        add_session_version(reg, trained, "v1", None)
    return root


def served(root, version: str) -> SessionSnapshot:
    with Registry(root, create=False) as reg:
        return SessionSnapshot.from_registry(reg, version)


def client(registry, clock: Clock | None = None, **settings) -> TestClient:
    app = create_app(ServeSettings(registry=registry, mode="recommender", token=TOKEN, **settings))
    if clock is not None:
        app.state.server.store.clock = clock
    return TestClient(app)


def rank(c: TestClient, unit: str, k: int = 5) -> dict:
    response = c.post("/rank", json={"unit": unit, "k": k})
    assert response.status_code == 200, response.text
    return response.json()


def feedback(c: TestClient, unit: str, item: int, **value) -> int:
    return c.post("/feedback", json={"unit": unit, "item": item, **value}).status_code


def test_an_empty_session_gets_the_popular_items_and_feedback_moves_the_ranking(registry, trained):
    learner, popularity = trained
    ids = learner.model.items
    by_popularity = sorted(ids.tolist(), key=lambda i: (-popularity[ids.tolist().index(i)], i))
    snapshot = served(registry, "v1")
    with client(registry) as c:
        status = c.get("/status").json()
        assert (status["ranker"], status["dim"], status["catalogue"]) == ("session", 8, N_ITEMS)
        fresh = rank(c, "a")
        assert fresh["items"] == by_popularity[:5] and fresh["session"] == "started"
        liked = fresh["items"][0]
        assert feedback(c, "a", liked, rating=5.0) == 200
        after = rank(c, "a", k=N_ITEMS)["items"]
        assert liked not in after and len(after) == N_ITEMS - 1
        assert after != by_popularity[1:]  # the GRU's next-item ranking, not popularity minus one
        assert after == snapshot.recommend(snapshot.session_vector([liked], [5.0]), N_ITEMS, exclude=[liked])
        assert rank(c, "b")["items"] == by_popularity[:5]  # no other unit's session moved


def test_a_skip_is_excluded_but_never_read_as_an_interaction(registry):
    with client(registry) as c:
        for unit in ("a", "b"):
            rank(c, unit)
            assert feedback(c, unit, 4, rating=5.0) == 200
        skipped = rank(c, "a", k=1)["items"][0]
        assert feedback(c, "a", skipped, click=False) == 200
        a, b = rank(c, "a", k=6), rank(c, "b", k=7)
        assert a["interactions"] == 2 and skipped not in a["items"]
        assert a["items"] == [i for i in b["items"] if i != skipped][:6]
        # A skip alone leaves the session empty to the model: popularity, less the skipped item.
        rank(c, "c", k=6)
        assert feedback(c, "c", skipped, click=False) == 200
        assert rank(c, "c")["items"] == [i for i in rank(c, "fresh", k=6)["items"] if i != skipped][:5]


def test_rate_limits_ttl_and_the_memory_bound_as_for_matrix_factorisation(registry):
    clock = Clock()
    with client(registry, clock, feedback_rate=1.0, feedback_burst=2, session_ttl_s=30, max_sessions=2) as c:
        rank(c, "a")
        assert [feedback(c, "a", i, rating=4.0) for i in (1, 2, 3)] == [200, 200, 429]
        limited = rank(c, "a", k=N_ITEMS)
        assert limited["interactions"] == 2 and 3 in limited["items"]  # the refused one changed nothing
        clock.now = 31.0
        assert feedback(c, "a", 5, rating=4.0) == 410
        for unit in ("a", "b", "c"):  # a (restarted) is the least recently used of three: evicted
            rank(c, unit)
        assert feedback(c, "a", 5, rating=4.0) == 404
        sessions = c.get("/status").json()["sessions"]
        assert (sessions["evicted"], sessions["expired"], sessions["rate_limited"]) == (1, 1, 1)
    assert read_interactions(registry / "serve-log.sqlite")["item"].tolist() == [1, 2]


def test_reload_switches_between_the_kinds_and_sessions_refit(tmp_path, trained):
    root = tmp_path / "registry"
    with Registry(root) as reg:
        add_mf_version(reg, "v1", None, seed=0)
    with client(root) as c:
        assert c.get("/status").json()["ranker"] == "matrix_factorization"
        assert c.get("/status").json()["dim"] == 4
        rank(c, "a")
        assert feedback(c, "a", 25, rating=5.0) == 200  # only the factorisation knows item 25
        assert feedback(c, "a", 3, rating=4.0) == 200

        with Registry(root, create=False) as reg:
            add_session_version(reg, trained, "v1.1", "v1")
        assert c.post("/reload", headers=ADMIN).json() == {"version": "v1.1", "previous": "v1"}
        assert c.get("/status").json()["ranker"] == "session"
        gru = served(root, "v1.1")
        after = rank(c, "a", k=10)
        assert after["version"] == "v1.1" and after["interactions"] == 2
        # Item 25 is unknown to the session model: not read (no crash), still in the session.
        assert after["items"] == gru.recommend(gru.session_vector([3], [4.0]), 10, exclude=[25, 3])
        assert feedback(c, "a", 7, click=False) == 200

        with Registry(root, create=False) as reg:
            mf = add_mf_version(reg, "v1.2", "v1.1", seed=1)
        assert c.post("/reload", headers=ADMIN).json() == {"version": "v1.2", "previous": "v1.1"}
        back = rank(c, "a", k=10)
        assert back["version"] == "v1.2" and back["interactions"] == 3
        # The skip recorded under the session model stays excluded and unread.
        assert back["items"] == mf.recommend(mf.session_vector([25, 3], [5.0, 4.0]), 10, exclude=[25, 3, 7])
    logged = read_interactions(root / "serve-log.sqlite")
    assert logged["version"].tolist() == ["v1", "v1", "v1.1"]


def test_refused_feedback_names_the_problem_and_is_not_logged(registry):
    with client(registry) as c:
        rank(c, "a")
        unknown = c.post("/feedback", json={"unit": "a", "item": 999, "rating": 4.0})
        assert unknown.status_code == 422
        assert "item 999 is not in the catalogue of version v1 (20 items)" in unknown.json()["error"]
        outside = c.post("/feedback", json={"unit": "a", "item": 1, "rating": 0.5})
        assert outside.status_code == 422 and "outside version v1's range 1..5" in outside.json()["error"]
        assert feedback(c, "nobody", 1, rating=4.0) == 404
        assert rank(c, "a")["interactions"] == 0
        assert "perennial_serve_interactions_logged_total 0.0" in c.get("/metrics").text
    assert read_interactions(registry / "serve-log.sqlite").empty


def test_every_accepted_feedback_is_logged_and_survives_a_restart(registry):
    log = registry / "serve-log.sqlite"
    start = time.time()
    with client(registry) as c:
        rank(c, "a")
        rank(c, 42)
        assert feedback(c, "a", 4, rating=4.5) == 200
        assert feedback(c, 42, 5, click=True) == 200
        assert feedback(c, "a", 6, click=False) == 200
        assert feedback(c, "a", 999, rating=4.0) == 422
        live = read_interactions(log)  # read while the server runs and holds the log open
        assert "perennial_serve_interactions_logged_total 3.0" in c.get("/metrics").text
    columns = ["seq", "unit", "user", "item", "rating", "click", "version", "timestamp"]
    assert list(live.columns) == columns and len(live) == 3
    assert live["unit"].tolist() == ["a", "42", "a"]
    assert live["user"].tolist() == [unit_user_id("a"), unit_user_id("42"), unit_user_id("a")]
    assert live["user"].dtype == np.int64 and (live["user"] >= 0).all()
    assert live["item"].tolist() == [4, 5, 6]
    assert live["rating"].iloc[0] == 4.5 and live["rating"].iloc[1:].isna().all()
    assert live["click"].dtype == "boolean"
    assert live["click"].isna().tolist() == [True, False, False]
    assert live["click"].iloc[1:].tolist() == [True, False]
    assert set(live["version"]) == {"v1"}
    assert ((live["timestamp"] >= start - 1) & (live["timestamp"] <= time.time() + 1)).all()

    with client(registry) as c:  # a restarted server appends to the same log
        rank(c, "b")
        assert feedback(c, "b", 7, rating=3.0) == 200
    after = read_interactions(log)
    pd.testing.assert_frame_equal(after.iloc[:3], live)
    assert after["unit"].tolist()[3:] == ["b"]
    newer = read_interactions(log, after_seq=int(live["seq"].iloc[-1]))
    assert newer["item"].tolist() == [7]


def test_read_interactions_names_a_path_that_is_not_a_log(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.sqlite: no request log there"):
        read_interactions(tmp_path / "nowhere.sqlite")
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some words to fill a page of sqlite header " * 20)
    with pytest.raises(ValueError, match=r"notes\.txt: not a readable SQLite request log"):
        read_interactions(text)


def test_a_stored_session_version_that_cannot_be_built_fails_clearly(tmp_path, trained):
    root = tmp_path / "registry"
    with Registry(root) as reg:
        reg.add(
            VersionRecord("v1", None, "stateless", config={"recommender": {"ranker": "session"}}),
            SessionSnapshot("v1", trained[0].model, trained[1], (1.0, 5.0)).state_dict(),
        )
        reg.promote("v1")
    with pytest.raises(ValueError, match=r"version v1's config has no recommender\.model settings"):
        create_app(ServeSettings(registry=root, mode="recommender"))
    with Registry(root, create=False) as reg:
        add_mf_version(reg, "v2", None, seed=0)
    with client(root) as c:
        with Registry(root, create=False) as reg:  # a session config over a factorisation's tensors
            model = Recommender.synthetic(n_items=30, dim=4, seed=0, version="v3")
            config = {"recommender": {"ranker": "session", "model": trained[0].model.config}}
            reg.add(VersionRecord("v3", None, "stateless", config=config), model.state_dict())
            reg.promote("v3")
        refused = c.post("/reload", headers=ADMIN)
        assert refused.status_code == 409 and "version v3 holds no session model" in refused.json()["error"]
        assert rank(c, "a")["version"] == "v2"  # the served version is unchanged


def test_a_log_written_before_interactions_gains_the_table(tmp_path):
    path = tmp_path / "old.sqlite"
    RequestLog(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE interactions")  # as an older server left its log
    conn.close()
    with pytest.raises(ValueError, match=r"old\.sqlite: not a recommender serve log: it has no interactions"):
        read_interactions(path)
    log = RequestLog(path)
    log.write_interaction("a", 3, "v1", click=True)
    log.close()
    assert read_interactions(path)["click"].tolist() == [True]


def test_the_server_follows_the_registry_to_a_newly_promoted_version(registry, trained):
    with client(registry, poll_s=0.05) as c:
        assert c.get("/status").json()["version"] == "v1"
        with Registry(registry) as reg:
            add_session_version(reg, trained, "v1.1", "v1")
        deadline = time.monotonic() + 10
        while c.get("/status").json()["version"] != "v1.1" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/status").json()["version"] == "v1.1"
        assert rank(c, "a")["version"] == "v1.1"
        # A champion that cannot serve is said in /status, and what serves goes on serving.
        with Registry(registry) as reg:
            learner, popularity = trained
            snapshot = SessionSnapshot("v1.2", learner.model, popularity=popularity, rating_range=(1.0, 5.0))
            config = {"recommender": {"ranker": "session", "model": {"dim": 3}}}
            reg.add(VersionRecord("v1.2", "v1.1", "stateful", config=config), snapshot.state_dict())
            reg.promote("v1.2")
        while c.get("/status").json()["note"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        status = c.get("/status").json()
        assert status["version"] == "v1.1" and "v1.2" in status["note"] and "refused" in status["note"]
        assert rank(c, "a")["version"] == "v1.1"


def test_a_version_with_non_finite_weights_is_refused_on_reload_and_the_served_one_goes_on(registry, trained):
    learner, popularity = trained
    snapshot = SessionSnapshot("v1.1", learner.model, popularity=popularity, rating_range=(1.0, 5.0))
    weights = snapshot.state_dict()
    weights["embedding"] = weights["embedding"].clone()
    weights["embedding"][3, 0] = float("nan")
    with client(registry, follow=False) as c:
        with Registry(registry) as reg:
            config = {"recommender": {"ranker": "session", "model": learner.model.config}}
            reg.add(VersionRecord("v1.1", "v1", "stateful", config=config), weights)
            reg.promote("v1.1")
        answer = c.post("/reload", headers=ADMIN)
        assert answer.status_code == 409 and "not finite" in answer.text
        assert rank(c, "a")["version"] == "v1"
