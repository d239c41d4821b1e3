"""The recommender's loop closed, as a user runs it: `perennial-recommend recommender=session` trains versions
into a registry, the recommender server serves its champion and logs each accepted interaction, and the
next scheduled run continues the same registry on the periods of the log that have closed."""

from __future__ import annotations

import subprocess
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from perennial.cli.recommend import log_ratings, log_windows
from perennial.registry import Registry
from perennial.serve import ServeSettings, create_app

from .test_cli_recommend import perennial_recommend as cli_recommend
from .test_cli_recommend import ratings_csv

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SMALL = [
    "recommender=session",
    "recommender.learner.dim=8",
    "recommender.learner.max_len=6",
    "recommender.learner.epochs=2",
    "recommender.learner.finetune_epochs=1",
    "recommender.min_users=2",
]


def perennial_recommend(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return cli_recommend(*SMALL, *overrides, cwd=cwd)


def test_served_interactions_become_the_next_versions_training_data(tmp_path):
    registry = tmp_path / "registry"
    first = perennial_recommend(
        f"ratings.path={ratings_csv(tmp_path / 'ratings.csv')}",
        "ratings.n_windows=3",
        f"registry={registry}",
        f"hydra.run.dir={tmp_path / 'run1'}",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    with Registry(registry, create=False) as reg:
        assert [v.id for v in reg.versions()] == ["v1", "v1.1", "v1.2"]
        assert reg.get("v1").config["recommender"]["ranker"] == "session"

    # The server serves the champion; 30 users each interact with 8 items; one skip is not training data.
    with TestClient(create_app(ServeSettings(registry=registry, mode="recommender"))) as client:
        for u in range(30):
            unit = f"user-{u}"
            for _ in range(8):
                shown = client.post("/rank", json={"unit": unit, "k": 3}).json()["items"]
                answer = client.post("/feedback", json={"unit": unit, "item": shown[u % 3], "rating": 5.0})
                assert answer.status_code == 200, answer.text
        assert (
            client.post("/feedback", json={"unit": "user-0", "item": shown[0], "click": False}).status_code
            == 200
        )
    time.sleep(1.1)  # the one-second period of those interactions closes

    log = registry / "serve-log.sqlite"
    second = perennial_recommend(
        "ratings.source=serve_log",
        f"ratings.path={log}",
        "ratings.window=1s",
        f"registry={registry}",
        f"hydra.run.dir={tmp_path / 'run2'}",
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    with Registry(registry, create=False) as reg:
        new = [v for v in reg.versions() if v.created_window is not None and v.created_window > 2]
        assert new, "the run learned nothing from the log"
        assert all(v.parent is not None and v.kind == "stateful" for v in new)
        # Every closed period of the log made one version, trained on that period's interactions.
        periods = {w.index for w in log_windows(log_ratings(log, 4.0), "1s")}
        assert {v.created_window for v in new} == periods
        assert all(v.created_window in v.trained_on_windows and v.n_samples > 0 for v in new)
        assert all(reg.decisions(v.id) for v in new)
        newest = max(v.created_window for v in new)
    # Nothing new has closed: a third run changes nothing and says so.
    third = perennial_recommend(
        "ratings.source=serve_log",
        f"ratings.path={log}",
        "ratings.window=1s",
        f"registry={registry}",
        f"hydra.run.dir={tmp_path / 'run3'}",
        cwd=tmp_path,
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert "no new window has closed" in third.stdout
    with Registry(registry, create=False) as reg:
        assert max(v.created_window or 0 for v in reg.versions()) == newest


def test_log_windows_are_closed_periods_numbered_from_the_epoch():
    stamps = pd.to_datetime([3600 * 10 + 5, 3600 * 10 + 50, 3600 * 11 + 1, 3600 * 12 + 7], unit="s")
    ratings = pd.DataFrame({"user": [1, 2, 1, 3], "item": [5, 6, 7, 8], "rating": 4.0, "timestamp": stamps})
    windows = log_windows(ratings, "1h", now=pd.Timestamp(3600 * 12 + 30, unit="s"))
    assert [(w.index, len(w)) for w in windows] == [(10, 2), (11, 1)]  # hour 12 is still open
    with pytest.raises(ValueError, match=r"ratings\.window"):
        log_windows(ratings, "soon")


def test_a_matrix_factorisation_registry_is_not_continued_and_bad_settings_are_named(tmp_path):
    path = ratings_csv(tmp_path / "ratings.csv")
    done = perennial_recommend("ratings.source=serve_log", f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path)
    assert done.returncode == 2 and "needs ratings.path" in done.stderr
    done = perennial_recommend(
        f"ratings.path={path}", "recommender.ranker=svd", f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path
    )
    assert done.returncode == 2 and "recommender.ranker must be one of" in done.stderr
    assert "Traceback" not in done.stderr
